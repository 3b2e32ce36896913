"""Masking schemes behind one interface: which pixels of a view the encoder does not see.

The schemes ADIOS is compared with (ADIOS.md §1, "masking baselines"), each usable with every
objective. ``masking.mode`` names one of :data:`SCHEMES`:

- ``none``: no masks (the plain objective);
- ``mae``: MAE-style random patches. The image is tiled by a g x g grid, ``g = round(image_size
  / patch_size)`` (cells spread evenly, sizes differing by at most a pixel when the patch size
  does not divide the image), and exactly ``round(ratio * g^2)`` random cells are hidden, 75 %
  by default. The reference hid 16 px patches of 96 px images, the 6 x 6 token grid of a ViT;
  scaled to the image size the default patch is ``image_size / 6`` (5 px at 32 px);
- ``beit``: BEiT-style blockwise masks. Rectangles of random area (uniform between the minimum
  block area and what is left to cover) and log-uniform aspect ratio in ``block_aspect``
  (0.3-3.3) are added at random positions while they add new pixels without overshooting the
  target (30 % by default); ten failed draws in a row end it, so the coverage never exceeds the
  target and usually lands within one smallest block of it. The reference's smallest block is
  64 px of a 96 px image, 1/144 of it: ``min_block_area = 64 * (image_size / 96)^2`` (7 px at
  32 px);
- ``rectangles``: Context-Encoder-style random rectangles, one per image, hiding ``ratio`` of
  it (25 %, the Context Encoder's central quarter) at a random position, aspect log-uniform in
  ``block_aspect`` (clipped to what fits in the image);
- ``oracle``: ground-truth object masks, for datasets with instance maps (the built-in scenes):
  one object per image, chosen uniformly among the objects visible in the view, optionally
  boxed (its bounding box), grown (``margin`` > 0, dilation) or shrunk (< 0, erosion) by a
  square structuring element, or shuffled within the batch (each image gets another image's
  mask: a control with the statistics of object masks but no relation to the content);
- ``adios`` / ``adios-s``: masks learned by the occlusion model (:mod:`adios.masking.adios`).

A fixed (non-learned) scheme is called as ``scheme(batch, generator, device, objects)`` and
returns float masks (B, 1, H, W), 1 = hidden: one occluding mask per image, which is the ADIOS-s
path of :func:`adios.masking.adios.siamese_loss` with a single mask. Random draws come from the
given CPU ``torch.Generator``, so a seed gives the same masks on every device and a resumed run
redraws them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from adios.data.augment import TwoViewAugment, ViewParams, resized_crop, transfer_params
from adios.masking.tokens import TOKEN_MODES
from adios.perf import upload

if TYPE_CHECKING:
    from adios.config import MaskingConfig

SCHEMES = ("none", "mae", "beit", "rectangles", "oracle", "adios-s", "adios")
LEARNED = ("adios", "adios-s")
REFERENCE_SIZE = 96  # image size at which the reference's baseline sizes are given
DEFAULT_RATIOS = {"mae": 0.75, "beit": 0.30, "rectangles": 0.25}
DEFAULT_ASPECT = (0.3, 3.3)
BLOCK_TRIES = 10  # failed block draws in a row that end a blockwise mask


def default_patch_size(image_size: int) -> int:
    """The reference's 16 px patches of a 96 px image, scaled to ``image_size``."""
    return max(1, round(16 * image_size / REFERENCE_SIZE))


def default_min_block_area(image_size: int) -> int:
    """The reference's 64 px smallest block of a 96 px image, scaled by area."""
    return max(1, round(64 * (image_size / REFERENCE_SIZE) ** 2))


def _check_ratio(ratio: float) -> None:
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")


def _check_aspect(aspect: tuple[float, float]) -> None:
    if not 0 < aspect[0] <= aspect[1]:
        raise ValueError(f"aspect must satisfy 0 < min <= max, got {aspect}")


class MaskScheme:
    """``scheme(batch, generator, device, objects=None) -> (B, 1, H, W)`` float masks."""

    needs_objects: ClassVar[bool] = False  # the oracle reads the views' object layers

    def __call__(
        self,
        batch: int,
        generator: torch.Generator,
        device: torch.device | str,
        objects: Tensor | None = None,
    ) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class RandomPatches(MaskScheme):
    """MAE: exactly ``round(ratio * cells)`` random cells of a g x g grid hidden per image."""

    image_size: int
    patch_size: int
    ratio: float = DEFAULT_RATIOS["mae"]

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        if not 1 <= self.patch_size <= self.image_size:
            raise ValueError(f"patch_size must be in [1, image_size], got {self.patch_size}")

    @property
    def grid(self) -> int:
        return max(1, round(self.image_size / self.patch_size))

    def __call__(self, batch, generator, device, objects=None) -> Tensor:
        cells = self.grid**2
        hidden = round(self.ratio * cells)
        ranks = torch.rand(batch, cells, generator=generator).argsort(dim=1).argsort(dim=1)
        grid = upload((ranks < hidden).float().view(batch, 1, self.grid, self.grid), device)
        return F.interpolate(grid, size=(self.image_size, self.image_size), mode="nearest")


@dataclass(frozen=True)
class Blockwise(MaskScheme):
    """BEiT: random blocks until ``ratio`` of the image is covered (see the module docstring)."""

    image_size: int
    min_block_area: int
    ratio: float = DEFAULT_RATIOS["beit"]
    aspect: tuple[float, float] = DEFAULT_ASPECT

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        _check_aspect(self.aspect)
        if not 1 <= self.min_block_area <= self.image_size**2:
            raise ValueError(
                f"min_block_area must be in [1, image_size^2], got {self.min_block_area}"
            )

    @property
    def target(self) -> int:
        """Pixels to cover per image."""
        return round(self.ratio * self.image_size**2)

    def blocks(self, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """One image's mask (H, W) bool and its accepted blocks (top, left, height, width)."""
        size = self.image_size
        mask = np.zeros((size, size), dtype=bool)
        log_aspect = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        covered, failures, accepted = 0, 0, []
        while covered < self.target and failures < BLOCK_TRIES:
            left_to_cover = self.target - covered
            area = rng.uniform(self.min_block_area, max(self.min_block_area, left_to_cover))
            aspect = math.exp(rng.uniform(*log_aspect))
            height = min(size, max(1, round(math.sqrt(area * aspect))))
            width = min(size, math.ceil(area / height))  # height * width >= area
            top = int(rng.integers(0, size - height + 1))
            left = int(rng.integers(0, size - width + 1))
            block = mask[top : top + height, left : left + width]
            new = height * width - int(block.sum())
            if 0 < new <= left_to_cover:
                block[...] = True
                covered += new
                failures = 0
                accepted.append((top, left, height, width))
            else:
                failures += 1
        return mask, accepted

    def __call__(self, batch, generator, device, objects=None) -> Tensor:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        masks = np.stack([self.blocks(rng)[0] for _ in range(batch)])
        return upload(torch.from_numpy(masks), device).unsqueeze(1).float()


@dataclass(frozen=True)
class Rectangles(MaskScheme):
    """Context Encoder: one random rectangle of ``ratio`` of the image area per image."""

    image_size: int
    ratio: float = DEFAULT_RATIOS["rectangles"]
    aspect: tuple[float, float] = DEFAULT_ASPECT

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        _check_aspect(self.aspect)

    def __call__(self, batch, generator, device, objects=None) -> Tensor:
        size = self.image_size
        area = self.ratio * size**2
        log_aspect = torch.empty(batch, dtype=torch.float64).uniform_(
            math.log(self.aspect[0]), math.log(self.aspect[1]), generator=generator
        )
        # height in [area / size, size] keeps the width area / height inside the image too
        height = (area * log_aspect.exp()).sqrt().clamp(area / size, size).round()
        width = (area / height).round().clamp(1, size)
        offsets = torch.rand(batch, 2, dtype=torch.float64, generator=generator)
        top = (offsets[:, 0] * (size - height + 1)).floor()
        left = (offsets[:, 1] * (size - width + 1)).floor()
        box = upload(torch.stack([top, left, height, width], dim=1).long(), device)
        pixels = torch.arange(size, device=device)
        rows = (pixels >= box[:, :1]) & (pixels < box[:, :1] + box[:, 2:3])
        cols = (pixels >= box[:, 1:2]) & (pixels < box[:, 1:2] + box[:, 3:4])
        return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1).float()


@dataclass(frozen=True)
class ObjectMasks(MaskScheme):
    """The oracle: one visible ground-truth object per image (see the module docstring)."""

    margin: int = 0  # px: > 0 dilates, < 0 erodes
    box: bool = False
    shuffle: bool = False
    needs_objects: ClassVar[bool] = True

    def __call__(self, batch, generator, device, objects=None) -> Tensor:
        if objects is None:
            raise ValueError("the oracle needs the view's object layers (object_layers)")
        count = objects.shape[1]
        visible = objects.flatten(2).amax(dim=2) > 0.5  # the object owns at least one pixel
        scores = upload(torch.rand(batch, count, generator=generator), objects.device)
        if count == 0:
            masks = objects.new_zeros(batch, 1, *objects.shape[2:])
        else:
            choice = torch.where(visible, scores, -1.0).argmax(dim=1)
            masks = objects[torch.arange(batch, device=objects.device), choice]
            masks = (masks * visible.any(dim=1)[:, None, None]).unsqueeze(1)
        if self.box:
            masks = bounding_boxes(masks)
        masks = grow(masks, self.margin)
        if self.shuffle:
            masks = masks[upload(derangement(batch, generator), masks.device)]
        return masks.to(device)


def bounding_boxes(masks: Tensor) -> Tensor:
    """Each mask (B, 1, H, W) replaced by the filled bounding box of its pixels above 0.5."""
    inside = masks > 0.5

    def span(lines: Tensor) -> Tensor:  # (..., L) bool -> True from the first to the last True
        index = torch.arange(lines.shape[-1], device=lines.device)
        first = torch.where(lines, index, lines.shape[-1]).amin(dim=-1, keepdim=True)
        last = torch.where(lines, index, -1).amax(dim=-1, keepdim=True)
        return (index >= first) & (index <= last)

    rows, cols = span(inside.any(dim=3)), span(inside.any(dim=2))
    return (rows[..., :, None] & cols[..., None, :]).to(masks.dtype)


def grow(masks: Tensor, margin: int) -> Tensor:
    """Dilate (margin > 0) or erode (< 0) by a (2|margin|+1)^2 square; outside pixels are
    ignored, so an object cut by the image border is not eroded from that side."""
    if margin == 0:
        return masks
    radius = abs(margin)
    sign = 1.0 if margin > 0 else -1.0
    return sign * F.max_pool2d(sign * masks, 2 * radius + 1, stride=1, padding=radius)


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A random permutation without fixed points (for n >= 2): walk a random order, each
    position taking the next one's item."""
    order = torch.randperm(n, generator=generator)
    permutation = torch.empty_like(order)
    permutation[order] = order.roll(-1)
    return permutation


def object_layers(instances: Tensor, params: ViewParams, out_size: int) -> Tensor:
    """Each object's share of every pixel of a view: (B, K, S, S) for objects 1..K.

    The object indicators go through the view's own crop, resize and flip (the bilinear
    :func:`resized_crop` that made the view), so a mask hides exactly the pixels the object
    contributes to, and edge pixels get the object's fraction, like the image's own pixels.
    """
    count = int(instances.max()) if instances.numel() else 0
    one_hot = F.one_hot(instances.long(), count + 1).permute(0, 3, 1, 2)[:, 1:].float()
    return resized_crop(one_hot, params.boxes, out_size, params.flip)


def views_with_objects(
    augment: TwoViewAugment, images: Tensor, instances: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
    """``augment(images, generator)`` (the very same draws and views) plus each view's object
    layers (:func:`object_layers`), for the oracle."""
    batch, _, height, width = images.shape
    parts = (augment.augment_a, augment.augment_b)
    params = transfer_params(
        [part.sample_params(batch, height, width, generator) for part in parts], images.device
    )
    unit = images.to(torch.float32).div_(255)
    view_a, view_b = (part.apply(unit, p) for part, p in zip(parts, params, strict=True))
    objects = tuple(
        object_layers(instances, p, part.out_size) for part, p in zip(parts, params, strict=True)
    )
    return view_a, view_b, objects


def fixed_scheme(masking: MaskingConfig, image_size: int) -> MaskScheme | None:
    """The fixed scheme ``masking.mode`` names; None for no masks, learned masks and token
    modes (adios.masking.tokens)."""
    mode = masking.mode
    if mode in ("none", *LEARNED, *TOKEN_MODES):
        return None
    ratio = masking.ratio if masking.ratio is not None else DEFAULT_RATIOS.get(mode)
    if mode == "mae":
        patch = masking.patch_size or default_patch_size(image_size)
        return RandomPatches(image_size, patch, ratio)
    if mode == "beit":
        area = masking.min_block_area or default_min_block_area(image_size)
        return Blockwise(image_size, area, ratio, tuple(masking.block_aspect))
    if mode == "rectangles":
        return Rectangles(image_size, ratio, tuple(masking.block_aspect))
    if mode == "oracle":
        return ObjectMasks(masking.oracle_margin, masking.oracle_box, masking.oracle_shuffle)
    raise ValueError(f"masking.mode: unknown scheme {mode!r}; expected one of {SCHEMES}")
