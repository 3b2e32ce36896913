import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from adios.evaluation.mask_metrics import (
    adjusted_rand_index,
    best_coverage,
    best_overlap,
    foreground_ari,
    image_variation,
    mask_quality,
    mean_best_overlap,
)

HAND_MADE_PAIRS = {
    "identical": ([0, 0, 1, 1, 2], [0, 0, 1, 1, 2]),
    "permuted labels": ([0, 0, 1, 1, 2], [5, 5, 0, 0, 3]),
    "all in one predicted cluster": ([0, 0, 1, 1, 2], [0, 0, 0, 0, 0]),
    "both single cluster": ([4, 4, 4], [1, 1, 1]),
    "true single cluster, split prediction": ([1, 1, 1, 1], [0, 0, 1, 1]),
    "all singletons": ([0, 1, 2, 3], [3, 2, 1, 0]),
    "one sample": ([2], [7]),
    "discordant": ([0, 0, 1, 1], [0, 1, 0, 1]),
    "partial": ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]),
}


@pytest.mark.parametrize("case", HAND_MADE_PAIRS)
def test_ari_matches_sklearn_on_hand_made_cases(case):
    labels_true, labels_pred = HAND_MADE_PAIRS[case]
    expected = adjusted_rand_score(labels_true, labels_pred)
    assert adjusted_rand_index(torch.tensor(labels_true), torch.tensor(labels_pred)) == (
        pytest.approx(expected, abs=1e-12)
    )


def test_ari_matches_sklearn_on_random_cases():
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        n = int(torch.randint(2, 300, (1,), generator=generator))
        n_true, n_pred = torch.randint(1, 8, (2,), generator=generator).tolist()
        labels_true = torch.randint(0, n_true, (n,), generator=generator) * 7 + 3
        # Correlate the prediction with the truth half of the time, so ARIs are not all near 0.
        labels_pred = torch.where(
            torch.rand(n, generator=generator) < 0.5,
            labels_true % n_pred,
            torch.randint(0, n_pred, (n,), generator=generator),
        )
        expected = adjusted_rand_score(labels_true.numpy(), labels_pred.numpy())
        assert adjusted_rand_index(labels_true, labels_pred) == pytest.approx(expected, abs=1e-12)


def random_scenes(batch=12, size=16, seed=0):
    """Instance maps with 0..3 rectangular objects each, and blocky predictions."""
    generator = torch.Generator().manual_seed(seed)
    instances = torch.zeros(batch, size, size, dtype=torch.long)
    for image in range(batch):
        for object_id in range(1, image % 4 + 1):
            top, left = torch.randint(0, size - 4, (2,), generator=generator).tolist()
            height, width = torch.randint(3, 8, (2,), generator=generator).tolist()
            instances[image, top : top + height, left : left + width] = object_id
    coarse = torch.randint(0, 4, (batch, 1, size // 4, size // 4), generator=generator)
    assignment = torch.nn.functional.interpolate(coarse.float(), scale_factor=4).long()[:, 0]
    return instances, assignment


def sklearn_foreground_ari(instances, assignment, min_objects):
    values = []
    for truth, prediction in zip(instances, assignment, strict=True):
        foreground = truth > 0
        n_objects = len(np.unique(truth[foreground]))
        if n_objects < min_objects or n_objects == 0:
            values.append(math.nan)
        else:
            values.append(adjusted_rand_score(truth[foreground], prediction[foreground]))
    return np.array(values)


@pytest.mark.parametrize("min_objects", [1, 2, 3])
def test_foreground_ari_matches_sklearn_per_image(min_objects):
    instances, assignment = random_scenes()
    ari = foreground_ari(instances, assignment, min_objects=min_objects)
    expected = sklearn_foreground_ari(instances.numpy(), assignment.numpy(), min_objects)
    assert np.isnan(expected).sum() > 0  # the batch includes excluded images
    np.testing.assert_allclose(ari.numpy(), expected, atol=1e-12)


def test_foreground_ari_excludes_one_object_and_empty_scenes():
    instances = torch.zeros(3, 4, 4, dtype=torch.long)
    instances[1, :2, :2] = 1  # one object
    instances[2, :2, :2], instances[2, 2:, 2:] = 1, 2  # two objects
    everything_in_one_mask = torch.zeros(3, 4, 4, dtype=torch.long)
    ari = foreground_ari(instances, everything_in_one_mask)
    assert math.isnan(ari[0]) and math.isnan(ari[1])
    assert ari[2] == 0.0
    # With one-object scenes included, a single all-covering mask scores a perfect 1 there.
    assert foreground_ari(instances, everything_in_one_mask, min_objects=1)[1] == 1.0


def test_soft_masks_are_scored_through_their_argmax():
    instances, assignment = random_scenes(seed=1)
    noise = torch.rand(assignment.shape[0], 4, *assignment.shape[1:])
    soft = (torch.nn.functional.one_hot(assignment, 4).permute(0, 3, 1, 2) * 2 + noise).softmax(1)
    torch.testing.assert_close(
        foreground_ari(instances, soft), foreground_ari(instances, assignment), equal_nan=True
    )
    torch.testing.assert_close(
        best_overlap(instances, soft), best_overlap(instances, assignment), equal_nan=True
    )


def test_best_overlap_hand_made():
    instances = torch.zeros(2, 4, 4, dtype=torch.long)
    instances[0, :, :2] = 1  # 8 pixels
    instances[0, :2, 2:] = 2  # 4 pixels
    instances[1, 2:, 2:] = 2  # only object 2 in the second image
    assignment = torch.zeros(2, 4, 4, dtype=torch.long)
    assignment[0, :, 3] = 1  # mask 0: columns 0-2 (12 px), mask 1: column 3 (4 px)
    assignment[1, 2:, 2:] = 1  # second image: mask 1 is exactly object 2
    overlap = best_overlap(instances, assignment)
    assert overlap.shape == (2, 2)
    # Object 1: 8 / 12 with mask 0. Object 2: max(2 / 14, 2 / 6) = 1 / 3 with mask 1.
    torch.testing.assert_close(overlap[0], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert math.isnan(overlap[1, 0]) and overlap[1, 1] == 1.0
    assert mean_best_overlap(instances, assignment) == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)


def test_best_overlap_matches_brute_force():
    instances, assignment = random_scenes(seed=2)
    overlap = best_overlap(instances, assignment)
    for image in range(len(instances)):
        for object_id in range(1, int(instances.max()) + 1):
            object_mask = instances[image] == object_id
            if not object_mask.any():
                assert math.isnan(overlap[image, object_id - 1])
                continue
            ious = []
            for mask_id in range(4):
                mask = assignment[image] == mask_id
                ious.append((object_mask & mask).sum().item() / (object_mask | mask).sum().item())
            assert overlap[image, object_id - 1].item() == pytest.approx(max(ious))


def test_mask_quality_on_tiny_batch():
    instances = torch.zeros(2, 2, 4, dtype=torch.long)
    instances[0, :, :2], instances[0, :, 2:] = 1, 2  # two objects filling the image
    instances[1, 0, 0] = 1  # one object of one pixel
    masks = torch.zeros(2, 3, 2, 4)
    masks[0, 0, :, :2] = 0.9  # image 0: mask 0 on object 1, mask 1 on object 2
    masks[0, 1, :, :2] = 0.1
    masks[0, 1, :, 2:] = 1.0
    masks[1, 1] = 0.99  # image 1: mask 1 everywhere, mask 2 nearly empty
    masks[1, 2] = 0.01
    quality = mask_quality(instances, masks)
    assert quality["fg_ari"] == 1.0 and quality["n_images_ari"] == 1
    # Objects: image 0 both IoU 1; image 1 object 1 (1 px) with mask 1 (8 px): IoU 1/8.
    assert quality["mbo"] == pytest.approx((1 + 1 + 1 / 8) / 3)
    assert quality["n_objects"] == 3
    np.testing.assert_allclose(
        quality["mask_sizes"], [0.9 / 4, (0.1 / 2 + 1 / 2 + 0.99) / 2, 0.01 / 2]
    )
    assert quality["collapsed"] == 1
    hard = mask_quality(instances, masks.argmax(dim=1), n_masks=4, collapse_threshold=0.3)
    np.testing.assert_allclose(hard["mask_sizes"], [4 / 16, 12 / 16, 0, 0])
    assert hard["collapsed"] == 3
    assert hard["fg_ari"] == quality["fg_ari"] and hard["mbo"] == quality["mbo"]


def test_foreground_ari_hand_made_one_object_and_empty_foreground_against_sklearn():
    instances = torch.zeros(4, 4, 4, dtype=torch.long)
    assignment = torch.zeros(4, 4, 4, dtype=torch.long)
    instances[0, 1:3, 1:3] = 1  # one object, cut in two by the masks
    assignment[0, :, 2:] = 1
    instances[1, :2, :] = 3  # one object inside one mask
    assignment[1, 2:, :] = 1
    # image 2: empty foreground (no object at all)
    instances[3, :, :2], instances[3, :, 2:] = 1, 2  # two objects, masks split along rows
    assignment[3, 2:, :] = 1
    ari = foreground_ari(instances, assignment, min_objects=1)
    for image in (0, 1, 3):
        foreground = instances[image] > 0
        expected = adjusted_rand_score(
            instances[image][foreground].numpy(), assignment[image][foreground].numpy()
        )
        assert ari[image].item() == pytest.approx(expected, abs=1e-12)
    assert ari[0] == 0.0 and ari[1] == 1.0  # a single true cluster: 1 only if not split
    # sklearn scores two empty labellings 1.0; an empty foreground is excluded (NaN) instead
    assert adjusted_rand_score([], []) == 1.0 and math.isnan(ari[2])
    quality = mask_quality(instances, assignment, n_masks=2)
    assert quality["n_images_ari"] == 1 and quality["fg_ari"] == pytest.approx(ari[3].item())


def test_best_coverage_matches_brute_force_and_feeds_mask_quality():
    instances, assignment = random_scenes(seed=3)
    coverage = best_coverage(instances, assignment)
    for image in range(len(instances)):
        for object_id in range(1, int(instances.max()) + 1):
            object_mask = instances[image] == object_id
            if not object_mask.any():
                assert math.isnan(coverage[image, object_id - 1])
                continue
            inside = [(object_mask & (assignment[image] == m)).sum().item() for m in range(4)]
            expected = max(inside) / object_mask.sum().item()
            assert coverage[image, object_id - 1].item() == pytest.approx(expected)
    quality = mask_quality(instances, assignment, n_masks=4)
    assert quality["coverage"] == pytest.approx(coverage.nanmean().item())


def test_image_variation_is_zero_for_fixed_masks_and_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    fixed = torch.softmax(torch.randn(1, 3, 6, 6, generator=g), dim=1).expand(5, -1, -1, -1)
    assert image_variation(fixed) == pytest.approx(0.0, abs=1e-7)
    assert image_variation(fixed, hard=True) == 0.0
    masks = torch.softmax(3 * torch.randn(7, 3, 6, 6, generator=g), dim=1)
    values = masks.double().numpy()
    assert image_variation(masks) == pytest.approx(values.std(axis=0).mean())  # numpy: ddof=0
    one_hot = np.eye(3)[values.argmax(axis=1)]  # (B, H, W, N)
    assert image_variation(masks, hard=True) == pytest.approx(one_hot.std(axis=0).mean())
    # two images whose hard masks swap: every one-hot entry is 0 in one and 1 in the other
    swap = torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])])[:, :, None, None]
    assert image_variation(swap.expand(2, 2, 4, 4), hard=True) == pytest.approx(0.5)
    uniform = torch.softmax(50 * torch.rand(4000, 4, 2, 2, generator=g), dim=1)
    assert image_variation(uniform, hard=True) == pytest.approx(math.sqrt(3) / 4, abs=0.01)
