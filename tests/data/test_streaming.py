"""Streamed class folders give the in-memory batches; the training loop runs on either."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adios.cli import main
from adios.config import load_config
from adios.data.datasets import InMemoryBatches, load_dataset, training_batches
from adios.data.streaming import StreamingBatches, steps_per_epoch
from adios.train import build_models, build_optimizers, train_step


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("test", 3)):
        for name in ("ant", "bee", "cow"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                size = rng.integers(12, 40, 2)  # any size; decoded to 16 x 16
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def data_config(folder: Path, *overrides: str):
    return load_config(
        [
            "data.name=folder",
            f"data.path={folder}",
            "data.image_size=16",
            "data.num_val=6",
            "data.workers=0",
            *overrides,
        ]
    ).data


def test_size_picks_the_source_and_streamed_batches_equal_in_memory_ones(folder):
    memory = load_dataset(data_config(folder))
    assert memory.train_files is None
    assert isinstance(training_batches(memory, memory.train, 8), InMemoryBatches)
    # 36 training images of 16 x 16 x 3 bytes exceed a limit of 0 MB: streamed
    streamed = load_dataset(data_config(folder, "data.memory_limit_mb=0"), bank_size=5)
    assert len(streamed.train_files) == 36 and len(streamed.train) == 5
    assert torch.equal(streamed.train.images, memory.train.images[:5])  # the kNN bank
    assert torch.equal(streamed.val.images, memory.val.images)
    assert torch.equal(streamed.test.images, memory.test.images)
    source = training_batches(streamed, streamed.train, 8, workers=2)
    assert (
        isinstance(source, StreamingBatches)
        and len(source) == len(InMemoryBatches(memory.train, 8)) == 5
    )  # 4 full batches and a last one of 4
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        in_memory = list(InMemoryBatches(memory.train, 8).epoch(generator))
        for _ in range(2):  # deterministic across epochs with worker processes
            batches = list(source.epoch(torch.Generator().manual_seed(seed)))
            assert len(batches) == len(in_memory)
            for (images, labels), (expected_images, expected_labels) in zip(
                batches, in_memory, strict=True
            ):
                assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)
                assert torch.equal(images, expected_images)
                assert torch.equal(labels, expected_labels)


def test_drop_last_counts_full_batches_only(folder):
    """data.drop_last: the reference's DataLoader(drop_last=True), in memory and streamed."""
    memory = load_dataset(data_config(folder))
    streamed = load_dataset(data_config(folder, "data.memory_limit_mb=0"), bank_size=5)
    for dataset, images in ((memory, memory.train), (streamed, streamed.train)):
        kept = training_batches(dataset, images, 8, workers=0)
        dropped = training_batches(dataset, images, 8, workers=0, drop_last=True)
        assert (len(kept), len(dropped)) == (5, 4)  # 36 images: 4 full batches and one of 4
        sizes = [len(batch[0]) for batch in dropped.epoch(torch.Generator().manual_seed(0))]
        assert sizes == [8, 8, 8, 8]
    # STL-10 train+unlabeled (105,000) and ImageNet-100 (126,689) at batch 128: the reference's
    # 820 and 989 steps per epoch
    assert [steps_per_epoch(n, 128, drop_last=True) for n in (105_000, 126_689)] == [820, 989]
    assert [steps_per_epoch(n, 128) for n in (105_000, 126_689)] == [821, 990]
    assert steps_per_epoch(17, 8) == 2  # a last batch of one image is never kept


def test_train_streams_a_folder_end_to_end(folder, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "train",
        f"run_dir={run_dir}",
        "data.name=folder",
        f"data.path={folder}",
        "data.image_size=32",
        "data.num_val=6",
        "data.workers=1",
        "data.loader=stream",
        "model.width=4",
        "masker.fbase=8",
        "masker.n_masks=2",
        "objective.proj_hidden=16",
        "objective.proj_out=8",
        "optim.batch_size=12",
        "train.epochs=1",
        "train.knn_bank=12",
        "train.progress=false",
        "train.device=cpu",
        "train.threads=1",
    ]
    assert main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["knn_acc"] <= 1 and summary["steps"] == 3


def test_unlabelled_images_do_not_move_the_probe():
    cfg = load_config(
        [
            "model.width=4",
            "masker.fbase=8",
            "masker.n_masks=2",
            "masking.mode=none",
            "objective.proj_hidden=16",
            "objective.proj_out=8",
            "data.image_size=32",
        ]
    )
    torch.manual_seed(0)
    models = build_models(cfg, 3, torch.device("cpu"))
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    a, b = torch.randn(2, 4, 3, 32, 32).unbind(0)
    before = [p.clone() for p in models.probe.parameters()]
    unlabelled = torch.full((4,), -1)
    stats = train_step(
        cfg, models, encoder_opt, masker_opt, a, b, unlabelled, torch.Generator().manual_seed(0)
    )
    assert stats["probe_loss"] == 0 and stats["probe_acc"] == 0
    assert all(torch.equal(p, q) for p, q in zip(before, models.probe.parameters(), strict=True))
    stats = train_step(
        cfg,
        models,
        encoder_opt,
        masker_opt,
        a,
        b,
        torch.tensor([0, -1, 2, -1]),
        torch.Generator().manual_seed(0),
    )
    assert stats["probe_loss"] > 0 and stats["probe_acc"] in (0, 0.5, 1)
    assert not all(
        torch.equal(p, q) for p, q in zip(before, models.probe.parameters(), strict=True)
    )
