"""Class folders with data.load_size: training crops come from the whole image (the reference's
RandomResizedCrop on the full picture), not from a centre square cut out at load time."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adios.config import load_config
from adios.data.augment import TwoViewAugment, ViewConfig
from adios.data.datasets import (
    Dataset,
    InMemoryBatches,
    Split,
    load_dataset,
    training_batches,
)
from adios.data.streaming import StreamingBatches

WIDTH, HEIGHT, STRIPE = 500, 375, 40  # ImageNet's commonest size; a red stripe at the left edge
PLAIN = ViewConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=0.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wide")
    pixels = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    pixels[:, :STRIPE] = (255, 0, 0)  # a centre square keeps columns 62..436 only
    for split, count in (("train", 4), ("test", 1)):
        for name in ("ant", "bee"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def data_config(folder: Path, *overrides: str):
    return load_config([
        "data.name=folder", f"data.path={folder}", "data.image_size=32", "data.num_val=1",
        "data.workers=0", *overrides,
    ]).data


def red_pixels(views: torch.Tensor) -> torch.Tensor:
    """Per view, how many pixels are the stripe's red (views normalised with mean 0, std 1)."""
    red = (views[:, 0] > 0.9) & (views[:, 1] < 0.1) & (views[:, 2] < 0.1)
    return red.flatten(1).sum(1)


def crops(dataset, draws: int = 25):
    source = training_batches(dataset, dataset.train, 8)
    augment = TwoViewAugment(PLAIN, PLAIN, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    views = []
    for seed in range(draws):
        generator = torch.Generator().manual_seed(seed)
        for batch in source.epoch(generator):
            extents = batch[-1] if source.has_extents else None
            views += list(augment(batch[0], generator, extents))
    return torch.cat(views)


def test_a_crop_of_a_500x375_image_can_hold_what_a_centre_crop_cuts_away(folder):
    centred = load_dataset(data_config(folder))
    assert red_pixels(centred.train.images.float() / 255).sum() == 0  # the stripe is gone
    assert red_pixels(crops(centred)).max() == 0

    whole = load_dataset(data_config(folder, "data.load_size=250"))
    stored = whole.train_whole
    # 500 x 375 shrunk to a longer side of 250: 250 x 188 (round(187.5) = 188) at the top left
    assert stored.images.shape[1:] == (3, 250, 250)
    assert stored.extents.tolist() == [[188, 250]] * len(stored)
    assert stored.images[:, :, 188:].eq(0).all()
    assert red_pixels(stored.images[:, :, :188].float() / 255).min() > 0
    # evaluation images stay resized and centre-cropped, like val and test
    assert torch.equal(whole.train.images, centred.train.images[: len(whole.train)])
    views = crops(whole)
    assert (red_pixels(views) > 0).float().mean() > 0.05  # crops reach the left edge
    # ... and never the zero padding: no view pixel is black
    assert views.amax(dim=1).gt(0.2).all()


def test_crop_boxes_stay_inside_each_images_extent():
    from adios.data.augment import sample_crop_boxes

    height = torch.tensor([188, 250, 40, 375])
    width = torch.tensor([250, 140, 250, 375])
    generator = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(4000, height.repeat(1000), width.repeat(1000), (0.08, 1.0),
                              (3 / 4, 4 / 3), generator)
    top, left, box_h, box_w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (box_h >= 1).all() and (box_w >= 1).all()
    assert (top + box_h <= height.repeat(1000)).all()
    assert (left + box_w <= width.repeat(1000)).all()
    # the 40 x 250 strip falls back to torchvision's centred crop of aspect 4/3: 40 x 53
    strip = boxes[2::4]
    assert ((strip[:, 2] == 40) & (strip[:, 3] == 53) & (strip[:, 1] == 98)).any()
    # full squares given as tensors draw the same boxes as the scalar sizes
    square = torch.full((8,), 375)
    assert torch.equal(
        sample_crop_boxes(8, square, square, (0.08, 1.0), (3 / 4, 4 / 3),
                          torch.Generator().manual_seed(1)),
        sample_crop_boxes(8, 375, 375, (0.08, 1.0), (3 / 4, 4 / 3),
                          torch.Generator().manual_seed(1)),
    )


def test_streamed_whole_images_equal_the_in_memory_ones(folder):
    memory = load_dataset(data_config(folder, "data.load_size=250"))
    streamed = load_dataset(data_config(folder, "data.load_size=250", "data.loader=stream"),
                            bank_size=2)
    assert streamed.train_whole is None and len(streamed.train) == 2
    source = training_batches(streamed, streamed.train, 4)
    assert isinstance(source, StreamingBatches) and source.has_extents
    in_memory = InMemoryBatches(memory.train_whole, 4)
    for got, want in zip(source.epoch(torch.Generator().manual_seed(0)),
                         in_memory.epoch(torch.Generator().manual_seed(0)), strict=True):
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_training_iterations_crop_whole_images(folder, loader, monkeypatch):
    """The engine hands each batch's extents to the augmentation: every crop box it draws lies
    inside the stored image (250 x 188), whichever source holds the images."""
    import itertools

    from adios import engine

    cfg = load_config([
        "preset=shapes-paper", "data.name=folder", f"data.path={folder}", "data.image_size=32",
        "data.num_val=1", "data.workers=0", "data.load_size=250", f"data.loader={loader}",
        "model.width=4", "masker.fbase=8", "masker.n_masks=2", "objective.proj_hidden=16",
        "objective.proj_out=8", "optim.batch_size=4", "train.device=cpu", "train.knn_bank=4",
    ])
    s = engine.setup(cfg)
    assert s.batches.has_extents
    boxes = []
    real = s.augment.augment_a.sample_params

    def spy(batch, height, width, generator=None):
        params = real(batch, height, width, generator)
        boxes.append((params.boxes, height, width))
        return params

    monkeypatch.setattr(s.augment.augment_a, "sample_params", spy)
    for _, stats in itertools.islice(engine.iterations(s), 2):
        assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    assert len(boxes) == 2
    for drawn, height, width in boxes:
        assert set(height.tolist()) == {188} and set(width.tolist()) == {250}
        assert (drawn[:, 0] + drawn[:, 2] <= 188).all() and (drawn[:, 1] + drawn[:, 3] <= 250).all()


def test_evaluation_reads_every_split_at_image_size(folder, tmp_path):
    """`adios eval` needs no crop source: a run trained with data.load_size is evaluated on
    all its training images resized and centre-cropped, like val and test."""
    from torch import nn

    from adios.evaluation.commands import EvalSetup

    cfg = load_config(["preset=shapes-paper", "data.name=folder", f"data.path={folder}",
                       "data.image_size=32", "data.num_val=1", "data.workers=0",
                       "data.load_size=250"])
    setup = EvalSetup(cfg, cfg, nn.Identity(), None, None, torch.device("cpu"), tmp_path, {})
    dataset = setup.dataset()
    assert dataset.train_whole is None and dataset.train_files is None
    centred = load_dataset(data_config(folder))
    assert torch.equal(dataset.train.images, centred.train.images)


def test_item6_in_memory_data_goes_to_a_gpu_only_within_its_share_of_memory(monkeypatch):
    """train + val (+ whole images) take at most DEVICE_DATA_SHARE of a GPU's memory, else
    they stay on the host and each batch is copied (issue 25, item 6; the device's memory
    query and the copies are mocked: no GPU here)."""
    import adios.data.datasets as datasets

    split = Split(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.zeros(10, dtype=torch.int64))
    dataset = Dataset(split, split, split, 2, ["a", "b"], (0.5,) * 3, (0.5,) * 3)
    held = 2 * (10 * 3 * 8 * 8 + 10 * 8)  # train and val; test is never on the device
    cuda = torch.device("cuda")
    for memory, where in [(held / datasets.DEVICE_DATA_SHARE, cuda),
                          (held / datasets.DEVICE_DATA_SHARE - 1, torch.device("cpu"))]:
        monkeypatch.setattr(datasets, "device_memory_bytes", lambda device, m=memory: int(m))
        assert datasets.data_device(dataset, cuda) == where
    monkeypatch.setattr(datasets, "device_memory_bytes", lambda device: None)
    assert datasets.data_device(dataset, torch.device("cpu")) == torch.device("cpu")
    copies = []
    monkeypatch.setattr(datasets, "upload",
                        lambda t, device: copies.append((t.shape[0], device)) or t)
    batches = training_batches(dataset, split, 4, device=cuda)
    assert len(list(batches.epoch(torch.Generator().manual_seed(0)))) == 3
    # images and labels, per batch (the epoch's order stays with the split, on the host)
    assert [c for c in copies if c[1] == cuda] == [(4, cuda)] * 4 + [(2, cuda)] * 2
