"""Issue 9, one test (or more) per numbered failure: what --overwrite may delete, the lock, what a
resume may change, NaN weights, validation before anything is written, interrupts, batch size."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import threading

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_run import OWN, TINY, load, write_images

import adios.checkpoint
import adios.data.datasets
import adios.engine
from adios.cli import main
from adios.config import load_config
from adios.rundir import MARKER, RunDir, holder_pid, run_name

ONE_EPOCH = [*TINY, "train.epochs=1", "train.knn_every=0"]


def train(run_dir, *args: str) -> int:
    return main(["train", f"run_dir={run_dir}", *args])


def files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ----------------------------------------------------------------------------- 1. --overwrite


def test_1_overwrite_refuses_a_folder_that_is_not_a_run_and_keeps_the_users_file(
        tmp_path, capsys):
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "thesis.tex").write_text("three years of work")
    assert train(decoy, *ONE_EPOCH, "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"run directory {decoy} exists and is not empty, and it is not an adios run" in err
    assert "nothing was deleted" in err
    assert files(decoy) == {"thesis.tex": b"three years of work"}  # not even a lock file added


def test_1_overwrite_never_empties_the_working_directory_or_a_folder_above_it(
        tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train(run, *ONE_EPOCH) == 0
    before = files(run)
    for cwd, target in ((run, "."), (run / "tb", str(run))):
        monkeypatch.chdir(cwd)
        assert main(["train", f"run_dir={target}", *ONE_EPOCH, "--overwrite"]) == 2
        assert "is the working directory or a folder above it" in capsys.readouterr().err
        assert files(run) == before


def test_1_overwrite_replaces_a_run_of_ours_and_an_empty_folder_needs_nothing(tmp_path):
    run = tmp_path / "run"
    assert train(run, *ONE_EPOCH) == 0
    (run / "eval_knn.json").write_text("{}")  # made by adios eval: part of the run
    first = (run / "encoder.safetensors").read_bytes()
    assert train(run, *ONE_EPOCH, "seed=1", "--overwrite") == 0
    assert (run / "encoder.safetensors").read_bytes() != first
    assert not (run / "eval_knn.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(empty, *ONE_EPOCH) == 0 and (empty / MARKER).is_file()


# ----------------------------------------------------------------------------- 2. the lock


def _hold_lock(path: str, ready, release) -> None:
    RunDir(__import__("pathlib").Path(path), resume=False).lock()
    ready.set()
    release.wait(60)


def test_2_a_run_directory_in_use_is_refused_for_train_resume_and_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, *ONE_EPOCH, "train.epochs=2", "--stop-after-epoch", "1") == 0
    before = files(run)
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold_lock, args=(str(run), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert holder_pid(run) == str(holder.pid)  # the probe compare uses to skip a cell
        capsys.readouterr()
        for argv in (["train", f"run_dir={run}", *ONE_EPOCH],
                     ["train", "--resume", str(run)],
                     ["train", f"run_dir={run}", *ONE_EPOCH, "--overwrite"]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"{run} is in use by another adios process (pid {holder.pid})" in err, argv
        after = files(run)
        assert {k: v for k, v in after.items() if k != MARKER} == {
            k: v for k, v in before.items() if k != MARKER}
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # kill -9: the kernel drops its lock
        holder.join()
    assert "pid" in (run / MARKER).read_text()  # the dead holder's marker stays behind ...
    assert holder_pid(run) is None
    assert holder_pid(tmp_path / "nowhere") is None and not (tmp_path / "nowhere").exists()
    assert main(["train", "--resume", str(run)]) == 0  # ... and is no obstacle
    assert load(run / "checkpoint.pt")["epoch"] == 2


# ----------------------------------------------------------------------------- 3. resume


@pytest.fixture
def half_run(tmp_path):
    """A 2-epoch run stopped after epoch 1."""
    run = tmp_path / "half"
    assert train(run, *TINY, "train.epochs=2", "--stop-after-epoch", "1") == 0
    return run


def test_3_resume_overrides_apply_and_are_recorded(half_run, tmp_path, capsys):
    plain, faster = tmp_path / "plain", tmp_path / "faster"
    shutil.copytree(half_run, plain)
    shutil.copytree(half_run, faster)
    assert main(["train", "--resume", str(plain)]) == 0
    assert main(["train", "--resume", str(faster), "optim.lr=0.5", "train.epochs=3"]) == 0
    assert "with optim.lr: 0.3 -> 0.5" in capsys.readouterr().err
    # the optimiser got the new rate: its base rate is 0.5, and the weights differ
    state = load(faster / "checkpoint.pt")
    groups = state["encoder_opt"]["param_groups"]
    assert {g["base_lr"] for g in groups if not g.get("lars_exclude")} == {0.5}
    a, b = load_file(plain / "encoder.safetensors"), load_file(faster / "encoder.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    saved = yaml.safe_load((faster / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.5 and saved["train"]["epochs"] == 3
    summary = json.loads((faster / "summary.json").read_text())
    assert summary["epochs"] == 3 and state["epoch"] == 3
    assert summary["resumes"] == [{"after_epoch": 1, "changes": {"optim.lr": [0.3, 0.5],
                                                                 "train.epochs": [2, 3]}}]
    assert json.loads((plain / "summary.json").read_text())["resumes"] == []


def test_3_resume_refuses_changes_the_weights_depend_on(half_run, capsys):
    before = files(half_run)
    assert main(["train", "--resume", str(half_run), "model.width=8"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "model.width (4 -> 8)" in err and "new run" in err
    assert {k: v for k, v in files(half_run).items() if k != MARKER} == {
        k: v for k, v in before.items() if k != MARKER}


def test_3_hand_edited_config_yaml_is_detected(half_run, capsys):
    path = half_run / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    saved["masker"]["n_masks"] = 5
    path.write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["train", "--resume", str(half_run)]) == 2
    err = capsys.readouterr().err
    assert "masker.n_masks (3 -> 5, edited in config.yaml)" in err and "restore" in err
    saved["masker"]["n_masks"] = 3
    saved["optim"]["lr"] = 0.25
    path.write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["train", "--resume", str(half_run)]) == 0
    assert "optim.lr: 0.3 -> 0.25 (edited in config.yaml)" in capsys.readouterr().err
    assert json.loads((half_run / "summary.json").read_text())["resumes"][0]["changes"] == {
        "optim.lr": [0.3, 0.25]}


# ----------------------------------------------------------------------------- 4. NaN weights


def test_4_non_finite_weights_are_never_saved(tmp_path, monkeypatch, capsys):
    """The last step of epoch 1 leaves a NaN in the masker (its loss was still finite)."""
    step = adios.engine.train_step
    calls = []

    def poisoned(cfg, models, *args, **kwargs):
        stats = step(cfg, models, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(models.masker.parameters()).view(-1)[0] = float("nan")
        return stats

    monkeypatch.setattr(adios.engine, "train_step", poisoned)
    run = tmp_path / "run"
    assert train(run, *ONE_EPOCH) == 2
    err = capsys.readouterr().err
    assert "non-finite (NaN or inf) weights in the masker at the end of epoch 1" in err
    assert "has no checkpoint yet" in err
    assert not (run / "checkpoint.pt").exists() and not (run / "masker.safetensors").exists()
    # the failed run's metrics log is closed (its TensorBoard writer thread ends)
    assert not [t for t in threading.enumerate() if "Writer" in type(t).__name__]
    calls.clear()  # checked every N steps too: caught right after step 2
    assert train(run, *ONE_EPOCH, "train.epochs=2", "train.finite_every=1") == 2
    assert "masker after step 2" in capsys.readouterr().err
    assert not (run / "summary.json").exists()


# ----------------------------------------------------------------------------- 6. validation


@pytest.mark.parametrize("bad", [
    "train.knn_bank=0", "train.eval_batch_size=0", "train.threads=-1", "optim.lr=.inf",
    "optim.mask_lr=.nan", "objective.pred_hidden=8",  # SimCLR has no predictor
    "model.backbone=vit_tiny",  # with model.width=4: the ViT has no width option
])
def test_6_every_bad_value_fails_before_the_run_directory_exists(tmp_path, capsys, bad):
    key = bad.partition("=")[0]
    assert train(tmp_path / "run", *ONE_EPOCH, bad) == 2
    err = capsys.readouterr().err
    assert err.count("adios: error:") == 1 and (key in err or "width" in err)
    assert not (tmp_path / "run").exists()  # the corrected rerun needs no --overwrite


# ----------------------------------------------------------------------------- 8. interrupts


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_8_interrupts_say_which_checkpoint_is_intact_and_rerun_without_overwrite(
        tmp_path, monkeypatch, capsys, request, signum):
    # Ctrl-C as in a terminal: a shell that starts pytest in the background (`cmd &` without job
    # control) hands it SIGINT ignored, and then the raised signal below would do nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    step = adios.engine.train_step
    calls, stop_at = [], [1]

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at[0]:
            signal.raise_signal(signum)  # this thread: SIGINT raises KeyboardInterrupt, SIGTERM too
        return step(*args, **kwargs)

    monkeypatch.setattr(adios.engine, "train_step", interrupted)
    run, code = tmp_path / "run", 130 if signum == signal.SIGINT else 143
    args = [*TINY, "train.epochs=2"]
    assert train(run, *args) == code  # during the first step: no checkpoint yet
    err = capsys.readouterr().err
    assert f"{run} has no checkpoint yet: the same command, or adios train --resume" in err
    assert "no --overwrite needed" in err and "is intact" not in err
    calls.clear()
    stop_at[0] = 3  # the first step of epoch 2: the same command restarts it
    assert train(run, *args) == code
    err = capsys.readouterr().err
    assert "restarting" in err and f"{run / 'checkpoint.pt'} (epoch 1) is intact" in err
    calls.clear()
    stop_at[0] = 0
    assert main(["train", "--resume", str(run)]) == 0
    assert load(run / "checkpoint.pt")["epoch"] == 2


def test_8_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it(tmp_path):
    run = tmp_path / "run"
    assert train(run, *ONE_EPOCH) == 0
    for name in ("checkpoint.pt", "summary.json", "encoder.safetensors", "masker.safetensors"):
        (run / name).unlink()  # what a kill during epoch 1 leaves: config.yaml, marker, logs
    assert main(["train", "--resume", str(run)]) == 0
    assert load(run / "checkpoint.pt")["epoch"] == 1 and (run / "summary.json").is_file()


# ----------------------------------------------------------------------------- 9. batch size


def test_9_a_batch_larger_than_the_dataset_is_an_error(tmp_path, capsys):
    assert train(tmp_path / "run", *ONE_EPOCH, "optim.batch_size=64") == 2
    err = capsys.readouterr().err
    assert "optim.batch_size: 64 is more than the 32 training images" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------- issue 29: only what adios made is deleted


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch run, copied by each test that changes it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train(run, *ONE_EPOCH) == 0
    return run


def copy_run(finished, tmp_path, name: str = "run"):
    run = tmp_path / name
    shutil.copytree(finished, run, symlinks=True)
    (run / "notes.txt").write_text("my notes on this run")  # the user's own file
    return run


def test_29_1_a_finished_run_without_its_checkpoint_is_never_restarted(
        finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "checkpoint.pt").unlink()  # the user kept only the weights
    before = files(run)
    for argv in (["train", f"run_dir={run}", *ONE_EPOCH], ["train", "--resume", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "holds a finished run (encoder.safetensors, masker.safetensors, summary.json)" in err
        assert "restarting" not in err and "--overwrite" in err
        assert {k: v for k, v in files(run).items() if k != MARKER} == {
            k: v for k, v in before.items() if k != MARKER}
    assert train(run, *ONE_EPOCH, "seed=1", "--overwrite") == 0
    assert "kept 1 file adios did not write" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "my notes on this run"
    assert (run / "encoder.safetensors").read_bytes() != before["encoder.safetensors"]


def test_29_1_restart_and_overwrite_delete_only_what_adios_wrote(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "masks").mkdir(exist_ok=True)
    (run / "masks" / "favourite.png").write_bytes(b"mine")
    (run / "eval_knn.json").write_text("{}")  # adios eval's: part of the run
    assert train(run, *ONE_EPOCH, "--overwrite") == 0
    assert (run / "notes.txt").read_text() == "my notes on this run"
    assert (run / "masks" / "favourite.png").read_bytes() == b"mine"
    assert not (run / "eval_knn.json").exists()
    for name in ("checkpoint.pt", "summary.json", "encoder.safetensors", "masker.safetensors"):
        (run / name).unlink()  # as if killed during epoch 1
    capsys.readouterr()
    assert train(run, *ONE_EPOCH) == 0
    assert "restarting" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "my notes on this run"
    assert (run / "masks" / "favourite.png").read_bytes() == b"mine"


def test_29_2_a_folder_is_a_run_only_by_a_marker_adios_wrote(finished, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("lr: 0.1\n")
    (foreign / "checkpoint.pt").write_bytes(b"another tool's weights")
    (foreign / "data").mkdir()
    (foreign / "data" / "images.bin").write_bytes(b"irreplaceable")
    for marker in (None, b"", b"anything at all\n"):
        if marker is not None:
            (foreign / MARKER).write_bytes(marker)
        before = files(foreign)
        for argv in (["train", f"run_dir={foreign}", *ONE_EPOCH],
                     ["train", f"run_dir={foreign}", *ONE_EPOCH, "--overwrite"],
                     ["train", "--resume", str(foreign)]):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert "not an adios run" in err and f"no {MARKER} written by adios" in err, argv
            assert "--overwrite to replace" not in err
            assert files(foreign) == before, argv  # not even a marker added
    # a checkpoint copied from another run is not this run's
    run, other = copy_run(finished, tmp_path), copy_run(finished, tmp_path, "other")
    assert train(other, *ONE_EPOCH, "--overwrite") == 0  # a new run id
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 2
    assert "belongs to another run" in capsys.readouterr().err


def test_29_2_a_run_of_an_older_adios_is_resumed_but_never_emptied(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / MARKER).write_text("adios run directory (docs/running.md); locked by pid 12\n")
    state = load(run / "checkpoint.pt")
    del state["run_id"]
    torch.save(state, run / "checkpoint.pt")
    before = files(run)
    assert train(run, *ONE_EPOCH, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "older than run ids" in err and "nothing was deleted" in err
    assert f"--resume {run}" in err
    assert {k: v for k, v in files(run).items() if k != MARKER} == {
        k: v for k, v in before.items() if k != MARKER}
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 0
    run_id = load(run / "checkpoint.pt")["run_id"]
    assert f"run {run_id}" in (run / MARKER).read_text()
    assert train(run, *ONE_EPOCH, "--overwrite") == 0  # now it is one of ours
    assert (run / "notes.txt").read_text() == "my notes on this run"


def test_29_3_nothing_is_written_through_a_symbolic_link(finished, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = copy_run(finished, tmp_path)
    (run / MARKER).unlink()
    (run / MARKER).symlink_to("../victim.txt")
    for argv in (["train", f"run_dir={run}", *ONE_EPOCH, "--overwrite"],
                 ["train", "--resume", str(run), "train.epochs=2"]):
        assert main(argv) == 2
        assert f"{run / MARKER} is a symbolic link" in capsys.readouterr().err
        assert victim.read_text() == "precious"
    (run / MARKER).unlink()
    (run / MARKER).symlink_to("../created.txt")  # a dangling link creates nothing
    assert main(["train", "--resume", str(run)]) == 2
    assert not (tmp_path / "created.txt").exists()
    # a linked folder (tb/, masks/) in a run of ours would receive its event files, pictures
    run = copy_run(finished, tmp_path, "linked")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(run / "tb")
    (run / "tb").symlink_to(elsewhere)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 2
    assert f"{run / 'tb'} is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []


def test_29_3_the_links_wandb_makes_in_its_own_folder_do_not_stop_a_resume(
        finished, tmp_path, capsys):
    """W&B makes wandb/latest-run and wandb/debug.log links: a run logged to W&B could not be
    resumed or evaluated. They are W&B's; --overwrite deletes them without following them."""
    victim = tmp_path / "victim.log"
    victim.write_text("precious")
    run = copy_run(finished, tmp_path)
    (run / "wandb" / "run-1" / "logs").mkdir(parents=True)
    (run / "wandb" / "latest-run").symlink_to("run-1")
    (run / "wandb" / "debug.log").symlink_to(victim)
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 0
    assert main(["eval", "knn", str(run)]) == 0
    assert train(run, *ONE_EPOCH, "--overwrite") == 0
    assert not (run / "wandb").exists() and victim.read_text() == "precious"
    assert (run / "notes.txt").read_text() == "my notes on this run"
    (run / "wandb").symlink_to(tmp_path)  # the folder itself is no exception
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "train.epochs=2"]) == 2
    assert f"{run / 'wandb'} is a symbolic link" in capsys.readouterr().err


def test_29_4_a_checkpoint_with_non_finite_weights_is_not_resumed_or_exported(
        finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    state = load(run / "checkpoint.pt")
    next(iter(state["objective"].values())).view(-1)[0] = float("nan")
    torch.save(state, run / "checkpoint.pt")
    (run / "encoder.safetensors").unlink()
    assert main(["train", "--resume", str(run)]) == 2  # no epoch left: it would only export
    err = capsys.readouterr().err
    assert "checkpoint.pt: non-finite (NaN or inf) weights in the encoder" in err
    assert not (run / "encoder.safetensors").exists()


def test_29_6_a_resume_that_fails_leaves_config_yaml_as_the_checkpoint_knows_it(
        half_run, monkeypatch, capsys):
    before = (half_run / "config.yaml").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(adios.engine, "train_step", interrupted)
        assert main(["train", "--resume", str(half_run), "optim.lr=0.5"]) == 130
    assert (half_run / "config.yaml").read_bytes() == before
    capsys.readouterr()
    assert main(["train", "--resume", str(half_run)]) == 0
    err = capsys.readouterr().err
    assert "edited in config.yaml" not in err and "config.yaml was edited" not in err
    assert json.loads((half_run / "summary.json").read_text())["resumes"] == []


def test_29_6_a_resume_on_images_of_other_classes_names_that_cause(tmp_path, capsys):
    """data.path may move; to a one-class (so unlabelled) folder, or one of three classes, the
    probe no longer fits: that is the error, not "other model settings", and nothing changes."""
    write_images(tmp_path / "pets", 40, classes=("cat", "dog"))
    write_images(tmp_path / "cats", 40, classes=("cat",))
    write_images(tmp_path / "zoo", 48, classes=("cat", "dog", "cow"))
    run = tmp_path / "run"
    assert main(["train", f"data.path={tmp_path / 'pets'}", f"run_dir={run}", *OWN,
                 "train.epochs=2", "--stop-after-epoch", "1"]) == 0
    (run / "notes.txt").write_text("my notes on this run")
    before = files(run)
    for folder, said in (("cats", "are unlabelled (no class folders, or one)"),
                         ("zoo", "hold 3 classes")):
        capsys.readouterr()
        assert main(["train", "--resume", str(run), f"data.path={tmp_path / folder}",
                     "optim.lr=0.5"]) == 2
        err = capsys.readouterr().err
        assert f"the images at data.path={tmp_path / folder} {said}" in err
        assert "checkpoint was trained on 2 classes" in err
        assert f"(data.path={tmp_path / 'pets'})" in err
        assert "other model settings" not in err and "optimiser state" not in err
        assert "resuming" not in err  # refused before any change is announced
        assert {k: v for k, v in files(run).items() if k != MARKER} == {
            k: v for k, v in before.items() if k != MARKER}
    assert main(["train", "--resume", str(run)]) == 0
    assert "edited" not in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "my notes on this run"


def test_28_a_run_directory_that_cannot_be_used_is_refused_before_any_image_is_decoded(
        tmp_path, monkeypatch, capsys):
    """"run directory exists" came after every image of the folder was decoded and checked
    (minutes for a large folder); now every refusal comes first, and keeps the user's files."""
    images = f"data.path={tmp_path / 'images'}"
    write_images(tmp_path / "images", 40)
    run, finished, foreign = tmp_path / "run", tmp_path / "finished", tmp_path / "foreign"
    assert main(["train", images, f"run_dir={run}", *OWN]) == 0
    (run / "notes.txt").write_text("my notes on this run")
    shutil.copytree(run, finished)
    (finished / "checkpoint.pt").unlink()
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not adios's")

    def decoded(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(adios.data.datasets, "inspect_files", decoded)
    cases = [
        ([f"run_dir={run}"], "exists and is not empty: it holds a run with a checkpoint"),
        ([f"run_dir={foreign}"], "it is not an adios run"),
        ([f"run_dir={foreign}", "--overwrite"], "nothing was deleted"),
        ([f"run_dir={finished}"], "holds a finished run"),
        ([f"run_dir={tmp_path / 'images' / '0.png'}"], "is a file, not a folder"),
        (["--resume", str(finished)], "holds a finished run"),
        (["--resume", str(finished), "--hold"], "in use by another adios process"),
    ]
    capsys.readouterr()
    for args, said in cases:
        before = files(tmp_path)
        held = os.open(finished / MARKER, os.O_RDONLY)
        try:
            if "--hold" in args:  # as another process running it does
                args.remove("--hold")
                fcntl.flock(held, fcntl.LOCK_EX)
            command = args if args[0] == "--resume" else [images, *args, *OWN]
            assert main(["train", *command]) == 2, args
        finally:
            os.close(held)
        err = capsys.readouterr().err
        assert said in err and "an image was decoded" not in err, (args, err)
        assert "adios: cpu" not in err  # the start-up line comes after the data is read
        assert files(tmp_path) == before, args
    assert (run / "notes.txt").read_text() == "my notes on this run"
    assert (foreign / "mine.txt").read_text() == "not adios's"


def test_28_a_run_on_your_own_images_is_named_after_them(tmp_path, monkeypatch, capsys):
    """The default preset on a folder made runs/shapes-laptop-*: it never saw a scene."""
    write_images(tmp_path / "images", 40)
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"data.path={tmp_path / 'images'}", *OWN]) == 0
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("folder-laptop-2"), made.name
    assert capsys.readouterr().out.strip().endswith(made.name)
    # a preset made for the data it trains on keeps its name
    assert run_name(load_config([])) == "shapes-laptop"
    assert run_name(load_config(["preset=shapes-simclr-adios"])) == "shapes-simclr-adios"
    assert run_name(load_config(["preset=cifar10-laptop"])) == "cifar10-laptop"
    assert run_name(load_config(["preset=shapes-paper", "data.name=cifar10"])) == "cifar10-paper"


@pytest.mark.parametrize(("override", "said"), [
    ("run_dir=elsewhere", "run_dir: a resumed run keeps its own"),
    ("description=other", "description: a resumed run keeps its own"),
    ("data.path=/tmp", "data.path: this run trains on the built-in scenes, which read no files"),
])
def test_29_7_resume_overrides_that_would_be_ignored_are_refused(
        finished, tmp_path, capsys, override, said):
    run = copy_run(finished, tmp_path)
    before = files(run)
    assert main(["train", "--resume", str(run), override]) == 2
    assert said in capsys.readouterr().err
    assert files(run) == before


def test_29_7_resume_of_a_file_says_it_is_a_file(tmp_path, capsys):
    weights = tmp_path / "encoder.safetensors"
    weights.write_bytes(b"weights")
    assert main(["train", "--resume", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a run directory" in err and "run_dir=" not in err


def test_29_8_temporary_pictures_of_a_killed_run_are_removed(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    (run / "masks").mkdir(exist_ok=True)
    left = adios.checkpoint.temporary_name(run / "masks" / "epoch_001.png")
    left.write_bytes(b"half a picture")  # what kill -9 during the picture's save leaves
    assert main(["train", "--resume", str(run)]) == 0
    assert not left.exists() and (run / "notes.txt").exists()
