"""Metrics to a JSONL file (for scripts and reports), to TensorBoard (for looking) and, when asked
(``train.wandb_project``), to Weights & Biases; the mask pictures to the last two as images.

The JSONL file is the record every report and test reads; the other sinks are views of it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from adios.checkpoint import finite_json, write_text

METRICS = "metrics.jsonl"
WANDB_ID = "wandb_id.txt"  # the W&B run id, so that a resumed run continues the same W&B run


class MetricsLog:
    """Append-only metrics; on resume, rows logged after the checkpoint are dropped first."""

    def __init__(self, run_dir: Path, resume_step: int = 0, wandb_project: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.path = run_dir / METRICS
        if resume_step and self.path.exists():
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
            # atomically: a kill now must not lose the rows (tests/test_checkpoint.py)
            write_text("".join(json.dumps(r) + "\n" for r in kept), self.path)
        self.file = open(self.path, "a")  # noqa: SIM115 - kept open for the whole run
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step or None)
        self.wandb = None if wandb_project is None else _wandb_run(run_dir, wandb_project, config)

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(finite_json(row)) + "\n")  # strict JSON: NaN -> null
        self.file.flush()
        step = row.get("step", 0)
        scalars = flat_scalars(row)
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log({**scalars, "epoch": row.get("epoch", 0)}, step=step)

    def image(self, tag: str, png: Path, step: int) -> None:
        """A picture (a mask figure's PNG) to TensorBoard and W&B, to watch during training."""
        import numpy as np
        from PIL import Image

        with Image.open(png) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.writer.flush()
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(str(png))}, step=step)

    def close(self) -> None:
        self.file.close()
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def flat_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numbers, lists spread as ``key/i`` (mask sizes), without step and epoch."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in ("step", "epoch"):
            continue
        if isinstance(value, list):
            out.update({f"{key}/{i}": v for i, v in enumerate(value)})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    return out


def _wandb_run(run_dir: Path, project: str, config: dict[str, Any] | None) -> Any:
    """A W&B run stored under the run directory; ``WANDB_MODE=offline`` keeps it on disk."""
    try:
        import wandb
    except ImportError:
        raise ImportError("train.wandb_project needs the wandb package: pip install "
                          "'adios-ssl[wandb]' (or pip install wandb)") from None
    id_file = run_dir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    return wandb.init(project=project, id=run_id, resume="allow", dir=str(run_dir),
                      name=run_dir.name, config=config)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged rows; a line cut short by a killed process, or a row adios did not write
    (values other than numbers, null and lists of them), is skipped; none before the run has
    logged anything (no metrics file yet)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and all(_logged_value(v) for v in row.values()):
            rows.append(row)
    return rows


def _logged_value(value: Any) -> bool:
    """What :meth:`MetricsLog.write` writes: numbers, null, lists of those."""
    if isinstance(value, list):
        return all(_logged_value(v) for v in value)
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def trained_so_far(rows: list[dict[str, Any]]) -> tuple[int, float]:
    """(epochs done, seconds inside training steps over every session) from the last epoch row
    of ``read_metrics`` (the training loop checkpoints both); (0, 0.0) before the first epoch."""
    last = next((r for r in reversed(rows) if "train_s" in r and r.get("epoch", 0) > 0), None)
    return (last["epoch"], last["train_s"]) if last else (0, 0.0)


class NullLog:
    """The log of a process that does not write (all but process 0 under torchrun)."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def image(self, tag: str, png: Path, step: int) -> None:
        pass

    def close(self) -> None:
        pass
