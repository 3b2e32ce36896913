"""MAE: the encoder sees the visible patch tokens only; a light decoder reconstructs the others.

The loss of an image is the mean squared error on its hidden patches of pixel targets normalised
per patch (MAE's ``norm_pix_loss``: each target patch minus its mean, over its standard
deviation), so the model is scored on structure rather than on a patch's brightness. Images are
independent (layer norms only), which makes the per-image loss exactly the reward the token
masker's score-function estimator needs (:mod:`adios.masking.tokens`).

It is not a :class:`~adios.objectives.base.SiameseObjective` (one view, no pair loss), but offers
the members the training loop uses: ``backbone``, ``feature_dim``, ``forward_views``,
``head_modules`` and ``after_encoder_step``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.vision_transformer import EncoderBlock

from adios.models.vit import ViTBackbone

__all__ = ["MAE", "MAEDecoder", "hidden_patches", "patchify"]

PIXEL_EPS = 1e-6


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p * p * C), patches in the ViT's row-major token order."""
    b, c, h, w = x.shape
    p = patch_size
    patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return patches.reshape(b, (h // p) * (w // p), p * p * c)


def hidden_patches(keep: Tensor, num_patches: int) -> Tensor:
    """Bool (B, L): True where a patch is not in ``keep`` (B, K)."""
    hidden = torch.ones(keep.shape[0], num_patches, dtype=torch.bool, device=keep.device)
    return hidden.scatter(1, keep, False)


class MAEDecoder(nn.Module):
    """Encoded visible tokens -> predicted pixels of every patch: mask tokens fill the hidden
    places, a decoder position embedding says where each token is."""

    def __init__(self, in_dim: int, num_patches: int, patch_size: int, dim: int, depth: int,
                 heads: int) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1 + num_patches, dim))
        self.blocks = nn.Sequential(
            *[EncoderBlock(heads, dim, 4 * dim, 0.0, 0.0) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pred = nn.Linear(dim, patch_size**2 * 3)

    def forward(self, encoded: Tensor, keep: Tensor) -> Tensor:
        """(B, 1 + K, D) class token + kept tokens, (B, K) their places -> (B, L, p * p * 3)."""
        visible = self.embed(encoded)
        index = keep.unsqueeze(-1).expand(-1, -1, visible.shape[-1])
        tokens = self.mask_token.expand(encoded.shape[0], self.num_patches, -1)
        tokens = tokens.scatter(1, index, visible[:, 1:])
        sequence = torch.cat([visible[:, :1], tokens], dim=1) + self.pos
        return self.pred(self.norm(self.blocks(sequence)))[:, 1:]


class MAE(nn.Module):
    """Masked autoencoder around a :class:`ViTBackbone`; the decoder has its own width."""

    masks_both_views = False

    def __init__(
        self,
        backbone: nn.Module,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, ViTBackbone):
            raise ValueError("MAE needs a ViT backbone (model.backbone=vit_tiny or vit_small)")
        if decoder_dim % decoder_heads != 0:
            raise ValueError(
                f"MAE: decoder_dim {decoder_dim} must be a multiple of decoder_heads "
                f"{decoder_heads}"
            )
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        self.decoder = MAEDecoder(backbone.out_dim, backbone.num_patches, self.patch_size,
                                  decoder_dim, decoder_depth, decoder_heads)

    @property
    def feature_dim(self) -> int:
        return self.backbone.out_dim

    def forward_views(self, x: Tensor, keep: Tensor | None = None) -> dict[str, Tensor]:
        """``h``: class-token features of all patches (or of ``keep``), what a probe reads."""
        return {"h": self.backbone(x, keep)}

    def reconstruct(self, x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted patches (B, L, p * p * 3) from the ``keep`` tokens, and the encoder's
        class-token features (B, D) of those tokens."""
        encoded = self.backbone.forward_tokens(x, keep)
        return self.decoder(encoded, keep), encoded[:, 0]

    def per_image_loss(self, x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Loss of each image (B,) on its hidden patches, and the features of its visible ones."""
        prediction, features = self.reconstruct(x, keep)
        target = patchify(x, self.patch_size).float()
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + PIXEL_EPS).sqrt()
        error = (prediction.float() - target).pow(2).mean(-1)
        hidden = hidden_patches(keep, error.shape[1]).to(error.dtype)
        return (error * hidden).sum(1) / hidden.sum(1), features

    def head_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def after_encoder_step(self, step: int, total_steps: int) -> None:
        """Nothing to do (no target network)."""
