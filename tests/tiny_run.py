"""The smallest real training run: shapes scenes, width-4 models, 1-2 steps per epoch, one thread;
and the same models on a folder of the user's own images (OWN, write_images).

Shared by the run-directory, checkpoint and command-line tests (tests/ is on the path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY = [
    "preset=shapes-paper", "data.num_train=32", "data.num_val=16", "data.num_test=16",
    "model.width=4", "masker.fbase=8", "masker.n_masks=3", "objective.proj_hidden=16",
    "objective.proj_out=8", "optim.batch_size=16", "optim.warmup_epochs=1",
    "train.knn_bank=32", "train.eval_batch_size=64", "train.progress=false",
    "train.device=cpu", "train.threads=1", "train.picture_every=0",
]


# a folder given by data.path alone, as a new user gives it
OWN = ["model.width=4", "masker.fbase=8", "objective.proj_hidden=16", "objective.proj_out=8",
       "optim.batch_size=16", "train.epochs=1", "data.image_size=16", "train.knn_bank=32",
       "train.progress=false", "train.device=cpu", "train.threads=1", "data.workers=0"]


def write_images(folder: Path, count: int, classes: tuple[str, ...] | None = None) -> None:
    """``count`` small PNGs, flat in ``folder`` or spread over class folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        where = folder if classes is None else folder / classes[i % len(classes)]
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(where / f"{i}.png")


def tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) checkpoint, by its path: weights and optimiser buffers."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(tensors(value, f"{prefix}{key}."))
        elif torch.is_tensor(value):
            out[f"{prefix}{key}"] = value
    return out


def same_weights(a: dict, b: dict) -> bool:
    """Bit-identical models and optimiser states (the parts a resume continues from)."""
    keys = ("objective", "masker", "probe", "encoder_opt", "masker_opt")
    ta = tensors({k: a[k] for k in keys if k in a})
    tb = tensors({k: b[k] for k in keys if k in b})
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
