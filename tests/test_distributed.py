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


def image_files(folder: Path):
    from adios.data.readers import ImageFiles

    paths = sorted(folder.glob("*.png"))
    return ImageFiles(paths, torch.arange(len(paths)))  # label = file number


def decode_worker(out_dir: Path, folder: Path) -> None:
    """One streamed epoch of this process's shares, counting the files it decodes."""
    import adios.data.streaming as streaming
    from adios.distributed import setup

    env, _ = setup(torch.device("cpu"))
    decoded = []
    load_image = streaming.load_image

    def counting(path, *args, **kwargs):
        decoded.append(path.name)
        return load_image(path, *args, **kwargs)

    streaming.load_image = counting
    source = streaming.StreamingBatches(image_files(folder), 8, 8, "cpu", workers=0)
    labels = [batch[1].tolist()
              for batch in ShardedBatches(source, env).epoch(torch.Generator().manual_seed(0))]
    checked, dataset = load_streamed(folder, env)
    torch.save({"decoded": decoded, "labels": labels, "checked": checked,
                "dataset": dataset}, out_dir / f"decodes{env.rank}.pt")


def load_streamed(folder: Path, env: DistEnv) -> tuple[list[int], tuple]:
    """A streamed folder loaded by this process: how many files each check decodes, and what
    it yields (normalisation, files, kNN bank)."""
    import adios.data.datasets as datasets
    from adios.distributed import gather_lists

    checked = []
    inspect_files = datasets.inspect_files

    def counting(paths, *args, **kwargs):
        checked.append(len(paths))
        return inspect_files(paths, *args, **kwargs)

    datasets.inspect_files = counting
    try:
        cfg = load_config(["data.name=folder", f"data.path={folder}", "data.image_size=16",
                           "data.loader=stream", "data.workers=0", "data.num_val=3",
                           "data.num_test=3"])
        data = datasets.load_dataset(cfg.data, bank_size=4, share=(env.rank, env.world_size),
                                     gather=gather_lists(env))
    finally:
        datasets.inspect_files = inspect_files
    return checked, (data.mean, data.std, [p.name for p in data.train_files.paths],
                     data.train.images)


def test_item1_each_process_decodes_only_its_share_of_every_batch(tmp_path):
    """Two gloo processes stream 21 files in global batches of 8 (8, 8, 5): each decodes its 4,
    4 and 2 images, 10 files, not all 21, and together they train on the batches one process
    would (less the odd image of the last); the start-up check of a streamed folder is shared
    the same way and gives both what one process finds (issue 25, item 1)."""
    from PIL import Image

    from adios.data.streaming import StreamingBatches

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(21):
        Image.new("RGB", (10, 12), (i, 2 * i, 3 * i)).save(folder / f"{i:02d}.png")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", __file__, str(tmp_path), "decodes", str(folder)]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"decodes{r}.pt") for r in (0, 1)]
    one = [batch[1].tolist() for batch in StreamingBatches(
        image_files(folder), 8, 8, "cpu", workers=0).epoch(torch.Generator().manual_seed(0))]
    assert [len(r["decoded"]) for r in ranks] == [10, 10]
    # the start-up check of the 15 training files: the 4 of the kNN bank on each, the 11 others
    # shared (6 + 5); val and test (3 each) on each process
    checked, dataset = load_streamed(folder, DistEnv())
    assert checked == [15, 3, 3] and [r["checked"] for r in ranks] == [[10, 3, 3], [9, 3, 3]]
    for rank in ranks:
        mean, std, files, bank = rank["dataset"]
        assert (mean, std, files) == dataset[:3] and torch.equal(bank, dataset[3])
    assert sorted(ranks[0]["decoded"] + ranks[1]["decoded"]) == sorted(
        f"{i:02d}.png" for batch in one for i in batch[:len(batch) // 2 * 2])
    for step, batch in enumerate(one):
        half = len(batch) // 2
        assert ranks[0]["labels"][step] == batch[:half]
        assert ranks[1]["labels"][step] == batch[half:2 * half]


def test_item1_in_memory_shares_are_the_global_batch_sliced():
    from adios.data.datasets import InMemoryBatches, Split

    split = Split(torch.zeros(21, 3, 4, 4, dtype=torch.uint8), torch.arange(21))
    whole = [b[1].tolist() for b in InMemoryBatches(split, 8).epoch(
        torch.Generator().manual_seed(0))]
    shares = [[b[1].tolist() for b in ShardedBatches(InMemoryBatches(split, 8), DistEnv(r, 2))
               .epoch(torch.Generator().manual_seed(0))] for r in (0, 1)]
    assert [s0 + s1 for s0, s1 in zip(*shares, strict=True)] == [
        b[:len(b) // 2 * 2] for b in whole]


def gather_worker(out_dir: Path) -> None:
    """Both gathers all_gather_with_grad may use, forward and backward."""
    import torch.distributed as dist
    from torch.distributed import _functional_collectives as collectives

    from adios.distributed import all_gather_with_grad, setup

    env, _ = setup(torch.device("cpu"))
    results = {"torch": str(torch.__version__)}
    paths = {"all_gather_with_grad": all_gather_with_grad}
    fallback = getattr(collectives, "all_gather_tensor_autograd", None)
    if fallback is not None:  # what all_gather_with_grad uses before torch 2.10
        paths["all_gather_tensor_autograd"] = lambda x: fallback(x, 0, dist.group.WORLD)
    for name, gather in paths.items():
        x = (torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * env.rank).requires_grad_()
        y = gather(x)
        weights = torch.arange(12, dtype=torch.float64).view(6, 2) * (env.rank + 1)
        (y * weights).sum().backward()
        results[name] = (y.detach(), x.grad)
    torch.save(results, out_dir / f"gather{env.rank}.pt")


def test_item12_gathered_negatives_send_every_process_its_summed_gradient(tmp_path):
    """SimCLR's negatives come through all_gather_with_grad: forward, the blocks in rank order;
    backward, each process gets the sum over processes of its block's gradient (process p
    weighs the gathered tensor by (p + 1) * arange: block r's gradient is 3 * arange's block r).
    Checked for both gathers it may use, on the torch installed (issue 25, item 12)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", __file__, str(tmp_path), "gather"]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"gather{r}.pt", weights_only=False) for r in (0, 1)]
    blocks = [torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * r for r in (0, 1)]
    base = torch.arange(12, dtype=torch.float64).view(6, 2)
    assert "all_gather_with_grad" in ranks[0]
    for name in ranks[0].keys() - {"torch"}:
        for rank, result in enumerate(ranks):
            gathered, grad = result[name]
            assert torch.equal(gathered, torch.cat(blocks)), name
            assert torch.equal(grad, 3 * base[3 * rank : 3 * (rank + 1)]), name


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "decodes":
        decode_worker(Path(sys.argv[1]), Path(sys.argv[3]))
    elif len(sys.argv) > 2 and sys.argv[2] == "gather":
        gather_worker(Path(sys.argv[1]))
    else:
        worker(Path(sys.argv[1]))
