"""Two CPU processes under torchrun (gloo) take the same steps as one process with their batch.

Exact by construction: batch norm statistics are synchronised over the processes (adios
SyncBatchNorm, per-copy groups included), SimCLR's negatives are gathered from both, and the
loss of each process is a mean over its equal share, so DDP's gradient average is the gradient
of the one-process loss. ReLUs are swapped for SiLU for the reason given in
tests/masking/test_adios.py (float32 round-off must not flip ReLU units).

This file is also the worker: torchrun runs it as a script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from smooth import relu_to_silu

from adios.config import load_config
from adios.distributed import DistEnv, ShardedBatches, check_batch_size, process_generator
from adios.train import build_models, build_optimizers, train_step

GLOBAL_BATCH = 16
STEPS = 3
TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "model.width=4",
    "masker.fbase=8",
    "masker.n_masks=3",
    "masking.mode=adios",  # full ADIOS: ADIOS-s draws its mask choice per process
    "objective.proj_hidden=32",
    "objective.proj_out=16",
    "train.device=cpu",
    "optim.name=sgd",
    "optim.lr=0.01",
    "optim.mask_lr=0.01",
    f"optim.batch_size={GLOBAL_BATCH}",
]
# (name, schedule, gather negatives)
RUNS = [
    ("fast", "fast", True),
    ("single-pass", "single-pass", True),
    ("reference", "reference", True),
    ("fast-local-negatives", "fast", False),
    ("slots-fast", "fast", True),  # the slot-attention masker (masker.kind=slots)
]
SLOTS = ["masker.kind=slots", "masker.slot_dim=16"]


def global_batch(step: int):
    g = torch.Generator().manual_seed(step)
    a = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    b = a + 0.3 * torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    return a, b, torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)


def play(
    schedule: str,
    env: DistEnv,
    gather: bool = True,
    hooks: dict | None = None,
    extra: tuple[str, ...] | list[str] = (),
) -> dict:
    """Three steps on this process's share of each global batch; the final parameters."""
    from adios.distributed import replicate

    cfg = load_config([*TINY, f"masking.schedule={schedule}", *extra])
    torch.manual_seed(0)
    models = build_models(cfg, num_classes=3, device=torch.device("cpu"))
    relu_to_silu(models.objective, models.masker)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    models.objective.train()
    if env.enabled:
        models.replicas = replicate(
            models.objective, models.masker, models.probe, env, sync_bn=True
        )
        if not gather:
            models.objective.loss.gather = None
        if hooks is not None:
            for player in ("encoder", "masker", "probe"):
                count_reductions(getattr(models.replicas, player), hooks, player)
    share = check_batch_size(GLOBAL_BATCH, env)
    part = slice(env.rank * share, (env.rank + 1) * share)
    for step in range(STEPS):
        a, b, y = global_batch(step)
        train_step(
            cfg,
            models,
            encoder_opt,
            masker_opt,
            a[part],
            b[part],
            y[part],
            torch.Generator().manual_seed(step),
        )
    return {
        **{f"objective.{k}": v.detach().clone() for k, v in models.objective.state_dict().items()},
        **{f"masker.{k}": v.detach().clone() for k, v in models.masker.state_dict().items()},
        **{f"probe.{k}": v.detach().clone() for k, v in models.probe.state_dict().items()},
    }


def count_reductions(ddp, counts: dict, player: str) -> None:
    """Count the backward passes in which DDP reduces this player's gradients (bucket 0 is
    reduced once in each)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    counts[player] = 0

    def hook(state, bucket):
        if bucket.index() == 0:
            counts[player] += 1
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)


def worker(out_dir: Path) -> None:
    from adios.distributed import setup

    torch.set_num_threads(1)
    env, _ = setup(torch.device("cpu"))
    assert env.world_size == 2
    results = {}
    for name, schedule, gather in RUNS:
        hooks: dict = {}
        extra = SLOTS if name.startswith("slots") else []
        results[name] = (play(schedule, env, gather, hooks, extra), hooks)
    torch.save(results, out_dir / f"rank{env.rank}.pt")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        __file__,
        str(out_dir),
    ]
    # the workers import the checkout under test, not whatever `adios` is installed
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("schedule", ["fast", "single-pass", "reference"])
def test_two_processes_equal_one_process_with_the_global_batch(two_processes, schedule):
    one = play(schedule, DistEnv())
    for rank in (0, 1):
        state, _ = two_processes[rank][schedule]
        assert state.keys() == one.keys()
        for key, value in one.items():
            assert torch.allclose(state[key].double(), value.double(), atol=1e-5, rtol=0), key


def test_two_processes_equal_one_process_with_the_slot_masker(two_processes):
    one = play("fast", DistEnv(), extra=SLOTS)
    for rank in (0, 1):
        state, reductions = two_processes[rank]["slots-fast"]
        assert state.keys() == one.keys() and any(k.startswith("masker.slots") for k in one)
        for key, value in one.items():
            assert torch.allclose(state[key].double(), value.double(), atol=1e-5, rtol=0), key
        assert reductions == {"encoder": STEPS, "masker": STEPS, "probe": STEPS}


def test_without_gathered_negatives_the_runs_differ(two_processes):
    """The comparison above can fail: SimCLR with only local negatives is another loss."""
    one = play("fast", DistEnv())
    state, _ = two_processes[0]["fast-local-negatives"]
    worst = max((state[k].double() - v.double()).abs().max().item() for k, v in one.items())
    assert worst > 1e-3


@pytest.mark.parametrize("schedule", ["fast", "single-pass", "reference"])
def test_each_player_is_reduced_once_per_step(two_processes, schedule):
    """The masker's turn runs the bare, frozen encoder: no second encoder reduction."""
    for rank in (0, 1):
        _, reductions = two_processes[rank][schedule]
        assert reductions == {"encoder": STEPS, "masker": STEPS, "probe": STEPS}


def test_shards_partition_each_global_batch_and_generators_differ_by_process():
    images = torch.arange(10).view(10, 1)

    class Source:
        def __len__(self):
            return 2

        def epoch(self, generator):
            yield images[:6], None
            yield images[6:], images[6:] * 2  # 4 images: a last, partial batch

    shares = [list(ShardedBatches(Source(), DistEnv(rank, 2)).epoch(None)) for rank in (0, 1)]
    assert [s[0][0].flatten().tolist() for s in shares] == [[0, 1, 2], [3, 4, 5]]
    assert [s[1][1].flatten().tolist() for s in shares] == [[12, 14], [16, 18]]
    three = [list(ShardedBatches(Source(), DistEnv(rank, 3)).epoch(None)) for rank in (0, 1, 2)]
    assert all(len(s) == 1 for s in three)  # 4 images leave 1 per process: skipped
    g = torch.Generator().manual_seed(5)
    assert process_generator(g, DistEnv(0, 2)) is g
    draws = [process_generator(g, DistEnv(r, 3)).initial_seed() for r in (0, 1, 2)]
    assert len(set(draws)) == 3
    with pytest.raises(Exception, match="batch_size"):
        check_batch_size(10, DistEnv(0, 4))


@pytest.mark.parametrize("mode", ["token-random", "token-adios"])
def test_token_modes_under_torchrun_are_refused_before_the_run_directory(
    tmp_path, monkeypatch, mode
):
    """The refusal comes before the data loads and anything is written (issue 25, item 9)."""
    import adios.train
    from adios.errors import ConfigError

    def two_process_env(device):
        return DistEnv(0, 2), device

    monkeypatch.setattr(adios.train, "setup_distributed", two_process_env)
    run_dir = tmp_path / "run"
    cfg = load_config(["preset=shapes-vit-simclr-token-adios", f"masking.mode={mode}",
                       "train.device=cpu", "optim.batch_size=4", f"run_dir={run_dir}"])
    with pytest.raises(ConfigError, match="torchrun"):
        adios.train.train(cfg)
    assert not run_dir.exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
