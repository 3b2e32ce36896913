"""Readers for datasets on disk in their official layouts, validated before training starts.

Every reader returns uint8 images ``(N, 3, H, W)`` and int64 labels; an image without a label
(STL-10's unlabelled split) has label ``UNLABELED`` (-1, as torchvision's STL10 does). Anything
malformed raises :class:`DataError` naming the file and what was expected, so a bad dataset fails
in seconds when it is loaded, not in the middle of an epoch.

Layouts (``root`` may be the official folder itself or the folder that holds it):

- CIFAR-10: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; CIFAR-100:
  ``cifar-100-python/{train, test, meta}``. These are Python pickles; they are read with an
  unpickler that can only build numpy arrays, lists, dicts and strings, so a file that tries to run
  code is rejected without running it.
- STL-10: ``stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin`` (each image 3 x 96 x 96,
  channel-major, each channel stored column by column; labels 1..10).
- Fashion-MNIST: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``, by default where Debian's
  ``dataset-fashion-mnist`` package puts them; grayscale is repeated to three channels.
- Class folders (ImageFolder layout): ``root/<class>/**/<image>``, or ``root/train/<class>/...``
  with ``root/test/<class>/...`` (or ``root/val/...``, as ImageNet ships) as the test split. An
  optional class-list file keeps a subset of the classes, in the file's order (ImageNet-100 is
  ImageNet restricted to a list of 100 class folders). A folder of images without class
  folders (``root/<image>`` or ``root/train/<image>``) is read unlabelled.

Policies for images in class folders (also in README, "Datasets"):
- files are recognised by extension (``IMAGE_EXTENSIONS``); any other file is skipped with a
  warning that lists it; hidden files (``.DS_Store``) are ignored silently;
- a file with an image extension that cannot be decoded (truncated, corrupt, not an image) is
  an error naming it, or skipped with a warning when ``data.bad_files=skip``; so is an image that
  would decode to more than ``MAX_PIXELS`` pixels (about 89.5 megapixels, PIL's
  decompression-bomb threshold; a JPEG counts at the reduced scale it is decoded at), refused
  before its pixels are decoded;
- grayscale, palette, CMYK and 16-bit images are converted to 8-bit RGB; an alpha channel is
  dropped (the stored colour is kept, not composited); EXIF orientation is applied;
- every image is resized so that its shorter side is the load size (``data.image_size``) and
  centre-cropped to a square; smaller images are upscaled the same way. With ``whole=True``
  (``data.load_size``, for training crops drawn from the whole image as the reference draws
  them) the whole image is kept instead: its longer side shrunk to the load size (never
  enlarged), stored top-left in a zero square, with its height and width as the extent.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import os
import pickle
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from adios.data.errors import DataError

UNLABELED = -1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
STL10_CLASSES = (
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
)
STL10_SIZE = 96
# the most pixels an image may decode to (PIL's Image.MAX_IMAGE_PIXELS default, about 9459 x
# 9459): a larger one is a bad file, as it would take gigabytes to make one small training image
MAX_PIXELS = 89_478_485
_DECODE_BATCH = 64  # files per worker task: large enough to amortise inter-process traffic


class ArraySplit(NamedTuple):
    images: Tensor  # uint8 (N, 3, H, W)
    labels: Tensor  # int64 (N,), UNLABELED where unknown
    class_names: list[str]


def _existing(root: str | Path | None, setting: str, expected: str) -> Path:
    if root is None:
        raise DataError(f"{setting}: not set; point it at {expected}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{setting}: {path} does not exist; expected {expected}")
    return path


def _official_folder(root: Path, name: str, marker: str) -> Path:
    """``root`` itself when it holds ``marker``, else ``root/name``."""
    return root if (root / marker).exists() else root / name


# ----------------------------------------------------------------------------- CIFAR


def _numpy_global(submodule: str, name: str) -> Callable:
    """numpy moved ``numpy.core`` to ``numpy._core`` in 2.0; pickles name either."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")


# What a CIFAR batch pickle may build: numpy arrays (protocols 2 and 5), and bytes (protocol 2).
_NUMPY_CORE_GLOBALS = {("multiarray", "_reconstruct"), ("numeric", "_frombuffer")}
_PLAIN_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Builds only what a CIFAR batch holds; any other global is refused before it is called."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[module, name]
        package, _, submodule = module.rpartition(".")
        if package in ("numpy.core", "numpy._core") and (submodule, name) in _NUMPY_CORE_GLOBALS:
            return _numpy_global(submodule, name)
        raise pickle.UnpicklingError(f"it references {module}.{name}")


def _load_cifar_pickle(path: Path, what: str) -> dict[str, object]:
    try:
        with open(path, "rb") as file:
            # latin1 is numpy's documented way to read the Python-2 pickles CIFAR ships
            data = _CifarUnpickler(file, encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as err:
        raise DataError(
            f"{path}: not a {what} (unreadable pickle: {err}); only numpy arrays, lists, dicts "
            "and strings are accepted, nothing that runs code"
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a {what}: expected a dict, got {type(data).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def _names(value: object, path: Path, key: str, count: int) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) != count:
        raise DataError(f"{path}: '{key}' should list {count} class names, got {value!r:.80}")
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in value]


def _cifar_batch(
    path: Path, what: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    expected = f"'data': uint8 array (N, 3072) in CHW order and '{label_key}': N labels"
    batch = _load_cifar_pickle(path, what)
    data, labels = batch.get("data"), batch.get(label_key)
    if data is None or labels is None:
        raise DataError(f"{path}: not a {what}: expected {expected}; keys are {sorted(batch)}")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: wrong shape: expected {expected}, got 'data' {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: '{label_key}' should be a list of integers") from None
    if (
        labels.shape != (data.shape[0],)
        or labels.min(initial=0) < 0
        or labels.max(initial=0) >= num_classes
    ):
        raise DataError(
            f"{path}: '{label_key}' should hold {data.shape[0]} labels in "
            f"0..{num_classes - 1}, got {labels.size} in "
            f"{labels.min(initial=0)}..{labels.max(initial=0)}"
        )
    return data, labels


def read_cifar(root: str | Path, name: str, split: str) -> ArraySplit:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (fine labels) train or test split."""
    if name not in ("cifar10", "cifar100") or split not in ("train", "test"):
        raise ValueError(f"read_cifar: unknown dataset/split {name!r}/{split!r}")
    ten = name == "cifar10"
    folder_name, meta_name = (
        ("cifar-10-batches-py", "batches.meta") if ten else ("cifar-100-python", "meta")
    )
    expected = f"the official python version, {folder_name}/ ({meta_name}, ...)"
    folder = _official_folder(_existing(root, "data.path", expected), folder_name, meta_name)
    if ten:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    else:
        files = [split]
    missing = [f for f in (*files, meta_name) if not (folder / f).is_file()]
    if missing:
        raise DataError(f"data.path: {folder} lacks {', '.join(missing)}; expected {expected}")
    what = f"{'CIFAR-10' if ten else 'CIFAR-100'} batch"
    num_classes, label_key, names_key = (
        (10, "labels", "label_names") if ten else (100, "fine_labels", "fine_label_names")
    )
    meta = _load_cifar_pickle(folder / meta_name, f"{what.split()[0]} meta file")
    class_names = _names(meta.get(names_key), folder / meta_name, names_key, num_classes)
    parts = [_cifar_batch(folder / f, what, label_key, num_classes) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(data).view(-1, 3, 32, 32)  # rows are R plane, G plane, B plane
    return ArraySplit(images, torch.from_numpy(labels), class_names)


# ----------------------------------------------------------------------------- STL-10


def _stl10_images(path: Path, out: Tensor) -> None:
    """Copy images into ``out``, turning STL-10's column-major planes into (C, H, W)."""
    stored = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, STL10_SIZE, STL10_SIZE)
    target = out.numpy()
    for start in range(0, len(stored), 4096):  # chunks bound the transient memory
        target[start : start + 4096] = stored[start : start + 4096].transpose(0, 1, 3, 2)


def _stl10_count(path: Path) -> int:
    if not path.is_file():
        raise DataError(
            f"data.path: {path} is missing; expected the official STL-10 binary "
            "files (stl10_binary/train_X.bin, ...)"
        )
    size = path.stat().st_size
    per_image = 3 * STL10_SIZE * STL10_SIZE
    if size == 0 or size % per_image:
        raise DataError(f"{path}: {size} bytes is not a whole number of 3 x 96 x 96 images")
    return size // per_image


def read_stl10(root: str | Path, split: str) -> ArraySplit:
    """STL-10 split ``train``, ``test``, ``unlabeled`` or ``train+unlabeled`` (labelled first)."""
    parts = {
        "train": ["train"],
        "test": ["test"],
        "unlabeled": ["unlabeled"],
        "train+unlabeled": ["train", "unlabeled"],
    }.get(split)
    if parts is None:
        raise ValueError(f"read_stl10: unknown split {split!r}")
    expected = "the official binary version, stl10_binary/ (train_X.bin, ...)"
    folder = _official_folder(_existing(root, "data.path", expected), "stl10_binary", "train_X.bin")
    counts = [_stl10_count(folder / f"{part}_X.bin") for part in parts]
    images = torch.empty((sum(counts), 3, STL10_SIZE, STL10_SIZE), dtype=torch.uint8)
    labels = torch.full((sum(counts),), UNLABELED, dtype=torch.int64)
    start = 0
    for part, count in zip(parts, counts, strict=True):
        _stl10_images(folder / f"{part}_X.bin", images[start : start + count])
        if part != "unlabeled":
            label_file = folder / f"{part}_y.bin"
            if not label_file.is_file():
                raise DataError(f"data.path: {label_file} is missing (labels of {part}_X.bin)")
            stored = np.fromfile(label_file, dtype=np.uint8).astype(np.int64)
            if stored.shape != (count,) or stored.min(initial=1) < 1 or stored.max(initial=1) > 10:
                raise DataError(
                    f"{label_file}: expected {count} labels in 1..10 (one per image "
                    f"of {part}_X.bin), got {stored.size} in "
                    f"{stored.min(initial=0)}..{stored.max(initial=0)}"
                )
            labels[start : start + count] = torch.from_numpy(stored - 1)
        start += count
    names_file = folder / "class_names.txt"
    names = names_file.read_text().split() if names_file.is_file() else list(STL10_CLASSES)
    if len(names) != 10:
        raise DataError(f"{names_file}: expected 10 class names, one per line")
    return ArraySplit(images, labels, names)


# ----------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (gzipped or not), checked against its own header."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an unsigned-byte IDX file (expected magic 00 00 08 xx)")
    ndim = raw[3]
    dims = (
        np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
        if len(raw) >= 4 + 4 * ndim
        else None
    )
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise DataError(f"{path}: IDX size does not match its header (truncated file?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_fashion_mnist(root: str | Path | None, split: str) -> ArraySplit:
    """Fashion-MNIST ``train`` or ``test``; 28 x 28 grayscale repeated to three channels."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"read_fashion_mnist: unknown split {split!r}")
    expected = (
        "the gzipped IDX files (apt-get install dataset-fashion-mnist puts them in "
        f"{FASHION_MNIST_PATH})"
    )
    folder = _existing(root or FASHION_MNIST_PATH, "data.path", expected)
    arrays = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        name = f"{prefix}-{kind}-ubyte"
        path = next((p for p in (folder / f"{name}.gz", folder / name) if p.is_file()), None)
        if path is None:
            raise DataError(f"data.path: {folder} lacks {name}.gz; expected {expected}")
        array = read_idx(path)
        if array.ndim != ndim:
            raise DataError(f"{path}: expected a {ndim}-d IDX array, got shape {array.shape}")
        arrays.append(array)
    images, labels = arrays
    if len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DataError(
            f"{folder}: {prefix} has {len(images)} images but {len(labels)} labels "
            "(expected one label in 0..9 per image)"
        )
    gray = torch.from_numpy(images.copy())[:, None]
    return ArraySplit(
        gray.expand(-1, 3, -1, -1).contiguous(),
        torch.from_numpy(labels.astype(np.int64)),
        list(FASHION_MNIST_CLASSES),
    )


# ----------------------------------------------------------------------------- class folders


@dataclass
class ImageFiles:
    """Image files and their labels, decoded on demand (streamed or loaded into memory)."""

    paths: list[Path]
    labels: Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Tensor) -> ImageFiles:
        return ImageFiles([self.paths[i] for i in index.tolist()], self.labels[index])


@dataclass
class FolderLayout:
    """What a class-folder tree holds, before any image is decoded."""

    root: Path
    splits: dict[str, ImageFiles]  # "train" and optionally "test" (from train/ and test/|val/)
    class_names: list[str]
    skipped: list[Path] = field(default_factory=list)  # files without an image extension
    empty_classes: list[Path] = field(default_factory=list)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_class_list(path: str | Path) -> list[str]:
    """Class folder names, one per line; blank lines and ``#`` comments are ignored."""
    file = _existing(path, "data.class_list", "a text file with one class folder name per line")
    names = [line.split("#")[0].strip() for line in file.read_text().splitlines()]
    names = [n for n in names if n]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if not names or duplicated:
        raise DataError(
            f"data.class_list: {file} must list distinct class folder names, one "
            f"per line{'; repeated: ' + ', '.join(duplicated) if duplicated else ''}"
        )
    return names


def list_image_folder(
    root: str | Path | None, class_list: str | Path | None = None
) -> FolderLayout:
    """Find the splits, classes and image files of a class-folder tree (nothing is decoded)."""
    expected = ("a folder of images (ROOT/<image>, unlabelled), or a class-folder tree: "
                "ROOT/<class>/<image> or ROOT/train/<class>/<image>")
    root = _existing(root, "data.path", expected)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder; expected {expected}")
    split_dirs = {"train": root / "train"}
    if split_dirs["train"].is_dir():
        test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
        if test_dir is not None:
            split_dirs["test"] = test_dir
    else:
        split_dirs = {"train": root}
    train_dir = split_dirs["train"]
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    if not classes:
        return _unlabelled_folder(root, train_dir, class_list, expected)
    if class_list is not None:
        wanted = read_class_list(class_list)
        missing = [n for n in wanted if n not in classes]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DataError(
                f"data.class_list: {len(missing)} classes have no folder in {train_dir}: {shown}"
            )
        classes = wanted
    elif "test" in split_dirs:
        extra = sorted(
            {p.name for p in split_dirs["test"].iterdir() if p.is_dir() and p.name[0] != "."}
            - set(classes)
        )
        if extra:
            raise DataError(
                f"data.path: {split_dirs['test']} has class folders that "
                f"{train_dir} lacks: {', '.join(extra[:10])}"
            )
    layout = FolderLayout(root, {}, classes)
    for split, split_dir in split_dirs.items():
        paths, labels = [], []
        for label, name in enumerate(classes):
            class_dir = split_dir / name
            found = (
                sorted(
                    p for p in class_dir.rglob("*") if p.is_file() and not _is_hidden(p, class_dir)
                )
                if class_dir.is_dir()
                else []
            )
            images = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
            layout.skipped += [p for p in found if p.suffix.lower() not in IMAGE_EXTENSIONS]
            if not images and split == "train":
                layout.empty_classes.append(class_dir)
            paths += images
            labels += [label] * len(images)
        layout.splits[split] = ImageFiles(paths, torch.tensor(labels, dtype=torch.int64))
    return layout


def _unlabelled_folder(
    root: Path, folder: Path, class_list: str | Path | None, expected: str
) -> FolderLayout:
    """A flat folder of images without class folders: one unlabelled training pool."""
    found = sorted(p for p in folder.iterdir() if p.is_file() and not _is_hidden(p, folder))
    images = [p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise DataError(f"data.path: no images and no class folders in {folder} (the folder "
                        f"is empty); expected images, or {expected}")
    if class_list is not None:
        raise DataError(f"data.class_list: {folder} has no class folders to pick from")
    unlabelled = torch.full((len(images),), UNLABELED, dtype=torch.int64)
    skipped = [p for p in found if p.suffix.lower() not in IMAGE_EXTENSIONS]
    return FolderLayout(root, {"train": ImageFiles(images, unlabelled)}, [], skipped)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: alpha dropped, 16/32-bit values reduced to 8 bits."""
    if image.mode.startswith("I;16"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F"):
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    return image if image.mode == "RGB" else image.convert("RGB")


class ImageTooLarge(ValueError):
    """An image file above ``MAX_PIXELS``: a bad file like an undecodable one."""


_LIMIT = f"the limit of {MAX_PIXELS:,} pixels (adios.data.readers.MAX_PIXELS)"


def _open_image(data: bytes) -> Image.Image:
    """``Image.open`` without PIL's DecompressionBombWarning (``_decode`` applies the limit
    itself, to the pixels it would decode); PIL's DecompressionBombError, for more than twice
    the limit, becomes ImageTooLarge."""
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"more than {2 * MAX_PIXELS:,} pixels, over {_LIMIT}; shrink it "
                            "or remove it") from None


def _decoded(image: Image.Image) -> Image.Image:
    """The opened image's pixels as 8-bit RGB, EXIF orientation applied, decoded now (while
    its file is open: an RGB image is converted lazily)."""
    if "exif" in image.info:  # exif_transpose copies the image, so only when there is EXIF
        image = ImageOps.exif_transpose(image)
    image = _to_rgb(image)
    image.load()
    return image


def _decode(
    data: bytes, size: int, whole: bool = False
) -> tuple[Tensor, str, int, int, tuple[int, int]]:
    """Decoded image as in ``decode_image`` (``whole``: ``decode_whole``'s square), with the
    file's PIL mode, width and height, and the (height, width) the stored pixels fill."""
    with warnings.catch_warnings():  # PIL's warning would come once per worker, then decode
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _open_image(data) as image:
            mode, (width, height) = image.mode, image.size
            image.draft("RGB", (size, size))
            decoded = image.size[0] * image.size[1]  # a JPEG's at its reduced DCT scale
            if decoded > MAX_PIXELS:
                raise ImageTooLarge(f"{width} x {height} = {decoded:,} pixels to decode, over "
                                    f"{_LIMIT}; shrink it or remove it")
            image = _decoded(image)
    if whole:
        square, extent = _whole_square(image, size)
        return square, mode, width, height, extent
    if min(image.size) != size:
        image = TF.resize(image, size, antialias=True)
    if image.size != (size, size):
        image = TF.center_crop(image, [size, size])
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(size, size, 3).permute(2, 0, 1), mode, width, height, (size, size)


def _whole_square(image: Image.Image, size: int) -> tuple[Tensor, tuple[int, int]]:
    """The whole image, longer side at most ``size`` (never enlarged), top-left in a zero
    (3, size, size); and the (height, width) it fills."""
    width, height = image.size
    if max(width, height) > size:
        scale = size / max(width, height)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        image = TF.resize(image, [height, width], antialias=True)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    square = torch.zeros((3, size, size), dtype=torch.uint8)
    square[:, :height, :width] = pixels.view(height, width, 3).permute(2, 0, 1)
    return square, (height, width)


def decode_image(data: bytes, size: int) -> Tensor:
    """uint8 (3, size, size): shorter side resized to ``size``, centre square kept.

    JPEGs are decoded at the smallest DCT scale that keeps both sides at least ``size`` (PIL's
    draft mode), several times faster than decoding in full and shrinking afterwards.
    """
    return _decode(data, size)[0].contiguous()


def decode_whole(data: bytes, size: int) -> tuple[Tensor, tuple[int, int]]:
    """uint8 (3, size, size) holding the whole image (longer side shrunk to ``size`` if larger)
    at the top left, zeros elsewhere; and the (height, width) it fills, where crops may go."""
    pixels, *_, extent = _decode(data, size, whole=True)
    return pixels.contiguous(), extent


def load_image(path: Path, size: int, whole: bool = False) -> tuple[Tensor, tuple[int, int]]:
    """Decode one file for training (``decode_image``, or ``decode_whole`` with ``whole``) and
    the extent its pixels fill; a failure names the file (it was validated at load)."""
    try:
        pixels, *_, extent = _decode(path.read_bytes(), size, whole)
        return pixels.contiguous(), extent
    except Exception as err:  # noqa: BLE001 - any decoder failure is reported the same way
        raise DataError(
            f"{path}: cannot decode ({type(err).__name__}: {err}); it was readable "
            "when the dataset was loaded - did it change?"
        ) from None


class FileRecord(NamedTuple):
    mode: str  # PIL mode before conversion to RGB, "" when unreadable
    width: int
    height: int
    digest: bytes  # blake2b of the file's bytes, for duplicate detection
    error: str  # "" when the file decoded
    extent: tuple[int, int] = (0, 0)  # (height, width) its decoded pixels fill
    moments: tuple[float, ...] = ()  # pixel_moments of its decoded pixels, () when unreadable


class _InspectFiles(torch.utils.data.Dataset):
    """Decode-and-describe tasks of ``_DECODE_BATCH`` files each, for DataLoader workers."""

    def __init__(self, paths: Sequence[Path], size: int, keep: int, whole: bool = False) -> None:
        self.paths, self.size, self.keep, self.whole = paths, size, keep, whole

    def __len__(self) -> int:
        return -(-len(self.paths) // _DECODE_BATCH)

    def __getitem__(self, task: int) -> tuple[int, Tensor | None, list[FileRecord]]:
        start = task * _DECODE_BATCH
        paths = self.paths[start : start + _DECODE_BATCH]
        kept = max(0, min(len(paths), self.keep - start))
        pixels = torch.zeros((kept, 3, self.size, self.size), dtype=torch.uint8) if kept else None
        records = []
        for i, path in enumerate(paths):
            mode, width, height, digest, error, extent = "", 0, 0, b"", "", (0, 0)
            moments: tuple[float, ...] = ()
            try:
                data = path.read_bytes()
                digest = hashlib.blake2b(data, digest_size=16).digest()
                decoded, mode, width, height, extent = _decode(data, self.size, self.whole)
                moments = pixel_moments(decoded[:, : extent[0], : extent[1]])
                if i < kept:
                    pixels[i] = decoded
            except Exception as err:  # noqa: BLE001 - every failure is reported with its file
                error = f"{type(err).__name__}: {err}"
            records.append(FileRecord(mode, width, height, digest, error, extent, moments))
        return start, pixels, records


def pixel_moments(pixels: Tensor) -> tuple[float, ...]:
    """Per-channel sums and sums of squares of uint8 pixels (..., 3, H, W) in [0, 1] units, and
    the pixels per channel: what ``channel_stats`` adds up over any number of images."""
    values = pixels.movedim(-3, 0).reshape(3, -1).to(torch.float64) / 255
    return (*values.sum(1).tolist(), *values.square().sum(1).tolist(), float(values.shape[1]))


def channel_stats(moments: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and standard deviation (rounded to 4 places) from ``pixel_moments``."""
    total = torch.tensor([list(m) for m in moments if m], dtype=torch.float64).sum(0)
    mean = total[:3] / total[6]
    std = (total[3:6] / total[6] - mean.square()).clamp_min(0).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def _as_is(item: object) -> object:
    return item


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, cores or 1)


def inspect_files(
    paths: Sequence[Path],
    size: int,
    *,
    keep: int = 0,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "decoding",
    whole: bool = False,
) -> tuple[Tensor, list[FileRecord]]:
    """Decode every file in worker processes; pixels of the first ``keep`` files are returned.

    Decoding everything is how a truncated file is caught before training rather than during it.
    Rows of files that failed are zero; their record says why. ``whole``: ``decode_whole``
    squares, each record's ``extent`` saying where the image lies in its square.
    """
    workers = default_workers() if workers is None else workers
    images = torch.zeros((min(keep, len(paths)), 3, size, size), dtype=torch.uint8)
    records: list[FileRecord] = []
    tasks = _InspectFiles(paths, size, keep, whole)
    loader = torch.utils.data.DataLoader(
        tasks, batch_size=None, num_workers=workers, collate_fn=_as_is
    )
    with tqdm(
        total=len(paths),
        desc=desc,
        unit="img",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        for start, pixels, batch in loader:
            if pixels is not None:
                images[start : start + len(pixels)] = pixels
            records += batch
            bar.update(len(batch))
    return images, records


def report_bad_files(bad: list[tuple[Path, str]], policy: str) -> None:
    """Apply ``data.bad_files``: raise listing the files, or warn listing them."""
    if not bad:
        return
    shown = "\n".join(f"  {path}: {reason}" for path, reason in bad[:20])
    more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
    if policy == "error":
        raise DataError(
            f"{len(bad)} files cannot be decoded:\n{shown}{more}\nremove them, list "
            "them all with `adios data check`, or set data.bad_files=skip"
        )
    warnings.warn(
        f"skipping {len(bad)} files that cannot be decoded (data.bad_files=skip):\n{shown}{more}",
        stacklevel=2,
    )


def warn_skipped(skipped: list[Path]) -> None:
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"skipping {len(skipped)} files without an image extension "
            f"({', '.join(IMAGE_EXTENSIONS)}): {shown}",
            stacklevel=2,
        )


def detect_format(root: str | Path) -> str:
    """The ``data.name`` whose official layout ``root`` holds (``folder`` otherwise)."""
    path = _existing(root, "data.path", "a dataset folder")
    markers = {
        "cifar10": ("cifar-10-batches-py", "batches.meta"),
        "cifar100": ("cifar-100-python", "meta"),
        "stl10": ("stl10_binary", "train_X.bin"),
    }
    for name, (folder, marker) in markers.items():
        if (path / marker).is_file() or (path / folder / marker).is_file():
            return name
    if any(path.glob("*-images-idx3-ubyte*")):
        return "fashion-mnist"
    return "folder"


ARRAY_FORMATS = ("cifar10", "cifar100", "stl10", "fashion-mnist")  # official layouts, detected


def dataset_name(name: str, path: str | Path | None, explicit: bool) -> str:
    """The reader for ``data.path``: the layout found there, or (``explicit``: data.name was
    given) ``name``, which must not contradict what is there."""
    if path is None:
        return name
    found = detect_format(path)
    if not explicit:
        return found
    if name == "shapes":
        raise DataError(f"data.name=shapes generates its scenes and would ignore data.path={path}; "
                        f"leave data.name out to train on what {path} holds ({found})")
    if found in ARRAY_FORMATS and found != name:
        raise DataError(f"data.name={name}: {path} holds the official {found} layout; set "
                        f"data.name={found} or leave data.name out")
    return name
