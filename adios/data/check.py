"""``adios data check``: what a dataset on disk holds, and what is wrong with it.

Reads the dataset with the same readers and options as training, decodes every image, and
reports counts per split and class, image sizes and modes, unreadable files, duplicates (equal
file bytes, or equal pixels for array datasets) within and across splits, skipped non-image
files and empty class folders. Problems (unreadable files, duplicates, empty class folders) make
the exit status 1; a dataset that cannot be read at all raises DataError (exit status 2).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from adios.config import DataConfig
from adios.data.datasets import image_moments
from adios.data.readers import (
    FASHION_MNIST_PATH,
    UNLABELED,
    DataError,
    ImageFiles,
    channel_stats,
    dataset_name,
    inspect_files,
    list_image_folder,
    read_cifar,
    read_fashion_mnist,
    read_stl10,
)

SHOWN = 10  # files or groups listed per finding
MANY_CLASSES = 20  # above this, per-class counts are summarised


class _Report:
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.problems: list[str] = []
        self.digests: dict[bytes, list[str]] = defaultdict(list)

    def problem(self, headline: str, items: list[str]) -> None:
        self.problems.append(headline)
        self.listing(f"PROBLEM: {headline}", items)

    def listing(self, headline: str, items: list[str]) -> None:
        self.write(headline)
        for item in items[:SHOWN]:
            self.write(f"    {item}")
        if len(items) > SHOWN:
            self.write(f"    ... and {len(items) - SHOWN} more")

    def classes(self, labels: list[int], class_names: list[str]) -> None:
        counts = Counter(labels)
        unlabelled = counts.pop(UNLABELED, 0)
        if not class_names:
            self.write(f"  unlabelled: {unlabelled}")
            return
        per_class = [(class_names[c], counts.get(c, 0)) for c in range(len(class_names))]
        if len(per_class) <= MANY_CLASSES:
            self.write("  per class: " + ", ".join(f"{n} {k}" for n, k in per_class))
        else:
            ordered = sorted(per_class, key=lambda item: item[1])
            self.write(
                f"  per class: {ordered[0][1]}..{ordered[-1][1]} images; fewest: "
                + ", ".join(f"{n} {k}" for n, k in ordered[:5])
            )
        if unlabelled:
            self.write(f"  unlabelled: {unlabelled}")

    def stats(self, mean_std: tuple[tuple[float, ...], ...]) -> None:
        """The normalisation training measures when data.mean / data.std are unset."""
        mean, std = (", ".join(f"{v:.4f}" for v in values) for values in mean_std)
        self.write(f"  mean [{mean}] std [{std}] (at data.image_size; training uses them "
                   f"unless data.mean / data.std are set: data.mean=[{mean}] data.std=[{std}])")

    def duplicates(self) -> None:
        groups = [places for places in self.digests.values() if len(places) > 1]
        if not groups:
            self.write("duplicates: none")
            return
        across = sum(len({p.split(":")[0] for p in places}) > 1 for places in groups)
        self.problem(
            f"{len(groups)} groups of identical images ({across} across splits)",
            [" = ".join(places[:4]) + (" ..." if len(places) > 4 else "") for places in groups],
        )

    def finish(self) -> int:
        if self.problems:
            self.write(f"{len(self.problems)} problems: " + "; ".join(self.problems))
            return 1
        self.write("OK: no problems found")
        return 0


def check_dataset(
    cfg: DataConfig,
    *,
    detect: bool = True,
    progress: bool = True,
    write: Callable[[str], None] = print,
) -> int:
    """Scan the dataset a DataConfig names; 0 when clean, 1 when problems were found.

    ``detect``: read ``cfg.path`` in the layout found there (data.name was not given).
    """
    name = dataset_name(cfg.name, cfg.path, explicit=not detect)
    if name == "shapes":
        raise DataError(
            "data.path: the built-in scenes are generated, there is nothing on disk "
            "to check; give a PATH (and data.name=... for its format)"
        )
    report = _Report(write)
    if name == "folder":
        _check_folder(cfg, report, progress)
    else:
        _check_arrays(name, cfg, report, progress)
    report.duplicates()
    return report.finish()


def _check_folder(cfg: DataConfig, report: _Report, progress: bool) -> None:
    layout = list_image_folder(cfg.path, cfg.class_list)
    if layout.class_names:
        report.write(
            f"{layout.root}: class folders ({', '.join(f'{s}/' for s in layout.splits)} "
            f"as splits), {len(layout.class_names)} classes"
        )
    else:
        report.write(f"{layout.root}: a folder of images without class folders (unlabelled)")
    for split, files in layout.splits.items():
        _check_files(split, files, layout.class_names, cfg, report, progress)
    if layout.empty_classes:
        report.problem(
            f"{len(layout.empty_classes)} class folders hold no images",
            [str(p) for p in layout.empty_classes],
        )
    if layout.skipped:
        report.listing(
            f"skipped (no image extension, policy: ignored with a warning): {len(layout.skipped)}",
            [str(p) for p in layout.skipped],
        )


def _check_files(
    split: str, files: ImageFiles, class_names: list[str], cfg, report: _Report, progress: bool
) -> None:
    _, records = inspect_files(
        files.paths,
        cfg.image_size,
        workers=cfg.workers,
        progress=progress,
        desc=f"scanning {split}",
    )
    report.write(f"{split}: {len(files)} images")
    report.classes(files.labels.tolist(), class_names)
    readable = [r for r in records if not r.error]
    if split == "train" and readable:
        report.stats(channel_stats([r.moments for r in readable]))
    sizes = Counter((r.width, r.height) for r in readable)
    report.write(
        "  sizes (w x h): "
        + ", ".join(f"{w}x{h} {n}" for (w, h), n in sizes.most_common(5))
        + (f", ... ({len(sizes)} sizes)" if len(sizes) > 5 else "")
    )
    report.write(
        "  modes: "
        + ", ".join(f"{m} {n}" for m, n in Counter(r.mode for r in readable).most_common())
    )
    small = sum(min(r.width, r.height) < cfg.image_size for r in readable)
    if small:
        report.write(
            f"  smaller than data.image_size={cfg.image_size}: {small} "
            "(policy: upscaled to the load size)"
        )
    unreadable = [f"{p}: {r.error}" for p, r in zip(files.paths, records, strict=True) if r.error]
    if unreadable:
        report.problem(f"{len(unreadable)} unreadable files in {split}", unreadable)
    for path, record in zip(files.paths, records, strict=True):
        if record.digest:
            report.digests[record.digest].append(f"{split}:{path}")


def _check_arrays(name: str, cfg: DataConfig, report: _Report, progress: bool) -> None:
    splits = ["train", "test"]
    if name == "stl10":
        root = Path(cfg.path or "")
        folder = root if (root / "train_X.bin").exists() else root / "stl10_binary"
        splits += ["unlabeled"] if cfg.path and (folder / "unlabeled_X.bin").exists() else []
        read = read_stl10
    elif name == "fashion-mnist":
        read = read_fashion_mnist
    else:
        read = lambda path, split: read_cifar(path, name, split)  # noqa: E731
    shown = cfg.path or (FASHION_MNIST_PATH if name == "fashion-mnist" else None)
    report.write(f"{shown}: {name} (official layout)")
    for split in splits:
        part = read(cfg.path, split)
        images = part.images
        gray = name == "fashion-mnist"
        report.write(f"{split}: {len(images)} images")
        report.classes(part.labels.tolist(), part.class_names)
        if split == "train":
            report.stats(channel_stats(image_moments(images, cfg.image_size)))
        report.write(f"  sizes (w x h): {images.shape[3]}x{images.shape[2]} {len(images)}")
        report.write(f"  modes: {'L (repeated to RGB)' if gray else 'RGB'} {len(images)}")
        for i in tqdm(
            range(len(images)),
            desc=f"hashing {split}",
            disable=not progress,
            leave=False,
            unit="img",
            mininterval=0.5,
        ):
            digest = hashlib.blake2b(images[i].numpy().tobytes(), digest_size=16).digest()
            report.digests[digest].append(f"{split}:{i}")
