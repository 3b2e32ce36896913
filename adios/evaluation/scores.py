"""Accuracy and the baselines it is read against: balanced accuracy and the majority-class rate.

Top-1 alone misleads on skewed labels: the built-in scenes' old label was a circle a third of
the time, so a probe that always answered "circle" scored 33 % against a quoted "chance 20 %".
Every evaluation therefore reports, next to top-1, the balanced accuracy (mean per-class recall
over the classes present in the labels, scikit-learn's ``balanced_accuracy_score``) and the
majority-class rate (what always predicting the most frequent *training* class scores on the
evaluated labels). These functions are the one place both are computed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts on the CPU; rows: true class, columns: predicted class."""
    labels = labels.to(predictions.device, torch.long)
    flat = torch.bincount(labels * num_classes + predictions.long(), minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes).cpu()


def per_class_recall(confusion: Tensor) -> tuple[Tensor, Tensor]:
    """Recall (float64) and support of every class; a class without support has recall 0."""
    support = confusion.sum(dim=1)
    return confusion.diagonal().double() / support.clamp_min(1), support


def balanced_accuracy_of(confusion: Tensor) -> float:
    """Mean recall over the classes present in the labels (NaN when no labels)."""
    recall, support = per_class_recall(confusion)
    return recall[support > 0].mean().item()


def balanced_accuracy(predictions: Tensor, labels: Tensor, num_classes: int) -> float:
    return balanced_accuracy_of(confusion_matrix(predictions, labels, num_classes))


def majority_class(train_labels: Tensor) -> int:
    """The most frequent class among the labelled (>= 0) training labels; ties: the lowest."""
    known = train_labels[train_labels >= 0].long()
    if known.numel() == 0:
        raise ValueError("majority_class: no labelled training images")
    return int(torch.bincount(known.cpu()).argmax())  # argmax keeps the first maximum


def majority_rate(train_labels: Tensor, labels: Tensor) -> float:
    """Top-1 of always predicting the most frequent training class, on ``labels``."""
    return (labels.cpu() == majority_class(train_labels)).double().mean().item()
