"""``adios bench data``: does the data pipeline keep the model busy?

Two throughputs for one configuration, measured one after the other on the training device:

- augmentation: the training loop's batch source (in memory, or streamed from files by worker
  processes) followed by the two-view augmentation, consumed exactly as :func:`adios.train.train`
  consumes them;
- training: :func:`adios.train.train_step` (encoder step, then masker step) on the preset's models,
  fed with one pair of views made beforehand.

Each runs ``warmup`` untimed iterations first. ``ratio`` = augmentation / training images per
second. On a CPU-only machine both compete for the same cores during training, so the pipeline
then costs about 1 / (ratio + 1) of the time; on a GPU it overlaps with the step.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import torch

from adios.config import Config
from adios.data.augment import TwoViewAugment
from adios.data.datasets import load_dataset, to_device, training_batches
from adios.perf import synchronize
from adios.train import build_models, build_optimizers, epoch_generator, pick_device, train_step


def _views(batches, augment: TwoViewAugment, seed: int) -> Iterator[tuple[Any, ...]]:
    """Augmented batches epoch after epoch, with the randomness train() would use."""
    for epoch in itertools.count():
        generator = epoch_generator(seed, epoch)
        for images, labels in batches.epoch(generator):
            yield (*augment(images, generator), labels, generator)


def _rate(run, count: int, warmup: int, device: torch.device) -> float:
    """Images per second of ``run()`` (which returns its batch size) over ``count`` calls."""
    for _ in range(warmup):
        run()
    synchronize(device)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += run()
    synchronize(device)
    return images / (time.perf_counter() - start)


def bench_data(
    cfg: Config, *, batches: int = 20, steps: int = 5, warmup: int = 2
) -> dict[str, Any]:
    """Augmentation and training-step throughput (images/s) for ``cfg`` and their ratio."""
    if min(batches, steps) < 1 or warmup < 0:
        raise ValueError("bench: --batches and --steps must be >= 1, --warmup >= 0")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    dataset = load_dataset(cfg.data, bank_size=cfg.train.knn_bank, progress=cfg.train.progress)
    train_split = to_device(dataset.train, device)
    source = training_batches(dataset, train_split, cfg.optim.batch_size, cfg.data.workers)
    augment = TwoViewAugment(
        cfg.augment.view_a, cfg.augment.view_b, cfg.data.image_size, dataset.mean, dataset.std
    )
    views = _views(source, augment, cfg.seed)
    last: list[tuple[Any, ...]] = []

    def augment_once() -> int:
        last[:] = [next(views)]
        return last[0][0].shape[0]

    augment_rate = _rate(augment_once, batches, warmup, device)

    torch.manual_seed(cfg.seed)
    labelled = train_split.labels is not None
    models = build_models(cfg, dataset.num_classes if labelled else None, device)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    models.objective.train()
    a, b, labels, generator = last[0]

    def step_once() -> int:
        train_step(cfg, models, encoder_opt, masker_opt, a, b, labels, generator)
        return a.shape[0]

    train_rate = _rate(step_once, steps, warmup, device)
    return {
        "preset": cfg.preset,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": int(a.shape[0]),
        "image_size": cfg.data.image_size,
        "source": "memory" if dataset.train_files is None else "stream",
        "augment_batches": batches,
        "train_steps": steps,
        "augment_images_per_s": augment_rate,
        "train_images_per_s": train_rate,
        "ratio": augment_rate / train_rate,
        "load_average_1min": load_average,
    }


def format_bench(result: dict[str, Any]) -> str:
    load = result["load_average_1min"]
    return "\n".join(
        [
            f"preset {result['preset']} on {result['device']} ({result['threads']} threads), batch "
            f"{result['batch_size']} at {result['image_size']} px, {result['source']} source"
            + (f", load average {load:.2f}" if load is not None else ""),
            f"augmentation pipeline  {result['augment_images_per_s']:10.1f} images/s  "
            f"({result['augment_batches']} batches)",
            f"training step          {result['train_images_per_s']:10.1f} images/s  "
            f"({result['train_steps']} steps)",
            f"ratio (augmentation / training): {result['ratio']:.1f}x",
        ]
    )
