"""Batched inference over uint8 image tensors: backbone features and masker outputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from adios.data.augment import normalize


def _batches(images: Tensor, batch_size: int, desc: str, progress: bool):
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=not progress):
        yield images[start : start + batch_size]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """Eval-mode backbone features of uint8 images, on the CPU as float32."""
    was_training = backbone.training
    backbone.eval()
    feats = [
        backbone(normalize(x.to(device), mean, std)).float().cpu()
        for x in _batches(images, batch_size, "features", progress)
    ]
    backbone.train(was_training)
    return torch.cat(feats)


def feature_spread(features: Tensor) -> float:
    """How far the images' L2-normalised features spread (the SimSiam paper's collapse check):
    their per-dimension standard deviation, averaged and scaled by sqrt(dim), about 1 for
    features spread over the sphere and 0 when every image maps to the same point."""
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    return float(unit.std(dim=0, unbiased=False).mean() * unit.shape[1] ** 0.5)


@torch.no_grad()
def predict_masks(
    masker: nn.Module,
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 256,
) -> Tensor:
    """Soft masks (B, N, H, W) of uint8 images, on the CPU."""
    return torch.cat(
        [masker(normalize(x.to(device), mean, std)).float().cpu()
         for x in _batches(images, batch_size, "masks", False)]
    )
