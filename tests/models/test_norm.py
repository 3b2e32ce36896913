import copy

import pytest
import torch
from torch import nn

from adios.models.norm import BatchNorm1d, BatchNorm2d, batch_groups, frozen_bn_stats

# float round-off, bf16 or channels_last kernels: .ci/run runs these again under AVX2 kernels
pytestmark = pytest.mark.isa

# (adios class, reference torch class, input shape with batch 6)
LAYOUTS = [
    (BatchNorm2d, nn.BatchNorm2d, (6, 3, 4, 5)),
    (BatchNorm1d, nn.BatchNorm1d, (6, 3)),
    (BatchNorm1d, nn.BatchNorm1d, (6, 3, 7)),
]


def make_pair(adios_cls, torch_cls, num_features=3, **kwargs):
    """An adios layer and a plain torch layer with identical, non-trivial state."""
    torch.manual_seed(0)
    ours = adios_cls(num_features, **kwargs)
    with torch.no_grad():
        if ours.affine:
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.normal_()
        if ours.track_running_stats:
            ours.running_mean.normal_()
            ours.running_var.uniform_(0.5, 2.0)
            ours.num_batches_tracked.fill_(3)
    reference = torch_cls(num_features, **kwargs)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def buffers(module):
    return {name: buffer.clone() for name, buffer in module.named_buffers()}


def assert_buffers_close(actual, expected):
    assert actual.keys() == expected.keys()
    for name in actual:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def manual_batch_norm(x, weight, bias, eps):
    """Training-mode batch norm written out: biased variance over all dims except channels."""
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    shape = [1, -1] + [1] * (x.dim() - 2)
    out = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight.view(shape) + bias.view(shape)
    return out


@pytest.mark.parametrize("adios_cls, torch_cls, shape", LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
def test_plain_path_is_bitwise_torch(adios_cls, torch_cls, shape, training):
    ours, reference = make_pair(adios_cls, torch_cls)
    ours.train(training)
    reference.train(training)
    x = torch.randn(shape)
    assert torch.equal(ours(x), reference(x))
    for (name, a), (_, b) in zip(ours.named_buffers(), reference.named_buffers(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("adios_cls, torch_cls, shape", LAYOUTS)
@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
def test_grouped_equals_sequential_forwards(adios_cls, torch_cls, shape, groups, momentum, affine):
    # float64: with two samples per group the input gradient is a near-cancellation, which float32
    # rounding would blur; in double precision the two computations must agree to ~1e-12.
    ours, reference = make_pair(adios_cls, torch_cls, momentum=momentum, affine=affine)
    ours.double()
    reference.double()
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    upstream = torch.randn(shape, dtype=torch.float64)

    x_ours = x.clone().requires_grad_()
    with batch_groups(ours, groups):
        out = ours(x_ours)
    (out * upstream).sum().backward()

    x_ref = x.clone().requires_grad_()
    expected = torch.cat([reference(chunk) for chunk in x_ref.chunk(groups)])
    (expected * upstream).sum().backward()

    tight = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(out, expected, **tight)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **tight)
    if affine:
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad, **tight)
        torch.testing.assert_close(ours.bias.grad, reference.bias.grad, **tight)
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(ours.get_buffer(name), buffer, **tight)
    assert ours.num_batches_tracked.item() == 3 + groups


def test_grouped_without_running_stats_in_train_and_eval():
    # Without running statistics, eval mode also normalises with batch statistics, so the groups
    # must apply there too to keep "one concatenated forward == separate forwards".
    ours, reference = make_pair(BatchNorm2d, nn.BatchNorm2d, track_running_stats=False)
    x = torch.randn(4, 3, 2, 2)
    for training in (True, False):
        ours.train(training)
        reference.train(training)
        with batch_groups(ours, 2):
            out = ours(x)
        expected = torch.cat([reference(chunk) for chunk in x.chunk(2)])
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_grouped_preserves_channels_last_values():
    ours, reference = make_pair(BatchNorm2d, nn.BatchNorm2d)
    x = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    with batch_groups(ours, 2):
        out = ours(x)
    expected = torch.cat([reference(chunk) for chunk in x.chunk(2)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_grouped_bfloat16_keeps_dtype_and_matches_float32():
    ours, _ = make_pair(BatchNorm2d, nn.BatchNorm2d)
    reference = copy.deepcopy(ours)
    x = torch.randn(4, 3, 4, 4)
    with batch_groups(ours, 2):
        out = ours(x.bfloat16())
    with batch_groups(reference, 2):
        expected = reference(x.bfloat16().float())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)


def test_eval_mode_ignores_groups():
    ours, reference = make_pair(BatchNorm2d, nn.BatchNorm2d)
    ours.eval()
    reference.eval()
    x = torch.randn(6, 3, 4, 4)
    before = buffers(ours)
    with batch_groups(ours, 3), frozen_bn_stats(ours):
        out = ours(x)
    assert torch.equal(out, reference(x))
    assert_buffers_close(buffers(ours), before)


@pytest.mark.parametrize("adios_cls, torch_cls, shape", LAYOUTS)
def test_frozen_uses_batch_stats_and_updates_no_buffer(adios_cls, torch_cls, shape):
    ours, _ = make_pair(adios_cls, torch_cls)
    before = buffers(ours)
    x = torch.randn(shape, requires_grad=True)
    with frozen_bn_stats(ours):
        out = ours(x)
    out.square().sum().backward()
    torch.testing.assert_close(
        out, manual_batch_norm(x, ours.weight, ours.bias, ours.eps), rtol=1e-5, atol=1e-5
    )
    for name, buffer in ours.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert x.grad is not None and ours.weight.grad is not None


@pytest.mark.parametrize("frozen_outside", [True, False])
def test_grouped_and_frozen_nest_in_either_order(frozen_outside):
    ours, _ = make_pair(BatchNorm2d, nn.BatchNorm2d)
    before = buffers(ours)
    x = torch.randn(6, 3, 2, 3)
    if frozen_outside:
        with frozen_bn_stats(ours), batch_groups(ours, 3):
            out = ours(x)
    else:
        with batch_groups(ours, 3), frozen_bn_stats(ours):
            out = ours(x)
    expected = torch.cat(
        [manual_batch_norm(chunk, ours.weight, ours.bias, ours.eps) for chunk in x.chunk(3)]
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for name, buffer in ours.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_contexts_restore_previous_state_even_on_error():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), BatchNorm2d(3), nn.Flatten(), BatchNorm1d(12))
    norms = [model[1], model[3]]
    with batch_groups(model, 2):
        with batch_groups(model, 3):
            assert all(norm._stat_groups == 3 for norm in norms)
        assert all(norm._stat_groups == 2 for norm in norms)
    assert all(norm._stat_groups == 1 for norm in norms)

    with pytest.raises(RuntimeError, match="boom"), frozen_bn_stats(model), batch_groups(model, 2):
        raise RuntimeError("boom")
    assert all(norm._stat_groups == 1 and not norm._stats_frozen for norm in norms)

    # Back on the plain path: bitwise identical to torch again.
    reference = nn.BatchNorm2d(3)
    reference.load_state_dict(model[1].state_dict())
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(model[1](x), reference(x))


def test_grouped_applies_to_nested_modules():
    model = nn.Sequential(
        nn.Linear(5, 4), BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2), BatchNorm1d(2)
    )
    reference = copy.deepcopy(model)
    x = torch.randn(8, 5)
    with batch_groups(model, 4):
        out = model(x)
    expected = torch.cat([reference(chunk) for chunk in x.chunk(4)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert_buffers_close(buffers(model), buffers(reference))


def test_indivisible_batch_and_bad_groups_raise():
    norm = BatchNorm2d(3)
    with batch_groups(norm, 4), pytest.raises(ValueError, match="not divisible"):
        norm(torch.randn(6, 3, 2, 2))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive int"), batch_groups(norm, bad):
            pass


def test_single_value_per_group_raises():
    norm = BatchNorm1d(3)
    with batch_groups(norm, 4), pytest.raises(ValueError, match="more than 1 value"):
        norm(torch.randn(4, 3))


def test_foreign_batch_norm_is_rejected():
    model = nn.Sequential(BatchNorm2d(3), nn.BatchNorm2d(3))
    with pytest.raises(TypeError, match="BatchNorm2d"), batch_groups(model, 2):
        pass
    with pytest.raises(TypeError, match="BatchNorm2d"), frozen_bn_stats(model):
        pass
    # A failed entry must not leave any layer switched.
    assert model[0]._stat_groups == 1 and not model[0]._stats_frozen


def test_state_dict_names_match_torch():
    assert BatchNorm2d(4).state_dict().keys() == nn.BatchNorm2d(4).state_dict().keys()
    assert isinstance(BatchNorm1d(4), nn.BatchNorm1d)


def test_grouped_forward_after_plain_forward_keeps_the_graph_valid():
    """A plain forward saves the running buffers for backward; a later grouped forward in the
    same graph (ADIOS: unmasked view, then the N masked copies) must not invalidate them: the
    outputs and every gradient equal torch's batch norm applied to the plain batch and to each
    group of 4 on its own."""
    ours, reference = make_pair(BatchNorm2d, nn.BatchNorm2d)
    x_plain, x_grouped = torch.randn(4, 3, 5, 5), torch.randn(8, 3, 5, 5)
    results = []
    for norm, grouped_forward in (
        (ours, lambda x: _grouped(ours, x)),
        (reference, lambda x: torch.cat([reference(x[:4]), reference(x[4:])])),
    ):
        inputs = [x_plain.clone().requires_grad_(), x_grouped.clone().requires_grad_()]
        outputs = [norm(inputs[0]), grouped_forward(inputs[1])]
        (outputs[0].square().sum() + (outputs[1] * outputs[1].detach().flip(0)).sum()).backward()
        grads = [i.grad for i in inputs] + [norm.weight.grad, norm.bias.grad]
        results.append([o.detach() for o in outputs] + grads)
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _grouped(norm, x):
    with batch_groups(norm, 2):
        return norm(x)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_recorded_stats_replay_the_reference_order(momentum):
    """An unmasked batch encoded once plus N masked copies in one grouped pass, recorded and
    replayed, leaves the buffers where the reference's N rounds (unmasked, masked copy n) leave
    them; outputs are those of plain forwards."""
    from adios.models.norm import recorded_stats

    ours, reference = make_pair(BatchNorm2d, nn.BatchNorm2d, momentum=momentum)
    ours.train(), reference.train()
    torch.manual_seed(1)
    unmasked = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    copies = torch.randn(3 * 4, 3, 5, 5, dtype=torch.float64)
    ours.double(), reference.double()
    with recorded_stats(ours) as recorder:
        out_unmasked = ours(unmasked)
        with batch_groups(ours, 3):
            out_copies = ours(copies)
        # nothing folded yet
        assert int(ours.num_batches_tracked) == 3
    recorder.replay(3)
    expected = []
    for n in range(3):
        first = reference(unmasked)
        expected.append(reference(copies[4 * n : 4 * (n + 1)]))
    torch.testing.assert_close(out_unmasked, first)
    torch.testing.assert_close(out_copies, torch.cat(expected))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, msg=key)
    assert int(ours.num_batches_tracked) == 3 + 6
    # a frozen layer records nothing, and a replay without calls changes nothing
    with recorded_stats(ours) as recorder, frozen_bn_stats(ours):
        ours(unmasked)
    assert not any(recorder.calls.values())  # every layer listed, none holding a call
