import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

import adios.data.augment as augment
from adios.data.augment import (
    BatchAugment,
    TwoViewAugment,
    ViewConfig,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    colour_jitter,
    gaussian_blur,
    grayscale,
    normalize,
    resized_crop,
    sample_crop_boxes,
    solarize,
    transfer_params,
)

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)
ALL_OFF = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0, solarize_p=0.0)
BYOL_B = ViewConfig(blur_p=0.1, solarize_p=0.2)


def uint8_images(batch: int, height: int = 12, width: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)


def colour_images(batch: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Float images in [0, 1] with the pixels that stress colour ops: grays, ties, 0 and 1."""
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    images[:, :, 0, :] = images[:, :, 0, :].round()  # saturated primaries, black, white
    images[:, 1, 1, :] = images[:, 0, 1, :]  # red == green
    images[:, :, 2, :] = images[:, :1, 2, :]  # gray
    return images


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- end to end ----------------------------------------------------------------------------------


def test_two_views_dtype_shape_device_and_range():
    images = uint8_images(6, height=20, width=28)
    view_a, view_b = TwoViewAugment(ViewConfig(), BYOL_B, 16, MEAN, STD)(images, seeded(0))
    low = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    for view in (view_a, view_b):
        assert view.dtype == torch.float32
        assert view.shape == (6, 3, 16, 16)
        assert view.device == images.device
        per_channel = view.transpose(0, 1).reshape(3, -1)
        assert (per_channel.min(dim=1).values >= low - 1e-5).all()
        assert (per_channel.max(dim=1).values <= high + 1e-5).all()
    assert not torch.allclose(view_a, view_b)


def test_inputs_must_be_uint8_batches():
    augmenter = BatchAugment(ViewConfig(), 8, MEAN, STD)
    with pytest.raises(TypeError, match="uint8"):
        augmenter(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        TwoViewAugment(ViewConfig(), ViewConfig(), 8, MEAN, STD)(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.rand(2, 3, 8, 8), MEAN, STD)
    with pytest.raises(ValueError, match="shape"):
        augmenter(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="CPU"):
        augmenter(uint8_images(2), SimpleNamespace(device=torch.device("cuda")))


def test_same_seed_same_views_and_different_seeds_differ():
    images = uint8_images(4)
    augmenter = TwoViewAugment(ViewConfig(), BYOL_B, 12, MEAN, STD)
    first = augmenter(images, seeded(3))
    again = augmenter(images, seeded(3))
    other = augmenter(images, seeded(4))
    for a, b, c in zip(first, again, other, strict=True):
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


def test_cpu_chunks_give_the_same_views(monkeypatch):
    images = uint8_images(7)
    view = ViewConfig(jitter_p=0.5, grayscale_p=0.5, blur_p=0.5, solarize_p=0.5)
    augmenter = BatchAugment(view, 10, MEAN, STD)
    whole = augmenter(images, seeded(1))
    monkeypatch.setattr(augment, "CPU_CHUNK_BYTES", 3 * 12 * 12 * 4 * 2)  # 2 images per chunk
    chunked = augmenter(images, seeded(1))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_normalize_matches_torchvision():
    images = uint8_images(3)
    expected = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(MEAN), list(STD))
    torch.testing.assert_close(normalize(images, MEAN, STD), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_for_a_seed():
    images = uint8_images(8, height=32, width=32)
    augmenter = TwoViewAugment(ViewConfig(), BYOL_B, 24, MEAN, STD)
    on_cpu = augmenter(images, seeded(5))
    on_gpu = augmenter(images.cuda(), seeded(5))
    for cpu_view, gpu_view in zip(on_cpu, on_gpu, strict=True):
        assert gpu_view.device.type == "cuda"
        torch.testing.assert_close(gpu_view.cpu(), cpu_view, rtol=0, atol=1e-4)


def test_transfer_keeps_shapes_and_dtypes():
    params = [
        BatchAugment(view, 8, MEAN, STD).sample_params(5, 9, 9, seeded(0))
        for view in (ViewConfig(), BYOL_B)
    ]
    moved = transfer_params(params, torch.device("meta"))
    for before, after in zip(params, moved, strict=True):
        for name, value in vars(before).items():
            assert getattr(after, name).device.type == "meta"
            assert getattr(after, name).shape == value.shape
            assert getattr(after, name).dtype == value.dtype


# --- each op against torchvision ---------------------------------------------------------------


@pytest.mark.parametrize("out_size", [10, 6])  # up- and downscaling
def test_resized_crop_and_flip_match_torchvision(out_size):
    images = torch.rand(5, 3, 9, 11, generator=seeded(0))
    boxes = torch.tensor([[0, 0, 9, 11], [2, 3, 4, 5], [8, 10, 1, 1], [1, 0, 7, 3], [0, 5, 9, 6]])
    flip = torch.tensor([False, True, False, True, True])
    out = resized_crop(images, boxes, out_size, flip)
    for image, (top, left, height, width), flipped, result in zip(
        images, boxes.tolist(), flip, out, strict=True
    ):
        expected = TF.resized_crop(
            image, top, left, height, width, [out_size, out_size], antialias=False
        )
        if flipped:
            expected = TF.horizontal_flip(expected)
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ],
)
def test_blends_match_torchvision(ours, theirs):
    images = colour_images(5)
    factors = torch.tensor([0.0, 0.6, 1.0, 1.4, 2.5])
    out = ours(images, factors)
    for image, factor, result in zip(images, factors.tolist(), out, strict=True):
        torch.testing.assert_close(result, theirs(image, factor), rtol=0, atol=1e-6)


def test_hue_matches_torchvision():
    images = colour_images(7, size=10)
    factors = torch.tensor([-0.5, -0.37, -0.1, 0.0, 0.05, 0.33, 0.5])
    out = adjust_hue(images, factors)
    for image, factor, result in zip(images, factors.tolist(), out, strict=True):
        torch.testing.assert_close(result, TF.adjust_hue(image, factor), rtol=0, atol=1e-5)


def test_colour_jitter_applies_each_sample_in_its_own_order():
    orders = torch.tensor(list(itertools.permutations(range(4))))  # all 24 orders
    images = colour_images(len(orders), size=6)
    generator = seeded(2)
    factors = torch.stack(
        [
            torch.empty(len(orders)).uniform_(0.3, 1.7, generator=generator),
            torch.empty(len(orders)).uniform_(0.3, 1.7, generator=generator),
            torch.empty(len(orders)).uniform_(0.3, 1.7, generator=generator),
            torch.empty(len(orders)).uniform_(-0.4, 0.4, generator=generator),
        ],
        dim=1,
    )
    reference_ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    out = colour_jitter(images, factors, orders)
    for image, sample_factors, order, result in zip(images, factors, orders, out, strict=True):
        expected = image
        for op in order.tolist():
            expected = reference_ops[op](expected, sample_factors[op].item())
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


def test_grayscale_matches_torchvision():
    images = colour_images(3)
    expected = TF.rgb_to_grayscale(images, num_output_channels=3)
    torch.testing.assert_close(grayscale(images), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_blur_matches_torchvision(kernel_size):
    images = torch.rand(4, 3, 9, 8, generator=seeded(0))
    sigmas = torch.tensor([0.05, 0.5, 1.3, 2.0])
    out = gaussian_blur(images, sigmas, kernel_size)
    for image, sigma, result in zip(images, sigmas.tolist(), out, strict=True):
        expected = TF.gaussian_blur(image, [kernel_size, kernel_size], [sigma, sigma])
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 1.0])
def test_solarize_matches_torchvision(threshold):
    images = colour_images(2)
    expected = TF.solarize(images, threshold)
    torch.testing.assert_close(solarize(images, threshold), expected, rtol=0, atol=1e-6)


# --- random parameters -------------------------------------------------------------------------


def test_crop_boxes_fit_and_respect_scale_and_ratio():
    height, width, scale, ratio = 300, 400, (0.1, 0.7), (0.5, 1.5)
    boxes = sample_crop_boxes(4000, height, width, scale, ratio, seeded(0)).double()
    top, left, box_h, box_w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + box_h <= height).all() and (left + box_w <= width).all()
    # Rounding each side to whole pixels moves area and ratio by well under 1 % at this size.
    area = box_h * box_w / (height * width)
    assert area.min() >= scale[0] * 0.99 and area.max() <= scale[1] * 1.01
    aspect = box_w / box_h
    assert aspect.min() >= ratio[0] * 0.99 and aspect.max() <= ratio[1] * 1.01
    # The whole ranges are used, and every offset is possible.
    assert area.min() < scale[0] * 1.05 and area.max() > scale[1] * 0.95
    assert aspect.min() < ratio[0] * 1.05 and aspect.max() > ratio[1] * 0.95
    assert (top == 0).any() and (top + box_h == height).any()


def torchvision_boxes(count, height, width, scale, ratio):
    torch.manual_seed(0)
    crop = T.RandomResizedCrop(8, scale=scale, ratio=ratio)
    image = torch.zeros(3, height, width)
    rows = [crop.make_params([image]) for _ in range(count)]
    return torch.tensor([[r["top"], r["left"], r["height"], r["width"]] for r in rows]).double()


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (40, 48, (0.08, 1.0), (3 / 4, 4 / 3)),
        (32, 32, (0.5, 1.0), (1.5, 3.0)),
    ],  # 2nd: ~40 % fallback
)
def test_crop_box_distribution_matches_torchvision(height, width, scale, ratio):
    ours = sample_crop_boxes(3000, height, width, scale, ratio, seeded(1)).double()
    theirs = torchvision_boxes(3000, height, width, scale, ratio)
    for statistic in (
        lambda b: b[:, 2] * b[:, 3] / (height * width),  # area fraction
        lambda b: torch.log(b[:, 3] / b[:, 2]),  # log aspect ratio
        lambda b: (b[:, 0] + b[:, 2] / 2) / height,  # vertical centre
        lambda b: (b[:, 1] + b[:, 3] / 2) / width,  # horizontal centre
    ):
        a, b = statistic(ours), statistic(theirs)
        spread = math.sqrt((a.var() + b.var()).item() / 3000)
        assert abs(a.mean() - b.mean()) < 5 * spread + 1e-9
        for q in (0.1, 0.5, 0.9):
            assert abs(a.quantile(q) - b.quantile(q)) < 0.06 * (b.max() - b.min()) + 1e-9
    fallback = torch.tensor(
        [(height - round(width / ratio[0])) // 2, 0, round(width / ratio[0]), width]
    )
    fallback_share = [(boxes == fallback).all(dim=1).double().mean() for boxes in (ours, theirs)]
    assert abs(fallback_share[0] - fallback_share[1]) < 0.05


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio", "expected"),
    [
        (10, 10, (1e-4, 1e-4), (3 / 4, 4 / 3), [0, 0, 10, 10]),  # boxes round to 0 px
        (30, 30, (1.0, 1.0), (2.0, 3.0), [7, 0, 15, 30]),  # image taller than allowed
        (30, 30, (1.0, 1.0), (0.25, 0.5), [0, 7, 30, 15]),  # image wider than allowed
    ],
)
def test_crop_falls_back_to_torchvision_centre_crop(height, width, scale, ratio, expected):
    boxes = sample_crop_boxes(50, height, width, scale, ratio, seeded(0))
    assert (boxes == torch.tensor(expected)).all()


def test_blur_sigma_is_in_output_pixels_at_every_size():
    """The reference blurs the output crop with sigma in [0.1, 2] px whatever its size."""
    assert [blur_kernel_size(ViewConfig(), size) for size in (32, 96, 224)] == [13, 13, 13]
    assert blur_kernel_size(ViewConfig(), 5) == 9  # the radius stays below the image size
    for size in (32, 96):
        params = BatchAugment(ViewConfig(blur_p=1.0), size, MEAN, STD).sample_params(500, 96, 96)
        sigma = params.blur_sigma
        assert sigma.min() >= 0.1 and sigma.max() <= 2.0
        assert sigma.max() - sigma.min() > 0.9 * (2.0 - 0.1)


def test_jitter_orders_and_factors_follow_the_config():
    view = ViewConfig(brightness=0.3, contrast=0.6, saturation=1.5, hue=0.2, jitter_p=1.0)
    params = BatchAugment(view, 8, MEAN, STD).sample_params(2000, 8, 8, seeded(0))
    assert len({tuple(order) for order in params.jitter_order.tolist()}) == 24
    low = torch.tensor([0.7, 0.4, 0.0, -0.2])
    high = torch.tensor([1.3, 1.6, 2.5, 0.2])
    factors = params.jitter_factors
    assert (factors >= low).all() and (factors <= high).all()
    assert (factors.min(dim=0).values < low + 0.05).all()
    assert (factors.max(dim=0).values > high - 0.05).all()


@pytest.mark.parametrize("field", ["jitter_p", "grayscale_p", "blur_p", "solarize_p", "flip_p"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_op_probability(field, p):
    view = ViewConfig(**{**ALL_OFF, field: p})
    params = BatchAugment(view, 8, MEAN, STD).sample_params(4000, 8, 8, seeded(0))
    chosen = {
        "jitter_p": params.jitter_index,
        "grayscale_p": params.grayscale_index,
        "blur_p": params.blur_index,
        "solarize_p": params.solarize_index,
        "flip_p": params.flip.nonzero().squeeze(1),
    }[field]
    assert abs(len(chosen) / 4000 - p) < 0.03
    if p in (0.0, 1.0):
        assert len(chosen) == 4000 * p


def augment_with(view: ViewConfig, images: torch.Tensor, seed: int = 0):
    """Output of the pipeline and the crop it started from, unnormalised (mean 0, std 1)."""
    augmenter = BatchAugment(view, 10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    batch, _, height, width = images.shape
    params = augmenter.sample_params(batch, height, width, seeded(seed))
    unit = (
        images.float() / 255
    )  # the pipeline's own conversion, so untouched pixels compare exactly
    crop = resized_crop(unit, params.boxes, 10, params.flip)
    return augmenter(images, seeded(seed)), crop, params


def test_probability_zero_leaves_the_crop_untouched():
    images = uint8_images(6)
    out, crop, _ = augment_with(ViewConfig(**ALL_OFF), images)
    torch.testing.assert_close(out, crop, rtol=0, atol=0)


def test_probability_one_applies_each_op_to_every_sample():
    images = uint8_images(6)
    out, crop, _ = augment_with(ViewConfig(**{**ALL_OFF, "grayscale_p": 1.0}), images)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    torch.testing.assert_close(out, grayscale(crop))

    out, crop, _ = augment_with(ViewConfig(**{**ALL_OFF, "solarize_p": 1.0}), images)
    torch.testing.assert_close(out, solarize(crop, 0.5))

    out, crop, params = augment_with(ViewConfig(**{**ALL_OFF, "blur_p": 1.0}), images)
    torch.testing.assert_close(out, gaussian_blur(crop, params.blur_sigma, 13))  # 3 x 2 px

    out, crop, params = augment_with(ViewConfig(**{**ALL_OFF, "jitter_p": 1.0}), images)
    torch.testing.assert_close(out, colour_jitter(crop, params.jitter_factors, params.jitter_order))

    flipped, _, params = augment_with(ViewConfig(**{**ALL_OFF, "flip_p": 1.0}), images)
    unflipped, _, _ = augment_with(ViewConfig(**ALL_OFF), images)
    assert params.flip.all()
    torch.testing.assert_close(flipped, unflipped.flip(-1), rtol=0, atol=1e-6)


def test_partial_probability_touches_only_the_chosen_samples():
    images = uint8_images(40)
    out, crop, params = augment_with(ViewConfig(**{**ALL_OFF, "solarize_p": 0.5}), images)
    chosen = torch.zeros(40, dtype=torch.bool)
    chosen[params.solarize_index] = True
    assert 0 < chosen.sum() < 40
    torch.testing.assert_close(out[~chosen], crop[~chosen], rtol=0, atol=0)
    torch.testing.assert_close(out[chosen], solarize(crop[chosen], 0.5))


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.5, 1.2)),
        ("crop_scale", (0.9, 0.5)),
        ("crop_scale", (0.5,)),
        ("crop_ratio", (0.0, 1.0)),
        ("crop_ratio", (2.0, 1.0)),
        ("brightness", -0.1),
        ("contrast", -1.0),
        ("saturation", float("nan")),
        ("hue", 0.6),
        ("hue", -0.1),
        ("jitter_p", 1.5),
        ("grayscale_p", -0.2),
        ("blur_p", 2.0),
        ("blur_sigma", (0.0, 1.0)),
        ("blur_sigma", (2.0, 1.0)),
        ("flip_p", -1.0),
        ("solarize_p", 1.01),
        ("solarize_threshold", 1.5),
    ],
)
def test_view_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"ViewConfig.{field} "):
        ViewConfig(**{field: value})


def test_view_config_accepts_lists_from_yaml():
    view = ViewConfig(crop_scale=[0.2, 1], blur_sigma=[0.1, 2])
    assert view.crop_scale == (0.2, 1.0) and view.blur_sigma == (0.1, 2.0)
    hash(view)  # still usable as a frozen, hashable config
