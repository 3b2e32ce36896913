import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from adios.models import build_backbone
from adios.models.norm import BatchNorm2d, batch_groups
from adios.models.resnet import ResNet18


def randomise_batch_norms(model: nn.Module) -> None:
    """Non-trivial BN state, so that a wrong key mapping cannot go unnoticed."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(std=0.1)
                module.running_mean.normal_(std=0.1)
                module.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("stem, image_size", [("imagenet", 64), ("cifar", 32)])
def test_state_dict_loads_into_torchvision_and_features_match(stem, image_size):
    torch.manual_seed(0)
    ours = ResNet18(width=64, stem=stem).eval()
    randomise_batch_norms(ours)
    reference = torchvision.models.resnet18()
    if stem == "cifar":
        reference.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        reference.maxpool = nn.Identity()
    result = reference.load_state_dict(ours.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    reference.fc = nn.Identity()
    reference.eval()

    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("image_size", [32, 64])
def test_width_scales_channels_and_output(stem, image_size):
    model = ResNet18(width=16, stem=stem)
    assert model.out_dim == 128
    assert [model.get_submodule(f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [
        16,
        32,
        64,
        128,
    ]
    assert model(torch.randn(2, 3, image_size, image_size)).shape == (2, 128)


def test_stems():
    cifar = ResNet18(width=8, stem="cifar")
    assert (cifar.conv1.kernel_size, cifar.conv1.stride, cifar.conv1.padding) == (
        (3, 3),
        (1, 1),
        (1, 1),
    )
    assert isinstance(cifar.maxpool, nn.Identity)
    imagenet = ResNet18(width=8, stem="imagenet")
    assert (imagenet.conv1.kernel_size, imagenet.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    with pytest.raises(ValueError, match="stem"):
        ResNet18(stem="tiny")
    with pytest.raises(ValueError, match="width"):
        ResNet18(width=0)


def test_all_batch_norms_are_adios_and_init_is_torchvision_like():
    torch.manual_seed(0)
    model = ResNet18(width=16)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 1 + 8 * 2 + 3  # stem, two per block, three downsample branches
    assert all(isinstance(m, BatchNorm2d) for m in norms)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    # kaiming normal, fan_out: std = sqrt(2 / (out_channels * k * k)).
    conv = model.layer4[1].conv2
    expected_std = (2 / (conv.out_channels * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)


def test_zero_init_residual_zeroes_last_bn_of_each_block_only():
    model = ResNet18(width=8, zero_init_residual=True)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            assert torch.all(block.bn2.weight == 0)
            assert torch.all(block.bn1.weight == 1)
    assert torch.all(ResNet18(width=8).layer1[0].bn2.weight == 1)


def test_batch_groups_makes_concatenated_forward_equal_separate_forwards():
    torch.manual_seed(0)
    model = ResNet18(width=8)
    reference = copy.deepcopy(model)
    views = [torch.randn(3, 3, 16, 16) for _ in range(2)]
    with batch_groups(model, 2):
        out = model(torch.cat(views))
    expected = torch.cat([reference(view) for view in views])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for (name, a), (_, b) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "image_size, stem, expected_kernel", [(32, "auto", 3), (64, "auto", 3), (96, "auto", 7)]
)
def test_build_backbone_resnet_auto_stem(image_size, stem, expected_kernel):
    model = build_backbone("resnet18", image_size, width=8, stem=stem)
    assert isinstance(model, ResNet18)
    assert model.conv1.kernel_size == (expected_kernel, expected_kernel)
    assert model.out_dim == 64


def test_build_backbone_rejects_unknown_options():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet50", 32)
    with pytest.raises(ValueError, match="stem"):
        build_backbone("resnet18", 32, stem="big")
    assert build_backbone("resnet18", 32, stem="imagenet").conv1.kernel_size == (7, 7)


def test_cifar_reference_stem_pads_two_and_keeps_pytorch_default_init():
    """The reference's 32 px stem: 34x34 maps after conv1; conv1 keeps nn.Conv2d's own init."""
    model = ResNet18(width=8, stem="cifar-reference")
    assert (model.conv1.kernel_size, model.conv1.padding) == ((3, 3), (2, 2))
    stem_maps = model.relu(model.bn1(model.conv1(torch.randn(2, 3, 32, 32))))
    assert stem_maps.shape == (2, 8, 34, 34)
    # Default init is kaiming_uniform(a=sqrt(5)): |w| <= 1 / sqrt(fan_in) = 1 / sqrt(27);
    # kaiming_normal(fan_out) has std sqrt(2 / 72) = 0.167 and exceeds that bound with certainty.
    bound = 1 / math.sqrt(3 * 3 * 3)
    assert model.conv1.weight.abs().max() <= bound
    kaiming = ResNet18(width=8, stem="cifar").conv1.weight
    assert kaiming.abs().max() > bound
    # The other convolutions keep the kaiming init of the cifar stem.
    torch.testing.assert_close(model.layer1[0].conv1.weight.std(), torch.tensor(math.sqrt(2 / 72)),
                               rtol=0.25, atol=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)
