import time

import matplotlib.image
import pytest
import torch

from adios.viz import argmax_masks, colour_code, colour_instances, mask_colours, mask_figure


@pytest.mark.parametrize("n", [1, 4, 10, 16, 30])
def test_mask_colours_are_distinct_rgb(n):
    colours = mask_colours(n)
    assert colours.shape == (n, 3)
    assert colours.min() >= 0 and colours.max() <= 1
    distances = torch.cdist(colours, colours) + torch.eye(n) * 10
    assert distances.min() > 0.05


def test_colour_code_of_hard_masks_is_the_mask_colour():
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, 5, (2, 6, 7), generator=generator)
    masks = torch.nn.functional.one_hot(index, 5).permute(0, 3, 1, 2).float()
    coded = colour_code(masks)
    assert coded.shape == (2, 3, 6, 7)
    expected = mask_colours(5)[index].permute(0, 3, 1, 2)
    torch.testing.assert_close(coded, expected)


def test_colour_code_blends_soft_masks_by_weight():
    masks = torch.tensor([0.25, 0.75, 0.0]).reshape(1, 3, 1, 1)
    colours = mask_colours(3)
    torch.testing.assert_close(
        colour_code(masks)[0, :, 0, 0], 0.25 * colours[0] + 0.75 * colours[1]
    )


def test_mask_figure_writes_a_png(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 32, 32), generator=generator, dtype=torch.uint8)
    masks = torch.rand(10, 6, 32, 32, generator=generator).softmax(dim=1)
    start = time.perf_counter()
    path = mask_figure(images, masks, tmp_path / "figs" / "masks.png", title="epoch 3")
    elapsed = time.perf_counter() - start
    assert path == tmp_path / "figs" / "masks.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = matplotlib.image.imread(path)
    height, width = picture.shape[:2]
    # 8 rows (max_images) and 2 + 6 columns of tiles at least 96 px wide, and not absurdly more.
    assert 8 * 96 < height < 8 * 96 * 1.5
    assert 8 * 96 < width < 8 * 96 * 1.5
    assert [p.name for p in path.parent.iterdir()] == ["masks.png"]  # no temporary files left
    assert elapsed < 5  # about 0.3 s on one CPU; generous for busy machines


def test_mask_figure_accepts_float_images_and_replaces_existing_file(tmp_path):
    images = torch.rand(2, 3, 16, 16)
    masks = torch.rand(2, 3, 8, 8).softmax(dim=1)  # lower resolution than the images
    path = tmp_path / "masks.png"
    path.write_bytes(b"old")
    mask_figure(images, masks, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    height, width = matplotlib.image.imread(path).shape[:2]
    assert 2 * 96 < height < 2 * 96 * 1.5  # 16 px images upscaled to >= 96 px tiles
    assert 5 * 96 < width < 5 * 96 * 1.5


def test_argmax_masks_give_each_pixel_to_its_largest_mask():
    masks = torch.tensor([[0.5, 0.1], [0.3, 0.6], [0.2, 0.3]]).reshape(1, 3, 1, 2)
    hard = argmax_masks(masks)
    assert hard[0, :, 0, 0].tolist() == [1, 0, 0] and hard[0, :, 0, 1].tolist() == [0, 1, 0]


def test_colour_instances_draws_background_black_and_objects_apart():
    instances = torch.tensor([[[0, 1, 2, 3]]], dtype=torch.uint8)
    picture = colour_instances(instances)[0, :, 0]  # (3, 4)
    assert picture[:, 0].tolist() == [0, 0, 0]
    objects = picture[:, 1:].T
    assert (objects.sum(1) > 0.5).all() and torch.pdist(objects).min() > 0.1


def test_mask_figure_adds_objects_and_untrained_columns(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), generator=generator, dtype=torch.uint8)
    masks = torch.rand(4, 3, 32, 32, generator=generator).softmax(dim=1)
    truth = torch.randint(0, 3, (4, 32, 32), generator=generator, dtype=torch.uint8)
    plain = matplotlib.image.imread(mask_figure(images, masks, tmp_path / "a.png"))
    full = matplotlib.image.imread(
        mask_figure(images, masks, tmp_path / "b.png", truth=truth, untrained=masks.flip(1)))
    tile = 96 + 2 * 5  # upscaled 32 px tile and its padding
    assert plain.shape[1] == tile * (1 + 2 + 3)  # image, argmax, soft, 3 views
    assert full.shape[1] == tile * (1 + 4 + 3)  # + objects, untrained
    assert plain.shape[0] == full.shape[0]
