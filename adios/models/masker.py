"""The ADIOS occlusion model: a small U-Net that outputs N soft masks partitioning the image.

Architecture (spec section 1, matching the reference implementation):

- ``num_blocks = floor(log2(image_size)) - 1`` encoder blocks and as many decoder blocks; each
  block is ONE conv3x3 (stride 1, padding 1) -> norm -> ReLU;
- nearest-neighbour x0.5 downsampling between encoder blocks, nearest x2 upsampling between
  decoder blocks, every decoder block sees its input concatenated with the mirrored encoder
  activation (skip connection);
- encoder channels: the last three blocks have ``2c``, earlier ones ``c`` (4 blocks:
  ``[c, 2c, 2c, 2c]``, 5: ``[c, c, 2c, 2c, 2c]``, 6: ``[c, c, c, 2c, 2c, 2c]``); decoder block ``i``
  outputs the channel count of the encoder block it mirrors next, the last one ``c``;
- a bottleneck MLP on the ``fs x fs`` map (``fs = image_size / 2**(num_blocks - 1)``):
  ``2c*fs^2 -> 128 -> 128 -> 2c*fs^2``, ReLU after each layer;
- a 1x1 conv to ``n_masks`` channels and a softmax over them, so masks sum to 1 at every pixel.

Optionally (``blur_sigma > 0``, not in the reference) the softmax masks are smoothed by a fixed
Gaussian. A blurred partition is still a partition, but masks can no longer be fine,
image-independent stripes or dots: at small scale such patterns are what a free adversary finds
first (they hurt a CNN encoder more than hiding any object), and they teach nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from adios.config import Config

__all__ = ["OcclusionModel", "build_masker"]

NormKind = Literal["group", "instance", "none"]
_GROUP_NORM_GROUPS = 8
_BOTTLENECK_HIDDEN = 128


def _conv_block(in_channels: int, out_channels: int, norm: NormKind) -> nn.Sequential:
    # A conv bias is redundant when a normalisation with its own shift follows.
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=norm == "none")
    ]
    if norm == "group":
        layers.append(nn.GroupNorm(_GROUP_NORM_GROUPS, out_channels))
    elif norm == "instance":
        layers.append(nn.InstanceNorm2d(out_channels, affine=True))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class OcclusionModel(nn.Module):
    """U-Net masker: normalised images (B, 3, H, W) -> soft masks (B, n_masks, H, W).

    Attributes ``num_blocks`` and ``bottleneck_size`` (``fs``) expose the size-dependent layout.
    """

    def __init__(
        self,
        image_size: int,
        n_masks: int,
        fbase: int = 32,
        norm: NormKind = "group",
        blur_sigma: float = 0.0,
        num_blocks: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"OcclusionModel: image_size must be an int >= 8, got {image_size!r}")
        if num_blocks is None:  # the reference's SimSiam scripts set it (4 at 96 px)
            num_blocks = image_size.bit_length() - 2  # floor(log2(image_size)) - 1, exactly
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 2:
            raise ValueError(f"OcclusionModel: num_blocks must be an int >= 2, got {num_blocks!r}")
        if image_size % 2 ** (num_blocks - 1) != 0:
            raise ValueError(
                f"OcclusionModel: image_size {image_size} gives {num_blocks} blocks, but is not "
                f"divisible by 2**{num_blocks - 1}, so the bottleneck map would not be square"
            )
        if isinstance(n_masks, bool) or not isinstance(n_masks, int) or n_masks < 2:
            raise ValueError(f"OcclusionModel: n_masks must be an int >= 2, got {n_masks!r}")
        if norm not in ("group", "instance", "none"):
            raise ValueError(
                f"OcclusionModel: norm must be 'group', 'instance' or 'none', got {norm!r}"
            )
        if isinstance(fbase, bool) or not isinstance(fbase, int) or fbase < 1:
            raise ValueError(f"OcclusionModel: fbase must be a positive int, got {fbase!r}")
        if norm == "group" and fbase % _GROUP_NORM_GROUPS != 0:
            raise ValueError(
                f"OcclusionModel: fbase must be divisible by {_GROUP_NORM_GROUPS} for group norm, "
                f"got {fbase}"
            )

        if not blur_sigma >= 0:
            raise ValueError(f"OcclusionModel: blur_sigma must be >= 0, got {blur_sigma!r}")
        self.image_size = image_size
        self.n_masks = n_masks
        self.blur_sigma = float(blur_sigma)
        radius = min(int(math.ceil(3 * blur_sigma)), image_size - 1)
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (taps / max(blur_sigma, 1e-12)) ** 2)
        self.register_buffer("blur_kernel", kernel / kernel.sum(), persistent=False)
        self.num_blocks = num_blocks
        self.bottleneck_size = image_size // 2 ** (num_blocks - 1)

        encoder_channels = [2 * fbase if i >= num_blocks - 3 else fbase for i in range(num_blocks)]
        decoder_channels = [encoder_channels[num_blocks - 2 - i] for i in range(num_blocks - 1)]
        decoder_channels.append(fbase)

        self.encoder = nn.ModuleList()
        in_channels = 3
        for out_channels in encoder_channels:
            self.encoder.append(_conv_block(in_channels, out_channels, norm))
            in_channels = out_channels

        bottleneck_channels = encoder_channels[-1]
        bottleneck_features = bottleneck_channels * self.bottleneck_size**2
        self.bottleneck = nn.Sequential(
            nn.Flatten(),
            nn.Linear(bottleneck_features, _BOTTLENECK_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(_BOTTLENECK_HIDDEN, _BOTTLENECK_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(_BOTTLENECK_HIDDEN, bottleneck_features),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (bottleneck_channels, self.bottleneck_size, self.bottleneck_size)),
        )

        self.decoder = nn.ModuleList()
        in_channels = bottleneck_channels
        for i, out_channels in enumerate(decoder_channels):
            skip_channels = encoder_channels[num_blocks - 1 - i]
            self.decoder.append(_conv_block(in_channels + skip_channels, out_channels, norm))
            in_channels = out_channels

        self.head = nn.Conv2d(fbase, n_masks, kernel_size=1)

    def logits(self, x: Tensor) -> Tensor:
        """Pre-softmax mask scores (B, n_masks, H, W)."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"OcclusionModel: expected input (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}"
            )
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            skips.append(x)
            if i < self.num_blocks - 1:
                x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        x = self.bottleneck(x)
        for i, block in enumerate(self.decoder):
            x = block(torch.cat([x, skips[-1 - i]], dim=1))
            if i < self.num_blocks - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """Soft masks (B, n_masks, H, W) that sum to 1 over the mask dimension at every pixel."""
        masks = self.logits(x).softmax(dim=1)
        return self._blur(masks) if self.blur_sigma > 0 else masks

    def _blur(self, masks: Tensor) -> Tensor:
        """Separable Gaussian with reflect padding: a constant stays constant, so sums stay 1."""
        radius = self.blur_kernel.numel() // 2
        k = self.blur_kernel.to(masks.dtype)
        n = masks.shape[1]
        out = F.conv2d(F.pad(masks, (radius, radius, 0, 0), mode="reflect"),
                       k.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
        return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"),
                        k.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)


def build_masker(cfg: Config) -> nn.Module:
    """The masker ``cfg`` describes, for training and for evaluation alike (one place, so that
    an evaluated masker is the trained one: the same blur, norm and width). ``token-adios``:
    the token masker over the ViT's patch grid."""
    m = cfg.masker
    if cfg.masking.mode == "token-adios":
        from adios.models.token_masker import TokenMasker
        from adios.models.vit import patch_size_for

        size = cfg.data.image_size
        return TokenMasker(size, patch_size_for(size), dim=m.token_dim, heads=m.token_heads)
    return OcclusionModel(
        cfg.data.image_size, m.n_masks, fbase=m.fbase, norm=m.norm, blur_sigma=m.blur_sigma,
        num_blocks=m.num_blocks,
    )
