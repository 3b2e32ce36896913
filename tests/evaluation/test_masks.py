"""Mask statistics: the distributions agree with their means and with direct computations."""

import numpy as np
import pytest
import torch

from adios.evaluation.mask_metrics import best_coverage, mask_quality
from adios.evaluation.masks import HISTOGRAM_BINS, evaluate_masks, mask_sources, mask_statistics
from adios.models import OcclusionModel


def scene_batch(seed=0, batch=10, size=16, n_masks=3):
    generator = torch.Generator().manual_seed(seed)
    instances = torch.zeros(batch, size, size, dtype=torch.long)
    for image in range(batch):
        for object_id in range(1, image % 3 + 2):
            top, left = torch.randint(0, size - 6, (2,), generator=generator).tolist()
            instances[image, top : top + 5, left : left + 6] = object_id
    logits = torch.randn(batch, n_masks, size // 4, size // 4, generator=generator) * 3
    masks = torch.nn.functional.interpolate(logits, scale_factor=4).softmax(dim=1)
    masks[0, 2] = 0.001  # a collapsed mask in image 0
    return instances, masks / masks.sum(dim=1, keepdim=True)


def test_statistics_agree_with_direct_computation():
    instances, masks = scene_batch()
    stats = mask_statistics(instances, masks, collapse_threshold=0.05)
    sizes = masks.mean(dim=(2, 3)).numpy()
    assert stats["n_images"] == 10 and sum(stats["size_histogram"]) == sizes.size
    counts, _ = np.histogram(sizes.ravel(), bins=HISTOGRAM_BINS, range=(0, 1))
    assert stats["size_histogram"] == counts.tolist()
    for column, quantiles in enumerate(stats["size_quantiles"]):
        assert quantiles["q50"] == pytest.approx(np.quantile(sizes[:, column], 0.5))
        assert quantiles["q10"] == pytest.approx(np.quantile(sizes[:, column], 0.1))
    assert stats["collapsed_per_image"] == pytest.approx((sizes < 0.05).sum() / 10)
    coverage = best_coverage(instances, masks).flatten()
    coverage = coverage[~coverage.isnan()].numpy()
    assert sum(stats["coverage_histogram"]) == len(coverage) == stats["n_objects"]
    assert stats["coverage_quantiles"]["q90"] == pytest.approx(np.quantile(coverage, 0.9))
    quality = mask_quality(instances, masks, collapse_threshold=0.05)
    assert {k: stats[k] for k in quality} == quality


def test_sources_share_images_and_mask_count():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    masker, init = OcclusionModel(32, 3, fbase=8), OcclusionModel(32, 3, fbase=8)
    sources = mask_sources(images, masker, init, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"))
    assert list(sources) == ["trained", "untrained", "random_blobs"]
    assert all(m.shape == (4, 3, 32, 32) for m in sources.values())
    assert not torch.equal(sources["trained"], sources["untrained"])
    assert list(
        mask_sources(images, masker, None, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"))
    ) == ["trained", "random_blobs"]
    instances = torch.zeros(4, 32, 32, dtype=torch.uint8)
    instances[:, 4:12, 4:12] = 1
    instances[:, 20:28, 20:28] = 2
    results = evaluate_masks(instances, sources)
    assert set(results) == set(sources) and results["trained"]["n_objects"] == 8
