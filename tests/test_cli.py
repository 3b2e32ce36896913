"""Every ``adios`` subcommand on bad inputs: one ``adios: error:`` line, exit status 2, no
traceback, nothing written or deleted outside the run directory (issue 9, failure 7)."""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_run import TINY

import adios
from adios.cli import main

EVALS = (["eval", "knn"], ["eval", "linear", "--fast"], ["eval", "masks"],
         ["eval", "robustness"], ["eval", "transfer", "data.name=shapes"])
HOSTILE_YAML = "seed: !!python/object/apply:os.system ['touch pwned']\n"


class Hostile:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny run, copied (and broken) by each case."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", f"run_dir={run}", *TINY, "train.epochs=1", "train.knn_every=0"]) == 0
    return run


def _broken_run(trained: Path, where: Path, damage: str) -> Path:
    run = where / "run"
    shutil.copytree(trained, run)
    checkpoint, encoder = run / "checkpoint.pt", run / "encoder.safetensors"
    if damage == "truncated-checkpoint":  # encoder.safetensors is still there
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    elif damage == "empty-checkpoint":
        checkpoint.write_bytes(b"")
    elif damage == "hostile-checkpoint":
        checkpoint.write_bytes(pickle.dumps(Hostile()))
    elif damage == "hostile-config":
        (run / "config.yaml").write_text(HOSTILE_YAML)
    elif damage == "wrong-shape-encoder":
        weights = load_file(encoder)
        name = next(k for k, v in weights.items() if v.ndim == 4)
        weights[name] = torch.zeros(*weights[name].shape[:-1], weights[name].shape[-1] + 2)
        save_file(weights, str(encoder))
    elif damage == "wrong-shape-checkpoint":
        state = torch.load(checkpoint, weights_only=True)
        name = next(k for k, v in state["objective"].items() if v.ndim == 4)
        state["objective"][name] = torch.zeros(3, 3)
        torch.save(state, checkpoint)
    elif damage == "nan-encoder":
        weights = load_file(encoder)
        next(v for v in weights.values() if v.ndim == 4).view(-1)[0] = float("nan")
        save_file(weights, str(encoder))
    elif damage == "corrupt-summary":
        (run / "summary.json").write_text('{"knn_acc": 0.5,')
    elif damage == "list-config":
        (run / "config.yaml").write_text("- seed: 0\n")
    elif damage == "empty-init":
        state = torch.load(checkpoint, weights_only=True)
        state["init"] = {}
        torch.save(state, checkpoint)
    return run


def _cases() -> list[tuple[str, str, list[str]]]:
    """(id, damage to a copy of the trained run, argv with RUN / HERE placeholders)."""
    cases = [
        ("train-bad-value", "", ["train", "run_dir=HERE/new", "optim.lr=abc"]),
        ("train-hostile-override", "",
         ["train", "run_dir=HERE/new", "seed=!!python/name:os.getcwd"]),
        ("train-run-dir-is-a-file", "", ["train", "run_dir=HERE/afile", *TINY]),
        ("train-read-only-location", "", ["train", "run_dir=/sys/adios-test/run", *TINY]),
        ("train-resume-missing", "", ["train", "--resume", "HERE/missing"]),
        ("train-bad-option", "", ["train", "--stop-after-epoch", "soon"]),
    ]
    cases += [  # issue 29, item 5: values that overflowed after the run directory was made
        ("train-29-5-huge-lr", "", ["train", "run_dir=HERE/new", *TINY, "optim.lr=1e39"]),
        ("train-29-5-huge-seed", "", ["train", "run_dir=HERE/new", *TINY, f"seed={2**63}"]),
        ("train-29-5-huge-warmup", "",
         ["train", "run_dir=HERE/new", *TINY, "optim.warmup_epochs=1e308"]),
        ("knn-29-5-list-config", "list-config", ["eval", "knn", "RUN"]),
        ("report-29-5-list-config", "list-config", ["eval", "report", "RUN"]),
    ]
    for damage in ("truncated-checkpoint", "empty-checkpoint", "hostile-checkpoint",
                   "hostile-config", "wrong-shape-checkpoint", "list-config", "empty-init"):
        cases.append((f"train-resume-{damage}", damage, ["train", "--resume", "RUN"]))
    cases += [
        ("config-bad-value", "", ["config", "train.knn_bank=0"]),
        ("config-unknown-key", "", ["config", "optim.lrr=0.1"]),
        ("presets-extra", "", ["presets", "--all"]),
        ("data-check-missing", "", ["data", "check", "HERE/missing"]),
        ("data-check-two-paths", "", ["data", "check", "HERE/a", "HERE/b"]),
        ("bench-data-bad-value", "", ["bench", "data", "optim.batch_size=1"]),
        ("bench-step-bad-masks", "", ["bench", "step", "--masks", "four"]),
        ("bench-step-bad-steps", "", ["bench", "step", "--steps", "0", *TINY]),
        ("compare-missing-grid", "", ["compare", "HERE/missing.yaml"]),
        ("compare-hostile-grid", "", ["compare", "HERE/hostile.yaml"]),
        ("compare-bad-grid", "", ["compare", "HERE/bad.yaml"]),
        ("report-missing", "", ["eval", "report", "HERE/missing"]),
        ("report-hostile-config", "hostile-config", ["eval", "report", "RUN"]),
        ("report-corrupt-summary", "corrupt-summary", ["eval", "report", "RUN"]),
    ]
    for command in EVALS:
        name = command[1]
        cases += [
            (f"{name}-missing", "", [*command, "HERE/missing"]),
            (f"{name}-hostile-encoder-file", "", [*command, "--encoder", "HERE/afile", *TINY]),
        ]
        for damage in ("truncated-checkpoint", "hostile-checkpoint", "hostile-config",
                       "wrong-shape-encoder", "nan-encoder"):
            cases.append((f"{name}-{damage}", damage, [*command, "RUN"]))
    return cases


CASES = _cases()


def _snapshot(folder: Path, skip: Path | None) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not (skip and p.is_relative_to(skip))}


@pytest.mark.parametrize(("damage", "argv"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_inputs_are_one_error_line_and_touch_nothing(
        trained, tmp_path, monkeypatch, capsys, damage, argv):
    here = tmp_path / "here"
    here.mkdir()
    (here / "afile").write_text("not a folder, not weights")
    (here / "hostile.yaml").write_text(HOSTILE_YAML)
    (here / "bad.yaml").write_text("preset: shapes-paper\nschemes: [adios]\nbudget: {epochs: 0}\n")
    run = _broken_run(trained, tmp_path, damage) if damage else None
    monkeypatch.chdir(here)  # a stray write to the working directory would show
    argv = [w.replace("HERE", str(here)).replace("RUN", str(run)) for w in argv]
    before = _snapshot(tmp_path, None)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("adios: error:") == 1 and "Traceback" not in out + err, err
    line = next(line for line in err.splitlines() if line.startswith("adios: error:"))
    assert len(line) > len("adios: error: ") + 10
    assert "pwned" not in out and not (here / "pwned").exists()
    after = _snapshot(tmp_path, None)
    # nothing outside the run directory changed; inside it only the lock marker may
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert {k for k in changed if not (run and k == str(run / ".adios-run"))} == set(), changed


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", "train", "--resume", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.count("adios: error:") == 1


def test_checkpoint_bytes_are_not_a_pickle_that_can_run(tmp_path):
    """The hostile checkpoint of the cases above would run code under a plain pickle load."""
    data = pickle.dumps(Hostile())
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        pickle.loads(data)
    assert buffer.getvalue().strip() == "pwned"


def test_29_5_report_reads_null_numbers_and_skips_rows_adios_did_not_write(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "summary.json").write_text('{"wall_s": null}')  # a non-finite number, as written
    with (run / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": "x"}\n')
    assert main(["eval", "report", str(run)]) == 0
    assert (run / "report.html").is_file()


def test_29_9_a_raw_pickle_checkpoint_is_one_line_without_torchs_warning(trained, tmp_path,
                                                                         capsys):
    run = _broken_run(trained, tmp_path, "hostile-checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--resume", str(run)]) == 2
    assert [str(w.message) for w in caught] == []
    assert capsys.readouterr().err.count("adios: error:") == 1


class _InterruptedImport:
    """A meta-path finder that stops the import of adios.rundir (which imports torch) as a
    Ctrl-C or a SIGTERM in the first seconds would."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def find_spec(self, name, path=None, target=None):
        if name == "adios.rundir":
            if self.signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(self.signum)
        return None


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "adios: interrupted"), (signal.SIGTERM, 143, "adios: stopped by SIGTERM")])
def test_29_9_a_stop_during_the_imports_is_one_line(monkeypatch, capsys, signum, code, said):
    monkeypatch.delitem(sys.modules, "adios.rundir")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(signum), *sys.meta_path])
    assert main(["train"]) == code
    err = capsys.readouterr().err
    assert err.strip() == said and "Traceback" not in err


class _SwallowingImport:
    """A meta-path finder that takes a Ctrl-C or SIGTERM during the import of adios.train as
    some libraries' imports do: under a bare except. Raised inside the import, the stop was
    lost and the command trained on."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def find_spec(self, name, path=None, target=None):
        if name == "adios.train":
            with contextlib.suppress(BaseException):  # what such a library does
                signal.raise_signal(self.signum)
        return None


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "adios: interrupted"), (signal.SIGTERM, 143, "adios: stopped by SIGTERM")])
def test_29_9_a_stop_during_the_imports_is_held_until_they_end(monkeypatch, capsys, tmp_path,
                                                               signum, code, said):
    monkeypatch.setattr(adios, "train", sys.modules["adios.train"], raising=False)
    monkeypatch.delitem(sys.modules, "adios.train")
    monkeypatch.setattr(sys, "meta_path", [_SwallowingImport(signum), *sys.meta_path])
    run = tmp_path / "run"
    assert main(["train", f"run_dir={run}", *TINY, "train.epochs=1"]) == code
    err = capsys.readouterr().err
    assert err.strip() == said and "Traceback" not in err
    assert not run.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_29_9_the_command_line_takes_its_signals_before_any_long_import():
    """Ctrl-C and SIGTERM are taken in main(); everything imported before it is the window in
    which they print a traceback or end the process silently: the standard library only."""
    code = ("import sys, adios.cli; print(sorted(m for m in ('numpy', 'yaml', 'torch', "
            "'adios.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
