"""scripts/gpu_curves.sh: argument handling and the grid it runs, checked by a CPU dry run."""

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
