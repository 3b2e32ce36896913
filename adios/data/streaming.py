"""Training batches decoded from image files in DataLoader worker processes.

For class-folder datasets too large to hold in memory as uint8 (see ``DataConfig.loader``).
Workers only decode and resize to the load size (``data.image_size``, or with ``whole`` the
whole image at ``data.load_size``, and its extent); the random two-view
augmentation is finished on the training device by :class:`adios.data.augment.TwoViewAugment`,
exactly as for in-memory datasets. The batch order is drawn from the epoch's generator the same
way :class:`adios.data.datasets.InMemoryBatches` draws it and decoding is deterministic, so a
streamed epoch yields the very batches the in-memory source would yield for the same generator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from adios.data.readers import ImageFiles, default_workers, load_image


class _DecodeFiles(torch.utils.data.Dataset):
    def __init__(self, files: ImageFiles, size: int, whole: bool = False) -> None:
        self.files, self.size, self.whole = files, size, whole

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        pixels, extent = load_image(self.files.paths[index], self.size, self.whole)
        return pixels, self.files.labels[index], torch.tensor(extent, dtype=torch.int64)


def _stack(items: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    images, labels, extents = zip(*items, strict=True)
    return torch.stack(images), torch.stack(labels), torch.stack(extents)


def steps_per_epoch(images: int, batch_size: int, drop_last: bool = False) -> int:
    """Full batches, plus the partial last one unless ``drop_last`` or it holds one image (a
    batch of one sample cannot be normalised)."""
    steps = images // batch_size
    return steps + 1 if not drop_last and images % batch_size >= 2 else steps


def batch_share(size: int, share: tuple[int, int]) -> slice | None:
    """This process's part of a global batch of ``size`` images under torchrun (``share``:
    rank, world size): an equal slice, the last ``size % world`` images left out; None when it
    would hold fewer than 2 images (a batch of one cannot be normalised). One process: all."""
    rank, world = share
    if world == 1:
        return slice(None)
    each = size // world
    return slice(rank * each, (rank + 1) * each) if each >= 2 else None


class StreamingBatches:
    """Shuffled uint8 batches of image files, decoded ahead of the training step.

    Same interface as ``InMemoryBatches``: ``len()`` is the number of steps per epoch and
    ``epoch(generator)`` yields ``(uint8 images (B, 3, S, S) on device, int64 labels)``, and with
    ``whole`` (``has_extents``) also the CPU int64 (B, 2) extents of the whole images.
    ``epoch(generator, share)``: only this process's part of each global batch is decoded
    and copied (:func:`batch_share`), not the whole batch on every process.
    """

    takes_share = True  # adios.distributed.ShardedBatches passes (rank, world)

    def __init__(
        self,
        files: ImageFiles,
        batch_size: int,
        image_size: int,
        device: torch.device,
        workers: int | None = None,
        prefetch: int = 4,
        whole: bool = False,
        drop_last: bool = False,
    ) -> None:
        self.files, self.image_size, self.device = files, image_size, torch.device(device)
        self.has_extents = whole
        self.workers = default_workers() if workers is None else workers
        self.prefetch = prefetch
        self.batch_size = min(batch_size, len(files))
        self.steps = steps_per_epoch(len(files), self.batch_size, drop_last)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, generator: torch.Generator,
              share: tuple[int, int] = (0, 1)) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.files), generator=generator)
        global_batches = (order[i * self.batch_size : (i + 1) * self.batch_size]
                          for i in range(self.steps))
        batches = [index[part].tolist() for index in global_batches
                   if (part := batch_share(len(index), share)) is not None]
        loader = DataLoader(
            _DecodeFiles(self.files, self.image_size, self.has_extents),
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=_stack,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=self.prefetch if self.workers else None,
        )
        for images, labels, extents in loader:
            batch = (
                images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )
            yield (*batch, extents) if self.has_extents else batch
