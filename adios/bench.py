"""``adios bench data``: does the data pipeline keep the model busy?

Two throughputs for one configuration, measured one after the other on the training device,
both through the training loop's own code (:mod:`adios.engine`):

- augmentation: the batch source (in memory, or streamed from files by worker processes)
  followed by the two-view augmentation (with the oracle's object layers), consumed exactly as
  :func:`adios.train.train` consumes them;
- training: full training iterations (:func:`adios.engine.iterations`: views, learning-rate
  schedules, encoder and masker steps, BYOL's EMA update, the fp16 scaler) on the preset's
  models, continuing through the epochs as a run would.

Each runs ``warmup`` untimed iterations first. ``ratio`` = augmentation / training images per
second; since a training iteration includes its augmentation, the pipeline takes about
``1 / ratio`` of a CPU run's time (on a GPU the augmentation runs on the device too).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from adios.config import Config
from adios.engine import epoch_batches, iterations, setup, timed, views


def bench_data(
    cfg: Config, *, batches: int = 20, steps: int = 5, warmup: int = 2
) -> dict[str, Any]:
    """Augmentation and training-iteration throughput (images/s) for ``cfg`` and their ratio."""
    if min(batches, steps) < 1 or warmup < 0:
        raise ValueError("bench: --batches and --steps must be >= 1, --warmup >= 0")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    s = setup(cfg, progress=cfg.train.progress)
    pipeline = _pipeline(s)

    def augment_once() -> int:
        return next(pipeline)

    augment_rate = timed(augment_once, batches, warmup, s.device)
    s.models.objective.train()
    training = iterations(s)

    def train_once() -> int:
        return next(training)[0]

    train_rate = timed(train_once, steps, warmup, s.device)
    return {
        "preset": cfg.preset,
        "device": str(s.device),
        "threads": torch.get_num_threads(),
        "masking": cfg.masking.mode,
        "objective": cfg.objective.name,
        "batch_size": cfg.optim.batch_size,
        "image_size": cfg.data.image_size,
        "source": "memory" if s.dataset.train_files is None else "stream",
        "augment_batches": batches,
        "train_steps": steps,
        "augment_images_per_s": augment_rate,
        "train_images_per_s": train_rate,
        "ratio": augment_rate / train_rate,
        "load_average_1min": load_average,
    }


def _pipeline(s):
    """Views of batch after batch, epoch after epoch, with the training loop's randomness;
    yields each batch's size."""
    epoch = 0
    while True:
        for _, (images, _labels, *instances), draws in epoch_batches(s, epoch):
            views(s, images, instances, draws)
            yield images.shape[0]
        epoch += 1


def format_bench(result: dict[str, Any]) -> str:
    load = result["load_average_1min"]
    return "\n".join(
        [
            f"preset {result['preset']} ({result['objective']}, masking {result['masking']}) on "
            f"{result['device']} ({result['threads']} threads), batch "
            f"{result['batch_size']} at {result['image_size']} px, {result['source']} source"
            + (f", load average {load:.2f}" if load is not None else ""),
            f"augmentation pipeline  {result['augment_images_per_s']:10.1f} images/s  "
            f"({result['augment_batches']} batches)",
            f"training iteration     {result['train_images_per_s']:10.1f} images/s  "
            f"({result['train_steps']} steps, augmentation included)",
            f"ratio (augmentation / training): {result['ratio']:.1f}x",
        ]
    )
