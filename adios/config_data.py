"""The data settings the configuration is made of: a view's augmentation and the built-in scenes.

They live at the configuration's level (adios.config builds them from presets and overrides)
so that :mod:`adios.config` needs nothing from :mod:`adios.data`, which in turn imports them from
here: :class:`ViewConfig` for :mod:`adios.data.augment`, :class:`SceneConfig` and the shape
vocabulary for :mod:`adios.data.scenes` (the names stay importable from there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "plus",
    "star",
    "ring",
    "heart",
    "crescent",
)
MAX_OBJECTS = 10
MIN_OBJECT_PIXELS = 6  # smallest allowed object diameter; below it shapes are not recognisable


@dataclass(frozen=True)
class ViewConfig:
    """Random augmentation of one view; defaults are the SimCLR/BYOL ImageNet recipe."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    flip_p: float = 0.5
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        # Configs often come from YAML, where pairs arrive as lists.
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            value = getattr(self, name)
            if not isinstance(value, Sequence) or len(value) != 2:
                raise ValueError(f"ViewConfig.{name} must be a pair (min, max), got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        for field in fields(self):
            values = getattr(self, field.name)
            values = values if isinstance(values, tuple) else (values,)
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"ViewConfig.{field.name} must be finite, got {values}")

        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(
                f"ViewConfig.crop_scale must satisfy 0 < min <= max <= 1, got {lo, hi}"
            )
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"ViewConfig.crop_ratio must satisfy 0 < min <= max, got {lo, hi}")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"ViewConfig.blur_sigma must satisfy 0 < min <= max, got {lo, hi}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ViewConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"ViewConfig.hue must lie in [0, 0.5], got {self.hue}")
        for name in ("jitter_p", "grayscale_p", "blur_p", "flip_p", "solarize_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ViewConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.solarize_threshold <= 1:
            raise ValueError(
                f"ViewConfig.solarize_threshold must lie in [0, 1], got {self.solarize_threshold}"
            )

    @property
    def uses_jitter(self) -> bool:
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        return self.jitter_p > 0 and any(s > 0 for s in strengths)


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"SceneConfig.{name} = {value!r}: {rule}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True)
class SceneConfig:
    image_size: int = 32
    min_objects: int = 1
    max_objects: int = 4
    count_weights: tuple[float, ...] | None = None  # relative prob. of min_objects..max_objects
    shapes: tuple[str, ...] = SHAPES  # subset of SHAPES; labels index into this tuple
    min_size: float = 0.25  # bounding-circle diameter as a fraction of the image side
    max_size: float = 0.5
    same_shape_prob: float = 0.0  # prob. that all objects of a scene share one shape
    same_colour_prob: float = 0.0  # prob. that all objects of a scene share one colour
    max_occlusion: float = 0.5  # most of an object's area that later objects may cover
    background_contrast: float = 1.0  # 0 = flat backgrounds, 1 = full-strength textures
    background_class_correlation: float = 0.0  # prob. that the label picks the background
    balanced_labels: bool = True  # the label's shape drawn uniformly (False: the older scenes)

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep the config hashable and comparable
        if isinstance(self.shapes, list):
            object.__setattr__(self, "shapes", tuple(self.shapes))
        if isinstance(self.count_weights, list):
            object.__setattr__(self, "count_weights", tuple(self.count_weights))

        size = self.image_size
        _require(
            _is_int(size) and size >= 32 and size % 16 == 0,
            "image_size",
            size,
            "must be an integer multiple of 16, at least 32",
        )
        _require(
            _is_int(self.min_objects) and self.min_objects >= 1,
            "min_objects",
            self.min_objects,
            "must be an integer >= 1",
        )
        _require(
            _is_int(self.max_objects) and self.min_objects <= self.max_objects <= MAX_OBJECTS,
            "max_objects",
            self.max_objects,
            f"must be an integer with min_objects <= max_objects <= {MAX_OBJECTS}",
        )
        if self.count_weights is not None:
            counts = self.max_objects - self.min_objects + 1
            weights = self.count_weights
            _require(
                isinstance(weights, tuple)
                and len(weights) == counts
                and all(_is_real(w) and math.isfinite(w) and w >= 0 for w in weights)
                and sum(weights) > 0,
                "count_weights",
                weights,
                f"must be None or {counts} non-negative weights (one per object count "
                f"{self.min_objects}..{self.max_objects}) with a positive sum",
            )
        _require(
            isinstance(self.shapes, tuple)
            and len(self.shapes) > 0
            and all(s in SHAPES for s in self.shapes)
            and len(set(self.shapes)) == len(self.shapes),
            "shapes",
            self.shapes,
            f"must be a non-empty tuple of distinct names from {SHAPES}",
        )
        _require(
            _is_real(self.min_size)
            and self.min_size > 0
            and self.min_size * size >= MIN_OBJECT_PIXELS,
            "min_size",
            self.min_size,
            f"must give objects at least {MIN_OBJECT_PIXELS} px across "
            f"(>= {MIN_OBJECT_PIXELS / size:.4g} at image_size {size})",
        )
        _require(
            _is_real(self.max_size) and self.min_size <= self.max_size <= 1,
            "max_size",
            self.max_size,
            "must be in [min_size, 1]",
        )
        for name in (
            "same_shape_prob",
            "same_colour_prob",
            "max_occlusion",
            "background_contrast",
            "background_class_correlation",
        ):
            value = getattr(self, name)
            _require(_is_real(value) and 0 <= value <= 1, name, value, "must be in [0, 1]")
        _require(
            isinstance(self.balanced_labels, bool),
            "balanced_labels",
            self.balanced_labels,
            "must be true or false",
        )
