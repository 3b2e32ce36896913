"""Mask statistics: the distributions agree with their means and with direct computations."""

import numpy as np
import pytest
import torch

from adios.evaluation.mask_metrics import best_coverage, mask_quality
from adios.evaluation.masks import HISTOGRAM_BINS, evaluate_masks, mask_sources, mask_statistics
from adios.masking.blobs import random_blob_masks
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


def test_sources_are_each_maskers_own_prediction_and_seeded_blobs():
    """Each source is its own masker's softmax on the normalised images (batched or not), the
    untrained one the given initial masker, the blobs the seeded random partitions."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    masker, init = OcclusionModel(32, 3, fbase=8).eval(), OcclusionModel(32, 3, fbase=8).eval()
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    sources = mask_sources(
        images, masker, init, mean, std, torch.device("cpu"), seed=7, batch_size=2
    )
    assert list(sources) == ["trained", "untrained", "random_blobs"]
    normalised = (images / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[
        :, None, None
    ]
    with torch.no_grad():
        torch.testing.assert_close(sources["trained"], masker(normalised))
        torch.testing.assert_close(sources["untrained"], init(normalised))
    blobs = random_blob_masks(5, 3, (32, 32), generator=torch.Generator().manual_seed(7))
    assert torch.equal(sources["random_blobs"], blobs)
    without_init = mask_sources(images, masker, None, mean, std, torch.device("cpu"), seed=7)
    assert list(without_init) == ["trained", "random_blobs"]


def two_squares(batch=4):
    """Objects 1 and 2, two 8 x 8 squares (64 px each) on a 32 x 32 background (896 px)."""
    instances = torch.zeros(batch, 32, 32, dtype=torch.long)
    instances[:, 4:12, 4:12] = 1
    instances[:, 20:28, 20:28] = 2
    return instances


def test_known_mask_sets_get_their_hand_computed_scores():
    """One mask per object scores fg-ARI 1 and mBO 1; both objects in one mask (the third mask
    empty) scores fg-ARI 0 (a single cluster against two), mBO 64 / 128 and one collapsed mask;
    each source is scored on its own masks."""
    instances = two_squares()
    perfect = torch.nn.functional.one_hot(instances, 3).permute(0, 3, 1, 2).float()
    merged = torch.stack([instances == 0, instances > 0, instances < 0], dim=1).float()
    results = evaluate_masks(instances, {"perfect": perfect, "merged": merged})
    assert results["perfect"]["fg_ari"] == pytest.approx(1.0)
    assert results["perfect"]["mbo"] == pytest.approx(1.0)
    assert results["perfect"]["mask_sizes"] == pytest.approx([896 / 1024, 64 / 1024, 64 / 1024])
    assert results["perfect"]["collapsed"] == 0 and results["perfect"]["n_objects"] == 8
    assert results["merged"]["fg_ari"] == pytest.approx(0.0, abs=1e-12)
    assert results["merged"]["mbo"] == pytest.approx(64 / 128)
    assert results["merged"]["coverage"] == pytest.approx(1.0)
    assert results["merged"]["collapsed"] == 1
