"""scripts/gpu_curves.sh: argument handling and the grid it runs, checked by a CPU dry run."""

import json
import os
import subprocess
import sys
from pathlib import Path

from adios.compare import cell_config, cells, load_grid

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_curves.sh"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_gpu_curves_dry_run_lists_the_four_cells(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "cifar" / split / "cat").mkdir(parents=True)
    out = tmp_path / "out"
    result = run_script(str(tmp_path / "cifar"), "--out", str(out), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("start")]
    assert [Path(p).name for _, p in lines] == [
        f"simclr-{scheme}-seed0" for scheme in ("none", "mae", "adios-s", "adios")
    ]
    assert not out.exists() or not any(out.iterdir())  # a dry run writes nothing


def test_gpu_curves_grid_is_the_short_bf16_version_of_the_cpu_grid():
    gpu = load_grid(ROOT / "grids" / "cifar10-curves-gpu.yaml")
    cpu = load_grid(ROOT / "grids" / "cifar10-curves.yaml")
    assert gpu.schemes == cpu.schemes and gpu.presets == cpu.presets
    assert gpu.epochs < cpu.epochs and gpu.curve_every
    cfg = cell_config(gpu, cells(gpu)[-1], gpu.epochs)
    assert (cfg.train.device, cfg.train.precision, cfg.optim.batch_size) == ("cuda", "bf16", 256)
    assert cfg.train.channels_last and cfg.masking.mode == "adios" and cfg.masker.n_masks == 4


def test_gpu_curves_refuses_a_folder_without_splits(tmp_path):
    result = run_script(str(tmp_path))
    assert result.returncode == 2 and "no train/ and test/" in result.stderr


def run_with_scratch(scratch: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "ADIOS_SCRATCH": str(scratch)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_item11_gpu_curves_takes_a_tgz_with_a_top_folder_and_redoes_a_partial_unpacking(
        tmp_path):
    """A .tgz whose splits sit in one top folder trains from that folder; a train/ left by an
    interrupted unpacking (no completion stamp) is unpacked again, not reused (issue 25,
    item 11)."""
    import tarfile

    for split in ("train", "test"):
        (tmp_path / "src" / "cifar10" / split / "cat").mkdir(parents=True)
        (tmp_path / "src" / "cifar10" / split / "cat" / "0.png").write_bytes(b"png")
    tarball = tmp_path / "cifar10.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10", arcname="cifar10")
    scratch = tmp_path / "scratch"
    (scratch / "adios-cifar10" / "train").mkdir(parents=True)  # a partial earlier unpacking
    result = run_with_scratch(scratch, str(tarball), "--out", str(tmp_path / "out"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.startswith("start")]) == 4
    unpacked = scratch / "adios-cifar10"
    assert (unpacked / "cifar10" / "test" / "cat" / "0.png").exists()
    assert not (unpacked / "train").exists()  # the partial one was removed
    stamp = (unpacked / ".unpacked").read_text()
    assert run_with_scratch(scratch, str(tarball), "--dry-run").returncode == 0
    assert (unpacked / ".unpacked").read_text() == stamp  # unpacked once
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert run_with_scratch(scratch, str(other)).returncode == 2


def test_gpu_check_dry_run_lists_its_runs_and_checks_their_configurations(tmp_path):
    """scripts/gpu_check.sh --dry-run on a CPU: four short training runs (fp32, bf16, fp16,
    compiled), bench step at 32 and 96 px, torchrun with two GPUs or more; every training run's
    configuration checked by adios config, a bad key refused; nothing written."""
    for split in ("train", "test"):
        (tmp_path / "cifar" / split / "cat").mkdir(parents=True)
    out = tmp_path / "out"
    script = ROOT / "scripts" / "gpu_check.sh"

    def dry(gpus: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
               "ADIOS_GPUS": gpus}
        return subprocess.run(["bash", str(script), str(tmp_path / "cifar"), "--out", str(out),
                               "--dry-run", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    result = dry("2", "model.width=8")
    assert result.returncode == 0, result.stderr
    runs = dict(line[4:].split(": ", 1) for line in result.stdout.splitlines()
                if line.startswith("run "))
    assert list(runs) == ["fp32", "bf16", "fp16", "compiled", "bench-32px", "bench-96px",
                          "torchrun-2gpu"]
    assert "train.precision=fp16" in runs["fp16"] and "train.compile=true" in runs["compiled"]
    assert "--nproc-per-node=2" in runs["torchrun-2gpu"] and "model.width=8" in runs["fp32"]
    assert "stl10" in runs["bench-96px"]
    one = dry("1", "model.widht=8")
    assert one.returncode == 2 and "bad configuration" in one.stderr
    assert "torchrun" not in one.stdout
    assert not out.exists()


def test_masks_side_by_side_crops_the_panels_of_a_training_picture(tmp_path):
    """The panels found in a mask_figure picture are its image and argmax columns, pixel for
    pixel (checked on images with one flat colour each), and the composite is written."""
    import importlib.util

    import numpy as np
    import torch

    from adios.viz import mask_figure

    script = ROOT / "scripts" / "masks_side_by_side.py"
    spec = importlib.util.spec_from_file_location("side", script)
    side = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(side)
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=torch.uint8)
    images = colours[:, :, None, None].expand(3, 3, 32, 32).contiguous()
    masks = torch.zeros(3, 2, 32, 32)
    masks[:, 0, :, :16], masks[:, 1, :, 16:] = 1, 1  # left half mask 1, right half mask 2
    truth = torch.zeros(3, 32, 32, dtype=torch.long)
    run = tmp_path / "run"
    mask_figure(images, masks, run / "masks.png", truth=truth, untrained=masks)
    grid = side.panels(run / "masks.png")
    assert grid.shape[:2] == (3, 5 + 2)  # image, objects, argmax, soft, untrained, 2 views
    for i, colour in enumerate(colours.numpy()):
        centre = grid[i, 0][10:-10, 10:-10].reshape(-1, 3)
        assert np.abs(centre.astype(int) - colour).max() <= 2  # the image panel
    argmax = grid[0, 2].astype(int)
    left, right = argmax[10:-10, 5:10].reshape(-1, 3), argmax[10:-10, -10:-5].reshape(-1, 3)
    assert (left.std(0) < 3).all() and (right.std(0) < 3).all()  # two flat halves ...
    assert np.abs(left.mean(0) - right.mean(0)).max() > 30  # ... in different colours
    out = tmp_path / "side.png"
    assert side.main([str(out), f"a={run}", f"b={run}"]) == 0 and out.stat().st_size > 1000


def test_bench_old_new_times_each_checkouts_own_default(monkeypatch):
    """scripts/bench_old_new.py reads a checkout's default run from its own config code and
    picks that row of its bench output (not the plain row, not another schedule)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_old_new.py"
    spec = importlib.util.spec_from_file_location("bench_old_new", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = path.parents[1]
    assert module.default_run(repo) == ("adios", "fast", 4)  # shapes-laptop
    rows = [{"masking": "none", "schedule": "fast", "seconds_per_step": 1.0},
            {"masking": "adios", "schedule": "single-pass", "seconds_per_step": 2.0},
            {"masking": "adios", "schedule": "fast", "seconds_per_step": 3.0}]
    calls = []

    def fake_run(checkout, code, env):
        calls.append(code)
        return "noise\n" + json.dumps(rows)

    monkeypatch.setattr(module, "run_python", fake_run)
    assert module.time_step(repo, ("adios", "fast", 4), {}, 2)["seconds_per_step"] == 3.0
    bench = calls[-1]
    assert bench[bench.index("--learned") + 1] == "adios"
    assert bench[bench.index("--schedules") + 1] == "fast"
    assert "train.threads=2" in bench
