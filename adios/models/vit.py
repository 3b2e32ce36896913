"""Vision Transformer backbones (Tiny, Small) on torchvision's implementation.

The classification head is replaced by an identity, so the model returns the class-token feature
after the final layer norm. Patch size follows the image size so that small images still give a
useful token grid (8x8 tokens below 96 px, patch 16 at 96 px and above as in the ADIOS paper).

``forward(x, keep)`` encodes only the patch tokens listed in ``keep`` (masked-token models, MAE
style): every patch gets its own position embedding before the others are dropped, so a kept
token carries where it came from, and the dropped patches never enter the transformer. Without
``keep`` it is torchvision's forward, all tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
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
        self.grid = image_size // patch_size  # tokens per side; patch i sits at (i // g, i % g)

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def forward_tokens(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Final-layer-norm token features (B, 1 + K, D): the class token, then the kept patches
        in the order of ``keep`` (B, K) patch indices (row-major on the grid); all patches when
        ``keep`` is None."""
        tokens = self._process_input(x) + self.encoder.pos_embedding[:, 1:]
        if keep is not None:
            if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(
                    f"ViT: keep must be (batch, kept) patch indices, got {tuple(keep.shape)}"
                )
            index = keep.to(tokens.device, torch.long).unsqueeze(-1)
            tokens = tokens.gather(1, index.expand(-1, -1, tokens.shape[-1]))
        cls = (self.class_token + self.encoder.pos_embedding[:, :1]).expand(x.shape[0], -1, -1)
        sequence = torch.cat([cls, tokens], dim=1)
        return self.encoder.ln(self.encoder.layers(self.encoder.dropout(sequence)))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Class-token features (B, D) of all patches, or of the ``keep`` subset only."""
        return self.forward_tokens(x, keep)[:, 0]


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
