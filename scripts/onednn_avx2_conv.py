"""Which NHWC convolutions does this torch's oneDNN survive under its AVX2 kernels?

Each case (one convolution's forward and backward in channels_last, 30 times) runs in its own
process under ONEDNN_MAX_CPU_ISA=AVX2, so a crash or hang is a line of the table, not the end of
the probe. adios.perf.use_channels_last keeps the failing shape (1x1, stride 2, 1-7 input
channels) in NCHW; rerun this after a torch upgrade to see whether that is still needed:

    python scripts/onednn_avx2_conv.py
"""

from __future__ import annotations

import os
import subprocess
import sys

CASE = """
import sys, torch
torch.set_num_threads(1)
cin, k, s, hw = map(int, sys.argv[1:5])
cl = torch.channels_last
for _ in range(30):
    x = torch.randn(8, cin, hw, hw).to(memory_format=cl).requires_grad_()
    w = torch.randn(2 * cin, cin, k, k).to(memory_format=cl).requires_grad_()
    out = torch.nn.functional.conv2d(x, w, None, s, k // 2)
    out.backward(torch.randn(out.shape).to(memory_format=cl))
"""

CASES = [  # (input channels, kernel, stride, size): a ResNet shortcut, its neighbours, stems
    *[(cin, 1, 2, 32) for cin in (1, 2, 3, 4, 7, 8, 16)],
    (4, 1, 1, 32),
    (4, 3, 2, 32),
    (3, 3, 1, 32),
    (3, 7, 2, 64),
]


def run_case(case: tuple[int, int, int, int], timeout: float = 60) -> str:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    args = [sys.executable, "-c", CASE, *map(str, case)]
    try:
        done = subprocess.run(args, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"hung (> {timeout:.0f} s)"
    if done.returncode == 0:
        return "ok"
    last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    return f"failed (exit {done.returncode}) {last[0][:60]}"


def main() -> None:
    import torch

    print(f"torch {torch.__version__}, oneDNN limited to AVX2")
    print("in_ch kernel stride  size  result")
    for case in CASES:
        cin, k, s, hw = case
        print(f"{cin:5d} {k:6d} {s:6d} {hw:5d}  {run_case(case)}", flush=True)


if __name__ == "__main__":
    main()
