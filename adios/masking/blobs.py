"""Random blob masks: smooth random partitions of an image into N masks.

They are the chance reference for mask metrics (a learned masker should beat random blobs with the
same number of masks) and a masking baseline that, unlike random patches, has the shape statistics
of learned masks.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_blob_masks(
    batch: int,
    n_masks: int,
    size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    scale: float = 0.25,
    device: torch.device | str | None = None,
) -> Tensor:
    """One-hot partitions (batch, n_masks, H, W) into smooth random blobs.

    Every pixel goes to the mask whose smooth random field is largest there; the fields are
    independent Gaussian noise on a coarse grid with cells of ``scale`` x the shorter image side,
    upsampled bilinearly. The masks are exchangeable, so their expected sizes are equal
    (1 / n_masks), and blobs are roughly ``scale`` x the image side across. In one image a mask
    can be empty when there are many masks and few cells (large ``scale``). The noise is drawn on
    ``device``, which defaults to the generator's device so a CUDA generator gives CUDA masks.
    """
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1, got {n_masks}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    height, width = (size, size) if isinstance(size, int) else size
    if device is None and generator is not None:
        device = generator.device
    # Cells of scale x the shorter side keep blobs round on non-square images; one more grid point
    # than cells so that the grid spans the image edge to edge.
    cell = scale * min(height, width)
    grid = (math.ceil(height / cell) + 1, math.ceil(width / cell) + 1)
    noise = torch.randn(batch, n_masks, *grid, generator=generator, device=device)
    fields = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=True)
    winner = fields.max(dim=1).indices
    return F.one_hot(winner, n_masks).permute(0, 3, 1, 2).float()
