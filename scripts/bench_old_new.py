"""The default run's training step, an older checkout against this one, in one run.

Each checkout times its *own* default configuration (its default preset's masking mode, schedule,
number of masks, precision and memory format) with its own ``adios bench step``; the two are run
round-robin, a subprocess per round, natively and under oneDNN's and ATen's AVX2 kernels
(``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``, what an AVX2-only laptop runs), so each
speed-up comes from measurements taken side by side. Time it on a quiet machine.

    python scripts/bench_old_new.py              # old = fd9d8fb, where the laptop work began
    python scripts/bench_old_new.py --old HEAD~5 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
# what a checkout's default run is: printed by that checkout's own config code
DEFAULT = (
    "import json; from adios.config import load_config; c = load_config([]); "
    "print(json.dumps([c.masking.mode, c.masking.schedule, c.masker.n_masks]))"
)


CLI = "import sys; from adios.cli import main; sys.exit(main())"


def run_python(checkout: Path, code: list[str], env: dict[str, str]) -> str:
    full = {**os.environ, **env, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, *code], cwd=checkout, env=full, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{checkout}: {' '.join(code)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def default_run(checkout: Path) -> tuple[str, str, int]:
    mode, schedule, n = json.loads(run_python(checkout, ["-c", DEFAULT], {}))
    return mode, schedule, n


def time_step(checkout: Path, default: tuple[str, str, int], env: dict[str, str],
              threads: int) -> dict:
    mode, schedule, n = default
    learned = "" if mode == "none" else mode
    out = run_python(checkout, [
        "-c", CLI, "bench", "step", "--json", "--repeats", "1", "--warmup", "2",
        "--steps", "3", "--learned", learned, "--schedules", schedule, "--masks", str(max(n, 2)),
        f"train.threads={threads}"], env)
    rows = json.loads(out[out.index("["):])
    row = next(r for r in rows if r["masking"] == mode and (mode == "none" or
                                                               r["schedule"] == schedule))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", default="fd9d8fb", help="the older revision (default fd9d8fb)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.old],
                       check=True, capture_output=True)
        try:
            checkouts = {"old": old, "new": REPO}
            defaults = {name: default_run(checkout) for name, checkout in checkouts.items()}
            print(f"{platform.processor() or platform.machine()}, {args.threads} threads, "
                  f"old = {args.old}, new = the working tree; median of {args.rounds} rounds")
            for isa, env in (("native", {}), ("AVX2 kernels", AVX2)):
                seconds: dict[str, list[float]] = {"old": [], "new": []}
                rows: dict[str, dict] = {}
                for _ in range(args.rounds):
                    for name, checkout in checkouts.items():
                        rows[name] = time_step(checkout, defaults[name], env, args.threads)
                        seconds[name].append(rows[name]["seconds_per_step"])
                median = {name: statistics.median(s) for name, s in seconds.items()}
                for name in checkouts:
                    r = rows[name]
                    print(f"{isa:12s} {name}: {r['masking']} N={r['n_masks']} {r['schedule']} "
                          f"{r['precision']} {'NHWC' if r['channels_last'] else 'NCHW'}: "
                          f"{median[name]:.3f} s/step, "
                          f"{r['batch_size'] / median[name]:.1f} images/s")
                print(f"{isa:12s} speed-up new / old: {median['old'] / median['new']:.2f}x")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           check=False, capture_output=True)


if __name__ == "__main__":
    main()
