import pytest
import torch
from torch import nn

from adios.models.masker import OcclusionModel


def encoder_channels(model):
    return [block[0].out_channels for block in model.encoder]


def decoder_channels(model):
    return [(block[0].in_channels, block[0].out_channels) for block in model.decoder]


@pytest.mark.parametrize("image_size", [32, 64, 96])
def test_masks_partition_every_pixel(image_size):
    torch.manual_seed(0)
    model = OcclusionModel(image_size, n_masks=3, fbase=8)
    masks = model(torch.randn(2, 3, image_size, image_size))
    assert masks.shape == (2, 3, image_size, image_size)
    assert torch.all(masks >= 0)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, image_size, image_size))


@pytest.mark.parametrize(
    "image_size, blocks, bottleneck", [(8, 2, 4), (32, 4, 4), (64, 5, 4), (96, 5, 6), (224, 6, 7)]
)
def test_block_count_and_bottleneck_size(image_size, blocks, bottleneck):
    model = OcclusionModel(image_size, n_masks=2, fbase=8)
    assert model.num_blocks == blocks == len(model.encoder) == len(model.decoder)
    assert model.bottleneck_size == bottleneck
    c = 8
    linear_dims = [
        (m.in_features, m.out_features) for m in model.bottleneck if isinstance(m, nn.Linear)
    ]
    flat = 2 * c * bottleneck**2
    assert linear_dims == [(flat, 128), (128, 128), (128, flat)]


def test_channel_layout_matches_reference_table():
    # Encoder [c, ..., 2c, 2c, 2c]; decoder input = previous decoder output + mirrored skip.
    c = 8
    assert encoder_channels(OcclusionModel(32, 2, fbase=c)) == [c, 2 * c, 2 * c, 2 * c]
    assert encoder_channels(OcclusionModel(64, 2, fbase=c)) == [c, c, 2 * c, 2 * c, 2 * c]
    assert decoder_channels(OcclusionModel(64, 2, fbase=c)) == [
        (4 * c, 2 * c),
        (4 * c, 2 * c),
        (4 * c, c),
        (2 * c, c),
        (2 * c, c),
    ]
    assert encoder_channels(OcclusionModel(224, 2, fbase=c)) == [c, c, c, 2 * c, 2 * c, 2 * c]


def test_resolution_halves_in_encoder_and_doubles_in_decoder():
    model = OcclusionModel(32, n_masks=2, fbase=8)
    sizes = {}
    for name, module in model.named_modules():
        if name.count(".") == 1 and name.split(".")[0] in ("encoder", "decoder"):
            module.register_forward_hook(
                lambda _m, _i, out, name=name: sizes.__setitem__(name, out.shape[-1])
            )
    model(torch.randn(1, 3, 32, 32))
    assert [sizes[f"encoder.{i}"] for i in range(4)] == [32, 16, 8, 4]
    assert [sizes[f"decoder.{i}"] for i in range(4)] == [4, 8, 16, 32]


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = OcclusionModel(32, n_masks=4, fbase=8)
    masks = model(torch.randn(3, 3, 32, 32))
    (masks * torch.randn_like(masks)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "norm, norm_type, conv_bias",
    [("group", nn.GroupNorm, False), ("instance", nn.InstanceNorm2d, False), ("none", None, True)],
)
def test_norm_options(norm, norm_type, conv_bias):
    model = OcclusionModel(32, n_masks=2, fbase=8, norm=norm)
    for block in [*model.encoder, *model.decoder]:
        assert (block[0].bias is not None) == conv_bias
        if norm_type is None:
            assert len(block) == 2 and isinstance(block[1], nn.ReLU)
        else:
            assert isinstance(block[1], norm_type)
            assert block[1].weight is not None  # affine
    if norm == "group":
        assert model.encoder[0][1].num_groups == 8
    masks = model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 32, 32))


def test_logits_are_pre_softmax():
    model = OcclusionModel(32, n_masks=3, fbase=8)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model.logits(x).softmax(dim=1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 100, "n_masks": 2}, "divisible by 2\\*\\*4"),
        ({"image_size": 4, "n_masks": 2}, "image_size"),
        ({"image_size": 32, "n_masks": 1}, "n_masks"),
        ({"image_size": 32, "n_masks": 2, "fbase": 12}, "divisible by 8"),
        ({"image_size": 32, "n_masks": 2, "norm": "batch"}, "norm"),
        ({"image_size": 32, "n_masks": 2, "fbase": 0}, "fbase"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OcclusionModel(**kwargs)


def test_fbase_not_multiple_of_8_is_fine_without_group_norm():
    model = OcclusionModel(32, n_masks=2, fbase=12, norm="instance")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)


def test_wrong_input_size_raises():
    with pytest.raises(ValueError, match="expected input"):
        OcclusionModel(32, n_masks=2, fbase=8)(torch.randn(1, 3, 64, 64))


def test_num_blocks_override_gives_the_reference_simsiam_unet():
    """SimSiam scripts pass --num_blocks 4 at 96 px: channels [c, 2c, 2c, 2c], a 12x12 bottleneck,
    decoder inputs [4c, 4c, 4c, 2c] and outputs [2c, 2c, c, c] (reference src/utils/unet.py)."""
    c = 8
    model = OcclusionModel(96, 4, fbase=c, num_blocks=4)
    assert (model.num_blocks, model.bottleneck_size) == (4, 12)
    assert encoder_channels(model) == [c, 2 * c, 2 * c, 2 * c]
    assert decoder_channels(model) == [(4 * c, 2 * c), (4 * c, 2 * c), (4 * c, c), (2 * c, c)]
    masks = model(torch.randn(2, 3, 96, 96))
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 96, 96))
    with pytest.raises(ValueError, match="num_blocks"):
        OcclusionModel(96, 4, fbase=c, num_blocks=1)
