"""The token masker: one transformer block over patch embeddings, one keep score per patch.

Why a transformer block and not the occlusion U-Net pooled to the patch grid: the choice it makes
is among the encoder's own patches, so it can work at token resolution (64 tokens at 32 px)
instead of at every pixel; one block of width 64 costs about 1 % of a ViT-Tiny pass, which
matters when the whole point of dropping tokens is speed, while a U-Net at full resolution would
spend its pixel detail on boundaries that pooling to the grid throws away. Self-attention still
lets every patch's score depend on the whole image (AdaMAE's sampler has the same shape).

The score head starts at zero, so an untrained masker gives equal scores: its first draws are
exactly random-token masking (``token-random``), and the game moves it away from there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.vision_transformer import EncoderBlock

__all__ = ["TokenMasker"]


class TokenMasker(nn.Module):
    """Normalised images (B, 3, H, W) -> keep scores (B, L), patch ``i`` at ``(i // g, i % g)``."""

    def __init__(self, image_size: int, patch_size: int, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size != 0:
            raise ValueError(
                f"TokenMasker: image_size {image_size} must be divisible by patch_size {patch_size}"
            )
        if dim < 1 or heads < 1 or dim % heads != 0:
            raise ValueError(f"TokenMasker: dim {dim} must be a positive multiple of heads {heads}")
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.pos = nn.Parameter(0.02 * torch.randn(1, self.grid**2, dim))
        self.block = EncoderBlock(heads, dim, 2 * dim, dropout=0.0, attention_dropout=0.0)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"TokenMasker: expected input (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}"
            )
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.score(self.norm(self.block(tokens))).squeeze(-1)
