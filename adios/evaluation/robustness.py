"""A backgrounds test on the built-in scenes, in the spirit of the Backgrounds Challenge.

In natural photos the background predicts the label (boats on water); a representation may lean
on that cue instead of the object. Here the cue is a knob: the probes are trained on scenes whose
background colour family and texture follow the label with probability ``correlation``
(``SceneConfig.background_class_correlation``), and then scored on the test scenes' very same
objects pasted onto other backgrounds (:func:`adios.data.scenes.recompose`):

- ``original``: the test scenes as drawn (correlated like the training scenes);
- ``only_fg``: the objects on a flat background of the normalisation mean (what ADIOS's masks
  leave behind);
- ``only_bg``: the backgrounds alone, no object: how far the cue alone goes;
- ``mixed_same``: new backgrounds of the label's own family and texture (correlation 1);
- ``mixed_rand``: new backgrounds of random families and textures (correlation 0), drawn from the
  same random numbers as ``mixed_same`` so that only the label's influence differs.

``background_gap`` = top-1(mixed_same) - top-1(mixed_rand) measures the reliance on the
background (the Backgrounds Challenge's BG-Gap). Building ``mixed_same`` needs the test labels,
as its definition does; the probes' choices (weight decay, k, temperature) are made on train and
val only, and every variant is predicted before any score is computed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from adios.data.datasets import Split
from adios.data.scenes import SceneConfig, Scenes, generate_backgrounds, generate_scenes, recompose
from adios.evaluation.features import extract_features
from adios.evaluation.knn import nearest_neighbours, select_knn, weighted_vote
from adios.evaluation.linear import fit_linear_probe, select_weight_decay
from adios.evaluation.protocol import LabelledFeatures, SealedLabels, labelled_features

VARIANTS = ("original", "only_fg", "only_bg", "mixed_same", "mixed_rand")
DEFAULT_CORRELATION = 0.9
# Seed of the recomposed backgrounds, added to the test split's seed: any value other than 0
# gives backgrounds the test scenes never had.
BACKGROUND_SEED_OFFSET = 7919


def split_seeds(data_seed: int) -> tuple[int, int, int]:
    """Scene seeds of train, val, test: the ones :func:`adios.data.datasets.load_dataset` uses,
    so the probes see the run's own objects (only the backgrounds change)."""
    return 3 * data_seed, 3 * data_seed + 1, 3 * data_seed + 2


def background_variants(scenes: Scenes, seed: int, fill: Sequence[int]) -> dict[str, Tensor]:
    """uint8 images (N, 3, H, W) of every variant in :data:`VARIANTS`, objects unchanged."""
    config, labels = scenes.config, scenes.largest_shape
    flat = torch.tensor(fill, dtype=torch.uint8).view(1, 3, 1, 1).expand_as(scenes.backgrounds)
    same = generate_backgrounds(
        len(scenes), dataclasses.replace(config, background_class_correlation=1.0), seed, labels
    )
    random = generate_backgrounds(
        len(scenes), dataclasses.replace(config, background_class_correlation=0.0), seed
    )
    return {
        "original": scenes.images,
        "only_fg": recompose(scenes, flat.contiguous()).images,
        "only_bg": scenes.backgrounds,
        "mixed_same": recompose(scenes, same).images,
        "mixed_rand": recompose(scenes, random).images,
    }


def evaluate_backgrounds(
    backbone: nn.Module,
    scene_config: SceneConfig,
    sizes: tuple[int, int, int],
    data_seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[dict, dict[str, Tensor]]:
    """Probe top-1 on every variant and the background gap, for a fast linear probe and kNN.

    ``scene_config`` carries the training correlation; ``sizes`` are the train/val/test counts.
    Returns the results and the test images of every variant (for pictures).
    """
    train_seed, val_seed, test_seed = split_seeds(data_seed)
    train = generate_scenes(sizes[0], scene_config, train_seed)
    val = generate_scenes(sizes[1], scene_config, val_seed)
    test = generate_scenes(sizes[2], scene_config, test_seed)
    fill = [round(255 * m) for m in mean]
    variants = background_variants(test, test_seed + BACKGROUND_SEED_OFFSET, fill)

    def extract(images: Tensor) -> Tensor:
        return extract_features(backbone, images, mean, std, device, batch_size, progress).to(
            device
        )

    train_features = labelled_features(extract, Split(train.images, train.largest_shape), "train")
    val_features = labelled_features(extract, Split(val.images, val.largest_shape), "val")
    variant_features = {name: extract(images) for name, images in variants.items()}
    num_classes = len(scene_config.shapes)
    fit = LabelledFeatures.concat([train_features, val_features])

    weight_decay, grid = select_weight_decay(train_features, val_features, num_classes)
    probe = fit_linear_probe(fit, num_classes, weight_decay)
    knn = select_knn(train_features, val_features, num_classes)
    similarity = {
        name: nearest_neighbours(fit.features, f, knn.k) for name, f in variant_features.items()
    }
    scores = {
        "linear": {name: probe(f) for name, f in variant_features.items()},
        "knn": {
            name: weighted_vote(s, fit.labels[i], num_classes, knn.k, knn.temperature)
            for name, (s, i) in similarity.items()
        },
    }

    sealed = SealedLabels(lambda: test.largest_shape)
    names = list(scene_config.shapes)
    results: dict = {
        "correlation": scene_config.background_class_correlation,
        "selected": {
            "linear": {"weight_decay": weight_decay},
            "knn": {"k": knn.k, "temperature": knn.temperature},
        },
        "linear_val_grid": grid,
        "fit_on": "train+val",
        "n_fit": len(fit),
        "n_test": len(test),
    }
    for probe_name, by_variant in scores.items():
        table = {}
        for name, s in by_variant.items():
            metrics = sealed.score(s, names, fit.labels)
            table[name] = {
                "top1": metrics["top1"],
                "balanced_accuracy": metrics["balanced_accuracy"],
            }
            results["majority_rate"] = metrics["majority_rate"]  # the same for every variant
        table["background_gap"] = table["mixed_same"]["top1"] - table["mixed_rand"]["top1"]
        results[probe_name] = table
    return results, variants
