"""Masking schemes: documented coverage and shapes on fixed seeds, and one training step each."""

import copy
import math

import numpy as np
import pytest
import torch

from adios.config import load_config
from adios.data.augment import TwoViewAugment, ViewConfig
from adios.data.datasets import InMemoryBatches, load_dataset
from adios.masking.schemes import (
    Blockwise,
    ObjectMasks,
    RandomPatches,
    Rectangles,
    default_min_block_area,
    default_patch_size,
    fixed_scheme,
    views_with_objects,
)
from adios.train import build_models, build_optimizers, train_step


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_defaults_scale_the_reference_sizes_given_at_96_px():
    assert default_patch_size(96) == 16 and default_patch_size(32) == 5
    assert default_min_block_area(96) == 64 and default_min_block_area(32) == 7
    assert default_patch_size(224) == 37  # still the 6 x 6 grid


@pytest.mark.parametrize(("size", "patch"), [(32, 4), (32, 5), (24, 7)])
def test_mae_hides_exactly_its_share_of_cells_and_each_cell_whole(size, patch):
    scheme = RandomPatches(size, patch, ratio=0.75)
    masks = scheme(16, generator(), "cpu")
    assert masks.shape == (16, 1, size, size) and masks.dtype == torch.float32
    assert ((masks == 0) | (masks == 1)).all()
    grid = round(size / patch)
    cell_of = [i * grid // size for i in range(size)]  # nearest-neighbour cell of each pixel
    for mask in masks[:, 0]:
        cells = {}
        for y in range(size):
            for x in range(size):
                cells.setdefault((cell_of[y], cell_of[x]), set()).add(float(mask[y, x]))
        assert all(len(values) == 1 for values in cells.values())  # a cell is hidden whole
        assert sum(values == {1.0} for values in cells.values()) == round(0.75 * grid**2)
        largest_cell = math.ceil(size / grid) ** 2 / size**2
        assert abs(float(mask.mean()) - 0.75) <= largest_cell
    if size % patch == 0:
        assert torch.allclose(masks.mean(dim=(1, 2, 3)), torch.tensor(0.75))
    assert not torch.equal(masks[0], masks[1])  # drawn per image


def test_beit_blocks_have_documented_sizes_and_reach_the_target():
    size = 96
    scheme = Blockwise(size, default_min_block_area(size), ratio=0.3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        mask, blocks = scheme.blocks(rng)
        painted = np.zeros_like(mask)
        for top, left, height, width in blocks:
            assert height * width >= scheme.min_block_area
            assert top >= 0 and top + height <= size and left >= 0 and left + width <= size
            if min(height, width) >= 8:  # rounding aside, the aspect is in [0.3, 3.3]
                assert 0.3 / 1.15 <= height / width <= 3.3 * 1.15
            painted[top : top + height, left : left + width] = True
        assert (painted == mask).all()
        assert scheme.target - 2 * scheme.min_block_area <= mask.sum() <= scheme.target
    masks = fixed_scheme(load_config(["masking.mode=beit"]).masking, 32)(8, generator(), "cpu")
    coverage = masks.mean(dim=(1, 2, 3))
    assert masks.shape == (8, 1, 32, 32)
    assert ((coverage >= 0.3 - 14 / 1024) & (coverage <= 0.3)).all()


def test_rectangles_are_one_filled_rectangle_of_the_given_area():
    size, ratio = 32, 0.25
    masks = Rectangles(size, ratio)(64, generator(), "cpu")[:, 0]
    for mask in masks:
        rows = mask.any(dim=1).nonzero().squeeze(1)
        cols = mask.any(dim=0).nonzero().squeeze(1)
        height, width = len(rows), len(cols)
        assert rows[-1] - rows[0] + 1 == height and cols[-1] - cols[0] + 1 == width
        assert mask.sum() == height * width  # filled
        assert abs(height * width - ratio * size**2) <= (height + width) / 2 + 1
        assert 0.3 / 1.2 <= height / width <= 3.3 * 1.2
    # a large share cannot keep every aspect: the rectangle still fits and keeps the area
    big = Rectangles(size, 0.75)(64, generator(), "cpu")
    assert (big.mean(dim=(1, 2, 3)) - 0.75).abs().max() <= 1.5 / size


def scene_batch():
    """Two 12 x 12 images: objects 1 (square) and 2 (bar) in the first, object 1 in the second."""
    instances = torch.zeros(2, 12, 12, dtype=torch.uint8)
    instances[0, 2:6, 2:6] = 1
    instances[0, 8:10, 1:11] = 2
    instances[1, 5:9, 6:10] = 1
    return instances


def identity_objects(instances):
    one_hot = torch.nn.functional.one_hot(instances.long(), int(instances.max()) + 1)
    return one_hot.permute(0, 3, 1, 2)[:, 1:].float()


def brute_morphology(mask, radius, dilate):
    """Square dilation / erosion by loops, pixels outside the image ignored."""
    size = mask.shape[-1]
    out = torch.zeros_like(mask)
    for y in range(size):
        for x in range(size):
            window = mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
            out[y, x] = window.max() if dilate else window.min()
    return out


def test_oracle_hides_one_visible_object_boxed_grown_or_shuffled():
    instances = scene_batch()
    objects = identity_objects(instances)
    picks = [ObjectMasks()(2, generator(seed), "cpu", objects) for seed in range(40)]
    first = {int(instances[0][m[0, 0].bool()].unique().item()) for m in picks}
    assert first == {1, 2}  # either object of image 0, whole
    assert all(torch.equal(m[1, 0], (instances[1] == 1).float()) for m in picks)
    plain = ObjectMasks()(2, generator(3), "cpu", objects)
    boxed = ObjectMasks(box=True)(2, generator(3), "cpu", objects)
    for mask, box in zip(plain[:, 0], boxed[:, 0], strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        expected = torch.zeros_like(mask)
        expected[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
        assert torch.equal(box, expected)
    for margin in (2, -1):
        grown = ObjectMasks(margin=margin)(2, generator(3), "cpu", objects)
        for mask, out in zip(plain[:, 0], grown[:, 0], strict=True):
            assert torch.equal(out, brute_morphology(mask, abs(margin), dilate=margin > 0))
    distinct = torch.zeros(4, 12, 12, dtype=torch.uint8)
    for i in range(4):
        distinct[i, i : i + 3, 2 * i : 2 * i + 4] = 1
    four = identity_objects(distinct)
    unshuffled = ObjectMasks()(4, generator(5), "cpu", four)
    shuffled = ObjectMasks(shuffle=True)(4, generator(5), "cpu", four)
    sources = [next(j for j in range(4) if torch.equal(s, unshuffled[j])) for s in shuffled]
    assert sorted(sources) == [0, 1, 2, 3] and all(j != i for i, j in enumerate(sources))
    empty = torch.zeros(2, 0, 12, 12)
    assert ObjectMasks()(2, generator(), "cpu", empty).abs().sum() == 0  # nothing to hide


def test_object_layers_follow_the_views_crop_and_flip():
    """A white object on black: with colour ops off, view b is its layer (both bilinear)."""
    instances = scene_batch()
    images = (instances == 1).to(torch.uint8).mul(255)[:, None].expand(-1, 3, -1, -1).contiguous()
    view = ViewConfig(crop_scale=(0.3, 0.6), jitter_p=0, grayscale_p=0, blur_p=0, flip_p=0.5)
    augment = TwoViewAugment(view, view, 12, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    view_a, view_b, (objects_a, objects_b) = views_with_objects(
        augment, images, instances, generator(7)
    )
    expected_a, expected_b = augment(images, generator(7))
    assert torch.equal(view_a, expected_a) and torch.equal(view_b, expected_b)
    assert torch.allclose(objects_b[:, 0], view_b[:, 0], atol=1e-6)
    assert torch.allclose(objects_a[:, 0], view_a[:, 0], atol=1e-6)
    assert (objects_b.sum(dim=1) <= 1 + 1e-6).all()


TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "model.width=4",
    "masker.fbase=8",
    "masker.n_masks=2",
    "objective.proj_hidden=16",
    "objective.proj_out=8",
    "optim.batch_size=8",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def scenes():
    return load_dataset(load_config(TINY).data)


@pytest.mark.parametrize(
    "mode", ["none", "mae", "beit", "rectangles", "oracle", "adios-s", "adios"]
)
def test_every_scheme_runs_a_simclr_training_step(scenes, mode):
    cfg = load_config([*TINY, f"masking.mode={mode}"])
    torch.manual_seed(0)
    models = build_models(cfg, scenes.num_classes, torch.device("cpu"))
    assert (models.masker is not None) == (mode in ("adios", "adios-s"))
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    augment = TwoViewAugment(cfg.augment.view_a, cfg.augment.view_b, 32, scenes.mean, scenes.std)
    images, labels = scenes.train.images[:8], scenes.train.labels[:8]
    before = copy.deepcopy(models.objective)
    a, b, objects = views_with_objects(augment, images, scenes.train.instances[:8], generator())
    state = generator(1)
    stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, labels, state, objects)
    assert math.isfinite(stats["loss"])
    changed = [
        not torch.equal(p, q)
        for p, q in zip(before.parameters(), models.objective.parameters(), strict=True)
    ]
    assert any(changed)
    scheme = fixed_scheme(cfg.masking, 32)
    if scheme is not None:  # the step's loss is the objective on b * (1 - its drawn mask)
        masks = scheme(8, generator(1), "cpu", objects[1])
        assert stats["mask_sizes"] == pytest.approx([float(masks.mean())])
        with torch.no_grad():
            reference = before(a, b * (1 - masks))
        assert stats["loss"] == pytest.approx(reference.item(), rel=1e-5)
    elif mode == "none":  # the plain objective on the unmasked views
        with torch.no_grad():
            assert stats["loss"] == pytest.approx(before(a, b).item(), rel=1e-5)


@pytest.mark.parametrize("objective", ["byol", "simsiam"])
@pytest.mark.parametrize("mode", ["mae", "oracle"])
def test_fixed_schemes_feed_masked_views_and_step_on_their_loss(scenes, objective, mode):
    """BYOL masks view b, SimSiam both views (its a mask drawn after b's): the encoder sees
    exactly view * (1 - drawn mask), the step's loss is the objective's pair loss on those
    views, and one plain SGD step moves the backbone by -lr times that loss's gradient."""
    lr = 0.05
    cfg = load_config(
        [
            *TINY,
            f"masking.mode={mode}",
            f"objective.name={objective}",
            "objective.pred_hidden=16",
            "optim.name=sgd",
            "optim.momentum=0",
            "optim.weight_decay=0",
            f"optim.lr={lr}",
        ]
    )
    torch.manual_seed(0)
    models = build_models(cfg, scenes.num_classes, torch.device("cpu"))
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    augment = TwoViewAugment(cfg.augment.view_a, cfg.augment.view_b, 32, scenes.mean, scenes.std)
    a, b, (objects_a, objects_b) = views_with_objects(
        augment, scenes.train.images[:8], scenes.train.instances[:8], generator()
    )
    scheme, draws = fixed_scheme(cfg.masking, 32), generator(1)
    masks_b = scheme(8, draws, "cpu", objects_b)
    masks_a = scheme(8, draws, "cpu", objects_a) if objective == "simsiam" else None
    view_a = a if masks_a is None else a * (1 - masks_a)
    view_b = b * (1 - masks_b)
    assert 0 < float(masks_b.mean()) < 1 and not torch.equal(view_b, b)

    reference = copy.deepcopy(models.objective)
    expected = reference.pair_loss(reference.forward_views(view_a), reference.forward_views(view_b))
    gradients = torch.autograd.grad(expected, list(reference.backbone.parameters()))
    start = [p.detach().clone() for p in models.backbone.parameters()]
    seen = []
    hook = models.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    stats = train_step(
        cfg,
        models,
        encoder_opt,
        masker_opt,
        a,
        b,
        scenes.train.labels[:8],
        generator(1),
        (objects_a, objects_b),
    )
    hook.remove()
    assert len(seen) == 2  # view a, then view b; the probe reuses view a's features
    torch.testing.assert_close(seen[0], view_a, rtol=0, atol=0)
    torch.testing.assert_close(seen[1], view_b, rtol=0, atol=0)
    assert stats["loss"] == pytest.approx(expected.item(), rel=1e-6)
    assert stats["mask_sizes"] == pytest.approx([float(masks_b.mean())])
    for p, p0, g in zip(models.backbone.parameters(), start, gradients, strict=True):
        torch.testing.assert_close(p - p0, -lr * g, rtol=1e-4, atol=1e-7)


def test_batches_carry_the_instance_maps_of_their_images(scenes):
    split = scenes.train
    batches = InMemoryBatches(split, 6, instances=True)
    for images, labels, instances in batches.epoch(generator()):
        for image, label, instance in zip(images, labels, instances, strict=True):
            j = next(j for j in range(len(split)) if torch.equal(split.images[j], image))
            assert label == split.labels[j] and torch.equal(instance, split.instances[j])
    assert all(len(batch) == 2 for batch in InMemoryBatches(split, 6).epoch(generator()))
