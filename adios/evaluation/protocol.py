"""The evaluation protocol: choose on validation, refit on train + val, score test once.

ADIOS's reference code picked its kNN settings on the test split (ADIOS.md §3-4). Here the
protocol is carried by the types, so a slip cannot reach the test labels:

1. selection functions take two :class:`LabelledFeatures` (train, val) and nothing else;
2. the final classifier is fitted on train + val (together they are the dataset's whole
   training set, which is what published kNN and linear numbers use);
3. the test split reaches the protocol as features plus :class:`SealedLabels`, whose labels are
   read in exactly one place, :meth:`SealedLabels.score`, after the predictions are fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from adios.data.datasets import Dataset, Split
from adios.data.readers import UNLABELED
from adios.evaluation.features import extract_features
from adios.evaluation.scores import (
    balanced_accuracy_of,
    confusion_matrix,
    majority_rate,
    per_class_recall,
)


@dataclass(frozen=True)
class LabelledFeatures:
    features: Tensor  # (N, D) float
    labels: Tensor  # (N,) int64, on the features' device

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.labels.shape != (self.features.shape[0],):
            raise ValueError(
                f"features (N, D) and labels (N,) expected, got {tuple(self.features.shape)} "
                f"and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.features.shape[0]

    @classmethod
    def concat(cls, parts: Sequence[LabelledFeatures]) -> LabelledFeatures:
        return cls(torch.cat([p.features for p in parts]), torch.cat([p.labels for p in parts]))


class SealedLabels:
    """Held-out labels that only a final score can read.

    ``read`` is called in :meth:`score` and nowhere else (for a dataset split, pass
    ``lambda: split.labels`` so that not even the attribute is touched earlier); ``opened``
    tells whether that has happened.
    """

    def __init__(self, read: Callable[[], Tensor | None]) -> None:
        self._read = read
        self.opened = False

    def score(
        self, scores: Tensor, class_names: Sequence[str], train_labels: Tensor | None = None
    ) -> dict:
        """Metrics of final class scores (N, C); call once the predictions can no longer change.

        ``train_labels``: the labels the classifier was fitted on, for the majority-class rate.
        """
        self.opened = True
        labels = self._read()
        if labels is None:
            raise ValueError("the held-out split has no labels to score against")
        return classification_metrics(scores, labels, class_names, train_labels)


def classification_metrics(
    scores: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    train_labels: Tensor | None = None,
) -> dict:
    """Top-1, top-5 (more than 5 classes only), per-class accuracy and the confusion matrix.

    The prediction is the first maximal score, so a tie goes to the lowest class (as in
    :func:`adios.evaluation.knn.knn_accuracy`). Per-class accuracy is recall; classes absent from
    ``labels`` get None, and ``balanced_accuracy`` averages over the present ones. With
    ``train_labels``, ``majority_rate`` is the top-1 of always predicting the most frequent
    training class (:mod:`adios.evaluation.scores`).
    """
    num_classes = len(class_names)
    if scores.shape != (labels.shape[0], num_classes):
        raise ValueError(
            f"scores {tuple(scores.shape)} do not match {labels.shape[0]} labels "
            f"and {num_classes} classes"
        )
    scores = scores.cpu()  # small; and MPS has no float64 for the rates below
    labels = labels.to(scores.device, torch.long)
    predictions = scores.argmax(dim=1)
    confusion = confusion_matrix(predictions, labels, num_classes)
    recall, support = per_class_recall(confusion)
    per_class = [
        r if n > 0 else None for r, n in zip(recall.tolist(), support.tolist(), strict=True)
    ]
    metrics = {
        "top1": (predictions == labels).double().mean().item(),
        "top5": None,
        "balanced_accuracy": balanced_accuracy_of(confusion),
        "majority_rate": None if train_labels is None else majority_rate(train_labels, labels),
        "n": int(labels.shape[0]),
        "per_class": dict(zip(class_names, per_class, strict=True)),
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted class
    }
    if num_classes > 5:
        top5 = scores.topk(5, dim=1).indices
        metrics["top5"] = (top5 == labels[:, None]).any(dim=1).double().mean().item()
    return metrics


@dataclass
class FeatureSet:
    """Frozen features of a dataset's three splits, with the test labels sealed."""

    train: LabelledFeatures
    val: LabelledFeatures
    test: Tensor
    test_labels: SealedLabels
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fit_split(self) -> LabelledFeatures:
        """Train + val: what the final classifier is fitted on once selection is done."""
        return LabelledFeatures.concat([self.train, self.val])


def labelled_only(split: Split, name: str) -> Split:
    """The labelled images of a split (STL-10's training split mixes in unlabelled ones)."""
    if split.labels is None or not bool((split.labels != UNLABELED).any()):
        raise ValueError(
            f"the {name} split has no labels; this evaluation needs a labelled dataset"
        )
    if bool((split.labels != UNLABELED).all()):
        return split
    return split.subset((split.labels != UNLABELED).nonzero().squeeze(1))


def labelled_features(
    extract: Callable[[Tensor], Tensor], split: Split, name: str
) -> LabelledFeatures:
    """Features of the split's labelled images."""
    split = labelled_only(split, name)
    features = extract(split.images)
    return LabelledFeatures(features, split.labels.to(features.device, torch.long))


def extract_feature_set(
    backbone: nn.Module,
    dataset: Dataset,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 256,
    progress: bool = False,
) -> FeatureSet:
    """Features of all splits, normalised with the statistics the encoder was trained with.

    Only ``dataset.test.images`` is read here; the test labels stay sealed.
    """
    test = dataset.test

    def extract(images: Tensor) -> Tensor:  # kept on the device: the probes run there too
        return extract_features(backbone, images, mean, std, device, batch_size, progress).to(
            device
        )

    return FeatureSet(
        train=labelled_features(extract, dataset.train, "train"),
        val=labelled_features(extract, dataset.val, "val"),
        test=extract(test.images),
        test_labels=SealedLabels(lambda: test.labels),
        class_names=list(dataset.class_names),
    )
