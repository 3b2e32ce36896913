"""Forward + backward of a ResNet-18 (width 16, CIFAR stem, batch 128, 32 px, one thread) in the
four settings of train.precision x train.channels_last, min of 2 timed passes after a warm-up.
What `auto` chooses rests on these ratios (docs/scaling.md). Compare the CPU's own kernels with
oneDNN/ATen capped to AVX2:

    python scripts/layout_precision.py
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python scripts/layout_precision.py
"""

import time

import torch

from adios.models import build_backbone


def seconds(net: torch.nn.Module, x: torch.Tensor, bf16: bool, nhwc: bool) -> float:
    layout = torch.channels_last if nhwc else torch.contiguous_format
    net, x = net.to(memory_format=layout), x.contiguous(memory_format=layout)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        out.float().square().mean().backward()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_backbone("resnet18", 32, width=16)
    x = torch.randn(128, 3, 32, 32)
    print(f"torch {torch.__version__}, ATen capability {torch.backends.cpu.get_cpu_capability()}")
    for bf16 in (False, True):
        for nhwc in (False, True):
            name = f"{'bf16' if bf16 else 'fp32'} {'channels_last' if nhwc else 'NCHW'}"
            print(f"{name:20s} {seconds(net, x, bf16, nhwc):.2f} s", flush=True)


if __name__ == "__main__":
    main()
