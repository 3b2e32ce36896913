import math

import pytest
import torch
from torch import nn

from adios.models.norm import BatchNorm2d
from adios.objectives import BYOL, SimCLR, SimSiam, build_objective

SMALL_HEADS = {
    "simclr": {"proj_hidden": 16, "proj_out": 8},
    "byol": {"proj_hidden": 16, "proj_out": 8, "pred_hidden": 12},
    "simsiam": {"proj_hidden": 16, "proj_out": 8, "pred_hidden": 4},
}
PREDICTS = {"simclr": False, "byol": True, "simsiam": True}


class TinyConvNet(nn.Module):
    def __init__(self, out_dim: int = 6):
        super().__init__()
        self.out_dim = out_dim
        self.layers = nn.Sequential(
            nn.Conv2d(3, out_dim, 3, padding=1, bias=False),
            BatchNorm2d(out_dim),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def make(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_objective(name, TinyConvNet(), **{**SMALL_HEADS[name], **kwargs})


@pytest.mark.parametrize("name", ["simclr", "byol", "simsiam"])
def test_forward_views_keys_and_shapes(name: str) -> None:
    objective = make(name)
    out = objective.forward_views(torch.randn(5, 3, 8, 8))
    expected_keys = {"h", "z"} | ({"p"} if PREDICTS[name] else set())
    expected_keys |= {"t"} if name == "byol" else set()
    assert set(out) == expected_keys
    assert out["h"].shape == (5, 6)
    for key in expected_keys - {"h"}:
        assert out[key].shape == (5, 8), key
    loss = objective.pair_loss(out, objective.forward_views(torch.randn(5, 3, 8, 8)))
    assert loss.ndim == 0
    loss.backward()
    # every trainable parameter is reached (a non-zero gradient), the frozen target never
    for name, p in objective.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and name.startswith("target_"), name


@pytest.mark.parametrize("name", ["simclr", "byol", "simsiam"])
def test_head_modules_and_backbone_hold_exactly_the_trainable_parameters(name: str) -> None:
    objective = make(name)
    listed = {
        id(p) for m in [objective.backbone, *objective.head_modules()] for p in m.parameters()
    }
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    assert listed == trainable


def test_build_objective_rejects_unknown_names_and_options() -> None:
    assert isinstance(make("simclr"), SimCLR)
    assert isinstance(make("byol"), BYOL)
    assert isinstance(make("simsiam"), SimSiam)
    with pytest.raises(TypeError, match="temprature") as info:
        build_objective("simclr", TinyConvNet(), temprature=0.1, pred_hidden=3)
    assert "pred_hidden" in str(info.value)
    with pytest.raises(ValueError, match="mocov3"):
        build_objective("mocov3", TinyConvNet())


def test_masks_both_views_only_for_simsiam() -> None:
    assert [make(n).masks_both_views for n in ["simclr", "byol", "simsiam"]] == [False, False, True]


def test_simclr_prefers_matching_views() -> None:
    objective = make("simclr", temperature=0.2)
    images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    views = objective.forward_views(images)
    shuffled = {k: v[torch.roll(torch.arange(16), 1)] for k, v in views.items()}
    assert objective.pair_loss(views, views) < objective.pair_loss(views, shuffled)
    assert objective.loss.temperature == 0.2


def test_byol_target_is_a_frozen_copy_kept_in_the_online_mode() -> None:
    objective = make("byol")
    target_params = [
        *objective.target_backbone.parameters(),
        *objective.target_projector.parameters(),
    ]
    online_params = [*objective.backbone.parameters(), *objective.projector.parameters()]
    assert not any(p.requires_grad for p in target_params)
    for target, online in zip(target_params, online_params, strict=True):
        assert target is not online
        torch.testing.assert_close(target, online)
    objective.requires_grad_(False).requires_grad_(True)
    assert not any(p.requires_grad for p in target_params)
    objective.eval()
    assert not objective.target_backbone.training and not objective.target_projector.training
    objective.train()
    assert objective.target_backbone.training and objective.target_projector.training

    out = objective.forward_views(torch.randn(4, 3, 8, 8))
    assert not out["t"].requires_grad
    # The loss reaches the parameters only through the online predictions.
    detached = {**out, "p": out["p"].detach()}
    assert not objective.pair_loss(detached, detached).requires_grad


@pytest.mark.parametrize(
    ("step", "tau"),
    [(0, 0.99), (5, 1 - 0.01 * (math.cos(math.pi / 2) + 1) / 2), (10, 1.0)],
)
def test_byol_ema_moves_target_by_one_minus_tau(step: int, tau: float) -> None:
    objective = make("byol")
    with torch.no_grad():
        for p in [*objective.backbone.parameters(), *objective.projector.parameters()]:
            p.add_(torch.randn_like(p))
    online = [
        p.clone() for p in [*objective.backbone.parameters(), *objective.projector.parameters()]
    ]
    before = [
        p.clone()
        for p in [*objective.target_backbone.parameters(), *objective.target_projector.parameters()]
    ]
    objective.after_encoder_step(step, total_steps=10)
    after = [*objective.target_backbone.parameters(), *objective.target_projector.parameters()]
    for old, new, source in zip(before, after, online, strict=True):
        torch.testing.assert_close(new, tau * old + (1 - tau) * source)
    assert not any(p.requires_grad for p in after)


def test_byol_loss_is_symmetrised_sum() -> None:
    objective = make("byol")
    a = objective.forward_views(torch.randn(4, 3, 8, 8))
    b = objective.forward_views(torch.randn(4, 3, 8, 8))
    cos = torch.nn.functional.cosine_similarity
    expected = (2 - 2 * cos(a["p"], b["t"])).mean() + (2 - 2 * cos(b["p"], a["t"])).mean()
    torch.testing.assert_close(objective.pair_loss(a, b), expected)


def test_simsiam_stop_gradient_on_projections() -> None:
    objective = make("simsiam")
    a = objective.forward_views(torch.randn(4, 3, 8, 8))
    b = objective.forward_views(torch.randn(4, 3, 8, 8))
    loss = objective.pair_loss(a, b)
    cos = torch.nn.functional.cosine_similarity
    expected = -0.5 * cos(a["p"], b["z"]).mean() - 0.5 * cos(b["p"], a["z"]).mean()
    torch.testing.assert_close(loss, expected)
    # With the predictions cut off nothing is left to differentiate: z only ever acts as a target.
    a_cut, b_cut = ({**v, "p": v["p"].detach()} for v in (a, b))
    assert not objective.pair_loss(a_cut, b_cut).requires_grad


@pytest.mark.parametrize("name", ["simclr", "simsiam"])
def test_after_encoder_step_is_a_no_op_without_target(name: str) -> None:
    objective = make(name)
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    objective.after_encoder_step(3, 10)
    for key, value in objective.state_dict().items():
        torch.testing.assert_close(value, before[key])


def _brute_force_simsiam_adios(views: dict, sym: bool, no: bool, both: bool) -> torch.Tensor:
    """The reference's per-mask loss written out term by term: a list, then its mean."""
    cos = torch.nn.functional.cosine_similarity
    a, b, am, bm = views["a"], views["b"], views["a~"], views["b~"]
    terms = [-cos(am["p"], b["z"].detach()).mean(), -cos(bm["p"], a["z"].detach()).mean()]
    if sym:
        terms += [-cos(b["p"], am["z"].detach()).mean(), -cos(a["p"], bm["z"].detach()).mean()]
    if no:
        terms += [-cos(a["p"], b["z"].detach()).mean(), -cos(b["p"], a["z"].detach()).mean()]
    if both:
        terms += [-cos(am["p"], bm["z"].detach()).mean(), -cos(bm["p"], am["z"].detach()).mean()]
    return torch.stack(terms).mean()


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("no", [False, True])
@pytest.mark.parametrize("both", [False, True])
def test_simsiam_masked_loss_matches_a_loop_over_the_flagged_terms(
    sym: bool, no: bool, both: bool
) -> None:
    flags = {"use_symmetry_mask": sym, "use_no_mask": no, "use_both_mask": both}
    objective = make("simsiam", **flags)
    assert len(objective.terms) == 2 + 2 * (sym + no + both)
    torch.manual_seed(1)
    views = {k: objective.forward_views(torch.randn(4, 3, 8, 8)) for k in ("a", "b", "a~", "b~")}
    loss = objective.masked_loss(views["a"], views["b"], views["a~"], views["b~"])
    expected = _brute_force_simsiam_adios(views, sym, no, both)
    torch.testing.assert_close(loss, expected)
    # Gradients agree too (the stop-gradients sit on the same targets).
    params = list(objective.parameters())
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    for got, want in zip(grads, expected_grads, strict=True):
        if want is None:
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want)
