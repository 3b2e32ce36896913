"""Mask quality against ground-truth instances, for a masker and its chance references.

A learned masker's numbers mean little alone: an untrained U-Net already produces smooth, image-
dependent blobs, and random blobs already overlap objects. So every source is scored the same
way next to two references: the masker at initialisation (when the checkpoint kept it) and
random blob partitions with the same number of masks (:func:`random_blob_masks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adios.evaluation.features import predict_masks
from adios.evaluation.mask_metrics import best_coverage, image_variation, mask_quality
from adios.masking.blobs import random_blob_masks

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
HISTOGRAM_BINS = 20  # over [0, 1]


def _quantiles(values: Tensor) -> dict[str, float | None]:
    if values.numel() == 0:
        return {f"q{round(100 * q)}": None for q in QUANTILES}
    points = torch.quantile(values.double(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {f"q{round(100 * q)}": v for q, v in zip(QUANTILES, points.tolist(), strict=True)}


def _histogram(values: Tensor) -> list[int]:
    """Counts in HISTOGRAM_BINS equal bins over [0, 1] (1.0 falls in the last bin)."""
    return torch.histc(values.double(), bins=HISTOGRAM_BINS, min=0.0, max=1.0).long().tolist()


@torch.no_grad()
def mask_statistics(instances: Tensor, masks: Tensor, collapse_threshold: float = 0.02) -> dict:
    """:func:`mask_quality` plus the distributions behind its means.

    Adds ``coverage_quantiles`` / ``coverage_histogram`` over objects (:func:`best_coverage`),
    ``size_quantiles`` per mask and ``size_histogram`` over (image, mask) pairs of the fraction of
    the image a mask covers, and ``collapsed_per_image``: the mean number of masks per image below
    ``collapse_threshold`` (``collapsed`` counts masks below it on average over the dataset),
    and ``image_variation`` / ``image_variation_argmax`` (:func:`image_variation`, soft / hard).
    """
    masks = masks.float()
    quality = mask_quality(instances, masks, collapse_threshold=collapse_threshold)
    coverage = best_coverage(instances, masks).flatten()
    sizes = masks.mean(dim=(2, 3))  # (B, N)
    return {
        **quality,
        "coverage_quantiles": _quantiles(coverage[~coverage.isnan()]),
        "coverage_histogram": _histogram(coverage[~coverage.isnan()]),
        "size_quantiles": [_quantiles(column) for column in sizes.T],
        "size_histogram": _histogram(sizes.flatten()),
        "collapsed_per_image": (sizes < collapse_threshold).sum(dim=1).double().mean().item(),
        "collapse_threshold": collapse_threshold,
        "image_variation": image_variation(masks),
        "image_variation_argmax": image_variation(masks, hard=True),
        "n_images": int(masks.shape[0]),
    }


def mask_sources(
    images: Tensor,
    masker: nn.Module,
    init_masker: nn.Module | None,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Masks (B, N, H, W) of ``images`` from the masker and its references, keyed by source."""
    trained = predict_masks(masker, images, mean, std, device, batch_size)
    sources = {"trained": trained}
    if init_masker is not None:
        sources["untrained"] = predict_masks(init_masker, images, mean, std, device, batch_size)
    sources["random_blobs"] = random_blob_masks(
        images.shape[0],
        trained.shape[1],
        tuple(images.shape[-2:]),
        generator=torch.Generator().manual_seed(seed),
    )
    return sources


def evaluate_masks(
    instances: Tensor, sources: dict[str, Tensor], collapse_threshold: float = 0.02
) -> dict[str, dict]:
    """:func:`mask_statistics` of every source against the same instance maps."""
    instances = instances.cpu()
    return {
        name: mask_statistics(instances, masks.cpu(), collapse_threshold)
        for name, masks in sources.items()
    }
