"""Metrics to a JSONL file (for scripts and reports) and to TensorBoard (for looking)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adios.checkpoint import finite_json, write_text

METRICS = "metrics.jsonl"


class MetricsLog:
    """Append-only metrics; on resume, rows logged after the checkpoint are dropped first."""

    def __init__(self, run_dir: Path, resume_step: int = 0) -> None:
        self.path = run_dir / METRICS
        if resume_step and self.path.exists():
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
            # atomically: a kill now must not lose the rows (tests/test_checkpoint.py)
            write_text("".join(json.dumps(r) + "\n" for r in kept), self.path)
        self.file = open(self.path, "a")  # noqa: SIM115 - kept open for the whole run
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step or None)

    def write(self, row: dict[str, Any]) -> None:
        self.file.write(json.dumps(finite_json(row)) + "\n")  # strict JSON: NaN -> null
        self.file.flush()
        step = row.get("step", 0)
        for key, value in row.items():
            if key in ("step", "epoch"):
                continue
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"{key}/{i}", v, step)
            elif isinstance(value, int | float):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        self.writer.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The logged rows; a line cut short by a killed process is skipped."""
    rows = []
    for line in (Path(run_dir) / METRICS).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class NullLog:
    """The log of a process that does not write (all but process 0 under torchrun)."""

    def write(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
