"""Run directories and files that survive a crash: every write goes to a temporary file first."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


class RunDirError(RuntimeError):
    """A run directory that would be overwritten, or one that cannot be resumed."""


def prepare_run_dir(cfg, *, resume: bool, overwrite: bool) -> Path:
    """Create (or reopen, to resume) the run directory and record it in ``cfg.run_dir``.

    An existing non-empty directory is never reused silently: resuming needs ``resume``,
    starting over needs ``overwrite``.
    """
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if resume:
        path = Path(cfg.run_dir)
        if not (path / "checkpoint.pt").is_file():
            raise RunDirError(f"cannot resume {path}: it holds no checkpoint.pt")
        return path
    if cfg.run_dir is None:
        stem = Path("runs") / f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = stem, 1
        while path.exists():
            n += 1
            path = stem.with_name(f"{stem.name}-{n}")
    else:
        path = Path(cfg.run_dir)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"run directory {path} exists and is not empty; pass --overwrite to replace it "
                f"or --resume to continue it"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg.run_dir = str(path)
    return path


def _replace_into(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename: a crash leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    _replace_into(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load tensors and plain data only: an untrusted checkpoint cannot run code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def export_safetensors(state_dict: dict[str, torch.Tensor], path: Path,
                       metadata: dict[str, str] | None = None) -> None:
    """``metadata``: strings stored in the file's header (adios.api describes the model there)."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp),
              metadata=metadata)
    _replace_into(tmp, path)


def write_json(data: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    _replace_into(tmp, path)
