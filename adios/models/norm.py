"""Batch norm layers whose batch statistics can be split into groups or frozen.

ADIOS encodes N masked copies of a batch. Concatenating them into one forward is fast, but plain
batch norm would then pool statistics over all copies, which changes the model's function. Inside
:func:`batch_groups` each copy is normalised with its own statistics, so the concatenated forward
equals N separate forwards (outputs, gradients and running statistics). Inside
:func:`frozen_bn_stats` training-mode layers still normalise with batch statistics but leave their
buffers alone, so the masker's update step does not move the encoder's running statistics.
Inside :func:`recorded_stats` the layers keep each batch's statistics aside instead of folding
them into the running averages; :meth:`StatsRecorder.replay` then folds them in the order the
reference schedule would have (one unmasked pass per mask, interleaved with the masked copies),
so a batched forward leaves the running statistics exactly where N separate forwards leave them.
:func:`sync_batch_norm` makes the batch statistics span every process of a distributed run (what
:class:`torch.nn.SyncBatchNorm` does, which would ignore both contexts); groups and freezing still
apply.

Outside the contexts, and without synchronisation in a multi-process run, the layers are plain
:class:`torch.nn.BatchNorm1d`/``2d``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "StatsRecorder",
    "batch_groups",
    "frozen_bn_stats",
    "recorded_stats",
    "sync_batch_norm",
]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GroupableBatchNorm(_BatchNorm):
    """Mixin holding the grouped/frozen/synchronised behaviour shared by the 1d and 2d layers.

    The switches are class-level defaults overridden per instance by the context managers (and by
    :func:`sync_batch_norm`), so a freshly built or unpickled layer starts on the plain path.
    """

    _stat_groups: int = 1
    _stats_frozen: bool = False
    _sync_stats: bool = False
    # every process's tensor, concatenated with gradients (adios.distributed passes its helper)
    _gather: Callable[[Tensor], Tensor] | None = None
    _recorder: StatsRecorder | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # instance attributes from the start: torch.compile guards on whether the instance's
        # __dict__ holds them, so a context's first set would otherwise force a recompile
        self._stat_groups, self._stats_frozen, self._sync_stats = 1, False, False
        self._gather, self._recorder = None, None

    def forward(self, input: Tensor) -> Tensor:
        uses_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        sync = uses_batch_stats and self._sync_stats and _world_size() > 1
        plain = self._stat_groups == 1 and not self._stats_frozen and not sync
        if not uses_batch_stats or (plain and self._recorder is None):
            return super().forward(input)
        self._check_input_dim(input)
        groups = self._stat_groups
        if input.shape[0] % groups != 0:
            raise ValueError(
                f"batch_groups: batch size {input.shape[0]} is not divisible into {groups} equal "
                "groups"
            )
        update_running = self.training and self.track_running_stats and not self._stats_frozen
        # Consecutive equal slices along the batch are views: each group is normalised with its
        # own statistics without copying its input, autograd treats the groups exactly as
        # separate forwards, and only the concatenation of the outputs copies memory.
        parts = input.chunk(groups) if groups > 1 else [input]
        normalise = self._synchronised if sync else self._local
        outputs = normalise(parts, update_running)
        return outputs[0] if groups == 1 else torch.cat(outputs)

    def _fold(self, mean: Tensor, var: Tensor) -> None:
        """One running-average update with a recorded batch's statistics."""
        factor = self._next_factor()
        with torch.no_grad():
            self.running_mean.mul_(1.0 - factor).add_(mean.to(self.running_mean.dtype),
                                                      alpha=factor)
            self.running_var.mul_(1.0 - factor).add_(var.to(self.running_var.dtype),
                                                     alpha=factor)

    def _next_factor(self) -> float:
        """Running-average factor of the next batch, advancing ``num_batches_tracked`` as
        :class:`torch.nn.BatchNorm2d` does."""
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _local(self, parts: list[Tensor], update_running: bool) -> list[Tensor]:
        if update_running and self._recorder is not None:
            outputs, stats = [], []
            for part in parts:
                # momentum 1 turns the buffers into this batch's mean and unbiased variance,
                # computed by the same kernel as a normal update
                mean, var = torch.zeros_like(self.running_mean), torch.ones_like(self.running_var)
                outputs.append(F.batch_norm(part, mean, var, self.weight, self.bias, True, 1.0,
                                            self.eps))
                stats.append((mean, var))
            self._recorder.calls[self].append(stats)
            return outputs
        running_mean = self.running_mean if update_running else None
        running_var = self.running_var if update_running else None
        return [
            F.batch_norm(
                part,
                running_mean,
                running_var,
                self.weight,
                self.bias,
                True,
                self._next_factor() if update_running else 0.0,
                self.eps,
            )
            for part in parts
        ]

    def _synchronised(self, parts: list[Tensor], update_running: bool) -> list[Tensor]:
        """Batch statistics over every process's part of the batch (SyncBatchNorm), per group.

        Each process contributes (count, mean, sum of squared deviations) of every group; these
        are gathered with autograd, so gradients flow to all processes' inputs, and combined with
        the parallel-variance formula (no catastrophic cancellation, unlike E[x^2] - E[x]^2).
        """
        channels = self.num_features
        dims = [0, *range(2, parts[0].dim())]
        shape = [1, channels] + [1] * (parts[0].dim() - 2)
        local = []
        for part in parts:
            values = part.float()
            mean = values.mean(dim=dims)
            m2 = (values - mean.view(shape)).square().sum(dim=dims)
            count = mean.new_full((1,), part.numel() // channels)
            local.append(torch.cat([mean, m2, count]))
        gathered = self._gather(torch.stack(local)).view(-1, len(parts), 2 * channels + 1)
        means, m2s = gathered[..., :channels], gathered[..., channels : 2 * channels]
        counts = gathered[..., 2 * channels :].detach()
        total = counts.sum(dim=0)
        mean = (counts * means).sum(dim=0) / total
        m2 = m2s.sum(dim=0) + (counts * (means - mean).square()).sum(dim=0)
        var = m2 / total
        if update_running and self._recorder is not None:
            unbiased = var * (total / (total - 1).clamp_min(1))
            stats = [(m.detach(), v.detach()) for m, v in zip(mean, unbiased, strict=True)]
            self._recorder.calls[self].append(stats)
        elif update_running:
            with torch.no_grad():
                for group_mean, group_var, n in zip(mean, var, total, strict=True):
                    factor = self._next_factor()
                    self.running_mean.data.mul_(1.0 - factor).add_(group_mean, alpha=factor)
                    unbiased = group_var * (n / (n - 1).clamp_min(1))
                    self.running_var.data.mul_(1.0 - factor).add_(unbiased, alpha=factor)
        outputs = []
        for part, group_mean, group_var in zip(parts, mean, var, strict=True):
            scale = torch.rsqrt(group_var + self.eps)
            shift = -group_mean * scale
            if self.weight is not None:
                scale, shift = scale * self.weight, shift * self.weight + self.bias
            out = part.float() * scale.view(shape) + shift.view(shape)
            outputs.append(out.to(part.dtype))
        return outputs


class BatchNorm1d(_GroupableBatchNorm, nn.BatchNorm1d):
    """Drop-in :class:`torch.nn.BatchNorm1d` that honours :func:`batch_groups` and
    :func:`frozen_bn_stats`."""


class BatchNorm2d(_GroupableBatchNorm, nn.BatchNorm2d):
    """Drop-in :class:`torch.nn.BatchNorm2d` that honours :func:`batch_groups` and
    :func:`frozen_bn_stats`."""


def _adios_batch_norms(module: nn.Module) -> list[_GroupableBatchNorm]:
    """All adios batch norms in ``module``; a foreign batch norm would silently ignore the
    context, so it is an error."""
    norms = []
    for name, submodule in module.named_modules():
        if isinstance(submodule, _GroupableBatchNorm):
            norms.append(submodule)
        elif isinstance(submodule, _BatchNorm):
            raise TypeError(
                f"module {name or '<root>'!r} is a {type(submodule).__name__}, which ignores "
                "batch_groups/frozen_bn_stats; build the model with adios BatchNorm1d/BatchNorm2d"
            )
    return norms


@contextmanager
def batch_groups(module: nn.Module, groups: int) -> Iterator[None]:
    """Normalise ``groups`` equal consecutive chunks of every batch separately inside the block.

    Running statistics (and ``num_batches_tracked``) advance as ``groups`` sequential forwards
    would. Layers that use running statistics (eval mode) are unaffected.
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"batch_groups: groups must be a positive int, got {groups!r}")
    norms = _adios_batch_norms(module)
    previous = [norm._stat_groups for norm in norms]
    for norm in norms:
        norm._stat_groups = groups
    try:
        yield
    finally:
        for norm, value in zip(norms, previous, strict=True):
            norm._stat_groups = value


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, training-mode batch norms in ``module`` normalise with batch statistics
    but update no buffer (running mean/var and ``num_batches_tracked`` stay as they are)."""
    norms = _adios_batch_norms(module)
    previous = [norm._stats_frozen for norm in norms]
    for norm in norms:
        norm._stats_frozen = True
    try:
        yield
    finally:
        for norm, value in zip(norms, previous, strict=True):
            norm._stats_frozen = value


class StatsRecorder:
    """Batch statistics kept aside by :func:`recorded_stats`: per layer, per forward call, one
    (mean, unbiased variance) per group of the call."""

    def __init__(self, norms: list[_GroupableBatchNorm] | None = None) -> None:
        # every layer's list exists from the start: torch.compile traces the appends, and a
        # dict that grew inside the compiled forward would be guarded on (a recompile a call)
        self.calls: dict[_GroupableBatchNorm, list[list[tuple[Tensor, Tensor]]]] = {
            norm: [] for norm in norms or []}

    def replay(self, copies: int) -> None:
        """Fold the statistics into the running averages as ``copies`` rounds of the reference
        schedule would: round n takes, call by call, a grouped call's n-th group, and a single
        call's one batch again (the reference recomputes the unmasked view for every mask)."""
        for norm, calls in self.calls.items():
            for n in range(copies):
                for call in calls:
                    mean, var = call[n] if len(call) > 1 else call[0]
                    norm._fold(mean, var)
        self.calls.clear()


@contextmanager
def recorded_stats(module: nn.Module) -> Iterator[StatsRecorder]:
    """Inside the block, training-mode batch norms of ``module`` that would update their running
    statistics record the batch statistics instead (outputs unchanged); replay them with the
    yielded recorder's :meth:`~StatsRecorder.replay`. Frozen layers record nothing."""
    norms = _adios_batch_norms(module)
    recorder = StatsRecorder(norms)
    previous = [norm._recorder for norm in norms]
    for norm in norms:
        norm._recorder = recorder
    try:
        yield recorder
    finally:
        for norm, value in zip(norms, previous, strict=True):
            norm._recorder = value


def sync_batch_norm(
    module: nn.Module,
    enabled: bool = True,
    *,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """Switch every adios batch norm in ``module`` to statistics over all processes of the
    default process group (a no-op while only one process runs); returns how many layers.

    ``gather``: every process's tensor concatenated in rank order, with gradients
    (:func:`adios.distributed.all_gather_with_grad`; passed in, so that the models need nothing
    from the distributed layer above them)."""
    if enabled and gather is None:
        raise ValueError("sync_batch_norm: give gather= (adios.distributed.all_gather_with_grad)")
    norms = _adios_batch_norms(module)
    for norm in norms:
        norm._sync_stats = enabled
        norm._gather = gather if enabled else None
    return len(norms)
