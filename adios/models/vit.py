"""Vision Transformer backbones (Tiny, Small) on torchvision's implementation.

The classification head is replaced by an identity, so the model returns the class-token feature
after the final layer norm. Patch size follows the image size so that small images still give a
useful token grid (8x8 tokens below 96 px, patch 16 at 96 px and above as in the ADIOS paper).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import VisionTransformer

__all__ = ["ViTBackbone", "patch_size_for", "vit_small", "vit_tiny"]


def patch_size_for(image_size: int) -> int:
    """Default patch size: 16 from 96 px up, otherwise an 8x8 token grid (32 px -> 4)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"patch_size_for: image_size must be an int >= 8, got {image_size!r}")
    return 16 if image_size >= 96 else image_size // 8


class ViTBackbone(VisionTransformer):
    """torchvision ViT returning class-token features of size ``out_dim = hidden_dim``."""

    def __init__(
        self,
        image_size: int,
        patch_size: int | None,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
    ) -> None:
        if patch_size is None:
            patch_size = patch_size_for(image_size)
        if patch_size < 1 or image_size % patch_size != 0:
            raise ValueError(
                f"ViT: image_size {image_size} must be divisible by patch_size {patch_size}"
            )
        super().__init__(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
        )
        self.heads = nn.Identity()
        self.out_dim = hidden_dim


def vit_tiny(image_size: int, patch_size: int | None = None) -> ViTBackbone:
    """ViT-Tiny: 12 layers, width 192, 3 heads, MLP 768; randomly initialised."""
    return ViTBackbone(
        image_size, patch_size, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768
    )


def vit_small(image_size: int, patch_size: int | None = None) -> ViTBackbone:
    """ViT-Small: 12 layers, width 384, 6 heads, MLP 1536; randomly initialised."""
    return ViTBackbone(
        image_size, patch_size, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536
    )
