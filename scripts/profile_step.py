"""Where a training step's time goes on a CPU: the shares of convolutions, batch norm and the
convolutions of 16-channel 32 px inputs (three profiled steps after three warm-up steps, on
random views). Run it on a quiet machine.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python scripts/profile_step.py train.precision=fp32 train.channels_last=false
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from adios.config import load_config
from adios.engine import build_trainer
from adios.masking.blobs import random_blob_masks

OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::native_batch_norm",
       "aten::native_batch_norm_backward")


def step_shares(overrides: list[str]) -> None:
    cfg = load_config(overrides)
    torch.set_num_threads(cfg.train.threads or 1)
    size, batch = cfg.data.image_size, cfg.optim.batch_size
    g = torch.Generator().manual_seed(0)
    a = torch.randn(batch, 3, size, size, generator=g)
    b = a + 0.3 * torch.randn(batch, 3, size, size, generator=g)
    labels = torch.randint(5, (batch,), generator=g)
    objects = tuple(random_blob_masks(batch, 3, size, generator=g) for _ in range(2))
    cfg.train.epochs = 1
    trainer = build_trainer(cfg, 5, torch.device("cpu"), steps_per_epoch=20)
    trainer.models.objective.train()
    for i in range(6):
        if i == 3:
            prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
            prof.__enter__()
        trainer.step(a, b, labels, torch.Generator().manual_seed(i), i, objects)
    prof.__exit__(None, None, None)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    for op in OPS:
        share = sum(e.self_cpu_time_total for e in events if e.key == op) / total
        print(f"{op:36s} {share:6.1%}")
    first = sum(e.self_cpu_time_total for e in events if "convolution" in e.key
                and e.input_shapes and len(e.input_shapes[0]) == 4
                and e.input_shapes[0][1] == 16 and e.input_shapes[0][2] == 32) / total
    print(f"{'convolutions of 16-channel 32 px inputs':36s} {first:6.1%}")


if __name__ == "__main__":
    step_shares(sys.argv[1:])
