import pytest
import torch
from torch import nn

from adios.models import build_backbone
from adios.models.vit import patch_size_for, vit_small, vit_tiny


@pytest.mark.parametrize(
    "image_size, patch", [(32, 4), (64, 8), (48, 6), (96, 16), (128, 16), (224, 16)]
)
def test_patch_rule(image_size, patch):
    assert patch_size_for(image_size) == patch


@pytest.mark.parametrize("image_size, tokens", [(32, 8 * 8), (96, 6 * 6)])
def test_vit_tiny_shapes_and_token_grid(image_size, tokens):
    model = vit_tiny(image_size)
    assert model.out_dim == 192
    assert isinstance(model.heads, nn.Identity)
    assert model.conv_proj.stride == (patch_size_for(image_size),) * 2
    assert model.seq_length == tokens + 1  # patches plus the class token
    assert len(model.encoder.layers) == 12
    assert model.encoder.layers[0].self_attention.num_heads == 3
    assert model.encoder.layers[0].mlp[0].out_features == 768
    out = model(torch.randn(2, 3, image_size, image_size))
    assert out.shape == (2, 192)


def test_vit_small_shapes():
    model = vit_small(32)
    assert model.out_dim == 384
    assert model.encoder.layers[0].self_attention.num_heads == 6
    assert model.encoder.layers[0].mlp[0].out_features == 1536
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 384)


def test_explicit_patch_and_divisibility():
    assert vit_tiny(32, patch_size=8).seq_length == 4 * 4 + 1
    with pytest.raises(ValueError, match="divisible"):
        vit_tiny(32, patch_size=5)
    with pytest.raises(ValueError, match="divisible"):
        vit_tiny(50)  # default patch 6 does not divide 50
    with pytest.raises(ValueError, match="image_size"):
        patch_size_for(4)


def test_build_backbone_vit():
    model = build_backbone("vit_small", 32)
    assert model.out_dim == 384
    with pytest.raises(ValueError, match="width"):
        build_backbone("vit_tiny", 32, width=32)
    with pytest.raises(ValueError, match="stem"):
        build_backbone("vit_tiny", 32, stem="cifar")
