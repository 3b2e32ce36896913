import math
import re

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer

from adios.config import load_config
from adios.errors import ConfigError
from adios.models import build_backbone
from adios.models.vit import ViTBackbone, patch_size_for, timm_init_, vit_small, vit_tiny


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


# ----------------------------------------------------------------------------- initialisation
# Hand-computed expectations for timm's ViT init (timm 0.4.12-0.5.4, the reference's), mapped to
# torchvision's names. Tolerances are 5 standard errors for the tensor's own sample size: the
# sample std of n normal draws has relative standard error 1/sqrt(2n), of n uniform draws
# sqrt(0.2/n); a sample mean has standard error std/sqrt(n); the excess kurtosis of normal draws
# has standard error sqrt(24/n) (a uniform's is -1.2).
PATCH_FAN_IN = 3 * 16 * 16  # ViT-Tiny's 16x16 patch conv at 96 px
BOUND = 1 / math.sqrt(PATCH_FAN_IN)  # PyTorch's default conv init: U(-1/sqrt(fan_in), ...)


def _excess_kurtosis(x: Tensor) -> float:
    x = x.double().flatten()
    centred = x - x.mean()
    return float((centred**4).mean() / (centred**2).mean() ** 2 - 3)


def _is_trunc_normal_002(x: Tensor) -> None:
    """trunc_normal_(std=.02) with timm's absolute cut-offs +-2 (100 std): N(0, 0.02^2)."""
    n = x.numel()
    std, mean = float(x.double().std()), float(x.double().mean())
    assert abs(std / 0.02 - 1) < 5 / math.sqrt(2 * n), (n, std)
    assert abs(mean) < 5 * 0.02 / math.sqrt(n), (n, mean)
    if n >= 5000:  # enough draws to tell the shape: normal, not (Xavier/kaiming) uniform
        assert abs(_excess_kurtosis(x)) < 5 * math.sqrt(24 / n)


def _is_default_conv_uniform(x: Tensor) -> None:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std bound/sqrt(3) = 0.020833 at fan_in 768."""
    n = x.numel()
    assert float(x.abs().max()) <= BOUND
    std = float(x.double().std())
    assert abs(std / (BOUND / math.sqrt(3)) - 1) < 5 * math.sqrt(0.2 / n) + 1 / n, (n, std)
    if n >= 5000:
        assert abs(_excess_kurtosis(x) + 1.2) < 0.05


# parameter name (torchvision's) -> timm's rule; every parameter must match exactly one
TIMM_RULES = [
    (r"class_token", _is_trunc_normal_002),  # timm 0.6+ would draw N(0, 1e-6^2) here
    (r"encoder\.pos_embedding", _is_trunc_normal_002),  # the class token's slot included
    (r"conv_proj\.(weight|bias)", _is_default_conv_uniform),  # timm leaves PyTorch's init
    (r".*self_attention\.in_proj_weight", _is_trunc_normal_002),  # timm's attn.qkv.weight
    (r".*self_attention\.out_proj\.weight", _is_trunc_normal_002),  # timm's attn.proj
    (r".*mlp\.[03]\.weight", _is_trunc_normal_002),  # timm's mlp.fc1, mlp.fc2
    (r".*(in_proj_bias|out_proj\.bias|mlp\.[03]\.bias)", lambda x: torch.equal(
        x, torch.zeros_like(x)) or pytest.fail("a Linear bias is not zero")),
    (r".*ln(_1|_2)?\.weight", lambda x: torch.equal(
        x, torch.ones_like(x)) or pytest.fail("a LayerNorm weight is not one")),
    (r".*ln(_1|_2)?\.bias", lambda x: torch.equal(
        x, torch.zeros_like(x)) or pytest.fail("a LayerNorm bias is not zero")),
]


@torch.no_grad()
def test_timm_init_matches_hand_computed_statistics_parameter_by_parameter():
    torch.manual_seed(0)
    model = vit_tiny(96, init="timm")
    names = dict(model.named_parameters())
    assert len(names) == 4 + 12 * 12 + 2  # embeddings, conv; 12 tensors a block; final norm
    for name, param in names.items():
        rules = [check for pattern, check in TIMM_RULES if re.fullmatch(pattern, name)]
        assert len(rules) == 1, f"{name}: {len(rules)} rules"
        rules[0](param.detach())
    # pooled over the 12 blocks (5.3M draws), the Linear weights' std is 0.02 to 0.1 %
    pooled = torch.cat([p.detach().flatten() for n, p in names.items()
                        if n.endswith(("in_proj_weight", "out_proj.weight", ".weight"))
                        and p.dim() == 2])
    assert pooled.numel() == 12 * (576 * 192 + 192 * 192 + 2 * 768 * 192)
    assert abs(float(pooled.double().std()) / 0.02 - 1) < 5 / math.sqrt(2 * pooled.numel())
    assert float(model.conv_proj.bias.abs().max()) > 0  # uniform bias, not torchvision's zeros


@torch.no_grad()
def test_torchvision_init_stays_the_default():
    """Same seed, no init argument: torchvision's draws, bit for bit, and its own rules."""
    torch.manual_seed(0)
    default = vit_tiny(96)
    torch.manual_seed(0)
    explicit = vit_tiny(96, init="torchvision")
    for (name, a), b in zip(default.state_dict().items(), explicit.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(default.class_token, torch.zeros_like(default.class_token))
    assert torch.equal(default.conv_proj.bias, torch.zeros_like(default.conv_proj.bias))
    block = default.encoder.layers[0]
    xavier = math.sqrt(2 / (192 + 3 * 192))  # in_proj as one (576, 192) Xavier-uniform matrix
    assert abs(float(block.self_attention.in_proj_weight.std()) / xavier - 1) < 0.02
    mlp_bias = block.mlp[0].bias  # torchvision: N(0, 1e-6^2), timm: 0
    assert 0 < float(mlp_bias.abs().max()) < 1e-5
    assert load_config([]).model.vit_init == "torchvision"
    for preset in ("shapes-vit-simclr-token-adios", "shapes-vit-mae-token-adios",
                   "cifar10-vit-simclr-token-adios", "cifar10-vit-mae-token-adios"):
        # the project's own token presets: no reference model to match, results kept
        assert load_config([f"preset={preset}"]).model.vit_init == "torchvision", preset


@torch.no_grad()
def test_timm_init_reaches_the_trained_backbone_and_is_refused_for_a_resnet():
    from adios.engine import build_models

    cfg = load_config(["preset=shapes-vit-simclr-token-adios", "model.vit_init=timm"])
    backbone = build_models(cfg, num_classes=3, device=torch.device("cpu")).backbone
    assert float(backbone.class_token.abs().max()) > 1e-3  # truncated normal 0.02, not zeros
    mlp_bias = backbone.encoder.layers[0].mlp[0].bias
    assert torch.equal(mlp_bias, torch.zeros_like(mlp_bias))
    with pytest.raises(ConfigError, match="model.vit_init"):
        load_config(["model.vit_init=timm"])  # the default preset's ResNet-18
    with pytest.raises(ConfigError, match="model.vit_init"):
        load_config(["preset=shapes-vit-simclr-token-adios", "model.vit_init=jax"])
    with pytest.raises(ValueError, match="vit_init"):
        build_backbone("resnet18", 32, vit_init="timm")
    with pytest.raises(ValueError, match="init"):
        vit_tiny(32, init="jax")  # type: ignore[arg-type]


@torch.no_grad()
def test_timm_init_works_on_any_vit_and_keeps_the_forward():
    model = tiny_vit()
    x = torch.randn(2, 3, 16, 16)
    assert timm_init_(model) is model
    assert torch.isfinite(model(x)).all()
    assert torch.equal(model(x), VisionTransformer.forward(model, x))
    small = vit_small(32, init="timm")
    assert abs(float(small.encoder.layers[0].mlp[0].weight.std()) / 0.02 - 1) < 0.02
