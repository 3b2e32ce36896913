"""Built-in dataset: deterministic scenes of a few flat-coloured shapes on textured backgrounds.

Why these scenes. ADIOS learns masks that hide what the encoder needs, and masking only teaches
something when the hidden pixels can be inferred from the visible ones (spec ADIOS.md, section 6).
A single random shape on a background independent of it gives the encoder nothing to infer, so
the generator exposes the structure that makes hidden content predictable, each as a knob:

- objects whose parts predict each other: every shape is a rigid outline (a hidden arm of a plus
  or point of a star follows from the rest), drawn fully inside the image;
- objects that predict each other: ``same_shape_prob`` / ``same_colour_prob`` make all objects
  of a scene share a shape / colour, so a masked object can be read off its siblings;
- backgrounds that carry context: ``background_class_correlation`` ties the background's colour
  family and texture family to the label, a deliberate spurious cue whose use ``recompose``
  exposes (Backgrounds-Challenge style: flat, same-class and random backgrounds under the very
  same objects).

What a scene is. 1-4 objects (``count_weights`` sets the distribution) of the kinds in
``SHAPES``, each with a random size (bounding-circle diameter), position (fully inside the
image), rotation and colour, drawn in order: object k covers objects 1..k-1 where they overlap.
A placement is redrawn when it would leave any object with less than ``1 - max_occlusion`` of
its area or fewer than ``MIN_VISIBLE_PIXELS`` visible pixels, so every counted object is seen.
The label ``largest_shape`` is the shape of the object with the largest *visible* area (pixels
after occlusion; a tie goes to the object drawn first). Rotations are free, which is why there is
no diamond (a turned square) or X (a turned plus).

Colours. A background is a texture field t in [0, 1] (gradient, stripes, checkerboard, blobs or
fine noise) blending two muted colours of one hue family, a darker and a lighter;
``background_contrast`` scales the blend, 0 giving a flat colour. Every background pixel
therefore lies on the RGB segment between two known colours. Objects are saturated and bright,
and each object colour is kept at least 100 (Euclidean RGB distance, 0-255 scale) from that
whole segment, so an object stands out from every part of its background, and 70 from the
other objects' colours, so overlapping objects stay apart (best of 24 random candidates: with
up to 4 objects both distances always held in 7,500 draws; with 10, 0.1 % missed). Fills are
flat and edges hard: every pixel of instance k shows exactly object k's colour.

Balanced labels (``balanced_labels``, the default). A circle fills its bounding circle, a
triangle or star about 40 % of it, so left alone round shapes win "largest" far more often (the
default run's 5 shapes: circle 34 %, triangle 10 %), and a probe that always answers "circle"
looks skilled. So each scene first draws its label's shape uniformly, gives that shape to one of
its objects (at a random place in the drawing order) and keeps only placements after which that
object is the largest by the label's own measure, visible area with ties to the lower instance
id. The label is then uniform by construction (within 2 points of 1/K on 4,096 scenes, tested);
the other objects' shapes stay uniform draws, the winner tends to be drawn large. With
``balanced_labels`` false the scenes are exactly the earlier, unbalanced ones (same draws).

Determinism. Scene i depends only on (seed, i, config): its layout and object colours come from
``np.random.default_rng([seed, i, 0])`` and its background from ``[seed, i, 1]``. Hence any
prefix of a larger draw equals a smaller draw, different seeds give different splits, and
``generate_backgrounds(n, config, seed, labels=scenes.largest_shape)`` reproduces the
backgrounds of ``generate_scenes(n, config, seed)`` (use another seed for new backgrounds).
Sizes and positions are fractions of the image side, so one seed gives nearly the same scenes at
every ``image_size``. Scenes are generated in vectorised batches; a scene never depends on its
batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# the config-level names scenes are built from (adios/config_data.py), importable from here too
from adios.config_data import (  # noqa: F401
    MAX_OBJECTS,
    MIN_OBJECT_PIXELS,
    SHAPES,
    SceneConfig,
    _is_int,
    _is_real,
    _require,
)

TEXTURES: tuple[str, ...] = ("gradient", "stripes", "checkerboard", "blobs", "noise")
NUM_COLOUR_FAMILIES = 8  # hue sectors of 45 degrees; >= len(SHAPES) so each class gets its own
MIN_VISIBLE_PIXELS = 8

_BACKGROUND_COLOUR_DISTANCE = 100.0
_OBJECT_COLOUR_DISTANCE = 70.0
_COLOUR_CANDIDATES = 24
_CANDIDATES_PER_ROUND = 2
_PLACEMENT_ATTEMPTS = 50
_LAYOUT_RESTARTS = 20
_PIXELS_PER_CHUNK = 2**19
_LAYOUT_STREAM, _BACKGROUND_STREAM = 0, 1
_TEMPLATE_SIZE = 160  # samples per side of a shape's template over [-extent, extent]
_TEMPLATE_EXTENT = 1.05  # margin beyond the unit bounding circle, so clipped lookups read "outside"
_TEMPLATE_STEP = 2 * _TEMPLATE_EXTENT / (_TEMPLATE_SIZE - 1)


@dataclass
class Scenes:
    """A batch of scenes with their ground truth; index it with ``subset``."""

    images: Tensor  # uint8 (N, 3, H, W)
    instances: Tensor  # uint8 (N, H, W): 0 = background, k = k-th object drawn, visible pixels
    foreground: Tensor  # uint8 (N, 3, H, W): object pixels, 0 elsewhere
    backgrounds: Tensor  # uint8 (N, 3, H, W): the background layer alone
    object_shapes: Tensor  # int64 (N, max_objects): shape id of object k+1, -1 padding
    num_objects: Tensor  # int64 (N,)
    largest_shape: Tensor  # int64 (N,): shape id of the largest visible object (the label)
    shapes_present: Tensor  # bool (N, len(config.shapes))
    config: SceneConfig

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor | slice) -> Scenes:
        picked = {
            f.name: getattr(self, f.name)[index]
            for f in dataclasses.fields(self)
            if f.name != "config"
        }
        return Scenes(**picked, config=self.config)

    @property
    def num_classes(self) -> int:
        return len(self.config.shapes)


def generate_scenes(n: int, config: SceneConfig = SceneConfig(), seed: int = 0) -> Scenes:
    """``n`` scenes; scene i depends only on (seed, i, config).

    Raises RuntimeError when the objects of a scene cannot be placed (e.g. four objects of
    ``min_size`` 0.45 with ``max_occlusion`` 0).
    """
    _check_n_seed(n, seed)
    size, max_objects = config.image_size, config.max_objects
    images = np.empty((n, 3, size, size), np.uint8)
    foreground = np.empty((n, 3, size, size), np.uint8)
    backgrounds = np.empty((n, 3, size, size), np.uint8)
    instances = np.empty((n, size, size), np.uint8)
    object_shapes = np.empty((n, max_objects), np.int64)
    largest_shape = np.empty(n, np.int64)
    for start, stop in _chunks(n, size):
        chunk = slice(start, stop)
        layout_rngs = _generators(seed, start, stop, _LAYOUT_STREAM)
        shape_ids, instance_maps, visible = _lay_out(layout_rngs, config)
        # argmax over visible areas: ties go to the lower instance id, padding has area 0
        labels = shape_ids[np.arange(stop - start), visible[:, 1:].argmax(1)]
        background_rngs = _generators(seed, start, stop, _BACKGROUND_STREAM)
        chunk_backgrounds, colour_ranges = _draw_backgrounds(background_rngs, config, labels)
        colours = _draw_object_colours(layout_rngs, (shape_ids >= 0).sum(1), colour_ranges, config)
        palette = np.concatenate([np.zeros_like(colours[:, :1]), colours], 1)  # id 0: none
        palette = palette.transpose(0, 2, 1)  # (B, 3, max_objects + 1)
        objects = np.take_along_axis(palette, instance_maps[:, None].astype(np.intp), 2)
        objects = objects.reshape(-1, 3, size, size)
        instance_maps = instance_maps.reshape(-1, 1, size, size)
        images[chunk] = np.where(instance_maps > 0, objects, chunk_backgrounds)
        foreground[chunk] = objects
        backgrounds[chunk] = chunk_backgrounds
        instances[chunk] = instance_maps[:, 0]
        object_shapes[chunk] = shape_ids
        largest_shape[chunk] = labels

    object_shapes_t = torch.from_numpy(object_shapes)
    return Scenes(
        images=torch.from_numpy(images),
        instances=torch.from_numpy(instances),
        foreground=torch.from_numpy(foreground),
        backgrounds=torch.from_numpy(backgrounds),
        object_shapes=object_shapes_t,
        num_objects=(object_shapes_t >= 0).sum(1),
        largest_shape=torch.from_numpy(largest_shape),
        shapes_present=_shapes_present(object_shapes_t, len(config.shapes)),
        config=config,
    )


def generate_backgrounds(
    n: int, config: SceneConfig, seed: int, labels: Tensor | None = None
) -> Tensor:
    """Background layers alone, uint8 (n, 3, H, W), drawn exactly as ``generate_scenes`` draws them.

    ``labels`` (n,) pick the colour and texture family with probability
    ``config.background_class_correlation`` (required when it is positive, ignored otherwise).
    """
    _check_n_seed(n, seed)
    if config.background_class_correlation > 0:
        if labels is None:
            raise ValueError("labels: required when background_class_correlation > 0")
        if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels: must be an integer tensor of shape ({n},)")
        if n and not 0 <= int(labels.min()) <= int(labels.max()) < len(config.shapes):
            raise ValueError(f"labels: must lie in [0, {len(config.shapes)})")
        label_array = labels.cpu().numpy().astype(np.int64)
    else:
        label_array = np.zeros(n, np.int64)
    size = config.image_size
    backgrounds = np.empty((n, 3, size, size), np.uint8)
    for start, stop in _chunks(n, size):
        chunk = slice(start, stop)
        rngs = _generators(seed, start, stop, _BACKGROUND_STREAM)
        backgrounds[chunk] = _draw_backgrounds(rngs, config, label_array[chunk])[0]
    return torch.from_numpy(backgrounds)


def recompose(scenes: Scenes, backgrounds: Tensor) -> Scenes:
    """The same objects (pixels, instance map, labels) pasted onto other backgrounds.

    For robustness tests: zeros or flat colours (only foreground), ``generate_backgrounds`` with
    the scenes' labels and another seed (same-class backgrounds), or shuffled ones (random).
    Object colours were chosen to stand out from the original backgrounds, not from these.
    """
    expected = tuple(scenes.backgrounds.shape)
    if tuple(backgrounds.shape) != expected or backgrounds.dtype != torch.uint8:
        raise ValueError(
            f"backgrounds: must be uint8 of shape {expected}, got {backgrounds.dtype} "
            f"{tuple(backgrounds.shape)}"
        )
    backgrounds = backgrounds.to(scenes.images.device)
    images = torch.where(scenes.instances.unsqueeze(1) > 0, scenes.foreground, backgrounds)
    return dataclasses.replace(scenes, images=images, backgrounds=backgrounds)


def _check_n_seed(n: int, seed: int) -> None:
    if not _is_int(n) or n < 0:
        raise ValueError(f"n = {n!r}: must be a non-negative integer")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed = {seed!r}: must be a non-negative integer")


def _generators(seed: int, start: int, stop: int, stream: int) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, i, stream]) for i in range(start, stop)]


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    """(start, stop) of scenes processed together: enough to vectorise, few enough for the cache."""
    step = max(16, _PIXELS_PER_CHUNK // (size * size))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _shapes_present(object_shapes: Tensor, num_classes: int) -> Tensor:
    present = torch.zeros(object_shapes.shape[0], num_classes + 1, dtype=torch.bool)
    present.scatter_(1, object_shapes % (num_classes + 1), True)  # padding -1 -> last column
    return present[:, :num_classes]


# ----------------------------------------------------------------------------- shapes
# Outlines live in the unit bounding circle (the object's extent); y points down as in images.


def _arc(radius: float, start: float, stop: float, n: int, centre=(0.0, 0.0)) -> np.ndarray:
    angles = np.linspace(start, stop, n, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)


def _star_polygon(points: int, inner: float) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    outline = np.stack([x, y], 1)
    outline -= (outline.max(0) + outline.min(0)) / 2
    return outline / np.linalg.norm(outline, axis=1).max()


def _crescent(bite_offset: float = 0.5, bite_radius: float = 0.85) -> np.ndarray:
    # unit disc minus a disc centred at (bite_offset, 0); the horns reach the unit circle on the
    # right half, so the unit circle stays the smallest bounding circle
    tip_x = (1 + bite_offset**2 - bite_radius**2) / (2 * bite_offset)
    tip_y = math.sqrt(1 - tip_x**2)
    outer_tip = math.atan2(tip_y, tip_x)
    inner_tip = math.atan2(tip_y, tip_x - bite_offset)
    outer = _arc(1.0, outer_tip, 2 * np.pi - outer_tip, 80)
    inner = _arc(bite_radius, 2 * np.pi - inner_tip, inner_tip, 60, centre=(bite_offset, 0.0))
    return np.concatenate([outer, inner])


def _shape_outlines(name: str) -> list[np.ndarray]:
    """Closed polygons; a pixel is inside when a ray from it crosses them an odd number of times."""
    half_side, arm = 1 / math.sqrt(2), 0.33
    reach = math.sqrt(1 - arm**2)
    outlines = {
        "circle": lambda: [_arc(1.0, 0, 2 * np.pi, 128)],
        "square": lambda: [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half_side],
        "triangle": lambda: [_star_polygon(3, 0.5)[::2]],
        "plus": lambda: [
            np.array(
                [
                    [arm, reach],
                    [arm, arm],
                    [reach, arm],
                    [reach, -arm],
                    [arm, -arm],
                    [arm, -reach],
                    [-arm, -reach],
                    [-arm, -arm],
                    [-reach, -arm],
                    [-reach, arm],
                    [-arm, arm],
                    [-arm, reach],
                ]
            )
        ],
        "star": lambda: [_star_polygon(5, 0.47)],
        "ring": lambda: [_arc(1.0, 0, 2 * np.pi, 128), _arc(0.5, 0, 2 * np.pi, 96)],
        "heart": lambda: [_heart()],
        "crescent": lambda: [_crescent()],
    }
    return outlines[name]()


def _inside(outlines: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over all edges and points."""
    start = np.concatenate(outlines)[:, None, :]
    stop = np.concatenate([np.roll(o, -1, axis=0) for o in outlines])[:, None, :]
    px, py = points[None, :, 0], points[None, :, 1]
    straddles = (start[..., 1] > py) != (stop[..., 1] > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (stop[..., 0] - start[..., 0]) / (stop[..., 1] - start[..., 1])
        crossing_x = start[..., 0] + (py - start[..., 1]) * slope
    crossings = (straddles & (px < crossing_x)).sum(0)
    return crossings % 2 == 1


@functools.cache
def _templates(shapes: tuple[str, ...]) -> np.ndarray:
    """Flat boolean rasters of the shapes over [-extent, extent]^2: shape, row = y, column = x."""
    axis = np.linspace(-_TEMPLATE_EXTENT, _TEMPLATE_EXTENT, _TEMPLATE_SIZE)
    ys, xs = np.meshgrid(axis, axis, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    return np.concatenate([_inside(_shape_outlines(name), points) for name in shapes])


@functools.cache
def _window(size: int, max_size: float) -> tuple[int, np.ndarray, np.ndarray]:
    """Side of the square window that holds any object, its pixel centres and pixel offsets.

    Objects are rasterised in such a window instead of the whole image: a few times less work.
    """
    half = math.ceil(max_size * size / 2) + 1
    side = min(size, 2 * half + 1)
    ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    centres = np.stack([xs.ravel(), ys.ravel()], 1) + 0.5
    return side, centres, (ys * size + xs).ravel()


def _rasterise(
    shape_ids: np.ndarray, uniforms: np.ndarray, config: SceneConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Masks (M, window pixels) of M objects, and the flat image position of each window pixel.

    ``uniforms`` (M, 4) in [0, 1) give size, x, y (object fully inside the image) and rotation.
    """
    size = config.image_size
    side, window_centres, window_offsets = _window(size, config.max_size)
    half = (side - 1) // 2
    radius = (config.min_size + uniforms[:, 0] * (config.max_size - config.min_size)) * size / 2
    centre = radius[:, None] + uniforms[:, 1:3] * (size - 2 * radius)[:, None]
    origin = np.clip(np.floor(centre) - half, 0, size - side)
    # window pixel -> object frame (rotate by -angle, scale to the unit circle) -> template index
    angle = 2 * np.pi * uniforms[:, 3]
    scale = 1 / (radius * _TEMPLATE_STEP)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    to_template = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)  # (M, 2, 2)
    shift = (
        np.einsum("mc,mcd->md", origin - centre, to_template) + _TEMPLATE_EXTENT / _TEMPLATE_STEP
    )
    index = window_centres @ to_template + (shift + 0.5)[:, None]  # +0.5: round to nearest
    np.clip(index, 0, _TEMPLATE_SIZE - 1, out=index)
    index = index.astype(np.intp)
    flat = (shape_ids[:, None] * _TEMPLATE_SIZE + index[..., 1]) * _TEMPLATE_SIZE + index[..., 0]
    masks = _templates(config.shapes)[flat]
    corner = (origin[:, 1] * size + origin[:, 0]).astype(np.intp)
    return masks, corner[:, None] + window_offsets


def _draw_count(rng: np.random.Generator, config: SceneConfig, cdf: np.ndarray) -> int:
    index = int(np.searchsorted(cdf, rng.random(), side="right"))
    return config.min_objects + min(index, len(cdf) - 1)  # min: rounding in the last cdf entry


def _draw_shapes(
    rng: np.random.Generator, config: SceneConfig, count: int, target: int
) -> tuple[np.ndarray, int]:
    """Shape ids of ``count`` objects, and the instance id (1-based) that must end up largest.

    ``target`` >= 0 (balanced labels): one object, at a random place in the drawing order, gets
    that shape and must win; -1: no object must win (the id returned is 0).
    """
    if rng.random() < config.same_shape_prob:
        shape = target if target >= 0 else rng.integers(len(config.shapes))
        shapes = np.full(count, shape, np.int64)
    else:
        shapes = rng.integers(len(config.shapes), size=count).astype(np.int64)
    if target < 0:
        return shapes, 0
    winner = int(rng.integers(count))
    shapes[winner] = target
    return shapes, winner + 1


def _lay_out(
    rngs: list[np.random.Generator], config: SceneConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shape ids (B, max_objects) padded with -1, flat instance maps (B, H*W) uint8, and visible
    pixel counts (B, max_objects + 1) per instance id (column 0: background).

    Objects are placed one after another; in each round every unfinished scene tries
    ``_CANDIDATES_PER_ROUND`` placements of its next object from its own generator, vectorised
    over scenes, and keeps the first that leaves every object enough visible area. A scene whose
    object fails ``_PLACEMENT_ATTEMPTS`` times is laid out afresh (new shapes, same count).
    """
    scenes, slots, tries = len(rngs), config.max_objects + 1, _CANDIDATES_PER_ROUND
    pixels = config.image_size**2
    weights = config.count_weights or (1.0,) * (config.max_objects - config.min_objects + 1)
    cdf = np.cumsum(weights) / sum(weights)
    counts = np.array([_draw_count(rng, config, cdf) for rng in rngs], np.int64)
    # balanced labels: the label's shape first, uniformly; the layout is then built around it
    classes = len(config.shapes)
    targets = np.array(
        [int(rng.integers(classes)) if config.balanced_labels else -1 for rng in rngs], np.int64
    )
    winners = np.zeros(scenes, np.int64)  # instance id that must be largest; 0: any
    shape_ids = np.full((scenes, config.max_objects), -1, np.int64)
    instances = np.zeros((scenes, pixels), np.uint8)
    areas = np.zeros((scenes, slots), np.int64)  # full area of object k in column k
    visible = np.zeros((scenes, slots), np.int64)
    visible[:, 0] = pixels
    placed = np.zeros(scenes, np.int64)
    failures = np.zeros(scenes, np.int64)
    restarts = np.zeros(scenes, np.int64)
    for b, rng in enumerate(rngs):
        shape_ids[b, : counts[b]], winners[b] = _draw_shapes(rng, config, counts[b], targets[b])

    while (active := np.flatnonzero(placed < counts)).size:
        uniforms = np.stack([rngs[b].random((tries, 4)) for b in active]).reshape(-1, 4)
        candidate_scene = np.repeat(active, tries)
        masks, positions = _rasterise(
            shape_ids[candidate_scene, placed[candidate_scene]], uniforms, config
        )
        # pixels each candidate would take from each instance id, by one bincount
        covered = instances[candidate_scene[:, None], positions].astype(np.int64)
        keys = (np.arange(len(masks)) * slots)[:, None] + covered
        taken = np.bincount(keys[masks], minlength=len(masks) * slots).reshape(-1, tries, slots)
        area = masks.sum(1).reshape(-1, tries)
        after = visible[active, None] - taken
        floor = np.maximum(MIN_VISIBLE_PIXELS, (1 - config.max_occlusion) * areas[active])
        need = np.where(areas[active] > 0, floor, 0)[:, None]
        valid = (area >= MIN_VISIBLE_PIXELS) & (after >= need).all(2)
        # balanced labels: from its placement on, the winner must stay the largest by the
        # label's own rule (argmax over visible areas, ties to the lower id); checked after
        # every placement, it holds when the last object is down
        new_ids = placed[active] + 1
        winner = winners[active]
        if (winner > 0).any():
            with_new = after.copy()
            with_new[np.arange(len(active)), :, new_ids] = area
            leader = with_new[..., 1:].argmax(2) + 1
            valid &= (
                (winner[:, None] == 0) | (new_ids < winner)[:, None] | (leader == winner[:, None])
            )
        ok, choice = valid.any(1), valid.argmax(1)

        rows, picked = active[ok], np.flatnonzero(ok) * tries + choice[ok]
        new_id = placed[rows] + 1
        inside = masks[picked]
        flat_positions = (rows * pixels)[:, None] + positions[picked]
        instances.reshape(-1)[flat_positions[inside]] = np.repeat(new_id, inside.sum(1))
        visible[rows] = after[ok, choice[ok]]
        visible[rows, new_id] = areas[rows, new_id] = area[ok, choice[ok]]
        placed[rows] = new_id
        failures[rows] = 0

        stuck = active[~ok]
        failures[stuck] += tries
        for b in stuck[failures[stuck] >= _PLACEMENT_ATTEMPTS]:
            restarts[b] += 1
            if restarts[b] > _LAYOUT_RESTARTS:
                raise RuntimeError(
                    f"could not place {counts[b]} objects in {_LAYOUT_RESTARTS} tries; lower "
                    f"max_size or max_objects, or raise max_occlusion ({config})"
                )
            shape_ids[b] = -1
            shape_ids[b, : counts[b]], winners[b] = _draw_shapes(
                rngs[b], config, counts[b], targets[b]
            )
            instances[b], areas[b], visible[b], placed[b], failures[b] = 0, 0, 0, 0, 0
            visible[b, 0] = pixels
    return shape_ids, instances, visible


# ----------------------------------------------------------------------------- colours


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(..., 3) HSV in [0, 1] -> RGB in [0, 1]."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(h * 6)
    f = h * 6 - sector
    sector = sector.astype(np.intp) % 6
    values = np.stack([v, v * (1 - f * s), v * (1 - s), v * (1 - (1 - f) * s)], -1)
    # per sector, which of (v, q, p, t) each channel takes
    choice = np.array([[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]])
    return np.take_along_axis(values, choice[sector], -1)


def _draw_object_colours(
    rngs: list[np.random.Generator], counts: np.ndarray, ranges: np.ndarray, config: SceneConfig
) -> np.ndarray:
    """(B, max_objects, 3) uint8 bright colours far from the background and from each other.

    ``ranges`` (B, 2, 3): the ends of the RGB segment each background's pixels lie on. Of
    ``_COLOUR_CANDIDATES`` random colours per object the first that clears both distances wins,
    else the one that comes closest: deterministic and never stuck.
    """
    scenes, max_objects = len(rngs), config.max_objects
    hsv = np.zeros((scenes, max_objects, _COLOUR_CANDIDATES, 3))
    shared = np.zeros(scenes, bool)
    for b, rng in enumerate(rngs):
        shared[b] = rng.random() < config.same_colour_prob
        hsv[b, : counts[b]] = rng.random((counts[b], _COLOUR_CANDIDATES, 3))
    candidates = np.rint(_hsv_to_rgb(hsv * [1.0, 0.45, 0.45] + [0.0, 0.55, 0.55]) * 255)

    start, direction = ranges[:, None, None, 0], ranges[:, None, None, 1] - ranges[:, None, None, 0]
    along = ((candidates - start) * direction).sum(-1) / np.maximum((direction**2).sum(-1), 1e-9)
    nearest = start + np.clip(along, 0, 1)[..., None] * direction
    background_score = np.linalg.norm(candidates - nearest, axis=-1) / _BACKGROUND_COLOUR_DISTANCE

    chosen = np.zeros((scenes, max_objects, 3))
    every = np.arange(scenes)
    for k in range(max_objects):
        score = background_score[:, k]
        if k:
            gaps = np.linalg.norm(candidates[:, k, :, None] - chosen[:, None, :k], axis=-1)
            score = np.minimum(score, gaps.min(2) / _OBJECT_COLOUR_DISTANCE)
        good = score >= 1
        pick = np.where(good.any(1), good.argmax(1), score.argmax(1))
        chosen[:, k] = np.where(shared[:, None] & (k > 0), chosen[:, 0], candidates[every, k, pick])
    return chosen.astype(np.uint8)


# ----------------------------------------------------------------------------- backgrounds
# A texture field t in [0, 1] per scene, on pixel-centre coordinates in [0, 1); every texture
# reads its parameters from the scene's fixed block of uniforms (columns named below).

_COIN, _FAMILY, _TEXTURE, _HUE, _SATURATION, _VALUE = 0, 1, 2, slice(3, 5), slice(5, 7), slice(7, 9)
_ANGLE, _FREQUENCY, _PHASE, _SHIFT = 9, 10, 11, slice(12, 14)
_BLOBS = 6
_BLOB_PARAMS = slice(14, 14 + 4 * _BLOBS)  # x, y, width, amplitude per blob
_BACKGROUND_UNIFORMS = 14 + 4 * _BLOBS


def _stretch(fields: np.ndarray) -> np.ndarray:
    low = fields.min((1, 2), keepdims=True)
    span = fields.max((1, 2), keepdims=True) - low
    return (fields - low) / np.maximum(span, 1e-12)


def _texture_fields(
    texture: np.ndarray, uniforms: np.ndarray, noise: dict[int, np.ndarray], size: int
) -> np.ndarray:
    axis = (np.arange(size) + 0.5) / size
    x, y = axis[None, None, :], axis[None, :, None]
    angle = 2 * np.pi * uniforms[:, _ANGLE, None, None]
    along = x * np.cos(angle) + y * np.sin(angle)  # (B, size, size)
    across = y * np.cos(angle) - x * np.sin(angle)
    fields = np.empty((len(texture), size, size))
    of_kind = {name: texture == i for i, name in enumerate(TEXTURES)}
    fields[of_kind["gradient"]] = _stretch(along[of_kind["gradient"]])

    stripes = uniforms[of_kind["stripes"]]
    cycles = 1.5 + 3.5 * stripes[:, _FREQUENCY, None, None]
    phase = 2 * np.pi * stripes[:, _PHASE, None, None]
    fields[of_kind["stripes"]] = 0.5 + 0.5 * np.sin(
        2 * np.pi * cycles * along[of_kind["stripes"]] + phase
    )

    checks = uniforms[of_kind["checkerboard"]]
    cells = 2 + 4 * checks[:, _FREQUENCY, None, None]  # per image side
    u = np.floor(along[of_kind["checkerboard"]] * cells + checks[:, _SHIFT][:, 0, None, None])
    v = np.floor(across[of_kind["checkerboard"]] * cells + checks[:, _SHIFT][:, 1, None, None])
    fields[of_kind["checkerboard"]] = (u + v) % 2

    blobs = uniforms[of_kind["blobs"], _BLOB_PARAMS].reshape(-1, _BLOBS, 4)
    width = 0.08 + 0.17 * blobs[..., 2:3]
    bump_x = np.exp(-0.5 * ((axis - blobs[..., 0:1]) / width) ** 2)  # (G, blobs, size)
    bump_y = np.exp(-0.5 * ((axis - blobs[..., 1:2]) / width) ** 2) * (2 * blobs[..., 3:4] - 1)
    fields[of_kind["blobs"]] = _stretch(np.einsum("gny,gnx->gyx", bump_y, bump_x))

    for b, field in noise.items():
        fields[b] = field
    return fields


def _draw_backgrounds(
    rngs: list[np.random.Generator], config: SceneConfig, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (B, 3, H, W) backgrounds and the (B, 2, 3) RGB segments their pixels lie on.

    Two muted colours of one hue family, a darker and a lighter, blended by a texture field.
    Every draw happens whether or not the label overrides the families, so the correlation knob
    changes the families and nothing else.
    """
    size = config.image_size
    uniforms = np.stack([rng.random(_BACKGROUND_UNIFORMS) for rng in rngs])
    correlated = uniforms[:, _COIN] < config.background_class_correlation
    family = np.where(
        correlated,
        labels % NUM_COLOUR_FAMILIES,
        (uniforms[:, _FAMILY] * NUM_COLOUR_FAMILIES).astype(np.int64),
    )
    texture = np.where(
        correlated, labels % len(TEXTURES), (uniforms[:, _TEXTURE] * len(TEXTURES)).astype(np.int64)
    )
    noise_id = TEXTURES.index("noise")
    noise = {b: rngs[b].random((size, size)) for b in np.flatnonzero(texture == noise_id)}
    fields = _texture_fields(texture, uniforms, noise, size)

    hue = (family[:, None] + 0.1 + 0.8 * uniforms[:, _HUE]) / NUM_COLOUR_FAMILIES  # margins
    saturation = 0.25 + 0.4 * uniforms[:, _SATURATION]
    value = np.array([0.3, 0.6]) + np.array([0.2, 0.25]) * uniforms[:, _VALUE]  # dark, light
    dark, light = np.moveaxis(_hsv_to_rgb(np.stack([hue, saturation, value], -1)) * 255, 1, 0)
    middle, amplitude = (dark + light) / 2, config.background_contrast * (light - dark)
    backgrounds = middle[..., None, None] + (fields - 0.5)[:, None] * amplitude[..., None, None]
    ends = np.stack([middle - amplitude / 2, middle + amplitude / 2], 1)
    return np.clip(np.rint(backgrounds), 0, 255).astype(np.uint8), ends
