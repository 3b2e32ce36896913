import pytest
import torch

from adios.masking.blobs import random_blob_masks


def neighbour_agreement(masks):
    """Fraction of pixels whose right / lower neighbour lies in the same mask."""
    index = masks.argmax(dim=1)
    right = (index[:, :, 1:] == index[:, :, :-1]).float().mean()
    down = (index[:, 1:] == index[:, :-1]).float().mean()
    return right.item(), down.item()


@pytest.mark.parametrize("size", [32, (24, 40)])
def test_one_hot_partition(size):
    masks = random_blob_masks(5, 4, size, torch.Generator().manual_seed(0))
    height, width = (size, size) if isinstance(size, int) else size
    assert masks.shape == (5, 4, height, width)
    assert masks.dtype == torch.float32
    assert ((masks == 0) | (masks == 1)).all()
    assert (masks.sum(dim=1) == 1).all()


@pytest.mark.parametrize("n_masks", [2, 4, 6])
def test_expected_sizes_roughly_equal(n_masks):
    masks = random_blob_masks(400, n_masks, 32, torch.Generator().manual_seed(1))
    sizes = masks.mean(dim=(0, 2, 3)) * n_masks
    assert sizes.min() > 0.9
    assert sizes.max() < 1.1


def test_seeded_generator_is_deterministic():
    first = random_blob_masks(3, 4, 32, torch.Generator().manual_seed(7))
    again = random_blob_masks(3, 4, 32, torch.Generator().manual_seed(7))
    other = random_blob_masks(3, 4, 32, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_blobs_are_smooth():
    masks = random_blob_masks(200, 4, 32, torch.Generator().manual_seed(2))
    right, down = neighbour_agreement(masks)
    assert right > 0.8
    assert down > 0.8


def test_scale_sets_blob_size():
    generator = torch.Generator().manual_seed(3)
    agreement = [
        neighbour_agreement(random_blob_masks(200, 4, 32, generator, scale=scale))[0]
        for scale in (0.5, 0.25, 0.125)
    ]
    assert agreement[0] > agreement[1] > agreement[2]
