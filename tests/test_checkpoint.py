"""Atomic writes under kill -9 and a full disk; unreadable, hostile and non-finite weights."""

from __future__ import annotations

import errno
import faulthandler
import io
import json
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import tqdm.auto
import tqdm.std
from safetensors.torch import load_file
from tiny_run import TINY, load, same_weights

import adios.rundir
from adios import checkpoint
from adios.checkpoint import (
    FAULT_STAGES,
    export_safetensors,
    load_checkpoint,
    load_weights,
    save_atomic,
    write_json,
)
from adios.cli import main
from adios.errors import RunDirError
from adios.runlog import read_metrics

# ----------------------------------------------------------------------------- atomic writes


def test_temporary_names_are_unique_per_process_and_write(tmp_path):
    a, b = (checkpoint.temporary_name(tmp_path / "checkpoint.pt") for _ in range(2))
    assert a != b and str(os.getpid()) in a.name
    assert checkpoint.is_temporary(a) and not checkpoint.is_temporary(tmp_path / ".notes.tmp")


def test_disk_full_removes_the_temporary_and_names_folder_and_size(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1, "w": torch.zeros(3)}, path)
    before = path.read_bytes()
    state = {"epoch": 2, "w": torch.zeros(3 * 2**20)}  # 12 MB of float32

    def full_disk(obj, f):
        f.write(b"x" * 1000)  # a partial file, as a real full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(RunDirError) as err:
        save_atomic(state, path)
    message = str(err.value)
    assert str(tmp_path) in message and "no space left" in message and "12.0 MB" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary left
    assert path.read_bytes() == before  # the old checkpoint is intact


def test_read_only_location_is_one_error_naming_the_file(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint.os, "replace", read_only)
    with pytest.raises(RunDirError, match="summary.json: cannot write .Read-only file system"):
        write_json({"a": 1}, tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []


def test_json_is_strict_with_non_finite_numbers_as_null(tmp_path):
    write_json({"knn_acc": float("nan"), "sizes": [1.0, float("inf")], "n": 3}, tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text) == {"knn_acc": None, "sizes": [1.0, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text


# ----------------------------------------------------------------------------- reading


class Hostile:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("content", ["empty", "truncated", "hostile", "not-a-dict", "no-epoch"])
def test_unusable_checkpoints_are_one_error_naming_the_file(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    good = io.BytesIO()
    torch.save({"epoch": 1, "objective": {"w": torch.ones(4)}}, good)
    data = {
        "empty": b"",
        "truncated": good.getvalue()[: len(good.getvalue()) // 2],
        "hostile": pickle.dumps(Hostile()),
        "not-a-dict": _saved([1, 2, 3]),
        "no-epoch": _saved({"objective": {}}),
    }[content]
    path.write_bytes(data)
    with pytest.raises(RunDirError, match=f"{path}: not .*adios checkpoint"):
        load_checkpoint(path)
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_broken_safetensors_is_one_error(tmp_path):
    path = tmp_path / "encoder.safetensors"
    export_safetensors({"w": torch.ones(8)}, path)
    assert torch.equal(load_weights(path)["w"], torch.ones(8))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(RunDirError, match="encoder.safetensors: not a readable safetensors"):
        load_weights(path)


# ----------------------------------------------------------------------------- kill -9

FAULT_ARGS = [*TINY, "train.epochs=12", "train.knn_every=0", "seed=5"]
KILLS = 20


def _child(argv: list[str], env: dict[str, str], log: str) -> None:
    """A forked ``adios train`` (the interpreter and torch already loaded: no start-up cost)."""
    os.environ.update(env)
    sys.stdout = sys.stderr = out = open(log, "a", buffering=1)  # noqa: SIM115
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    faulthandler.dump_traceback_later(170, exit=True, file=out)  # a hung child says where
    torch.set_num_threads(1)
    sys.exit(main(argv))


# the time limit by SIGALRM, not by pytest-timeout's timer thread: no thread beside the main one
# may exist when the test forks (below)
@pytest.mark.timeout(method="signal")
def test_kill_9_at_random_moments_then_resume_ends_bit_identical(tmp_path, monkeypatch, capsys):
    """Issue 9's fault injection: SIGKILL at 20 moments of a run (half at random times, half
    inside a checkpoint or export write: after the temporary is written, after its fsync, after
    the rename), each followed by ``adios train --resume``. After every kill the checkpoint on
    disk is exactly the uninterrupted run's of its epoch (or absent); the final weights,
    optimiser state and logged losses are bit-identical to the uninterrupted run's."""
    # fork copies no other thread: tqdm's monitor could hold tqdm's lock at that moment, and a
    # child waiting for it would hang; without the thread the forks are safe
    for cls in {tqdm.std.tqdm, tqdm.auto.tqdm}:
        if getattr(cls, "monitor", None) is not None:
            cls.monitor.exit()
        monkeypatch.setattr(cls, "monitor", None, raising=False)
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)
    # the uninterrupted run, keeping each epoch's checkpoint and when it was written
    reference: dict[int, dict] = {}
    saved_at: dict[int, float] = {0: 0.0}
    original = adios.rundir.save_atomic
    started = time.perf_counter()

    def keep(state, path):
        reference[state["epoch"]] = torch.load(io.BytesIO(_saved(state)), weights_only=True)
        saved_at[state["epoch"]] = time.perf_counter() - started
        original(state, path)

    monkeypatch.setattr(adios.rundir, "save_atomic", keep)
    assert main(["train", f"run_dir={tmp_path / 'whole'}", *FAULT_ARGS]) == 0
    total = time.perf_counter() - started
    monkeypatch.setattr(adios.rundir, "save_atomic", original)
    assert threading.active_count() == 1, threading.enumerate()
    capsys.readouterr()

    run, log = tmp_path / "killed", tmp_path / "children.log"
    fork = multiprocessing.get_context("fork")
    rng = random.Random(9)
    kills = resumed = identical = 0
    epochs_seen, stages = set(), set()
    for i in range(KILLS + 1):
        argv = (["train", f"run_dir={run}", *FAULT_ARGS] if i == 0
                else ["train", "--resume", str(run)])
        env = {"ADIOS_FAULT_DELAY": "0.005"}
        stage = FAULT_STAGES[(i // 2) % len(FAULT_STAGES)] if i % 2 else None
        if stage is not None and i < KILLS:  # the n-th write of this process dies at `stage`
            env["ADIOS_FAULT_KILL"] = f"{stage}:{rng.randint(1, 3)}"
        child = fork.Process(target=_child, args=(argv, env, str(log)))
        child.start()
        if i == KILLS:
            child.join(timeout=180)
            assert child.exitcode == 0, log.read_text()[-3000:]
            resumed += 1
            break
        if stage is None:  # a random moment, well before this process could finish
            done = load(run / "checkpoint.pt")["epoch"] if (run / "checkpoint.pt").exists() else 0
            child.join(timeout=rng.uniform(0, 0.6 * (total - saved_at[done])))
            if child.is_alive():
                os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=180)
        assert child.exitcode == -signal.SIGKILL, (i, env, log.read_text()[-3000:])
        kills += 1
        resumed += i > 0  # this resume ran, without an error, until it was killed
        stages.add(stage)
        if (run / "checkpoint.pt").exists():
            state = load(run / "checkpoint.pt")  # never torn: the old file or the new one
            epochs_seen.add(state["epoch"])
            identical += same_weights(state, reference[state["epoch"]])
        else:
            identical += 1  # killed before the first checkpoint: nothing to differ
    print(f"kills: {kills}, resumed: {resumed}, identical: {identical}")
    assert (kills, resumed, identical) == (KILLS, KILLS, KILLS)
    assert stages == {None, *FAULT_STAGES} and len(epochs_seen) >= 3  # kills spread out
    final = load(run / "checkpoint.pt")
    assert final["epoch"] == 12 and same_weights(final, reference[12])
    for name in ("encoder.safetensors", "masker.safetensors"):
        whole, killed = load_file(tmp_path / "whole" / name), load_file(run / name)
        assert whole.keys() == killed.keys()
        assert all(torch.equal(whole[k], killed[k]) for k in whole), name
    losses = [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]
    assert losses == [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "whole")
                      if "loss" in r]  # every step logged once, with the same loss
    assert not [p for p in run.iterdir() if checkpoint.is_temporary(p)]
