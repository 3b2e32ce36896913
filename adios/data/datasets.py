"""Datasets as uint8 tensors, split into train / val / test, from any source the config names.

Small datasets (CIFAR, STL-10 at 96 px, Fashion-MNIST, the scenes, class folders up to
``data.memory_limit_mb``) live on the training device as uint8 and are augmented there in
batches (:mod:`adios.data.augment`), so no worker process decodes an image in the hot path.
Larger class-folder datasets are streamed: worker processes decode each batch
(:mod:`adios.data.streaming`) and the same on-device augmentation finishes it.

Real datasets are split the same way whatever their source: the validation split is carved from
the labelled training images (never from test) by a shuffle fixed by ``data.seed``; a class-folder
tree without a ``test/`` (or ``val/``) folder has its test split carved the same way. A folder of
images without classes (or with a single class, which no accuracy can use) is unlabelled: its
splits are carved from all its images and carry no labels.

Normalisation statistics left unset (``data.mean`` / ``data.std`` null) are measured on every image
of the training pool (the official training set, or the training folder before val and test are
carved from it), at ``data.image_size`` as ``adios data check`` prints them (``data.load_size``:
each whole image at the load size).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from adios.config import DataConfig
from adios.data.readers import (
    UNLABELED,
    ArraySplit,
    DataError,
    FileRecord,
    ImageFiles,
    channel_stats,
    inspect_files,
    list_image_folder,
    pixel_moments,
    read_cifar,
    read_fashion_mnist,
    read_stl10,
    report_bad_files,
    warn_skipped,
)
from adios.data.scenes import generate_scenes
from adios.data.streaming import StreamingBatches, batch_share, steps_per_epoch
from adios.perf import upload

SCENE_COUNTS = (4096, 1024, 1024)  # train, val, test scenes when data.num_* is null
DEVICE_DATA_SHARE = 0.25  # of a GPU's memory, at most, for the in-memory splits it holds
VAL_FRACTION = 0.1  # of the labelled training images, when data.num_val is null


@dataclass
class Split:
    images: Tensor  # uint8 (N, 3, H, W)
    labels: Tensor | None = None  # int64 (N,); UNLABELED (-1) for an image without a label
    instances: Tensor | None = None  # uint8 (N, H, W), 0 = background; scenes only
    # whole images (data.load_size): int64 (N, 2) height, width of the image at the top left
    # of its zero-padded square, kept on the CPU (crop boxes are drawn there)
    extents: Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: Tensor | slice) -> Split:
        extents = None
        if self.extents is not None:
            extents = self.extents[index.cpu() if isinstance(index, Tensor) else index]
        return Split(self.images[index], *(None if t is None else t[index]
                                           for t in (self.labels, self.instances)), extents)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Streamed datasets: the training files; ``train`` then holds only the first ``bank_size``
    # of them, decoded, for evaluation (the kNN bank).
    train_files: ImageFiles | None = None
    # data.load_size: the training crops' source, whole images at load_size with their extents
    # (in memory; streamed: ``train_files`` decoded whole); ``train`` again holds only the first
    # ``bank_size`` images at image_size, resized and centre-cropped like val and test
    train_whole: Split | None = None
    load_size: int | None = None


Gather = Callable[[list[Any]], list[list[Any]]]  # every process's list, in rank order


def load_dataset(cfg: DataConfig, bank_size: int = 4096, progress: bool = False,
                 share: tuple[int, int] = (0, 1), gather: Gather | None = None) -> Dataset:
    """Build the splits named by a DataConfig, every image validated before training starts.

    All splits are uint8 at ``cfg.image_size`` (resized, shorter side first, then centre-cropped,
    when a source stores another size). ``bank_size`` is how many training images a streamed
    dataset decodes into ``train``; ``progress`` shows a bar while class folders are decoded.
    Under torchrun (``share``: rank, world size; ``gather``: an all-gather of lists) each
    process checks only its share of a streamed folder's training files, whose records are
    then gathered: the check decodes every file, W times over without it.
    """
    if cfg.name == "shapes":
        return _scenes(cfg)
    if cfg.name == "folder":
        return _folder_dataset(cfg, bank_size, progress, share, gather)
    if cfg.name in ("cifar10", "cifar100"):
        pool, test = (read_cifar(cfg.path, cfg.name, split) for split in ("train", "test"))
    elif cfg.name == "stl10":
        pool, test = read_stl10(cfg.path, cfg.split), read_stl10(cfg.path, "test")
    elif cfg.name == "fashion-mnist":
        pool, test = (read_fashion_mnist(cfg.path, split) for split in ("train", "test"))
    else:
        raise ValueError(f"data.name: unknown dataset {cfg.name!r}")
    train_index, val_index, _ = _carve(pool.labels, cfg, carve_test=False)
    test_index = _shuffled(len(test.labels), cfg.seed + 1)[: cfg.num_test]
    splits = [_take(part, index, cfg.image_size) for part, index in
              ((pool, train_index), (pool, val_index), (test, test_index))]
    return Dataset(*splits, num_classes=len(pool.class_names), class_names=pool.class_names,
                   **normalisation(cfg, image_moments(pool.images, cfg.image_size)))


def _scenes(cfg: DataConfig) -> Dataset:
    """Generated scenes come from ``cfg.seed``."""
    scene_cfg = replace(cfg.scenes, image_size=cfg.image_size)
    splits = []
    counts = (cfg.num_train, cfg.num_val, cfg.num_test)
    for offset, (n, default) in enumerate(zip(counts, SCENE_COUNTS, strict=True)):
        scenes = generate_scenes(default if n is None else n, scene_cfg, seed=3 * cfg.seed + offset)
        splits.append(Split(scenes.images, scenes.largest_shape, scenes.instances))
    names = list(scene_cfg.shapes)
    return Dataset(*splits, num_classes=len(names), class_names=names, mean=cfg.mean, std=cfg.std)


def image_moments(images: Tensor, size: int, chunk: int = 4096) -> list[tuple[float, ...]]:
    """``pixel_moments`` of uint8 images at ``size`` (as every split is held), chunk by chunk."""
    return [pixel_moments(fit_size(images[i : i + chunk], size))
            for i in range(0, len(images), chunk)]


def normalisation(cfg: DataConfig, moments: list[tuple[float, ...]]) -> dict[str, tuple]:
    """``data.mean`` and ``data.std``; those left null measured (``pixel_moments`` of the
    training pool's images, as ``adios data check`` prints them)."""
    if cfg.mean is not None and cfg.std is not None:
        return {"mean": cfg.mean, "std": cfg.std}
    mean, std = channel_stats(moments)
    std = tuple(max(s, 1e-3) for s in std)  # a constant channel must not divide by zero
    return {"mean": cfg.mean or mean, "std": cfg.std or std}


def _shuffled(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _carve(labels: Tensor, cfg: DataConfig, carve_test: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of train, val and (``carve_test``) test in a pool of training images.

    Val and test come from the labelled images; the training split is the rest, labelled images
    first, then unlabelled ones, cut to ``cfg.num_train``.
    """
    known = (labels != UNLABELED).nonzero().squeeze(1)
    unknown = (labels == UNLABELED).nonzero().squeeze(1)
    kind = "labelled training"
    if len(known) == 0:  # an unlabelled folder: val and test come from all its images
        known, unknown, kind = unknown, unknown[:0], "training"
    known = known[_shuffled(len(known), cfg.seed)]
    default = max(1, round(VAL_FRACTION * len(known)))
    num_test = (default if cfg.num_test is None else cfg.num_test) if carve_test else 0
    num_val = default if cfg.num_val is None else cfg.num_val
    if num_val + num_test > len(known) - 2:
        test = f" and {num_test} test" if carve_test else ""
        raise DataError(f"data.num_val: {num_val} validation{test} images leave fewer than 2 of "
                        f"the {len(known)} {kind} images for training")
    test, val = known[:num_test], known[num_test : num_test + num_val]
    train = torch.cat([known[num_test + num_val :], unknown[_shuffled(len(unknown), cfg.seed)]])
    return train[: cfg.num_train], val, test


def fit_size(images: Tensor, size: int, chunk: int = 1024) -> Tensor:
    """Resize uint8 images (shorter side to ``size``, antialiased) and centre-crop to a square."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([TF.center_crop(TF.resize(images[i : i + chunk], size, antialias=True),
                                     [size, size]) for i in range(0, len(images), chunk)])


def _take(part: ArraySplit, index: Tensor, size: int) -> Split:
    return Split(fit_size(part.images[index], size), part.labels[index])


def _inspect_share(paths: list[Path], size: int, keep: int, share: tuple[int, int],
                   gather: Gather, **kwargs: Any) -> tuple[Tensor, list[FileRecord]]:
    """``inspect_files`` of the first ``keep`` files (decoded on every process) and of every
    ``world``-th file after them from ``keep + rank``; the others' records gathered."""
    rank, world = share
    own = [*range(keep), *range(keep + rank, len(paths), world)]
    images, records = inspect_files([paths[i] for i in own], size, keep=keep, **kwargs)
    every: list[Any] = records[:keep] + [None] * (len(paths) - keep)
    for other, part in enumerate(gather(records[keep:])):
        every[keep + other::world] = part
    return images, every


def _folder_dataset(cfg: DataConfig, bank_size: int, progress: bool,
                    share: tuple[int, int] = (0, 1), gather: Gather | None = None) -> Dataset:
    """A class-folder tree, decoded into memory, or streamed when it is too large (see module)."""
    layout = list_image_folder(cfg.path, cfg.class_list)
    if layout.empty_classes:
        shown = ", ".join(str(p) for p in layout.empty_classes[:10])
        raise DataError(f"data.path: {len(layout.empty_classes)} class folders hold no images: "
                        f"{shown}; remove them or leave them out with data.class_list")
    warn_skipped(layout.skipped)
    pool = layout.splits["train"]
    train_index, val_index, test_index = _carve(pool.labels, cfg, "test" not in layout.splits)
    if "test" in layout.splits:
        test = layout.splits["test"]
        if len(test) == 0:
            raise DataError(f"data.path: the test folder of {layout.root} holds no images")
        test = test.subset(_shuffled(len(test), cfg.seed + 1)[: cfg.num_test])
    else:
        test = pool.subset(test_index)
    files = {"train": pool.subset(train_index), "val": pool.subset(val_index), "test": test}
    size, whole = cfg.image_size, cfg.load_size
    train_size = whole or size
    stream = cfg.loader == "stream" or (
        cfg.loader == "auto"
        and len(files["train"]) * 3 * train_size**2 > cfg.memory_limit_mb * 2**20)
    decoded, bad, train_whole, moments = {}, [], None, []
    for name, split_files in files.items():
        keep = min(bank_size, len(split_files)) if stream and name == "train" else len(split_files)
        if whole and name == "train":  # the crops' source: every image whole at load_size
            keep = 0 if stream else len(split_files)
        check = dict(workers=cfg.workers, progress=progress, desc=f"checking {name} images",
                     whole=bool(whole) and name == "train")
        if stream and name == "train" and gather is not None and share[1] > 1:
            images, records = _inspect_share(split_files.paths, train_size, keep, share, gather,
                                             **check)
        else:
            images, records = inspect_files(split_files.paths,
                                            train_size if name == "train" else size,
                                            keep=keep, **check)
        failed = torch.tensor([bool(r.error) for r in records], dtype=torch.bool)
        bad += [(p, r.error) for p, r in zip(split_files.paths, records, strict=True) if r.error]
        if name != "test" or "test" not in layout.splits:  # the training folder's images
            moments += [r.moments for r in records if not r.error]
        good = (~failed).nonzero().squeeze(1)
        files[name] = split_files.subset(good)
        decoded[name] = images[good[good < keep]]
        if whole and name == "train":
            extents = torch.tensor([r.extent for r in records], dtype=torch.int64).view(-1, 2)
            if not stream:
                train_whole = Split(decoded[name], files[name].labels, extents=extents[good])
            bank = files[name].subset(torch.arange(min(bank_size, len(files[name]))))
            decoded[name], _ = inspect_files(bank.paths, size, keep=len(bank), workers=cfg.workers,
                                             progress=progress, desc="decoding the kNN bank")
    report_bad_files(bad, cfg.bad_files)
    labelled = len(layout.class_names) >= 2
    if len(layout.class_names) == 1:
        warnings.warn(f"data.path: {layout.root} has one class folder "
                      f"({layout.class_names[0]}): read as unlabelled images, since no "
                      "accuracy can be measured with one class", stacklevel=2)
    splits = [Split(decoded[name], files[name].labels[: len(decoded[name])] if labelled else None)
              for name in ("train", "val", "test")]
    if any(len(split) == 0 for split in splits):
        raise DataError(f"data.path: no decodable images left in a split of {layout.root}")
    if train_whole is not None and not labelled:
        train_whole.labels = None
    class_names = layout.class_names if labelled else []
    return Dataset(*splits, num_classes=len(class_names), class_names=class_names,
                   **normalisation(cfg, moments),
                   train_files=files["train"] if stream else None, train_whole=train_whole,
                   load_size=whole)


def knn_bank(split: Split, size: int) -> Split:
    """The first ``size`` labelled images of a split (STL-10 mixes in unlabelled ones)."""
    if split.labels is None or bool((split.labels[:size] != UNLABELED).all()):
        return split.subset(slice(0, size))
    return split.subset((split.labels != UNLABELED).nonzero().squeeze(1)[:size])


def device_memory_bytes(device: torch.device) -> int | None:
    """A GPU's memory; None on the CPU, where in-memory data already is."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return torch.mps.recommended_max_memory()
    return None


def split_bytes(*splits: Split | None) -> int:
    return sum(t.nbytes for split in splits if split is not None
               for t in (split.images, split.labels, split.instances) if t is not None)


def data_device(dataset: Dataset, device: torch.device) -> torch.device:
    """Where the in-memory splits live: on ``device`` when train, val (and whole images)
    together take at most ``DEVICE_DATA_SHARE`` of its memory, else on the host, each batch
    copied as it is drawn. Host memory allows up to ``data.memory_limit_mb`` (4 GB by
    default), which on a small GPU, once per torchrun process, leaves the models no room."""
    total = device_memory_bytes(device)
    held = split_bytes(dataset.train, dataset.val, dataset.train_whole)
    return device if total is None or held <= DEVICE_DATA_SHARE * total else torch.device("cpu")


def training_batches(dataset: Dataset, train_split: Split, batch_size: int,
                     workers: int | None = None, instances: bool = False,
                     drop_last: bool = False,
                     device: torch.device | None = None) -> InMemoryBatches | StreamingBatches:
    """The training loop's batch source: the in-memory split, or the streamed files.

    ``instances``: batches also carry the instance maps (the oracle masking scheme needs them).
    ``drop_last``: no partial last batch (``data.drop_last``).
    Whole-image sources (``data.load_size``) have ``has_extents``: each batch ends with the CPU
    (B, 2) extents for :class:`adios.data.augment.TwoViewAugment`.
    ``device``: where batches are trained on (default: the split's); a split left on the host
    (:func:`data_device`) has each batch copied there.
    """
    device = train_split.images.device if device is None else device
    if instances and (dataset.train_files is not None or train_split.instances is None):
        raise DataError("this dataset has no instance maps (ground-truth object masks); "
                        "the built-in scenes (data.name=shapes) do")
    if dataset.train_files is not None:
        size = dataset.load_size or train_split.images.shape[-1]
        return StreamingBatches(dataset.train_files, batch_size, size, device,
                                workers, whole=dataset.load_size is not None,
                                drop_last=drop_last)
    if dataset.train_whole is not None:
        return InMemoryBatches(to_device(dataset.train_whole, train_split.images.device),
                               batch_size, drop_last=drop_last, device=device)
    return InMemoryBatches(train_split, batch_size, instances, drop_last=drop_last, device=device)


class InMemoryBatches:
    """Shuffled mini-batches of an in-memory split; the order comes from the epoch's generator.

    The training loop only needs ``len()`` (steps per epoch) and ``epoch(generator)``, so a
    streaming source for datasets too large for memory can stand in for this class. With
    ``instances`` a batch is (images, labels, instance maps). ``device``: where batches go
    (default: the split's); a host split's batches are copied there one at a time.
    ``epoch(generator, share)``: only this process's part of each global batch under torchrun.
    """

    takes_share = True  # adios.distributed.ShardedBatches passes (rank, world)

    def __init__(self, split: Split, batch_size: int, instances: bool = False,
                 drop_last: bool = False, device: torch.device | None = None) -> None:
        self.split = split
        self.device = split.images.device if device is None else torch.device(device)
        self.instances = instances
        self.has_extents = split.extents is not None
        self.batch_size = min(batch_size, len(split))
        self.steps = steps_per_epoch(len(split), self.batch_size, drop_last)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, generator: torch.Generator,
              share: tuple[int, int] = (0, 1)) -> Iterator[tuple[Tensor | None, ...]]:
        order_cpu = torch.randperm(len(self.split), generator=generator)
        order = upload(order_cpu, self.split.images.device)  # pinned, not waiting for the GPU
        for i in range(self.steps):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            part = batch_share(len(index), share)
            if part is None:
                continue
            index = index[part]
            labels = None if self.split.labels is None else self.split.labels[index]
            batch = (self.split.images[index], labels,
                     self.split.instances[index] if self.instances else None)
            images, labels, instances = (None if t is None else upload(t, self.device)
                                         for t in batch)
            if self.instances:
                yield images, labels, instances
            elif self.has_extents:
                rows = order_cpu[i * self.batch_size : (i + 1) * self.batch_size][part]
                yield images, labels, self.split.extents[rows]
            else:
                yield images, labels


def to_device(split: Split, device: torch.device) -> Split:
    """The split's tensors on ``device``; extents stay on the CPU, where crops are drawn."""
    return Split(split.images.to(device), *(None if t is None else t.to(device)
                                            for t in (split.labels, split.instances)),
                 split.extents)
