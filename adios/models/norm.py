"""Batch norm layers whose batch statistics can be split into groups or frozen.

ADIOS encodes N masked copies of a batch. Concatenating them into one forward is fast, but plain
batch norm would then pool statistics over all copies, which changes the model's function. Inside
:func:`batch_groups` each copy is normalised with its own statistics, so the concatenated forward
equals N separate forwards (outputs, gradients and running statistics). Inside
:func:`frozen_bn_stats` training-mode layers still normalise with batch statistics but leave their
buffers alone, so the masker's update step does not move the encoder's running statistics.

Outside both contexts the layers are plain :class:`torch.nn.BatchNorm1d`/``2d``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "batch_groups", "frozen_bn_stats"]


class _GroupableBatchNorm(_BatchNorm):
    """Mixin holding the grouped/frozen behaviour shared by the 1d and 2d layers.

    The switches are class-level defaults overridden per instance by the context managers, so a
    freshly built or unpickled layer always starts on the plain path.
    """

    _stat_groups: int = 1
    _stats_frozen: bool = False

    def forward(self, input: Tensor) -> Tensor:
        uses_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not uses_batch_stats or (self._stat_groups == 1 and not self._stats_frozen):
            return super().forward(input)
        self._check_input_dim(input)
        if self._stat_groups == 1:
            # Frozen, ungrouped: batch statistics without any running buffer to update.
            return F.batch_norm(input, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return self._grouped_forward(input)

    def _grouped_forward(self, input: Tensor) -> Tensor:
        groups = self._stat_groups
        batch = input.shape[0]
        if batch % groups != 0:
            raise ValueError(
                f"batch_groups: batch size {batch} is not divisible into {groups} equal groups"
            )
        # One fused batch norm over (b, G*C, *S): each (group, channel) pair becomes a channel, so
        # it gets its own statistics and autograd treats the groups exactly as separate forwards.
        per_group, channels, spatial = batch // groups, self.num_features, input.shape[2:]
        stacked = (
            input.reshape(groups, per_group, channels, *spatial)
            .transpose(0, 1)
            .reshape(per_group, groups * channels, *spatial)
        )
        update_running = self.training and self.track_running_stats and not self._stats_frozen
        group_means = group_vars = None
        if update_running:
            # With momentum 1 the kernel writes the batch mean and unbiased variance of every
            # (group, channel) into these scratch buffers, which then update the real ones in order.
            group_means = torch.zeros(
                groups * channels, dtype=self.running_mean.dtype, device=input.device
            )
            group_vars = torch.zeros_like(group_means)
        output = F.batch_norm(
            stacked,
            group_means,
            group_vars,
            None if self.weight is None else self.weight.repeat(groups),
            None if self.bias is None else self.bias.repeat(groups),
            True,
            1.0,
            self.eps,
        )
        if update_running:
            self._update_running_stats(
                group_means.view(groups, channels), group_vars.view(groups, channels)
            )
        return (
            output.reshape(per_group, groups, channels, *spatial)
            .transpose(0, 1)
            .reshape(input.shape)
        )

    @torch.no_grad()
    def _update_running_stats(self, group_means: Tensor, group_vars: Tensor) -> None:
        """Apply each group's statistics in order, exactly as consecutive forwards would."""
        # Through ``.data``, like the fused kernel's own update: the buffers' version counters
        # must not move, since earlier forwards in the same graph saved them for backward.
        running_mean, running_var = self.running_mean.data, self.running_var.data
        for group_mean, group_var in zip(group_means, group_vars, strict=True):
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
            running_mean.mul_(1.0 - factor).add_(group_mean, alpha=factor)
            running_var.mul_(1.0 - factor).add_(group_var, alpha=factor)


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
