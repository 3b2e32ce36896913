"""The suite's per-test time limit (pyproject.toml): a test hung inside C code is stopped within
the limit and named, and the run fails instead of waiting for CI's own limit."""

import subprocess
import sys
import time
from pathlib import Path

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def test_a_test_hung_in_c_code_is_stopped_and_named(tmp_path):
    (tmp_path / "test_hangs.py").write_text(
        "import ctypes\n\n\ndef test_sleeps_in_libc():\n    ctypes.CDLL(None).sleep(120)\n"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(PYPROJECT), "--rootdir", str(tmp_path),
         "-o", "timeout=3", "-p", "no:cacheprovider", str(tmp_path / "test_hangs.py")],
        capture_output=True, text=True, timeout=100, cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert elapsed < 60, elapsed  # the 3 s limit, not the 120 s sleep
    assert "Timeout" in output and "test_sleeps_in_libc" in output, output[-3000:]
