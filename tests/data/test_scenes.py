import colorsys
import dataclasses
import math

import numpy as np
import pytest
import torch

from adios.data.scenes import (
    MIN_VISIBLE_PIXELS,
    NUM_COLOUR_FAMILIES,
    SHAPES,
    TEXTURES,
    SceneConfig,
    Scenes,
    generate_backgrounds,
    generate_scenes,
    recompose,
)

TENSOR_FIELDS = (
    "images",
    "instances",
    "foreground",
    "backgrounds",
    "object_shapes",
    "num_objects",
    "largest_shape",
    "shapes_present",
)


def span(mask: torch.Tensor) -> float:
    """Largest distance between two pixel centres of a mask (numpy: no thread start-up)."""
    ys, xs = np.nonzero(mask.numpy())
    points = np.stack([xs, ys], 1).astype(np.float64)
    return float(np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)).max())


def assert_same_scenes(a: Scenes, b: Scenes) -> None:
    assert a.config == b.config
    for name in TENSOR_FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.fixture(scope="module", params=[32, 64])
def scenes(request) -> Scenes:
    return generate_scenes(60, SceneConfig(image_size=request.param), seed=5)


def test_same_seed_same_scenes_and_prefix_is_a_subset():
    config = SceneConfig(same_shape_prob=0.3, same_colour_prob=0.3)
    first = generate_scenes(40, config, seed=3)
    assert_same_scenes(first, generate_scenes(40, config, seed=3))
    assert_same_scenes(first.subset(slice(0, 12)), generate_scenes(12, config, seed=3))
    # scenes are generated in batches of a few hundred: a scene must not depend on its batch
    long, short = generate_scenes(530, seed=3), generate_scenes(520, seed=3)
    assert_same_scenes(long.subset(slice(0, 520)), short)
    other = generate_scenes(40, config, seed=4)
    assert not torch.equal(first.images, other.images)
    assert not torch.equal(first.object_shapes, other.object_shapes)


def test_subset_with_index_tensor_picks_rows():
    scenes = generate_scenes(10, seed=1)
    index = torch.tensor([7, 2, 2])
    picked = scenes.subset(index)
    assert len(picked) == 3 and picked.config is scenes.config
    for name in TENSOR_FIELDS:
        assert torch.equal(getattr(picked, name), getattr(scenes, name)[index]), name


def test_shapes_and_dtypes(scenes):
    n, size, slots = len(scenes), scenes.config.image_size, scenes.config.max_objects
    expected = {
        "images": ((n, 3, size, size), torch.uint8),
        "instances": ((n, size, size), torch.uint8),
        "foreground": ((n, 3, size, size), torch.uint8),
        "backgrounds": ((n, 3, size, size), torch.uint8),
        "object_shapes": ((n, slots), torch.int64),
        "num_objects": ((n,), torch.int64),
        "largest_shape": ((n,), torch.int64),
        "shapes_present": ((n, len(SHAPES)), torch.bool),
    }
    for name, (shape, dtype) in expected.items():
        tensor = getattr(scenes, name)
        assert tuple(tensor.shape) == shape and tensor.dtype == dtype, name
    assert scenes.num_classes == len(SHAPES)


def test_instance_map_matches_image_and_foreground(scenes):
    images, foreground = scenes.images.numpy(), scenes.foreground.numpy()
    backgrounds, instances = scenes.backgrounds.numpy(), scenes.instances.numpy()
    for i in range(len(scenes)):
        background = instances[i] == 0
        assert (images[i][:, background] == backgrounds[i][:, background]).all()
        assert not foreground[i][:, background].any()
        assert instances[i].max() == scenes.num_objects[i]
        for k in range(1, int(scenes.num_objects[i]) + 1):
            pixels = images[i][:, instances[i] == k]
            assert pixels.shape[1] >= MIN_VISIBLE_PIXELS
            assert (pixels == pixels[:, :1]).all(), "flat fill"
            assert (pixels == foreground[i][:, instances[i] == k]).all()
            # visible against the background: far from every background pixel under it
            under = backgrounds[i][:, instances[i] == k].astype(np.float64)
            assert np.linalg.norm(under - pixels[:, :1], axis=0).min() > 90


def test_labels_match_instance_map(scenes):
    for i in range(len(scenes)):
        count = int(scenes.num_objects[i])
        shapes = scenes.object_shapes[i].tolist()
        assert all(s >= 0 for s in shapes[:count]) and all(s == -1 for s in shapes[count:])
        areas = [int((scenes.instances[i] == k).sum()) for k in range(1, count + 1)]
        largest = 0
        for k in range(1, count):
            if areas[k] > areas[largest]:  # strict: ties keep the lower instance id
                largest = k
        assert int(scenes.largest_shape[i]) == shapes[largest]
        present = [s in shapes[:count] for s in range(len(SHAPES))]
        assert scenes.shapes_present[i].tolist() == present


def label_frequencies(config: SceneConfig, n: int = 4096) -> np.ndarray:
    labels = generate_scenes(n, config, seed=0).largest_shape.numpy()
    return np.bincount(labels, minlength=len(config.shapes)) / n


# the default run's scenes, where circles won "largest" a third of the time before balancing
SKEWED = SceneConfig(
    shapes=("circle", "square", "triangle", "plus", "star"),
    count_weights=(1, 2, 2, 2),
    min_size=0.3,
    max_size=0.6,
    background_contrast=0.1,
)


@pytest.mark.parametrize("config", [SKEWED, SceneConfig()], ids=["5 shapes", "8 shapes"])
def test_balanced_labels_are_within_two_points_of_uniform(config):
    frequencies = label_frequencies(config)
    assert np.abs(frequencies - 1 / len(config.shapes)).max() < 0.02, frequencies


def test_unbalanced_labels_favour_round_shapes():
    # the older scenes (the knob's other side): circles win by area, so a balance test must fail
    frequencies = label_frequencies(dataclasses.replace(SKEWED, balanced_labels=False), 1024)
    assert frequencies[0] > 1 / 5 + 0.08 and frequencies.argmax() == 0, frequencies


def test_unbalanced_labels_match_instance_map():
    config = SceneConfig(balanced_labels=False)
    test_labels_match_instance_map(generate_scenes(40, config, seed=8))


def test_objects_keep_their_bounding_circle():
    # one object of known extent: its pixels span at most the diameter and reach most of it
    size, diameter = 64, 32
    config = SceneConfig(image_size=size, max_objects=1, min_size=0.5, max_size=0.5)
    scenes = generate_scenes(48, config, seed=2)
    for i in range(len(scenes)):
        # + 0.5: the shape templates are sampled at a finite resolution
        extent = span(scenes.instances[i] == 1)
        assert 0.8 * diameter <= extent <= diameter + 0.5, SHAPES[int(scenes.largest_shape[i])]
    assert set(scenes.largest_shape.tolist()) == set(range(len(SHAPES)))


def test_max_occlusion_limits_hidden_area():
    def smallest_visible_fraction(max_occlusion: float) -> float:
        config = SceneConfig(shapes=("circle",), min_objects=4, max_occlusion=max_occlusion)
        scenes = generate_scenes(50, config, seed=6)
        fractions = []
        for i in range(len(scenes)):
            for k in range(1, 5):
                mask = scenes.instances[i] == k
                diameter = span(mask) + 1
                fractions.append(int(mask.sum()) / (math.pi * diameter**2 / 4))
        return min(fractions)

    assert smallest_visible_fraction(0.0) > 0.75
    assert smallest_visible_fraction(0.9) < 0.6


def test_counts_follow_weights():
    config = SceneConfig(min_objects=1, max_objects=4, count_weights=(1.0, 0.0, 2.0, 1.0))
    counts = generate_scenes(400, config, seed=0).num_objects
    frequency = torch.bincount(counts, minlength=5).float() / len(counts)
    assert frequency[0] == 0 and frequency[2] == 0
    assert torch.allclose(frequency[[1, 3, 4]], torch.tensor([0.25, 0.5, 0.25]), atol=0.08)
    uniform = generate_scenes(400, SceneConfig(min_objects=2, max_objects=3), seed=0).num_objects
    assert set(uniform.tolist()) == {2, 3} and abs(uniform.float().mean() - 2.5) < 0.1


def test_same_shape_and_same_colour_prob():
    config = SceneConfig(min_objects=2, same_shape_prob=1.0, same_colour_prob=1.0)
    scenes = generate_scenes(100, config, seed=1)
    mixed = generate_scenes(100, SceneConfig(min_objects=2), seed=1)
    assert (scenes.shapes_present.sum(1) == 1).all()
    assert (mixed.shapes_present.sum(1) > 1).float().mean() > 0.7
    for i in range(len(scenes)):
        colours = scenes.foreground[i][:, scenes.instances[i] > 0]
        assert torch.equal(colours, colours[:, :1].expand_as(colours))


def test_shape_subset_labels_index_the_subset():
    config = SceneConfig(shapes=("star", "ring"), min_objects=3)
    scenes = generate_scenes(30, config, seed=0)
    assert scenes.num_classes == 2 and scenes.shapes_present.shape == (30, 2)
    assert set(scenes.object_shapes.unique().tolist()) == {-1, 0, 1}


def test_recompose_swaps_exactly_the_background():
    config = SceneConfig(background_class_correlation=0.5)
    scenes = generate_scenes(30, config, seed=8)
    others = generate_backgrounds(30, config, seed=9, labels=scenes.largest_shape)
    assert not torch.equal(others, scenes.backgrounds)
    mixed = recompose(scenes, others)
    objects = (scenes.instances > 0).unsqueeze(1).expand_as(scenes.images)
    assert torch.equal(mixed.images[objects], scenes.images[objects])
    assert torch.equal(mixed.images[~objects], others[~objects])
    assert torch.equal(mixed.backgrounds, others)
    for name in ("instances", "foreground", "object_shapes", "largest_shape", "shapes_present"):
        assert torch.equal(getattr(mixed, name), getattr(scenes, name)), name
    only_objects = recompose(scenes, torch.zeros_like(scenes.backgrounds))
    assert torch.equal(only_objects.images, scenes.foreground)
    with pytest.raises(ValueError, match="backgrounds"):
        recompose(scenes, others[:5])


def test_generate_backgrounds_reproduces_the_scene_backgrounds():
    config = SceneConfig(image_size=64, background_class_correlation=0.5)
    scenes = generate_scenes(20, config, seed=4)
    again = generate_backgrounds(20, config, seed=4, labels=scenes.largest_shape)
    assert torch.equal(again, scenes.backgrounds)
    with pytest.raises(ValueError, match="labels"):
        generate_backgrounds(20, config, seed=4)


def hue_family(background: torch.Tensor) -> int:
    red, green, blue = (background.float().mean((1, 2)) / 255).tolist()
    return int(colorsys.rgb_to_hsv(red, green, blue)[0] * NUM_COLOUR_FAMILIES)


def best_family_to_label_accuracy(scenes: Scenes) -> float:
    """Accuracy of the best lookup table from background hue family to label."""
    table = torch.zeros(NUM_COLOUR_FAMILIES, scenes.num_classes)
    for background, label in zip(scenes.backgrounds, scenes.largest_shape.tolist(), strict=True):
        table[hue_family(background), label] += 1
    return float(table.max(1).values.sum() / len(scenes))


def curvature(background: torch.Tensor) -> float:
    """Largest |second difference| along rows and columns: <= 2 (rounding) for a linear ramp."""
    image = background.float()
    return max(image.diff(n=2, dim=1).abs().max(), image.diff(n=2, dim=2).abs().max()).item()


def test_background_class_correlation_is_a_perfect_cue_only_when_asked():
    correlated = generate_scenes(240, SceneConfig(background_class_correlation=1.0), seed=2)
    independent = generate_scenes(240, SceneConfig(background_class_correlation=0.0), seed=2)
    labels = correlated.largest_shape.tolist()
    assert [hue_family(b) for b in correlated.backgrounds] == labels
    assert best_family_to_label_accuracy(correlated) == 1.0
    assert best_family_to_label_accuracy(independent) < 0.5
    # texture family follows the label too: label 0 is a gradient, the noise label is noise
    gradient, noise = TEXTURES.index("gradient"), TEXTURES.index("noise")
    for background, label in zip(correlated.backgrounds, labels, strict=True):
        if label % len(TEXTURES) == gradient:
            assert curvature(background) <= 2
        if label % len(TEXTURES) == noise:
            assert curvature(background) > 20
    assert max(curvature(b) for b in independent.backgrounds[independent.largest_shape == 0]) > 20


def test_zero_contrast_gives_flat_backgrounds():
    backgrounds = generate_backgrounds(20, SceneConfig(background_contrast=0.0), seed=0)
    flat = backgrounds.flatten(2)
    assert torch.equal(flat, flat[..., :1].expand_as(flat))
    assert len({tuple(c) for c in flat[..., 0].tolist()}) > 10


def test_other_sizes_and_empty_draws():
    scenes = generate_scenes(8, SceneConfig(image_size=48, max_size=1.0, max_objects=1), seed=0)
    assert scenes.images.shape == (8, 3, 48, 48) and (scenes.num_objects == 1).all()
    assert len(generate_scenes(0)) == 0


def test_yaml_lists_become_tuples():
    config = SceneConfig(shapes=["circle", "plus"], count_weights=[1, 2, 3, 4])
    assert config.shapes == ("circle", "plus") and config.count_weights == (1, 2, 3, 4)
    hash(config)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("image_size", {"image_size": 40}),
        ("image_size", {"image_size": 16}),
        ("min_objects", {"min_objects": 0}),
        ("max_objects", {"min_objects": 3, "max_objects": 2}),
        ("max_objects", {"max_objects": 99}),
        ("count_weights", {"count_weights": (1.0, 1.0)}),
        ("count_weights", {"count_weights": (1.0, -1.0, 1.0, 1.0)}),
        ("count_weights", {"count_weights": (0.0, 0.0, 0.0, 0.0)}),
        ("shapes", {"shapes": ()}),
        ("shapes", {"shapes": ("circle", "blob")}),
        ("shapes", {"shapes": ("circle", "circle")}),
        ("min_size", {"min_size": 0.0}),
        ("min_size", {"min_size": 0.1}),  # 3.2 px at 32 px
        ("max_size", {"max_size": 0.2}),
        ("max_size", {"max_size": 1.5}),
        ("same_shape_prob", {"same_shape_prob": 1.5}),
        ("same_colour_prob", {"same_colour_prob": -0.1}),
        ("max_occlusion", {"max_occlusion": 2.0}),
        ("background_contrast", {"background_contrast": -1.0}),
        ("background_class_correlation", {"background_class_correlation": True}),
        ("balanced_labels", {"balanced_labels": 1}),
    ],
)
def test_config_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=rf"SceneConfig\.{field} ="):
        SceneConfig(**kwargs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        generate_scenes(3, seed=-1)
    with pytest.raises(ValueError, match="^n "):
        generate_scenes(-3)
