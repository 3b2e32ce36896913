"""Files that survive a crash, and files that cannot hurt: every write goes to a temporary file
(a name unique to the process), is fsynced and renamed over the target, so a kill at any moment
leaves the old file or the new one, never a mix. Every read of weights is ``weights_only``
(torch) or safetensors, so an untrusted file cannot run code, and a broken one is one error
naming the file."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import re
import secrets
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from adios.errors import NonFiniteError, RunDirError

__all__ = [
    "RunDirError", "export_safetensors", "finite_json", "load_checkpoint", "load_optimizer_state",
    "load_state", "load_weights", "nonfinite", "read_json", "save_atomic", "write_json",
    "write_text",
]

# Fault injection for the crash tests (tests/test_checkpoint.py): inactive unless set.
# ADIOS_FAULT_DELAY=SECONDS sleeps at every stage of every write (so random kills land in them);
# ADIOS_FAULT_KILL=STAGE:N sends SIGKILL to this process the N-th time STAGE is reached.
# Stages: "partial" (half of the first chunk written), "written" (all of it, not yet fsynced),
# "synced" (before the rename), "renamed" (before the folder's fsync).
FAULT_STAGES = ("partial", "written", "synced", "renamed")
_fault_counts: dict[str, int] = {}


def _faults_on() -> bool:
    return bool(os.environ.get("ADIOS_FAULT_DELAY") or os.environ.get("ADIOS_FAULT_KILL"))


class _FaultyFile:
    """A file whose first write stops halfway at the "partial" fault point."""

    def __init__(self, f: io.BufferedWriter) -> None:
        self.f, self.hit = f, False

    def write(self, data: bytes) -> int:
        if self.hit:
            return self.f.write(data)
        self.hit = True
        half = len(data) // 2
        self.f.write(data[:half])
        self.f.flush()
        _fault_point("partial")
        return half + self.f.write(data[half:])

    def flush(self) -> None:
        self.f.flush()


def _fault_point(stage: str) -> None:
    delay = os.environ.get("ADIOS_FAULT_DELAY")
    if delay:
        time.sleep(float(delay))
    kill = os.environ.get("ADIOS_FAULT_KILL")
    if kill:
        where, _, n = kill.partition(":")
        if where == stage:
            _fault_counts[stage] = _fault_counts.get(stage, 0) + 1
            if _fault_counts[stage] == int(n or 1):
                os.kill(os.getpid(), signal.SIGKILL)


def temporary_name(path: Path) -> Path:
    """``.NAME.PID-RANDOM.tmp`` beside ``path``: two processes never share a temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def is_temporary(path: Path) -> bool:
    """A name :func:`temporary_name` makes (and nothing a user would name so)."""
    return re.fullmatch(r"\..+\.\d+-[0-9a-f]{8}\.tmp", path.name) is not None


def _nbytes(obj: Any) -> int:
    """About how many bytes ``obj`` takes on disk (its tensors' data), for a disk-full message."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, bytes | str):
        return len(obj)
    if isinstance(obj, Mapping):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 8


def _write_atomic(path: Path, write: Callable[[io.BufferedWriter], None], size: int) -> None:
    """``write(file)`` into a temporary file, fsync, rename over ``path``, fsync the folder."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(_FaultyFile(f) if _faults_on() else f)
            f.flush()
            _fault_point("written")
            os.fsync(f.fileno())
        _fault_point("synced")
        os.replace(tmp, path)
        _fault_point("renamed")
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunDirError(
                f"{path.parent}: no space left on its disk while writing {path.name} (it needs "
                f"about {_megabytes(size)}); free some space there, or choose another run_dir, "
                f"and run the command again"
            ) from None
        raise RunDirError(
            f"{path}: cannot write ({err.strerror or err}); check that {path.parent} is a "
            f"writable folder, or choose another location"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open a folder; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{max(size, 1) / 2**10:.0f} KB"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename: a crash leaves the old file intact."""
    _write_atomic(path, lambda f: torch.save(obj, f), _nbytes(obj))


def export_safetensors(state_dict: dict[str, torch.Tensor], path: Path,
                       metadata: dict[str, str] | None = None) -> None:
    """``metadata``: strings stored in the file's header (adios.api describes the model there).
    Weights holding NaN or inf are refused, never written."""
    if nonfinite({"weights": state_dict}):
        raise NonFiniteError(f"{path}: non-finite (NaN or inf) weights, not written; the model "
                             f"diverged or its checkpoint was changed")
    data = safetensors_save({k: v.detach().contiguous().cpu() for k, v in state_dict.items()},
                            metadata=metadata)
    _write_atomic(path, lambda f: f.write(data), len(data))


def write_text(text: str, path: Path) -> None:
    data = text.encode()
    _write_atomic(path, lambda f: f.write(data), len(data))


def finite_json(value: Any) -> Any:
    """NaN and inf become null, so a file is strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def write_json(data: Any, path: Path) -> None:
    """Strict JSON (non-finite numbers written as null), atomically."""
    write_text(json.dumps(finite_json(data), indent=2, allow_nan=False) + "\n", path)


# ----------------------------------------------------------------------------- reading


def read_json(path: Path) -> Any:
    """A JSON file; a broken one is a RunDirError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not valid JSON ({err}); restore it or delete it") from None


def load_checkpoint(path: Path, required: Iterable[str] = ("epoch", "objective")) -> dict:
    """Load tensors and plain data only: an untrusted checkpoint cannot run code, and a
    truncated, empty or foreign one is a RunDirError naming the file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about the protocol of a file it refuses
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunDirError(f"{path}: no such checkpoint") from None
    except Exception as err:  # torch raises many kinds for a broken or hostile file
        if isinstance(err, pickle.UnpicklingError):
            reason = "it holds objects other than tensors and plain data, refused unread"
        else:
            reason = " ".join(str(err).split()).partition(". ")[0] or type(err).__name__
        raise RunDirError(
            f"{path}: not a readable adios checkpoint ({reason:.200}); it is truncated, empty "
            f"or not ours: restore it, or start the run again"
        ) from None
    if not isinstance(state, dict):
        raise RunDirError(f"{path}: not an adios checkpoint (expected a dict of states)")
    missing = [key for key in required if key not in state]
    if missing:
        raise RunDirError(f"{path}: not an adios checkpoint (it lacks {', '.join(missing)})")
    for key in ("objective", "masker", "probe", "init", "encoder_opt", "masker_opt", "config"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise RunDirError(f"{path}: not an adios checkpoint ({key!r} is not a mapping)")
    if "epoch" in state and (not isinstance(state["epoch"], int) or state["epoch"] < 0):
        raise RunDirError(f"{path}: not an adios checkpoint ('epoch' is {state['epoch']!r})")
    return state


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing, broken or hostile one is a RunDirError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RunDirError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        return safetensors_load(data)
    except Exception as err:  # safetensors raises its own error type for a bad header
        raise RunDirError(
            f"{path}: not a readable safetensors file ({' '.join(str(err).split()):.200}); "
            f"export it again"
        ) from None


def load_state(module: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """``module.load_state_dict(state)``; weights of the wrong names or shapes are a
    RunDirError saying which file does not fit which part of the configuration."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines)
        raise RunDirError(
            f"{source}: its weights do not fit the configured {type(module).__name__} "
            f"({detail:.300}); the file was made with other model settings (model.*, masker.*, "
            f"objective.*, data.image_size) than the ones given"
        ) from None


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                         source: str) -> None:
    """Restore an optimiser's buffers (momentum, ...) but keep the hyperparameters it was
    built with, so ``--resume RUN optim.lr=...`` really changes the learning rate."""
    fresh = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise RunDirError(
            f"{source}: its optimiser state does not fit this configuration ({err}); "
            f"resume it with the settings it was trained with"
        ) from None
    for group, hyper in zip(optimizer.param_groups, fresh, strict=True):
        group.update(hyper)


def nonfinite(parts: Mapping[str, nn.Module | Mapping[str, torch.Tensor] | None]) -> list[str]:
    """The names of the parts (modules or state dicts) holding a NaN or inf weight or buffer."""
    bad = []
    for name, part in parts.items():
        if part is None:
            continue
        tensors = part.state_dict() if isinstance(part, nn.Module) else part
        floats = [t for t in tensors.values() if torch.is_tensor(t) and t.is_floating_point()]
        if floats and not bool(torch.stack([t.isfinite().all() for t in floats]).all()):
            bad.append(name)
    return bad
