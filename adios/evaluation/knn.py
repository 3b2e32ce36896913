"""Weighted k-nearest-neighbour classification of frozen features (InstDisc / DINO protocol).

k and the temperature are hyper-parameters: :func:`select_knn` chooses them on a validation split
carved out of the training data, never on the test split (ADIOS.md §3), and
:func:`evaluate_knn` then scores the test split once (see :mod:`adios.evaluation.protocol`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from adios.evaluation.protocol import FeatureSet, LabelledFeatures
from adios.perf import float64

KNN_KS = (1, 5, 10, 20, 50, 100, 200)
KNN_TEMPERATURES = (0.02, 0.05, 0.07, 0.1, 0.2, 0.5)
# The settings most papers report (k=200 is lightly's / InstDisc's, k=20 DINO's), scored on test
# next to the selected one for comparison with published numbers; never used to choose.
CONVENTIONAL_SETTINGS = {"k20_t0.1": (20, 0.1), "k200_t0.1": (200, 0.1)}


@torch.no_grad()
def nearest_neighbours(
    train_features: Tensor, query_features: Tensor, k: int, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """Cosine similarities (Q, k) and indices (Q, k) of each query's k nearest training samples.

    Most similar first, so the first j columns are the j nearest neighbours: one search serves a
    whole grid of k. k larger than the number of training samples is clamped to it. Queries are
    processed ``chunk_size`` at a time so that the similarity matrix never exceeds chunk_size x
    n_train. Runs on the device of ``train_features`` in their dtype (float32 for integers).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = train_features.device
    dtype = train_features.dtype if train_features.is_floating_point() else torch.float32
    train = F.normalize(train_features.to(dtype), dim=1)
    k = min(k, train.shape[0])
    similarities, neighbours = [], []
    for query_chunk in query_features.split(chunk_size):
        query = F.normalize(query_chunk.to(device=device, dtype=dtype), dim=1)
        similarity, neighbour = (query @ train.T).topk(k, dim=1)
        similarities.append(similarity)
        neighbours.append(neighbour)
    return torch.cat(similarities), torch.cat(neighbours)


@torch.no_grad()
def weighted_vote(
    similarity: Tensor, neighbour_labels: Tensor, num_classes: int, k: int, temperature: float
) -> Tensor:
    """Class scores (Q, num_classes): each of the first k neighbours votes exp(similarity / T).

    Weights and scores are float64 so that small temperatures cannot overflow (exp(1 / 0.01) is
    beyond float32); on the CPU for MPS tensors (:func:`adios.perf.float64`).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    weights = (float64(similarity[:, :k]) / temperature).exp()
    scores = torch.zeros(
        similarity.shape[0], num_classes, dtype=torch.float64, device=weights.device
    )
    return scores.scatter_add_(1, neighbour_labels[:, :k].to(weights.device), weights)


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores (Q, num_classes) by a temperature-weighted vote of the k nearest neighbours.

    Each of the k most cosine-similar training samples votes for its class with weight
    exp(similarity / temperature); see :func:`nearest_neighbours` and :func:`weighted_vote`.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    similarity, neighbour = nearest_neighbours(train_features, query_features, k, chunk_size)
    labels = train_labels.to(device=neighbour.device, dtype=torch.long)[neighbour]
    return weighted_vote(similarity, labels, num_classes, k, temperature)


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy of :func:`knn_predict`; a tie between classes goes to the lowest class."""
    scores = knn_predict(
        train_features, train_labels, query_features, num_classes, k=k, temperature=temperature
    )
    # torch.argmax returns the first maximal index, which gives the lowest-class tie rule.
    predictions = scores.argmax(dim=1)
    return (predictions == query_labels.to(predictions.device)).double().mean().item()


@dataclass(frozen=True)
class KnnSelection:
    k: int
    temperature: float
    val_top1: float
    grid: list[dict]  # {"k", "temperature", "val_top1"} for every grid point, in grid order


@torch.no_grad()
def select_knn(
    train: LabelledFeatures,
    val: LabelledFeatures,
    num_classes: int,
    ks: Sequence[int] = KNN_KS,
    temperatures: Sequence[float] = KNN_TEMPERATURES,
) -> KnnSelection:
    """Choose k and the temperature by val top-1 with train as the memory bank.

    Takes train and val only, so it cannot see test labels. One neighbour search at max(ks)
    serves the whole grid. Ties go to the first grid point in (k, temperature) order, i.e. the
    smallest k, then the smallest temperature.
    """
    similarity, neighbour = nearest_neighbours(train.features, val.features, max(ks))
    neighbour_labels = train.labels.to(neighbour.device)[neighbour]
    val_labels = val.labels
    grid = []
    for k in ks:
        for temperature in temperatures:
            scores = weighted_vote(similarity, neighbour_labels, num_classes, k, temperature)
            hits = scores.argmax(dim=1) == val_labels.to(scores.device)
            top1 = hits.double().mean().item()
            grid.append({"k": k, "temperature": temperature, "val_top1": top1})
    best = max(grid, key=lambda row: row["val_top1"])  # max keeps the first of equal rows
    return KnnSelection(best["k"], best["temperature"], best["val_top1"], grid)


@torch.no_grad()
def evaluate_knn(
    features: FeatureSet,
    ks: Sequence[int] = KNN_KS,
    temperatures: Sequence[float] = KNN_TEMPERATURES,
) -> dict:
    """The kNN protocol: select (k, T) on val, then score test once with train + val as the bank.

    The selected and the conventional settings (:data:`CONVENTIONAL_SETTINGS`) are all predicted
    before the test labels are opened.
    """
    selection = select_knn(features.train, features.val, features.num_classes, ks, temperatures)
    settings = {"selected": (selection.k, selection.temperature), **CONVENTIONAL_SETTINGS}
    bank = features.fit_split()
    similarity, neighbour = nearest_neighbours(
        bank.features, features.test, max(k for k, _ in settings.values())
    )
    neighbour_labels = bank.labels.to(neighbour.device)[neighbour]
    scores = {
        name: weighted_vote(similarity, neighbour_labels, features.num_classes, k, temperature)
        for name, (k, temperature) in settings.items()
    }
    test = {
        name: {
            "k": settings[name][0],
            "temperature": settings[name][1],
            **features.test_labels.score(s, features.class_names, bank.labels),
        }
        for name, s in scores.items()
    }
    return {
        "selected": {
            "k": selection.k,
            "temperature": selection.temperature,
            "val_top1": selection.val_top1,
        },
        "val_grid": selection.grid,
        "bank": "train+val",
        "n_bank": len(bank),
        "test": test,
    }
