"""Run directories: what may be replaced, who may write, and what a resume may change.

- A run directory of ours holds the marker ``.adios-run``, written by adios with the run's id
  (also stored in every checkpoint): a file of that name with other content, or a checkpoint
  of another run, proves nothing. The marker is also the lock: the process running the run
  holds an exclusive ``flock`` on it for the run's life, so a second train, resume or
  ``--overwrite`` of the same directory stops with the holder's pid. The kernel drops the
  lock when the process dies (even by kill -9), so a marker left behind by a dead process is
  no obstacle. Markers of versions before the run id (no id) are kept as they are: such a
  run can be resumed (its first checkpoint then gives it an id), never emptied.
- Only the files adios writes (:data:`WRITTEN`, :data:`WRITTEN_INSIDE`) are ever deleted;
  anything else in a run directory stays, whatever the flags. ``--overwrite`` empties only a
  run of ours or an empty directory, never the working directory or a folder above it.
- A run interrupted before its first checkpoint, with no weights or summary, holds nothing
  worth keeping: the same command (or ``--resume``) starts it again, no ``--overwrite``
  needed. A run with weights or a summary is replaced only by ``--overwrite``.
- Nothing is written through a symbolic link: a run directory holding one is refused (but for
  the links W&B makes in its own wandb/ folder), and the marker is opened with ``O_NOFOLLOW``.
- The checkpoint stores the SHA-256 of the config.yaml written beside it. A resume compares the
  configuration it is given (config.yaml, perhaps edited by hand, plus command-line overrides)
  with the one the checkpoint was trained with: settings that only steer the rest of the run
  (learning rates and their schedule, epochs, monitoring, devices) apply and are recorded in
  config.yaml, the checkpoint and summary.json; settings the weights depend on are refused.

docs/running.md describes the rules for users.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from adios.checkpoint import is_temporary, load_checkpoint, nonfinite, save_atomic, write_text
from adios.config import (
    Config,
    ConfigError,
    DataConfig,
    config_yaml,
    load_config,
    read_preset,
    read_yaml,
    to_dict,
)
from adios.errors import NonFiniteError, RunDirError

MARKER = ".adios-run"
MARKER_HEADER = b"adios run directory (docs/running.md)"
CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
# what adios writes into a run directory (train, eval, report, compare): the only names ever
# deleted, besides temporary files
WRITTEN = (CONFIG, CHECKPOINT, "metrics.jsonl", "wandb_id.txt", "encoder.safetensors",
           "masker.safetensors", "summary.json", "masks.png", "report.html", "report.png",
           "error.json", "eval_*.json", "eval_*.png")
# ... and inside its folders; wandb/ is the W&B library's own folder
WRITTEN_INSIDE = {"tb": ("events.out.tfevents.*",), "masks": ("epoch_*.png",), "wandb": ("*",)}
# what a finished run leaves: never replaced without --overwrite
RESULTS = ("encoder.safetensors", "masker.safetensors", "summary.json")
# what the weights depend on: a resume that changes one of these is refused
FIXED = ("seed", "preset", "data.", "augment.", "model.", "masker.", "objective.", "masking.",
         "optim.name", "optim.mask_name", "optim.batch_size")
# ... except where the data comes from and how it is read
MOVABLE = ("data.path", "data.workers", "data.loader", "data.memory_limit_mb")
IGNORED = ("run_dir", "description")
CHECKPOINT_KEYS = ("epoch", "objective", "encoder_opt", "init", "config")

T = TypeVar("T")
_active: RunDir | None = None  # the run this process holds, for the interrupt message
LOCK_TRIES = 5  # a lock held for holder_pid's probe (microseconds) is retried


class RunDirBusy(RunDirError):
    """Another live process holds the run directory's lock."""


def _marker_pid(fd: int) -> str:
    """The pid a lock holder wrote into the marker ("unknown" if it did not)."""
    holder = re.search(rb"pid (\d+)", os.pread(fd, 256, 0))
    return holder.group(1).decode() if holder else "unknown"


def _run_id(content: bytes | None) -> str | None:
    """The run id in a marker's content; "" for a marker of an adios from before run ids;
    None for no marker, or for another program's file of that name."""
    if content is None or not content.startswith(MARKER_HEADER):
        return None
    found = re.search(rb"^run ([0-9a-f]{32})$", content, re.MULTILINE)
    return found.group(1).decode() if found else ""


def _read_marker(path: Path) -> bytes | None:
    """The marker's first bytes; None when there is none, or it is a link or not a file."""
    try:
        fd = os.open(path / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.pread(fd, 4096, 0) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


def holder_pid(path: Path) -> str | None:
    """The pid of the live process that holds ``path``'s run lock ("unknown" if it did not
    say), or None when no process holds it; takes nothing and creates nothing."""
    try:
        fd = os.open(Path(path) / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _marker_pid(fd)
    finally:
        os.close(fd)  # drops the shared lock taken just now
    return None


class RunDir:
    """An opened (and, on process 0, locked) run directory."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.resume = resume  # a checkpoint is to be loaded
        self.checkpoint_epoch: int | None = None  # of the checkpoint on disk, once known
        self.config_sha256: str | None = None
        self._unsaved: Config | None = None  # a resume's config, written with the next save
        self.resumes: list[dict[str, Any]] = []  # what each resume changed
        self.run_id = ""  # the marker's, once locked; "" for a run from before run ids
        self._lock_fd: int | None = None
        self._closers: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:  # sent to the other torchrun processes
        return {**self.__dict__, "_lock_fd": None, "_closers": []}

    def closing(self, resource: T) -> T:
        """Close ``resource`` (e.g. the metrics log) on release, also after a failure."""
        self._closers.append(resource)
        return resource

    # ---------------------------------------------------------------- lock

    def lock(self) -> None:
        """Take the run's exclusive lock (and its run id), or stop naming the process that
        holds it. The marker is never opened through a symbolic link."""
        try:
            fd = os.open(self.path / MARKER, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _link_error(self.path / MARKER) from None
            raise RunDirError(f"{self.path}: cannot write in this run directory "
                              f"({err.strerror or err}); choose another run_dir") from None
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt + 1 < LOCK_TRIES:
                    time.sleep(0.2)
                    continue
                pid = _marker_pid(fd)
                os.close(fd)
                raise _busy(self.path, pid) from None
        self._lock_fd = fd
        self.run_id = _run_id(os.pread(fd, 4096, 0)) or ""
        self._write_marker()
        global _active
        _active = self

    def start_new(self) -> None:
        """This directory now holds a new run: a new run id in the marker, nothing to load."""
        self.resume = False
        self.run_id = secrets.token_hex(16)
        self._write_marker()

    def _write_marker(self) -> None:
        """The header, the run id and our pid; written over the old content, then cut to
        length, so a kill in between still leaves the header and the new id first."""
        if self._lock_fd is None:
            return
        text = (MARKER_HEADER + b"\n" + (f"run {self.run_id}\n" if self.run_id else "").encode()
                + f"locked by pid {os.getpid()}\n".encode())
        os.pwrite(self._lock_fd, text, 0)
        os.ftruncate(self._lock_fd, len(text))

    def release(self) -> None:
        global _active
        while self._closers:
            with contextlib.suppress(Exception):
                self._closers.pop().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None
        if _active is self:
            _active = None

    # ---------------------------------------------------------------- files

    def write_config(self, cfg: Config) -> None:
        """config.yaml, atomically; its hash goes into every later checkpoint."""
        text = config_yaml(cfg)
        write_text(text, self.path / CONFIG)
        self.config_sha256 = hashlib.sha256(text.encode()).hexdigest()
        self._unsaved = None

    def settle_config(self) -> None:
        """Write the configuration a resume changed, if not yet written: done with the next
        checkpoint, or before the exports of a run with no epoch left, so a resume that fails
        first leaves config.yaml as the checkpoint knows it."""
        if self._unsaved is not None:
            self.write_config(self._unsaved)

    def load_checkpoint(self) -> dict[str, Any]:
        checkpoint = load_checkpoint(self.path / CHECKPOINT, required=CHECKPOINT_KEYS)
        init = checkpoint["init"]
        if not (isinstance(init.get("backbone"), dict) and isinstance(init.get("masker"),
                                                                      dict | None)):
            raise RunDirError(f"{self.path / CHECKPOINT}: not an adios checkpoint (its 'init' "
                              f"lacks the initial weights); restore it, or start the run again")
        owner = checkpoint.get("run_id")
        if owner and self.run_id and owner != self.run_id:
            raise RunDirError(
                f"{self.path / CHECKPOINT} belongs to another run (run id {owner}, this "
                f"directory's is {self.run_id}): it was copied here; resume the run it came "
                f"from, or remove it from {self.path}")
        bad = nonfinite({"encoder": checkpoint["objective"], "masker": checkpoint.get("masker"),
                         "online probe": checkpoint.get("probe")})
        if bad:
            raise NonFiniteError(
                f"{self.path / CHECKPOINT}: non-finite (NaN or inf) weights in the "
                f"{' and '.join(bad)}; adios never saves such a checkpoint, so the file was "
                f"changed: restore it, or start the run again (--overwrite)")
        if owner and not self.run_id:  # a marker from before run ids: the checkpoint's
            self.run_id = owner
            self._write_marker()
        self.checkpoint_epoch = checkpoint["epoch"]
        self.resumes = list(checkpoint.get("resumes") or [])
        return checkpoint

    def check_classes(self, checkpoint: dict[str, Any], num_classes: int, cfg: Config) -> None:
        """Refuse, naming the cause, a resume on images with another number of classes (0:
        unlabelled) than the checkpoint's online probe was trained on: data.path may move, but
        to the same images; otherwise the probe's weights or optimiser state do not fit, which
        was reported as other model settings."""
        probe = checkpoint.get("probe")
        weight = probe.get("weight") if isinstance(probe, dict) else None
        trained = int(weight.shape[0]) if torch.is_tensor(weight) and weight.dim() == 2 else 0
        if trained == num_classes:
            return
        now = (f"hold {num_classes} classes" if num_classes
               else "are unlabelled (no class folders, or one)")
        old = (checkpoint["config"].get("data") or {}).get("path")
        raise RunDirError(
            f"cannot resume {self.path}: the images at data.path={cfg.data.path} {now}, and its "
            f"checkpoint was trained on {f'{trained} classes' if trained else 'unlabelled images'}"
            f"; resume it on the images it was trained on"
            f"{f' (data.path={old})' if old else ''}, or start a new run (another run_dir) for "
            f"these")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Check that every weight is finite, then save atomically with the config's hash."""
        parts = {"encoder": state.get("objective"), "masker": state.get("masker"),
                 "online probe": state.get("probe")}
        _check_finite(parts, self, f"at the end of epoch {state['epoch']}")
        self.settle_config()
        if not self.run_id:  # resumed from a marker without one: this run now has an id
            self.run_id = secrets.token_hex(16)
            self._write_marker()
        save_atomic({**state, "config_sha256": self.config_sha256, "resumes": self.resumes,
                     "run_id": self.run_id}, self.path / CHECKPOINT)
        self.checkpoint_epoch = state["epoch"]

    def check_finite(self, parts: dict[str, nn.Module | None], step: int) -> None:
        """Stop (saving nothing) if a model's weights hold NaN or inf after ``step`` steps."""
        _check_finite(parts, self, f"after step {step}")

    def intact(self) -> str:
        """What a user still has if this run stops now."""
        if self.checkpoint_epoch is None:
            return (f"{self.path} has no checkpoint yet: the same command, or adios train "
                    f"--resume {self.path}, starts it again (no --overwrite needed)")
        return (f"{self.path / CHECKPOINT} (epoch {self.checkpoint_epoch}) is intact: continue "
                f"with adios train --resume {self.path}")

    # ---------------------------------------------------------------- resume

    def reconcile(self, cfg: Config, checkpoint: dict[str, Any]) -> list[str]:
        """Apply or refuse the differences between ``cfg`` and what ``checkpoint`` was trained
        with; returns the applied changes as ``key: old -> new`` lines (and records them)."""
        trained = _flat(checkpoint["config"])
        saved_text = (self.path / CONFIG).read_bytes()
        edited = (checkpoint.get("config_sha256") is not None
                  and hashlib.sha256(saved_text).hexdigest() != checkpoint["config_sha256"])
        by_hand = set()
        if edited:
            saved = _flat(to_dict(load_config([], base=read_yaml(self.path / CONFIG, CONFIG))))
            by_hand = {k for k, v in saved.items() if k in trained and trained[k] != v}
        now = _flat(to_dict(cfg))
        changes = {k: (trained[k], v) for k, v in now.items()
                   if k in trained and trained[k] != v and not k.startswith(IGNORED)}
        refused = [k for k in changes if k.startswith(FIXED) and not k.startswith(MOVABLE)]
        if refused:
            said = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r}"
                             f"{', edited in config.yaml' if k in by_hand else ''})"
                             for k in refused)
            raise RunDirError(
                f"cannot resume {self.path} with {said}: its checkpoint was trained with the "
                f"old value{'s' if len(refused) > 1 else ''}; start a new run (another run_dir) "
                f"for other model, data or seed settings"
                + (f", or restore {self.path / CONFIG}" if by_hand & set(refused) else "")
            )
        if cfg.train.epochs < checkpoint["epoch"]:
            raise RunDirError(
                f"train.epochs={cfg.train.epochs}: {self.path} has already trained "
                f"{checkpoint['epoch']} epochs; give at least that many"
            )
        lines = [f"{k}: {old!r} -> {new!r}" + (" (edited in config.yaml)" if k in by_hand
                                                else "") for k, (old, new) in changes.items()]
        if edited and not changes:
            lines.append("config.yaml was edited but no setting differs")
        if changes:
            self.resumes.append({"after_epoch": checkpoint["epoch"],
                                 "changes": {k: list(v) for k, v in changes.items()}})
        self.config_sha256 = checkpoint.get("config_sha256")
        if changes or edited:
            self._unsaved = cfg  # written with the next checkpoint (settle_config)
        for line in lines:
            _tell(f"resuming {self.path} with {line}")
        return lines


def check_run_dir(cfg: Config, *, resume: bool, overwrite: bool) -> None:
    """Raise now the RunDirError :func:`open_run_dir` would raise, before the data is read (a
    folder of images is decoded and checked first, minutes for a large one). Writes nothing
    and takes no lock: open_run_dir checks everything again under the lock."""
    if _active is not None:
        _active.release()  # as open_run_dir does: an earlier run of this process failed
    path = None if cfg.run_dir is None else Path(cfg.run_dir)  # None: a new, timestamped one
    _refuse_unlocked(path, resume=resume, overwrite=overwrite)
    if path is not None and path.is_dir():
        pid = holder_pid(path)
        if pid is not None:
            raise _busy(path, pid)
        _verdict(path, _run_id(_read_marker(path)) or "", resume=resume, overwrite=overwrite)


def open_run_dir(cfg: Config, *, resume: bool, overwrite: bool) -> RunDir:
    """Create, reopen (to resume) or replace the run directory, lock it, record it in
    ``cfg.run_dir``. Raises RunDirError (before touching anything) when it may not be used."""
    if _active is not None:
        _active.release()  # one run at a time per process (an earlier one failed in-process)
    path = _default_path(cfg) if cfg.run_dir is None else Path(cfg.run_dir)
    _refuse_unlocked(path, resume=resume, overwrite=overwrite)
    if path.is_dir():
        run = RunDir(path, resume=resume)
        run.lock()
        try:
            _prepare(run, overwrite=overwrite)
        except BaseException:
            run.release()
            raise
        _remove_temporaries(path)
    else:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"run_dir: cannot create {path} ({err.strerror or err}); choose "
                              f"a writable location") from None
        run = RunDir(path, resume=False)
        run.lock()
        run.start_new()
    cfg.run_dir = str(path)
    return run


def _refuse_unlocked(path: Path | None, *, resume: bool, overwrite: bool) -> None:
    """What makes ``path`` unusable, found without its lock: flags that exclude each other, a
    file, a missing run to resume, a symbolic link inside, a folder that is not adios's."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if path is None:
        return
    if path.exists() and not path.is_dir():
        if resume:
            raise RunDirError(f"cannot resume {path}: it is a file, not a run directory; give "
                              f"the run directory that holds {CONFIG} and {CHECKPOINT}")
        raise RunDirError(f"run_dir: {path} is a file, not a folder; choose another run_dir")
    if resume and not path.is_dir():
        raise RunDirError(f"cannot resume {path}: no such directory; start the run with "
                          f"adios train run_dir={path}")
    if path.is_dir():
        refuse_links(path)
        if _run_id(_read_marker(path)) is None and not _is_empty(path):
            raise _not_ours(path, resume=resume, overwrite=overwrite)


def _verdict(path: Path, run_id: str, *, resume: bool, overwrite: bool) -> str:
    """What becomes of an existing run directory of ours: "new" (nothing in it), "keep" (to
    resume it), "restart" (stopped before its first checkpoint) or "replace" (--overwrite);
    raises RunDirError when it may not be used. Decides only, changes nothing."""
    if _is_empty(path):
        return "new"
    has_checkpoint = (path / CHECKPOINT).is_file()
    if has_checkpoint and not overwrite:
        if not resume:
            raise RunDirError(
                f"run directory {path} exists and is not empty: it holds a run with a "
                f"checkpoint; pass --resume {path} to continue it, or --overwrite to replace it")
        return "keep"
    if not run_id:
        raise RunDirError(
            f"{path} was made by an adios older than run ids, whose marker does not prove which "
            f"files in it adios wrote, so nothing was deleted: "
            + (f"continue it with adios train --resume {path}, " if has_checkpoint else "")
            + "choose another run_dir, or empty it yourself")
    results = [name for name in RESULTS if (path / name).exists()]
    if results and not overwrite:
        raise RunDirError(
            f"{path} holds a finished run ({', '.join(results)}) without its {CHECKPOINT}, so it "
            f"cannot be continued, and it is not restarted: pass --overwrite to replace it (only "
            f"the files adios wrote are deleted), or choose another run_dir")
    _refuse_working_directory(path)
    return "replace" if overwrite else "restart"


def _prepare(run: RunDir, overwrite: bool) -> None:
    """Under the lock: keep the run (to resume it), start it again, or refuse; deletes only
    what adios wrote, and only from a run whose marker has a run id."""
    verdict = _verdict(run.path, run.run_id, resume=run.resume, overwrite=overwrite)
    if verdict == "keep":
        return
    if verdict == "restart":
        _tell(f"restarting {run.path}: its run stopped before its first checkpoint")
    if verdict != "new":
        _empty(run.path)
    run.start_new()


def resume_config(path: Path, overrides: list[str]) -> Config:
    """The configuration to resume ``path`` with: its config.yaml plus ``overrides``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"cannot resume {path}: it is a file, not a run directory; give "
                          f"the run directory that holds {CONFIG} and {CHECKPOINT}")
    if not path.is_dir():
        raise RunDirError(f"cannot resume {path}: no such directory; start the run with "
                          f"adios train run_dir={path}")
    refuse_links(path)
    if _run_id(_read_marker(path)) is None:
        raise _not_ours(path, resume=True, overwrite=False)
    if not (path / CONFIG).is_file():
        raise RunDirError(f"cannot resume {path}: it holds no {CONFIG}, so it is not an adios run")
    for item in overrides:
        key = item.partition("=")[0]
        if key in ("preset", *IGNORED):
            raise ConfigError(f"{key}: a resumed run keeps its own ({path / CONFIG}); "
                              + (f"it continues in {path}" if key == "run_dir" else
                                 "start a new run for another one"))
    saved = read_yaml(path / CONFIG, CONFIG)
    try:
        load_config([], base=saved)
    except ConfigError as err:
        raise ConfigError(f"{path / CONFIG}: {err}; restore the file") from None
    cfg = load_config(overrides, base=saved)
    if cfg.data.name == "shapes" and any(item.startswith("data.path=") for item in overrides):
        raise ConfigError("data.path: this run trains on the built-in scenes, which read no "
                          "files; resume it without data.path")
    cfg.run_dir = str(path)
    return cfg


def interrupted(signal_name: str) -> str:
    """The truthful line for an interrupt: which checkpoint is intact, or that there is none."""
    what = "interrupted" if signal_name == "SIGINT" else f"stopped by {signal_name}"
    return what + active_note()


def active_note() -> str:
    """``; <what is intact>`` of the run this process holds, or nothing."""
    return "" if _active is None else f"; {_active.intact()}"


def release_active() -> None:
    if _active is not None:
        _active.release()


# ----------------------------------------------------------------------------- helpers


def _tell(message: str) -> None:
    print(f"adios: {message}", file=sys.stderr)


def run_name(cfg: Config) -> str:
    """The preset's name, its first word naming the data the run trains on when the preset was
    made for other data: the default preset on your own images is folder-laptop, not
    shapes-laptop (the built-in scenes it did not train on)."""
    try:
        made_for = (read_preset(cfg.preset).get("data") or {}).get("name", DataConfig.name)
    except ConfigError:  # not a shipped preset
        return cfg.preset
    if made_for == cfg.data.name:
        return cfg.preset
    return f"{cfg.data.name}-{cfg.preset.partition('-')[2] or cfg.preset}"


def _default_path(cfg: Config) -> Path:
    stem = Path("runs") / f"{run_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = stem, 1
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


def _not_ours(path: Path, *, resume: bool, overwrite: bool) -> RunDirError:
    why = f"it has no {MARKER} written by adios"
    if resume:
        legacy = (path / CONFIG).is_file() and (path / CHECKPOINT).is_file()
        return RunDirError(
            f"cannot resume {path}: it is not an adios run directory ({why})"
            + (f"; if an adios from before run markers made it, mark it with printf "
               f"'{MARKER_HEADER.decode()}\\n' > {path / MARKER}" if legacy else ""))
    return RunDirError(
        f"run directory {path} exists and is not empty, and it is not an adios run ({why})"
        + ("; --overwrite only replaces adios runs, so nothing was deleted" if overwrite else "")
        + ": choose another run_dir, or empty it yourself")


def _busy(path: Path, pid: str) -> RunDirBusy:
    return RunDirBusy(f"{path} is in use by another adios process (pid {pid}); wait for it to "
                      f"finish or stop it, or choose another run_dir")


def _refuse_working_directory(path: Path) -> None:
    """Never empty the working directory or a folder above it."""
    here = Path.cwd().resolve()
    if here == path.resolve() or path.resolve() in here.parents:
        raise RunDirError(f"run_dir: {path} is the working directory or a folder above it; "
                          f"refusing to empty it: choose another run_dir")


def _link_error(link: Path) -> RunDirError:
    return RunDirError(f"{link} is a symbolic link: adios never writes through a link in a run "
                       f"directory (it could write outside it); remove the link, or choose "
                       f"another run_dir")


def refuse_links(path: Path) -> None:
    """A run directory holding a symbolic link anywhere is refused before anything is written;
    except inside wandb/, the W&B library's own folder, which holds the links it makes itself
    (latest-run, debug.log): adios never writes there, and deletes it without following them."""
    for folder, dirs, names in os.walk(path):
        for name in dirs + names:
            if os.path.islink(os.path.join(folder, name)):
                raise _link_error(Path(folder) / name)
        if Path(folder) == Path(path):
            dirs[:] = [name for name in dirs if name != "wandb"]


def _is_empty(path: Path) -> bool:
    """Nothing, or only what an interrupted start leaves: our marker and temporary files."""
    return all(is_temporary(entry) or (entry.name == MARKER
                                       and _run_id(_read_marker(path)) is not None)
               for entry in path.iterdir())


def _written(entry: Path, patterns: tuple[str, ...]) -> bool:
    return entry.is_file() and (is_temporary(entry)
                                or any(fnmatch.fnmatchcase(entry.name, p) for p in patterns))


def _empty(path: Path) -> None:
    """Delete the files adios wrote in ``path`` (never the marker, never anything else);
    refuses the working directory and the folders above it."""
    _refuse_working_directory(path)
    kept = []
    for entry in sorted(path.iterdir()):
        inside = WRITTEN_INSIDE.get(entry.name)
        if inside is not None and entry.is_dir():
            if entry.name == "wandb":
                shutil.rmtree(entry)
                continue
            for sub in sorted(entry.iterdir()):
                if _written(sub, inside):
                    sub.unlink()
                else:
                    kept.append(sub)
            with contextlib.suppress(OSError):
                entry.rmdir()  # only when nothing else is left in it
        elif entry.name != MARKER and _written(entry, WRITTEN):
            entry.unlink()
        elif entry.name != MARKER:
            kept.append(entry)
    if kept:
        _tell(f"kept {len(kept)} file{'s' if len(kept) > 1 else ''} adios did not write in "
              f"{path}: " + ", ".join(str(p.relative_to(path)) for p in kept[:5])
              + (", ..." if len(kept) > 5 else ""))


def _remove_temporaries(path: Path) -> None:
    """Temporary files of writes a dead process never finished (we hold the lock)."""
    for folder in (path, *(path / name for name in WRITTEN_INSIDE)):
        if folder.is_dir():
            for entry in folder.iterdir():
                if is_temporary(entry) and entry.is_file():
                    entry.unlink(missing_ok=True)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _check_finite(parts: dict[str, Any], run: RunDir, when: str) -> None:
    bad = nonfinite(parts)
    if bad:
        raise NonFiniteError(
            f"training diverged: non-finite (NaN or inf) weights in the {' and '.join(bad)} "
            f"{when}, not saved; lower the learning rates (optim.lr, optim.mask_lr) or warm up "
            f"longer (optim.warmup_epochs)"
        )
