"""Mask pictures: each image, its objects, its masks (hard and soft), and what each mask leaves.

The grid is assembled as one pixel array and drawn once, so a figure of 8 images with 6 masks
takes a fraction of a second, and small images stay crisp (nearest-neighbour upscaling, drawn
pixel for pixel).
"""

import math
import os
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from adios.checkpoint import temporary_name

_MIN_TILE_PX = 96  # smaller images are upscaled by an integer factor to at least this size
_PAD_PX = 5  # white space around each tile
_FRAME_PX = 3  # coloured frame around each masked view, drawn inside the padding
_HEADER_PX = 24  # column titles
_TITLE_PX = 26  # optional figure title
_DPI = 100


def mask_colours(n: int) -> Tensor:
    """(n, 3) distinct RGB colours in [0, 1]; mask n is drawn in colour n in every picture."""
    if n <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:n]
    elif n <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:n]
    else:
        colours = matplotlib.colormaps["hsv"](np.arange(n) / n)
    return torch.from_numpy(np.asarray(colours, dtype=np.float32).reshape(n, -1)[:, :3].copy())


def colour_code(masks: Tensor) -> Tensor:
    """(B, 3, H, W) picture of soft masks (B, N, H, W): each pixel mixes the mask colours by weight.

    Where one mask is 1 the pixel has exactly that mask's colour.
    """
    colours = mask_colours(masks.shape[1]).to(device=masks.device, dtype=masks.dtype)
    return torch.einsum("bnhw,nc->bchw", masks, colours)


def _as_float_images(images: Tensor) -> Tensor:
    """uint8 (0-255) or float ([0, 1]) images, grey or RGB, as float RGB in [0, 1] on the CPU."""
    images = images.detach().cpu()
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float().clamp(0, 1)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _tile_grid(tiles: Tensor, frames: Tensor, scale: int) -> Tensor:
    """Lay out tiles (R, C, 3, H, W) as one (height, width, 3) array with padding and frames.

    ``frames`` (C, 3) is each column's frame colour (white for no visible frame).
    """
    rows, cols, _, height, width = tiles.shape
    tiles = F.interpolate(tiles.flatten(0, 1), scale_factor=scale, mode="nearest")
    tiles = tiles.unflatten(0, (rows, cols))
    height, width = height * scale, width * scale
    cells = torch.ones(rows, cols, 3, height + 2 * _PAD_PX, width + 2 * _PAD_PX)
    inset = _PAD_PX - _FRAME_PX
    cells[..., inset:-inset, inset:-inset] = frames[None, :, :, None, None]
    cells[..., _PAD_PX:-_PAD_PX, _PAD_PX:-_PAD_PX] = tiles
    return cells.permute(0, 3, 1, 4, 2).reshape(rows * cells.shape[-2], cols * cells.shape[-1], 3)


def savefig_atomic(figure: Figure, path: Path, **options: Any) -> None:
    """``figure.savefig`` (in the format the suffix names, at ``_DPI`` unless ``options`` say
    otherwise) into a temporary file beside ``path``, renamed over it: readers never see half
    a file, and a symbolic link at ``path`` is replaced, never written through. Created by
    ``open``, the file gets the permissions of every other file of a run (the umask's)."""
    temporary = temporary_name(path)
    fmt = path.suffix[1:].lower() or "png"
    try:
        with open(temporary, "wb") as file:
            figure.savefig(file, **{"format": fmt, "dpi": _DPI, **options})
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def argmax_masks(masks: Tensor) -> Tensor:
    """Hard masks: each pixel wholly given to its most likely mask, (B, N, H, W) -> same shape."""
    return F.one_hot(masks.argmax(dim=1), masks.shape[1]).permute(0, 3, 1, 2).to(masks.dtype)


def colour_instances(instances: Tensor) -> Tensor:
    """(B, 3, H, W) picture of instance maps (B, H, W), 0 = background drawn black.

    Objects take a palette unrelated to the mask colours: object k and mask k are not matched.
    """
    palette = matplotlib.colormaps["Set2"].colors
    colours = torch.tensor([(0.0, 0.0, 0.0), *palette], dtype=torch.float32)[:, :3]
    index = instances.long().cpu()
    index = torch.where(index > 0, (index - 1) % (len(colours) - 1) + 1, index)
    return colours[index].permute(0, 3, 1, 2)


def mask_figure(
    images: Tensor,
    masks: Tensor,
    path: str | Path,
    max_images: int = 8,
    title: str | None = None,
    *,
    truth: Tensor | None = None,
    untrained: Tensor | None = None,
) -> Path:
    """Save a PNG grid: one row per image; columns image, [ground-truth objects], argmax masks
    (for N > 1), soft masks, [the untrained masker's argmax masks], then image * (1 - m_n) for
    each mask.

    ``images`` are (B, 3, H, W) uint8 in 0-255 or float in [0, 1]; ``masks`` (and ``untrained``)
    are soft masks (B, N, H', W'), resized bilinearly to the images if needed; ``truth`` are
    instance maps (B, H, W), 0 = background. The soft column blends the mask colours over a faded
    grey copy of the image by weight, the argmax columns show each pixel's most likely mask; each
    masked view is framed and titled in its mask's colour.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = _as_float_images(images[:max_images])

    def fitted(m: Tensor) -> Tensor:
        m = m[:max_images].detach().cpu().float()
        if m.shape[-2:] != images.shape[-2:]:
            m = F.interpolate(m, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return m

    masks = fitted(masks)
    n_masks = masks.shape[1]
    colours = mask_colours(n_masks)

    grey = images.mean(dim=1, keepdim=True).expand_as(images)
    columns: list[tuple[str, Tensor]] = [("image", images)]
    if truth is not None:
        columns.append(("objects", colour_instances(truth[:max_images])))
    if n_masks > 1:  # one mask (a fixed scheme's, or hidden tokens) has no argmax to show
        columns.append(("argmax", colour_code(argmax_masks(masks))))
    columns.append(("soft masks", 0.75 * colour_code(masks) + 0.25 * grey))
    if untrained is not None:
        columns.append(("untrained", colour_code(argmax_masks(fitted(untrained)))))
    views = images.unsqueeze(1) * (1 - masks.unsqueeze(2))
    tiles = torch.cat([torch.stack([t for _, t in columns], dim=1), views], dim=1)
    frames = torch.cat([torch.ones(len(columns), 3), colours])
    scale = math.ceil(_MIN_TILE_PX / min(images.shape[-2:]))
    grid = _tile_grid(tiles, frames, scale).numpy()

    top = _HEADER_PX + (_TITLE_PX if title else 0)
    height, width = grid.shape[0] + top, grid.shape[1]
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    axes = figure.add_axes((0, 0, 1, grid.shape[0] / height))
    axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    column_width = width / tiles.shape[1]
    header_y = 1 - (top - _HEADER_PX / 2) / height
    labels = [label for label, _ in columns] + [f"x·(1−m{n})" for n in range(1, n_masks + 1)]
    for column, label in enumerate(labels):
        style = {"color": "black"}
        if column >= len(columns):
            colour = colours[column - len(columns)]
            luminance = float(colour @ torch.tensor([0.299, 0.587, 0.114]))
            style = {
                "color": "black" if luminance > 0.55 else "white",
                "bbox": {"facecolor": colour.tolist(), "edgecolor": "none", "pad": 2},
            }
        figure.text(
            (column + 0.5) * column_width / width,
            header_y,
            label,
            ha="center",
            va="center",
            fontsize=9,
            **style,
        )
    if title:
        figure.text(0.5, 1 - _TITLE_PX / 2 / height, title, ha="center", va="center", fontsize=11)
    savefig_atomic(figure, path)
    return path
