"""Linear probes on frozen features: a fast convex fit on cached features, and the spec's recipe.

Fast mode (:func:`evaluate_linear_fast`): multinomial logistic regression on standardised cached
features, fitted to convergence with full-batch L-BFGS. Its objective is

    mean_i cross_entropy(W x_i + b, y_i) + weight_decay / 2 * ||W||^2      (bias not penalised)

which is scikit-learn's ``LogisticRegression(C=C)`` objective, ``C * sum_i CE_i + ||W||^2 / 2``,
divided by ``C * n``: the two have the same minimiser when ``C = 1 / (n * weight_decay)``
(:func:`sklearn_c`). (This holds for three or more classes; for two, scikit-learn fits a single
weight vector, and its C must be doubled.) The weight decay is chosen on the validation split,
then the probe is refitted on train + val with it; weight decay is per sample (the loss is a
mean), so the chosen value carries over to the larger set.

Standard recipe (:func:`evaluate_linear`): the offline probe of ADIOS.md §3 - SGD (momentum 0.9,
lr 0.1, no weight decay) for 100 epochs with the lr divided by 10 at 60 % and 80 % of training,
random-resized-crop + flip augmentation on the device, backbone frozen in eval mode. It has no
tunables, so it is fitted on train + val directly and scores test once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from adios.data.augment import BatchAugment, ViewConfig
from adios.data.datasets import Dataset, InMemoryBatches, Split
from adios.evaluation.features import extract_features
from adios.evaluation.protocol import FeatureSet, LabelledFeatures, SealedLabels, labelled_only
from adios.perf import float64

WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
# The usual linear-evaluation augmentation (solo-learn, MoCo): crop and flip, no colour changes.
PROBE_VIEW = ViewConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)


def sklearn_c(weight_decay: float, n_samples: int) -> float:
    """scikit-learn's C with the same optimum as our mean-loss objective (see module docstring)."""
    return 1.0 / (n_samples * weight_decay)


@dataclass
class LinearProbe:
    """Standardisation (statistics of the fitting data) followed by a linear map to logits."""

    mean: Tensor
    scale: Tensor
    weight: Tensor  # (C, D)
    bias: Tensor  # (C,)
    weight_decay: float
    iterations: int

    def __call__(self, features: Tensor) -> Tensor:
        return self.standardise(features) @ self.weight.T + self.bias

    def standardise(self, features: Tensor) -> Tensor:
        return (features.to(self.mean) - self.mean) / self.scale


def standardisation(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and scale per dimension, as scikit-learn's StandardScaler (population std).

    Constant dimensions (dead ReLU units are common) keep scale 1 instead of dividing by 0.
    """
    mean = features.mean(dim=0)
    std = features.std(dim=0, correction=0)
    return mean, torch.where(std > 1e-8 * mean.abs().clamp_min(1), std, torch.ones_like(std))


def fit_logistic(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 1000,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Minimise mean cross-entropy + weight_decay / 2 * ||W||^2 by full-batch L-BFGS.

    Returns (weight (C, D), bias (C,), L-BFGS iterations). ``init`` warm-starts from another
    solution, which only changes how fast the (strictly convex) problem converges. The fit runs
    in float64: in float32 L-BFGS stalls on rounding noise before it reaches the optimum (the
    problem is small next to feature extraction, even on a GPU; on the CPU for MPS tensors).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    features = float64(features)
    labels = labels.to(features.device, torch.long)
    if init is None:
        weight = features.new_zeros(num_classes, features.shape[1])
        bias = features.new_zeros(num_classes)
    else:
        weight, bias = (t.detach().clone().to(features) for t in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.T + bias, labels)
        loss = loss + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    iterations = optimizer.state[weight].get("n_iter", 0)
    return weight.detach(), bias.detach(), int(iterations)


def fit_linear_probe(
    data: LabelledFeatures,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 1000,
    init: LinearProbe | None = None,
) -> LinearProbe:
    """Standardise with ``data``'s statistics, then :func:`fit_logistic`."""
    features = float64(data.features)
    mean, scale = standardisation(features)
    standardised = (features - mean) / scale
    start = None if init is None else (init.weight, init.bias)
    weight, bias, iterations = fit_logistic(
        standardised, data.labels, num_classes, weight_decay, max_iter, init=start
    )
    return LinearProbe(mean, scale, weight, bias, weight_decay, iterations)


def top1(scores: Tensor, labels: Tensor) -> float:
    return (scores.argmax(dim=1) == labels.to(scores.device)).double().mean().item()


def select_weight_decay(
    train: LabelledFeatures,
    val: LabelledFeatures,
    num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = 1000,
) -> tuple[float, list[dict]]:
    """Fit on train for every weight decay, keep the best by val top-1 (ties: the larger decay).

    Takes train and val only, so it cannot see test labels. The fits run from the strongest decay
    to the weakest, each warm-started from the previous solution.
    """
    grid, probe = [], None
    for weight_decay in sorted(weight_decays, reverse=True):
        probe = fit_linear_probe(train, num_classes, weight_decay, max_iter, init=probe)
        grid.append(
            {
                "weight_decay": weight_decay,
                "val_top1": top1(probe(val.features), val.labels),
                "train_top1": top1(probe(train.features), train.labels),
                "iterations": probe.iterations,
            }
        )
    best = max(grid, key=lambda row: row["val_top1"])  # max keeps the first, i.e. larger decay
    return best["weight_decay"], grid[::-1]


def evaluate_linear_fast(
    features: FeatureSet,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = 1000,
) -> tuple[dict, LinearProbe]:
    """The fast protocol: choose weight decay on val, refit on train + val, score test once."""
    weight_decay, grid = select_weight_decay(
        features.train, features.val, features.num_classes, weight_decays, max_iter
    )
    fit = features.fit_split()
    probe = fit_linear_probe(fit, features.num_classes, weight_decay, max_iter)
    scores = probe(features.test)
    result = {
        "selected": {
            "weight_decay": weight_decay,
            "sklearn_C": sklearn_c(weight_decay, len(fit)),
            "val_top1": max(row["val_top1"] for row in grid),
        },
        "val_grid": grid,
        "fit_on": "train+val",
        "n_fit": len(fit),
        "fit_top1": top1(probe(fit.features), fit.labels),
        "iterations": probe.iterations,
        "test": features.test_labels.score(scores, features.class_names, fit.labels),
    }
    return result, probe


def train_linear_probe(
    backbone: nn.Module,
    split: Split,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    epochs: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    momentum: float = 0.9,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Linear, list[dict]]:
    """The spec's offline probe: SGD on augmented views through the frozen backbone.

    Returns the probe and one row per epoch (loss, train top-1 on the augmented views, lr).
    """
    if split.labels is None:
        raise ValueError("the probe's training split has no labels")
    backbone.eval()  # the images stay on the host, copied a batch at a time (ImageNet: 19 GB)
    image_size = split.images.shape[-1]
    augment = BatchAugment(PROBE_VIEW, image_size, mean, std)
    probe = nn.Linear(backbone.out_dim, num_classes).to(device)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=0.0)
    milestones = sorted({round(0.6 * epochs), round(0.8 * epochs)})
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    batches = InMemoryBatches(split, batch_size, device=device)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in tqdm(range(epochs), desc="linear probe", disable=not progress):
        losses, hits, sizes = [], [], []  # read once an epoch, not at every batch
        for images, labels in batches.epoch(generator):
            with torch.no_grad():
                features = backbone(augment(images, generator))
            logits = probe(features)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach().float())
            hits.append((logits.argmax(1) == labels).sum().float())
            sizes.append(len(labels))
        loss_hits = torch.stack([torch.stack(losses), torch.stack(hits)]).cpu().double()
        total_loss = float((loss_hits[0] * torch.tensor(sizes, dtype=torch.float64)).sum())
        correct, seen = float(loss_hits[1].sum()), sum(sizes)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": total_loss / seen,
                "train_top1": correct / seen,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        schedule.step()
    return probe, history


def evaluate_linear(
    backbone: nn.Module,
    dataset: Dataset,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    epochs: int = 100,
    batch_size: int = 256,
    eval_batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """The standard recipe fitted on train + val, then test scored once (no aug at test)."""
    train, val = labelled_only(dataset.train, "train"), labelled_only(dataset.val, "val")
    fit = Split(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]))
    probe, history = train_linear_probe(
        backbone,
        fit,
        dataset.num_classes,
        mean,
        std,
        device,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    test = dataset.test
    sealed = SealedLabels(lambda: test.labels)
    features = extract_features(
        backbone, test.images, mean, std, device, eval_batch_size, progress
    ).to(device)
    with torch.no_grad():
        scores = probe(features)
    return {
        "recipe": {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr_steps_at": [0.6, 0.8],
            "augmentation": "random resized crop (0.08-1) + horizontal flip",
        },
        "fit_on": "train+val",
        "n_fit": len(fit),
        "history": history,
        "test": sealed.score(scores, dataset.class_names, fit.labels),
    }
