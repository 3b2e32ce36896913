import matplotlib.image
import pytest
import torch

from adios.viz import (
    _FRAME_PX,
    _HEADER_PX,
    _PAD_PX,
    _TITLE_PX,
    argmax_masks,
    colour_code,
    colour_instances,
    mask_colours,
    mask_figure,
)


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


def read_tiles(path, rows, cols, tile, top):
    """The picture at ``path`` and its (rows, cols, 3, tile, tile) tiles, in [0, 1] RGB."""
    picture = torch.from_numpy(matplotlib.image.imread(path)[..., :3].copy())
    cell = tile + 2 * _PAD_PX
    grid = picture[top:].reshape(rows, cell, cols, cell, 3).permute(0, 2, 4, 1, 3)
    return picture, grid, grid[..., _PAD_PX:-_PAD_PX, _PAD_PX:-_PAD_PX]


def upscale(x, scale):
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def test_mask_figure_draws_image_masks_and_one_framed_view_per_mask(tmp_path):
    """Pixel by pixel (to the PNG's 8 bits): 8 rows (max_images), columns image, argmax masks,
    colour-coded soft masks over grey, then image * (1 - m_n) framed in mask n's colour; 32 px
    tiles are scaled by 3 (the smallest factor reaching 96 px), nearest-neighbour."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 32, 32), generator=generator, dtype=torch.uint8)
    masks = torch.rand(10, 6, 32, 32, generator=generator).softmax(dim=1)
    path = mask_figure(images, masks, tmp_path / "figs" / "masks.png", title="epoch 3")
    assert path == tmp_path / "figs" / "masks.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["masks.png"]  # no temporary files left
    scale, rows, cols, top = 3, 8, 3 + 6, _HEADER_PX + _TITLE_PX
    cell = 32 * scale + 2 * _PAD_PX
    picture, cells, tiles = read_tiles(path, rows, cols, 32 * scale, top)
    assert picture.shape == (top + rows * cell, cols * cell, 3)

    shown = images[:8].float() / 255
    grey = shown.mean(dim=1, keepdim=True).expand_as(shown)
    expected = torch.cat(
        [
            shown[:, None],
            colour_code(argmax_masks(masks[:8]))[:, None],
            (0.75 * colour_code(masks[:8]) + 0.25 * grey)[:, None],
            shown[:, None] * (1 - masks[:8, :, None]),
        ],
        dim=1,
    )
    torch.testing.assert_close(tiles, upscale(expected, scale), rtol=0, atol=1.01 / 255)
    # the frame ring between padding and tile: white for the first three columns, mask colours
    # after
    inset = _PAD_PX - _FRAME_PX
    ring = cells[..., inset:_PAD_PX, inset:-inset]  # the top band of each frame
    frames = torch.cat([torch.ones(3, 3), mask_colours(6)])
    torch.testing.assert_close(
        ring, frames[None, :, :, None, None].expand_as(ring), rtol=0, atol=1.01 / 255
    )
    assert (cells[..., :inset, :] == 1).all()  # white padding outside the frames


def test_mask_figure_accepts_float_images_and_replaces_existing_file(tmp_path):
    images = torch.rand(2, 3, 16, 16)
    masks = torch.rand(2, 3, 8, 8).softmax(dim=1)  # lower resolution than the images
    path = tmp_path / "masks.png"
    path.write_bytes(b"old")
    mask_figure(images, masks, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    scale = 6  # 16 px images upscaled to >= 96 px tiles
    picture, _, tiles = read_tiles(path, 2, 3 + 3, 16 * scale, _HEADER_PX)  # no title
    assert picture.shape == (_HEADER_PX + 2 * (96 + 2 * _PAD_PX), 6 * (96 + 2 * _PAD_PX), 3)
    torch.testing.assert_close(tiles[:, 0], upscale(images, scale), rtol=0, atol=1.01 / 255)
    full = torch.nn.functional.interpolate(masks, size=(16, 16), mode="bilinear")
    views = images[:, None] * (1 - full[:, :, None])
    torch.testing.assert_close(tiles[:, 3:], upscale(views, scale), rtol=0, atol=1.01 / 255)


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
    cell = 96 + 2 * _PAD_PX  # upscaled 32 px tile and its padding
    assert plain.shape[1] == cell * (1 + 2 + 3)  # image, argmax, soft, 3 views
    assert full.shape[1] == cell * (1 + 4 + 3)  # + objects, untrained
    assert plain.shape[0] == full.shape[0]
    _, _, tiles = read_tiles(tmp_path / "b.png", 4, 8, 96, _HEADER_PX)
    expected = torch.stack([colour_instances(truth), colour_code(argmax_masks(masks)),
                            colour_code(argmax_masks(masks.flip(1)))], dim=1)
    torch.testing.assert_close(tiles[:, [1, 2, 4]], upscale(expected, 3), rtol=0,
                               atol=1.01 / 255)


def test_mask_pictures_get_the_permissions_of_every_other_file(tmp_path):
    """A temporary file from tempfile.mkstemp is 0600; a picture must be readable like the rest."""
    other = tmp_path / "other.txt"
    other.write_text("x")
    path = mask_figure(torch.zeros(1, 3, 16, 16), torch.full((1, 2, 16, 16), 0.5),
                       tmp_path / "masks.png")
    assert path.stat().st_mode & 0o777 == other.stat().st_mode & 0o777
