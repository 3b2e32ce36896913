"""Data-parallel training over several processes (GPUs, or CPU processes) launched by torchrun.

``torchrun --nproc-per-node=G -m adios.cli train ...`` (or ``--nnodes``/``--rdzv-endpoint`` for
several machines) runs the same training loop in every process; without torchrun nothing here
changes anything. What each piece does:

- **Batches.** ``optim.batch_size`` is the global batch. Every process draws the same global
  batch order (the epoch generator is shared) and trains on its own contiguous ``1/W`` slice of
  each batch (:class:`ShardedBatches`), augmented with its own generator
  (:func:`process_generator`). Learning rates are per global batch, so the same configuration
  follows the same trajectory on any number of processes (``optim.lr_scaling`` covers changing
  the global batch itself).
- **Gradients.** The encoder's view passes, the masker and the online probe run through
  :class:`~torch.nn.parallel.DistributedDataParallel` wrappers (:class:`Replicas`), which average
  gradients over processes during the backward pass. The masker's turn encodes through the bare,
  frozen encoder, so it never synchronises the encoder's gradients: one gradient reduction per
  player per step (the reference code reduced the encoder twice).
- **Negatives.** SimCLR's NT-Xent contrasts every anchor with the embeddings of all processes,
  gathered with gradients (:func:`all_gather_with_grad`), as one big batch would.
- **Batch norm.** ``train.sync_bn`` computes batch statistics over all processes' slices
  (:func:`adios.models.norm.sync_batch_norm`, which keeps ADIOS's per-copy groups and frozen
  statistics). Without it each process normalises its own slice, which changes the function when
  slices are small.
- **Files.** Process 0 alone writes the run directory, the metrics, pictures, checkpoints and
  the summary; every process reads the checkpoint to resume (across machines: a shared file
  system).
"""

from __future__ import annotations

import atexit
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from adios.config import Config, ConfigError
from adios.data.streaming import batch_share
from adios.models.norm import sync_batch_norm
from adios.objectives.base import SiameseObjective
from adios.objectives.losses import NTXentLoss

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in the run; ``world_size == 1`` without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    """The rank and world size torchrun exported (RANK, WORLD_SIZE, LOCAL_RANK), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs) and pick this process's GPU.

    A group that already exists (a caller set it up) is used as it is. Without torchrun this
    returns a single-process environment and ``device`` unchanged.
    """
    if dist.is_available() and dist.is_initialized():
        env = DistEnv(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    else:
        env = env_from_torchrun()
        if not env.enabled:
            return env, device
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy)
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return env, device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_batch_size(batch_size: int, env: DistEnv) -> int:
    """Each process's share of the global batch, which must split evenly."""
    if batch_size % env.world_size != 0 or batch_size // env.world_size < 2:
        raise ConfigError(
            f"optim.batch_size: the global batch of {batch_size} must split into equal shares "
            f"of at least 2 over {env.world_size} processes"
        )
    return batch_size // env.world_size


def check_supported(cfg: Config, env: DistEnv) -> None:
    """Refuse, before the data loads and the run directory exists, what torchrun cannot run:
    the token modes have no DDP wrappers yet (their step would fail only once training starts)."""
    if env.enabled and cfg.masking.mode.startswith("token-"):
        raise ConfigError(
            f"masking.mode: {cfg.masking.mode} does not run under torchrun yet (no DDP on the "
            f"token path); run it in one process"
        )


def gather_lists(env: DistEnv) -> Callable[[list[Any]], list[list[Any]]] | None:
    """Every process's list, in rank order (``load_dataset``'s share of the file check);
    None in one process."""
    if not env.enabled:
        return None

    def gather(items: list[Any]) -> list[list[Any]]:
        every: list[Any] = [None] * env.world_size
        dist.all_gather_object(every, items)
        return every

    return gather


def from_main(env: DistEnv, make: Callable[[], T]) -> T:
    """``make()`` on process 0, its result (or its exception) on every process.

    For things only process 0 may do but all need the outcome of, like creating the run
    directory: another process never waits forever for a process 0 that failed.
    """
    if not env.enabled:
        return make()
    box: list[Any] = [None]
    if env.is_main:
        try:
            box[0] = ("ok", make())
        except Exception as err:  # noqa: BLE001 - re-raised on every process below
            box[0] = ("error", err)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Every process's ``tensor`` concatenated along dim 0 in rank order; the backward pass sends
    each block's gradient (summed over processes) back to the process that contributed it."""
    from torch.distributed import _functional_collectives as collectives

    gather = getattr(collectives, "all_gather_single", None)  # torch >= 2.10
    if gather is None:  # pragma: no cover - older torch
        gather = collectives.all_gather_tensor_autograd
    return gather(tensor.contiguous(), 0, dist.group.WORLD)


def gather_negatives(objective: SiameseObjective, env: DistEnv) -> None:
    """Let SimCLR contrast against all processes' embeddings (a no-op for other objectives)."""
    loss = getattr(objective, "loss", None)
    if isinstance(loss, NTXentLoss) and env.enabled:
        loss.gather, loss.rank = all_gather_with_grad, env.rank


class ViewEncoder(nn.Module):
    """The objective's ``forward_views`` as a module's ``forward``, which is the call
    DistributedDataParallel prepares its gradient reduction on."""

    def __init__(self, objective: SiameseObjective) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, views: Tensor) -> dict[str, Tensor]:
        return self.objective.forward_views(views)


@dataclass
class Replicas:
    """DDP wrappers for the differentiable forwards of one training step."""

    encoder: DistributedDataParallel  # around ViewEncoder(objective)
    masker: DistributedDataParallel | None
    probe: DistributedDataParallel | None


def replicate(
    objective: SiameseObjective,
    masker: nn.Module | None,
    probe: nn.Module | None,
    env: DistEnv,
    *,
    sync_bn: bool = False,
) -> Replicas:
    """Wrap the players for a multi-process run (parameters are broadcast from process 0).

    Running statistics are synchronised at construction only: with ``sync_bn`` every process
    then computes the same ones, without it each keeps its own (process 0's are the ones saved).
    """
    if sync_bn:
        sync_batch_norm(objective, gather=all_gather_with_grad)
    gather_negatives(objective, env)

    # buffers are synchronised once at construction, never again (the option's name changed)
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync = {"forward_sync_buffers" if newer else "broadcast_buffers": False}

    def wrap(module: nn.Module) -> DistributedDataParallel:
        device = next(module.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **no_buffer_sync)

    return Replicas(
        wrap(ViewEncoder(objective)),
        None if masker is None else wrap(masker),
        None if probe is None else wrap(probe),
    )


class ShardedBatches:
    """This process's slice of every global batch of a batch source (in memory or streamed).

    A global batch that does not split evenly (an epoch's last, partial one) loses its last
    ``size % W`` images; one that would leave a process fewer than 2 images is skipped.
    A source with ``takes_share`` (in memory, streamed) reads, decodes and copies only this
    process's part; another is sliced here.
    """

    def __init__(self, source: Any, env: DistEnv) -> None:
        self.source, self.env = source, env
        self.has_extents = getattr(source, "has_extents", False)  # whole images' extents

    def __len__(self) -> int:
        return len(self.source)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Any, ...]]:
        share = (self.env.rank, self.env.world_size)
        if getattr(self.source, "takes_share", False):
            yield from self.source.epoch(generator, share)
            return
        for batch in self.source.epoch(generator):
            part = batch_share(batch[0].shape[0], share)
            if part is not None:
                yield tuple(None if t is None else t[part] for t in batch)


def shard(source: Any, env: DistEnv) -> Any:
    return ShardedBatches(source, env) if env.enabled else source


def process_generator(generator: torch.Generator, env: DistEnv) -> torch.Generator:
    """The generator for this process's augmentation and mask draws: the epoch's own generator
    on process 0 (so one process reproduces a plain run exactly), a distinct one elsewhere."""
    if env.rank == 0:
        return generator
    return torch.Generator().manual_seed(generator.initial_seed() + env.rank * 2**40)
