"""Speed knobs of a training step: mixed precision, memory layout, compilation, peak memory.

- ``train.precision``: ``bf16`` runs the forward passes under :func:`torch.autocast` in bfloat16
  (CPU and GPU; weights, optimiser states and the sparsity penalty stay float32); ``fp16`` does the
  same in float16 with a :class:`torch.amp.GradScaler` against gradient underflow, on CUDA only.
- ``train.channels_last``: NHWC weights and inputs, which convolution libraries (cuDNN, oneDNN)
  run faster, most of all with bf16/fp16 tensor cores or AMX.
- ``train.compile``: :func:`torch.compile` of the backbone's training forward. Batch norms read
  their grouped/frozen switches as module attributes, which the compiled code guards on: each
  combination (plain, N groups, recorded statistics, inputs needing gradients) compiles once,
  then is reused; eval-mode and no-grad calls run eagerly.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import resource
import sys
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path

import torch
from torch import Tensor, nn

from adios.config import Config, ConfigError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    """``train.device``: auto (CUDA, else Apple's MPS, else the CPU), cpu, cuda or mps (an
    error when that device is missing)."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name == "auto":
        return torch.device(next((kind for kind, there in available.items() if there), "cpu"))
    if not available.get(name, True):
        raise ConfigError(f"train.device: {name}, but no {name.upper()} device is available; "
                          f"use auto or cpu")
    return torch.device(name)


def float64(tensor: Tensor) -> Tensor:
    """``tensor`` in float64, moved to the CPU from an MPS device, which has no float64."""
    device = torch.device("cpu") if tensor.device.type == "mps" else tensor.device
    return tensor.to(device, torch.float64)


def make_deterministic(enabled: bool) -> None:
    """``train.deterministic``: the same numbers on every rerun and resume of a GPU run.

    Deterministic kernels (``warn_only``: an op with none on CUDA warns once, naming itself,
    instead of stopping the run), no cuDNN autotuning (it may pick another algorithm each run),
    no TF32 (which recent GPUs use for float32 convolutions by default) and the cuBLAS
    workspace its deterministic mode needs. Process-wide, and left on; off does nothing.
    """
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below the first with bf16 dot products
_NO_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                 "AVX512_CORE_VNNI"}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where there is none. Read once
    per process: ``auto`` precision is resolved on every training step of the Python API, and
    /proc/cpuinfo is slow to read on machines with many cores."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16(flags: AbstractSet[str], env: dict[str, str] | None = None) -> bool:
    """AMX-BF16 or AVX512-BF16, unless oneDNN is capped below them. Without them bf16 autocast
    is emulated and far slower than fp32 (AVX2: 5-10x, docs/scaling.md), not faster."""
    cap = (os.environ if env is None else env).get("ONEDNN_MAX_CPU_ISA", "").upper()
    return bool(flags & {"amx_bf16", "avx512_bf16"}) and cap not in _NO_BF16_ISAS


def resolve_precision(precision: str, device: torch.device,
                      flags: AbstractSet[str] | None = None,
                      env: dict[str, str] | None = None) -> str:
    """``auto`` made concrete for ``device`` (bf16 where it is native, else fp32); any other
    precision unchanged. Also used by :func:`autocast`, so a configuration passed straight to
    the training step (the Python API) needs no resolving first."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and cpu_has_native_bf16(
            cpu_flags() if flags is None else flags, env)
    return "bf16" if native else "fp32"


def resolve_auto(cfg: Config, device: torch.device, flags: AbstractSet[str] | None = None,
                 env: dict[str, str] | None = None) -> Config:
    """``cfg`` with ``train.precision`` and ``train.channels_last`` of ``auto`` made concrete
    for ``device``: bf16 where it is native, NHWC for a ResNet (faster in fp32 and bf16 on the
    CPUs measured, docs/scaling.md; cuDNN's tensor cores want it)."""
    train = cfg.train
    precision = resolve_precision(train.precision, device, flags, env)
    layout = train.channels_last
    if layout == "auto":
        layout = cfg.model.backbone.startswith("resnet")
    if (precision, layout) == (train.precision, train.channels_last):
        return cfg
    return dataclasses.replace(
        cfg, train=dataclasses.replace(train, precision=precision, channels_last=layout))


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs loss scaling, which this package does on CUDA only."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: fp16 needs a CUDA device (loss scaling), this run is on "
            f"{device.type}; use bf16 (autocast on CPU and GPU) or fp32"
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass context for ``train.precision`` (a no-op for fp32)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(precision, device)
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The loss scaler fp16 needs; None for fp32 and bf16 (bf16 has float32's exponent range)."""
    precision = resolve_precision(precision, device)
    check_precision(precision, device)
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (loss if scaler is None else scaler.scale(loss)).backward()


def optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Step, or with fp16 unscale first and skip the step if a gradient overflowed."""
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)


def channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def use_channels_last(*modules: nn.Module | None) -> None:
    for module in modules:
        if module is not None:
            module.to(memory_format=torch.channels_last)
            for conv in module.modules():
                if _breaks_onednn_avx2(conv):
                    _keep_nchw(conv)


def _breaks_onednn_avx2(module: nn.Module) -> bool:
    """oneDNN's AVX2 kernel for the weight gradient of an NHWC 1x1 convolution of stride > 1 with
    1-7 input channels writes out of bounds (torch 2.14.1: heap corruption, a segfault or a hang;
    measured under ONEDNN_MAX_CPU_ISA=AVX2, scripts/onednn_avx2_conv.py). A ResNet-18 of width
    1-7 has such a shortcut; 8 input channels and more and the other shapes probed are safe. Kept
    NCHW on every CPU: it costs one small convolution, and the layout never depends on the ISA."""
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride != (1, 1)
        and module.in_channels < 8
    )


def _keep_nchw(conv: nn.Conv2d) -> None:
    """Run one convolution in NCHW inside a channels_last model: a weight and an input both
    contiguous send it to the NCHW kernels; its output joins the NHWC tensors as any other. A 1x1
    weight in NHWC already counts as contiguous (its strides (C, 1, C, C) fit both layouts), so
    its strides are rewritten, not merely checked."""
    conv.weight.data = conv.weight.data.clone(memory_format=torch.contiguous_format)
    conv.register_forward_pre_hook(
        lambda _module, args: (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
    )


def compile_module(module: nn.Module, backend: str | Callable = "inductor") -> None:
    """Compile ``module``'s training forward in place (state-dict keys unchanged, unlike
    ``torch.compile``, which wraps the module). The first call of each batch-norm mode pays the
    compilation. Calls in eval mode or without gradients (evaluation, the probe's re-encoded
    views) run eagerly: dynamo guards on both, and their variants on top of the training ones
    reached its recompile limit (8), past which a variant silently runs uncompiled."""
    module.compile(backend=backend)
    compiled = module._compiled_call_impl

    def training_only(*args: object, **kwargs: object) -> object:
        if module.training and torch.is_grad_enabled():
            return compiled(*args, **kwargs)
        return module._call_impl(*args, **kwargs)

    module._compiled_call_impl = training_only


# ----------------------------------------------------------------------------- peak memory


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA tensors allocated on ``device``, or on CPU the
    peak resident set size (tensors plus the interpreter, libraries and caches)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, else KiB


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**10
    raise KeyError(field)


class MemoryWindow:
    """Peak memory of a stretch of code, above what was in use when the window opened.

    On CUDA: allocated tensor memory (``torch.cuda`` peak statistics, reset at the start). On a
    Linux CPU: resident memory; freed heap pages are handed back to the system first
    (``malloc_trim``) and the kernel's high-water mark is reset (``/proc/self/clear_refs``), so
    the peak is this window's. Elsewhere on CPU the peak is not resettable and ``peak_mb`` is
    None.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.supported = device.type == "cuda" or (_STATUS.exists() and _CLEAR_REFS.exists())
        self.start_mb = 0.0

    def open(self) -> MemoryWindow:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
        elif self.supported:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            try:
                _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
            except OSError:
                self.supported = False
                return self
            self.start_mb = _status_mb("VmRSS")
        return self

    def peak_mb(self) -> float | None:
        """Peak in the window minus the memory in use when it opened."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.start_mb
        if not self.supported:
            return None
        return _status_mb("VmHWM") - self.start_mb


def upload(tensor: Tensor, device: torch.device | str) -> Tensor:
    """A host tensor on ``device`` without stalling the host: to CUDA through pinned memory,
    queued behind the step's work (a copy from pageable memory waits for the GPU first)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
