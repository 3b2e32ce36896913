"""An object-centric occlusion model: slot attention (Locatello et al. 2020) as the ADIOS masker.

N slots compete for the pixels through a softmax over slots, which is already the partition
ADIOS needs; the competition favours grouping pixels with similar features (colour, position)
into one slot, a bias towards whole objects that the U-Net (:class:`OcclusionModel`) lacks.

Layout, for images (B, 3, H, W):

- a small CNN: ``conv_layers`` conv5x5 -> norm -> ReLU blocks of ``fbase`` channels (the first
  ``log2(stride)`` of them with stride 2), giving a feature map of ``H / stride`` pixels a side;
- a soft position embedding: a linear map of the 4-channel grid ``(y, x, 1 - y, 1 - x)`` added
  to the features, so that slots can bind to places as well as colours;
- per-pixel LayerNorm -> MLP to ``slot_dim``, then slot attention: ``iters`` rounds of keys and
  values from the pixels, queries from the slots, a softmax over slots, a weighted mean of the
  values per slot, a GRU update and a residual MLP;
- the masks: the attention logits of the FINAL slots (one more query after the last update, so
  that the last GRU/MLP update is trained too), bilinearly upsampled to H x W when ``stride > 1``,
  and a softmax over slots: N masks summing to 1 at every pixel, as the U-Net's.

Design choices:

- Masks from the attention logits, not a spatial broadcast decoder: in ADIOS nothing asks the
  slots to reconstruct the image, so a decoder would be an unconstrained generator that can
  paint any partition (input-independent stripes included) from the slots, and it would cost N
  full-resolution decoder passes. The attention logits tie every pixel's mask to how well its
  features match each slot, which is where the object bias comes from.
- Learned fixed initial slots (N learned vectors), not a learned Gaussian drawn per forward:
  ``train_step`` calls the masker as ``masker(x)``, the reference schedule calls it twice per
  step and expects the same masks, a resumed run must redraw exactly the same numbers, and the
  evaluation (fg-ARI, mBO, pictures) must be deterministic. With a shared Gaussian the slots are
  identical but for the noise, so the masks would change with every draw (and collapse to 1/N
  everywhere at the noise-free mean). The core is still permutation-equivariant in the slots:
  ``forward(x, slots=init[perm])`` returns ``forward(x)[:, perm]`` (tested), so nothing but the
  initial vectors distinguishes one slot from another.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adios.models.masker import NormKind, conv_block

__all__ = ["SlotMasker"]

_KERNEL = 5  # the paper's CNN uses 5x5 convolutions
_ATTENTION_EPS = 1e-8  # keeps a slot that wins no pixel from dividing by zero in its mean


def _soft_position_grid(height: int, width: int) -> Tensor:
    """(H * W, 4): ``y, x, 1 - y, 1 - x`` in [0, 1] per pixel, row-major."""
    ys = torch.linspace(0.0, 1.0, height)
    xs = torch.linspace(0.0, 1.0, width)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    return torch.cat([grid, 1.0 - grid], dim=-1)


class SlotMasker(nn.Module):
    """Slot-attention masker: normalised images (B, 3, H, W) -> soft masks (B, n_masks, H, W)."""

    def __init__(
        self,
        image_size: int,
        n_masks: int,
        fbase: int = 32,
        norm: NormKind = "group",
        slot_dim: int = 64,
        iters: int = 3,
        stride: int = 2,
        conv_layers: int = 4,
    ) -> None:
        super().__init__()
        for name, value, low in (("image_size", image_size, 8), ("n_masks", n_masks, 2),
                                 ("fbase", fbase, 1), ("slot_dim", slot_dim, 1),
                                 ("iters", iters, 1), ("stride", stride, 1),
                                 ("conv_layers", conv_layers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SlotMasker: {name} must be an int >= {low}, got {value!r}")
        downsamplings = stride.bit_length() - 1
        if stride != 2**downsamplings or downsamplings > conv_layers:
            raise ValueError(
                f"SlotMasker: stride must be a power of 2 up to 2**conv_layers, got {stride}"
            )
        if image_size % stride != 0:
            raise ValueError(f"SlotMasker: image_size {image_size} not divisible by {stride=}")
        self.image_size = image_size
        self.n_masks = n_masks
        self.slot_dim = slot_dim
        self.iters = iters
        self.stride = stride
        self.feature_size = image_size // stride

        blocks, channels = [], 3
        for i in range(conv_layers):
            blocks.append(conv_block(channels, fbase, norm, kernel_size=_KERNEL,
                                     stride=2 if i < downsamplings else 1))
            channels = fbase
        self.encoder = nn.Sequential(*blocks)
        self.position = nn.Linear(4, fbase)
        grid = _soft_position_grid(self.feature_size, self.feature_size)
        self.register_buffer("grid", grid, persistent=False)
        self.features = nn.Sequential(
            nn.LayerNorm(fbase), nn.Linear(fbase, slot_dim), nn.ReLU(inplace=True),
            nn.Linear(slot_dim, slot_dim),
        )

        self.slots = nn.Parameter(torch.randn(n_masks, slot_dim))  # the learned initial slots
        self.norm_inputs = nn.LayerNorm(slot_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_update = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_k = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_v = nn.Linear(slot_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.update = nn.Sequential(
            nn.Linear(slot_dim, 2 * slot_dim), nn.ReLU(inplace=True),
            nn.Linear(2 * slot_dim, slot_dim),
        )

    def _attention_logits(self, slots: Tensor, keys_t: Tensor) -> Tensor:
        """(B, N, P): scaled dot products of the slots' queries with the pixels' keys, given
        transposed (B, D, P) so that the product is a plain batched matmul."""
        queries = self.to_q(self.norm_slots(slots)) / math.sqrt(self.slot_dim)
        return torch.bmm(queries, keys_t.to(queries.dtype))

    def logits(self, x: Tensor, slots: Tensor | None = None) -> Tensor:
        """Pre-softmax mask scores (B, n_masks, H, W); ``slots``: initial slots (N, D) or
        (B, N, D) in place of the learned ones."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.image_size,) * 2:
            raise ValueError(
                f"SlotMasker: expected input (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        features = self.encoder(x).flatten(2).transpose(1, 2)  # (B, P, C)
        inputs = self.norm_inputs(self.features(features + self.position(self.grid)))
        keys_t, values = self.to_k(inputs).transpose(1, 2).contiguous(), self.to_v(inputs)

        slots = self.slots if slots is None else slots
        if slots.shape[-2:] != (self.n_masks, self.slot_dim):
            raise ValueError(
                f"SlotMasker: slots must be ({self.n_masks}, {self.slot_dim}) per image, "
                f"got {tuple(slots.shape)}"
            )
        slots = slots.expand(batch, -1, -1)
        for _ in range(self.iters):
            attention = self._attention_logits(slots, keys_t).softmax(dim=1)  # slots compete
            weights = attention + _ATTENTION_EPS
            weights = weights / weights.sum(dim=-1, keepdim=True)  # a mean over each slot's pixels
            updates = torch.bmm(weights, values.to(weights.dtype))
            previous = slots.reshape(-1, self.slot_dim)
            slots = self.gru(updates.reshape(-1, self.slot_dim).to(previous.dtype), previous)
            slots = slots.view(batch, self.n_masks, self.slot_dim)
            slots = slots + self.update(self.norm_update(slots))
        side = self.feature_size
        scores = self._attention_logits(slots, keys_t).view(batch, self.n_masks, side, side)
        if self.stride > 1:
            scores = F.interpolate(scores, size=(self.image_size,) * 2, mode="bilinear",
                                   align_corners=False)
        return scores

    def forward(self, x: Tensor, slots: Tensor | None = None) -> Tensor:
        """Soft masks (B, n_masks, H, W) that sum to 1 over the mask dimension at every pixel.

        The softmax runs in float32 (also under bf16 autocast), so the sums are 1 to float32
        round-off and no mask is rounded to exactly 0.
        """
        return self.logits(x, slots).float().softmax(dim=1)
