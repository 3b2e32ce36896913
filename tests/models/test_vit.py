import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

from adios.models import build_backbone
from adios.models.vit import ViTBackbone, patch_size_for, vit_small, vit_tiny


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


# ----------------------------------------------------------------------------- token subsets


def tiny_vit(image_size: int = 16, patch: int = 4) -> ViTBackbone:
    torch.manual_seed(0)
    return ViTBackbone(image_size, patch, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)


def test_all_tokens_is_torchvisions_forward():
    model = tiny_vit()
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(model(x), VisionTransformer.forward(model, x))


def test_every_token_in_any_order_gives_the_full_output():
    """Position embeddings travel with their tokens: a shuffled full set is the same image."""
    model = tiny_vit()
    x = torch.randn(3, 3, 16, 16)
    order = torch.stack([torch.randperm(model.num_patches) for _ in range(3)])
    assert torch.allclose(model(x, order), model(x), atol=1e-5)
    # ... whereas the same tokens with positions reassigned (a model ignoring pos. embeddings
    # would not notice) are a different image
    shuffled = x.reshape(3, 3, 4, 4, 4, 4).flip(2).reshape(3, 3, 16, 16)  # rows of patches
    assert not torch.allclose(model(shuffled), model(x), atol=1e-3)


def test_dropped_patches_are_never_seen():
    model = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 5, 10, 15], [3, 6, 9, 12]])
    changed = x.clone()
    for i, kept in enumerate(keep.tolist()):
        for patch in set(range(16)) - set(kept):
            r, c = divmod(patch, 4)
            changed[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 100 * torch.randn(3, 4, 4)
    assert torch.equal(model(changed, keep), model(x, keep))
    tokens = model.forward_tokens(x, keep)
    assert tokens.shape == (2, 1 + 4, 16)
    # a kept patch does count: changing one changes its image's output only
    kept_changed = x.clone()
    kept_changed[0, :, 4:8, 4:8] += 1.0  # patch 5, kept by image 0 only
    out, ref = model(kept_changed, keep), model(x, keep)
    assert not torch.allclose(out[0], ref[0], atol=1e-4)
    assert torch.equal(out[1], ref[1])


@pytest.mark.parametrize("image_size, grid", [(32, 8), (64, 8), (96, 6)])
def test_vit_tiny_token_grids(image_size, grid):
    model = vit_tiny(image_size)
    assert model.grid == grid and model.num_patches == grid * grid
    keep = torch.arange(grid * grid // 4).expand(2, -1)
    assert model.forward_tokens(torch.randn(2, 3, image_size, image_size), keep).shape == (
        2, 1 + grid * grid // 4, 192)


def test_keep_must_be_batch_by_kept():
    model = tiny_vit()
    with pytest.raises(ValueError, match="keep"):
        model(torch.randn(2, 3, 16, 16), torch.arange(4))
