"""Readers on small files written here in the official layouts, checked pixel by pixel."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adios.config import load_config
from adios.data.datasets import load_dataset
from adios.data.readers import (
    FASHION_MNIST_PATH,
    UNLABELED,
    DataError,
    decode_image,
    detect_format,
    list_image_folder,
    read_cifar,
    read_fashion_mnist,
    read_stl10,
)

# ----------------------------------------------------------------------------- CIFAR


def cifar_value(i: int, c: int, y: int, x: int) -> int:
    return (i * 7 + c * 50 + y * 3 + x) % 256


def cifar_rows(first: int, count: int) -> np.ndarray:
    """Rows as the CIFAR docs define them: 1024 red values, then green, then blue, row-major."""
    rows = np.zeros((count, 3072), dtype=np.uint8)
    for i in range(count):
        for c in range(3):
            for y in range(32):
                for x in range(32):
                    rows[i, c * 1024 + y * 32 + x] = cifar_value(first + i, c, y, x)
    return rows


class Py2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python-2 ``str`` (BINSTRING), as the official files are."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def dump(obj, path: Path, py2: bool = False) -> None:
    with open(path, "wb") as file:
        (Py2Pickler(file, protocol=2) if py2 else pickle.Pickler(file, protocol=5)).dump(obj)


def write_cifar10(root: Path, per_batch: int = 2) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    dump(
        {"label_names": names, "num_cases_per_batch": per_batch}, folder / "batches.meta", py2=True
    )
    for b in range(6):
        name = f"data_batch_{b + 1}" if b < 5 else "test_batch"
        first = b * per_batch
        batch = {
            "batch_label": name,
            "labels": [(first + i) % 10 for i in range(per_batch)],
            "data": cifar_rows(first, per_batch),
            "filenames": [f"{first + i}.png" for i in range(per_batch)],
        }
        dump(batch, folder / name, py2=b % 2 == 0)  # both pickle dialects
    return folder


def test_cifar10_reads_chw_rows_and_labels(tmp_path):
    write_cifar10(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train = read_cifar(root, "cifar10", "train")
        assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
        for i in range(10):
            for c, y, x in ((0, 0, 0), (1, 5, 9), (2, 31, 30), (0, 17, 2)):
                assert train.images[i, c, y, x] == cifar_value(i, c, y, x)
        assert train.labels.tolist() == [i % 10 for i in range(10)]
        assert train.class_names[9] == "truck"
    test = read_cifar(tmp_path, "cifar10", "test")
    expected = torch.tensor(
        [
            [
                [[cifar_value(10 + i, c, y, x) for x in range(32)] for y in range(32)]
                for c in range(3)
            ]
            for i in range(2)
        ],
        dtype=torch.uint8,
    )
    assert torch.equal(test.images, expected)


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    dump(
        {
            "fine_label_names": [f"c{i}" for i in range(100)],
            "coarse_label_names": [f"s{i}" for i in range(20)],
        },
        folder / "meta",
    )
    for split, first, labels in (("train", 0, [97, 94, 91]), ("test", 3, [5, 6, 7])):
        dump(
            {"data": cifar_rows(first, 3), "fine_labels": labels, "coarse_labels": [0, 1, 2]},
            folder / split,
        )
    train = read_cifar(tmp_path, "cifar100", "train")
    assert train.labels.tolist() == [97, 94, 91] and train.class_names[97] == "c97"
    assert train.images[2, 1, 4, 8] == cifar_value(2, 1, 4, 8)
    assert read_cifar(tmp_path, "cifar100", "test").images[0, 2, 0, 1] == cifar_value(3, 2, 0, 1)
    assert detect_format(tmp_path) == "cifar100" and detect_format(folder) == "cifar100"


OFFICIAL_CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


@pytest.mark.skipif(
    "ADIOS_CIFAR10_PYTHON" not in os.environ,
    reason="set ADIOS_CIFAR10_PYTHON to the folder holding the official cifar-10-batches-py",
)
def test_official_cifar10_python_batches():
    root = Path(os.environ["ADIOS_CIFAR10_PYTHON"])
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    for name, md5 in OFFICIAL_CIFAR10_MD5.items():
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() == md5, name
    train, test = read_cifar(root, "cifar10", "train"), read_cifar(root, "cifar10", "test")
    assert train.labels.bincount().tolist() == [5000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    mean = train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=1e-4)


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_rejected_without_running_it(tmp_path):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    dump({"data": RunsCode(marker), "labels": [0]}, folder / "data_batch_3")
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 batch.*(posix|os)\.system"):
        read_cifar(tmp_path, "cifar10", "train")
    assert not marker.exists()
    # the same payload pickled as a numpy object array holding it
    dump(
        {"data": np.array([RunsCode(marker)], dtype=object), "labels": [0]}, folder / "data_batch_3"
    )
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar(tmp_path, "cifar10", "train")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([1, 2, 3], "expected a dict, got list"),
        ({"images": np.zeros((2, 3072), np.uint8)}, "expected 'data': uint8 array .N, 3072."),
        (
            {"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]},
            r"wrong shape: .*got 'data' uint8 \(2, 1024\)",
        ),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "got 'data' float32"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"2 labels in 0\.\.9"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, r"2 labels in 0\.\.9"),
    ],
)
def test_malformed_cifar_batches_name_the_file_and_what_was_expected(tmp_path, batch, message):
    folder = write_cifar10(tmp_path)
    dump(batch, folder / "data_batch_2")
    with pytest.raises(DataError, match=message) as err:
        read_cifar(tmp_path, "cifar10", "train")
    assert str(folder / "data_batch_2") in str(err.value)


def test_truncated_or_missing_cifar_files(tmp_path):
    folder = write_cifar10(tmp_path)
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 batch"):
        read_cifar(tmp_path, "cifar10", "test")
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError, match="lacks data_batch_5"):
        read_cifar(tmp_path, "cifar10", "train")
    with pytest.raises(DataError, match="does not exist"):
        read_cifar(tmp_path / "nowhere", "cifar10", "train")


# ----------------------------------------------------------------------------- STL-10


def stl_value(n: int, c: int, y: int, x: int) -> int:
    return (n * 11 + c * 40 + y * 2 + x * 5) % 256  # not symmetric in x and y


def write_stl10(root: Path, counts=(("train", 3), ("test", 2), ("unlabeled", 2))) -> Path:
    """Each channel column by column (y fastest), as the STL-10 readme specifies."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    first = 0
    for split, count in counts:
        data = bytearray()
        for n in range(first, first + count):
            for c in range(3):
                for x in range(96):
                    data += bytes(stl_value(n, c, y, x) for y in range(96))
        (folder / f"{split}_X.bin").write_bytes(bytes(data))
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(
                bytes((n % 10) + 1 for n in range(first, first + count))
            )
        first += count
    return folder


@pytest.fixture(scope="module")
def stl10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stl")
    write_stl10(root)
    return root


def test_stl10_column_major_planes_and_all_splits(stl10_root):
    raw = (stl10_root / "stl10_binary" / "train_X.bin").read_bytes()
    train = read_stl10(stl10_root, "train")
    assert train.images.shape == (3, 3, 96, 96)
    # byte k of a plane is pixel (row k % 96, column k // 96)
    assert train.images[0, 0, 1, 0] == raw[1] and train.images[0, 0, 0, 1] == raw[96]
    assert train.images[1, 2, 7, 3] == raw[27648 + 2 * 9216 + 3 * 96 + 7]
    expected = torch.tensor(
        [
            [[[stl_value(n, c, y, x) for x in range(96)] for y in range(96)] for c in range(3)]
            for n in range(3)
        ],
        dtype=torch.uint8,
    )
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == [0, 1, 2]  # files hold 1..10
    test = read_stl10(stl10_root, "test")
    assert test.labels.tolist() == [3, 4] and test.images[1, 1, 50, 9] == stl_value(4, 1, 50, 9)
    unlabeled = read_stl10(stl10_root, "unlabeled")
    assert unlabeled.labels.tolist() == [UNLABELED] * 2
    assert unlabeled.images[0, 0, 95, 94] == stl_value(5, 0, 95, 94)
    both = read_stl10(stl10_root / "stl10_binary", "train+unlabeled")
    assert torch.equal(both.images, torch.cat([train.images, unlabeled.images]))
    assert both.labels.tolist() == [0, 1, 2, UNLABELED, UNLABELED]
    assert both.class_names[2] == "car"


def test_stl10_bad_sizes(tmp_path):
    folder = write_stl10(tmp_path, counts=(("train", 1), ("test", 1)))
    (folder / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(DataError, match=r"train_y.bin: expected 1 labels in 1\.\.10"):
        read_stl10(tmp_path, "train")
    (folder / "test_X.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match="not a whole number of 3 x 96 x 96 images"):
        read_stl10(tmp_path, "test")
    with pytest.raises(DataError, match="unlabeled_X.bin is missing"):
        read_stl10(tmp_path, "unlabeled")


def test_stl10_dataset_trains_on_unlabelled_images_too(stl10_root):
    cfg = load_config(
        [
            "data.name=stl10",
            f"data.path={stl10_root}",
            "data.split=train+unlabeled",
            "data.image_size=48",
            "data.num_val=1",
        ]
    ).data
    dataset = load_dataset(cfg)
    assert dataset.train.images.shape == (4, 3, 48, 48)  # 2 labelled + 2 unlabelled, resized
    assert dataset.train.labels.tolist()[2:] == [UNLABELED, UNLABELED]
    assert len(dataset.val) == 1 and dataset.val.labels[0] != UNLABELED
    assert dataset.test.labels.sort().values.tolist() == [3, 4]


# ----------------------------------------------------------------------------- Fashion-MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_gray_to_rgb(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 251
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([9, 0]))
    split = read_fashion_mnist(tmp_path, "train")
    assert split.images.shape == (2, 3, 28, 28)
    for c in range(3):
        assert split.images[1, c, 3, 27] == images[1, 3, 27]
    assert split.labels.tolist() == [9, 0] and split.class_names[9] == "Ankle boot"
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([9, 0, 1]))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        read_fashion_mnist(tmp_path, "train")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x0d\x03junk"))
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        read_fashion_mnist(tmp_path, "train")
    with pytest.raises(DataError, match="lacks t10k-images-idx3-ubyte.gz"):
        read_fashion_mnist(tmp_path, "test")


@pytest.mark.skipif(not Path(FASHION_MNIST_PATH).is_dir(), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_from_the_debian_package():
    test = read_fashion_mnist(None, "test")
    assert test.images.shape == (10000, 3, 28, 28)
    assert test.labels.bincount().tolist() == [1000] * 10


# ----------------------------------------------------------------------------- class folders


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array.astype(np.uint8))
    (image.convert(mode) if mode else image).save(path)


def pattern(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3))


def write_folder(
    root: Path, classes=("cat", "dog", "fox"), per_class: int = 4, seed: int = 0
) -> dict:
    pixels = {}
    for k, name in enumerate(classes):
        for i in range(per_class):
            path = root / name / f"{i}.png"
            pixels[path] = pattern(seed + 100 * k + i)
            save(path, pixels[path])
    return pixels


def as_chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.uint8)).permute(2, 0, 1)


def test_folder_split_layout_and_class_list_subset(tmp_path):
    train = write_folder(tmp_path / "train")
    test = write_folder(tmp_path / "test", per_class=2, seed=50)
    (tmp_path / "classes.txt").write_text("# subset\nfox\n\ncat\n")
    layout = list_image_folder(tmp_path, tmp_path / "classes.txt")
    assert layout.class_names == ["fox", "cat"]  # the file's order gives the labels
    files = layout.splits["train"]
    assert [p.parent.name for p in files.paths] == ["fox"] * 4 + ["cat"] * 4
    assert files.labels.tolist() == [0] * 4 + [1] * 4
    assert len(layout.splits["test"]) == 4
    cfg = load_config(
        [
            "data.name=folder",
            f"data.path={tmp_path}",
            "data.image_size=16",
            f"data.class_list={tmp_path / 'classes.txt'}",
            "data.num_val=2",
            "data.workers=0",
        ]
    ).data
    dataset = load_dataset(cfg)
    assert dataset.class_names == ["fox", "cat"] and dataset.num_classes == 2
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (6, 2, 4)
    expected = {as_chw(v).numpy().tobytes(): k for k, v in {**train, **test}.items()}
    for split, folder in ((dataset.train, "train"), (dataset.val, "train"), (dataset.test, "test")):
        for image, label in zip(split.images, split.labels, strict=True):
            path = expected[image.numpy().tobytes()]  # every image is pixel-exact
            assert path.parts[-3] == folder and dataset.class_names[label] == path.parent.name


def test_single_tree_carves_val_and_test_and_a_seed_fixes_them(tmp_path):
    write_folder(tmp_path, per_class=10)
    overrides = [
        "data.name=folder",
        f"data.path={tmp_path}",
        "data.image_size=16",
        "data.workers=0",
        "data.num_val=5",
        "data.num_test=6",
        "data.num_train=12",
    ]
    first = load_dataset(load_config(overrides).data)
    again = load_dataset(load_config(overrides).data)
    other = load_dataset(load_config([*overrides, "data.seed=1"]).data)
    assert (len(first.train), len(first.val), len(first.test)) == (12, 5, 6)
    rows = [
        {img.numpy().tobytes() for img in s.images} for s in (first.train, first.val, first.test)
    ]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert torch.equal(first.val.images, again.val.images)
    assert not torch.equal(first.val.images, other.val.images)
    assert len(set(first.train.labels[:6].tolist())) > 1  # shuffled: a kNN bank mixes classes


def test_folder_image_conversions_and_policies(tmp_path):
    rgb = pattern(1)
    save(tmp_path / "a" / "rgba.png", np.dstack([rgb, np.full((16, 16), 7)]))  # alpha dropped
    save(tmp_path / "a" / "gray.png", rgb[..., 0], mode="L")
    Image.frombytes("CMYK", (16, 16), bytes([0, 255, 255, 0] * 256)).save(
        tmp_path / "a" / "cmyk.jpg"
    )
    save(tmp_path / "b" / "small.png", np.zeros((6, 6, 3)) + [10, 200, 30])  # upscaled
    wide = np.zeros((16, 32, 3))
    wide[:, 8:24] = [250, 0, 0]  # the centre square of a 32 x 16 image
    save(tmp_path / "b" / "wide.png", wide)
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0")
    decode = lambda name: decode_image((tmp_path / name).read_bytes(), 16)  # noqa: E731
    assert torch.equal(decode("a/rgba.png"), as_chw(rgb))
    assert torch.equal(decode("a/gray.png"), as_chw(rgb[..., :1].repeat(3, axis=2)))
    assert (decode("a/cmyk.jpg").int() - torch.tensor([255, 0, 0])[:, None, None]).abs().max() <= 3
    assert torch.equal(decode("b/small.png"), as_chw(np.zeros((16, 16, 3)) + [10, 200, 30]))
    assert torch.equal(decode("b/wide.png"), as_chw(np.zeros((16, 16, 3)) + [250, 0, 0]))
    cfg = load_config(
        [
            "data.name=folder",
            f"data.path={tmp_path}",
            "data.image_size=16",
            "data.workers=0",
            "data.num_val=1",
            "data.num_test=1",
        ]
    ).data
    with pytest.warns(UserWarning, match=r"skipping 1 files without an image extension.*notes"):
        dataset = load_dataset(cfg)
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 5


def test_undecodable_images_stop_the_load_or_are_skipped_by_policy(tmp_path):
    write_folder(tmp_path, per_class=4)
    buffer = io.BytesIO()
    Image.fromarray(pattern(5, 64).astype(np.uint8)).save(buffer, "JPEG")
    (tmp_path / "dog" / "cut.jpg").write_bytes(buffer.getvalue()[:900])  # truncated JPEG
    (tmp_path / "fox" / "fake.png").write_text("plain text with an image name")
    overrides = [
        "data.name=folder",
        f"data.path={tmp_path}",
        "data.image_size=16",
        "data.workers=0",
        "data.num_val=3",
        "data.num_test=3",
    ]
    with pytest.raises(DataError, match="2 files cannot be decoded") as err:
        load_dataset(load_config(overrides).data)
    assert "dog/cut.jpg" in str(err.value) and "fox/fake.png" in str(err.value)
    with pytest.warns(UserWarning, match="skipping 2 files that cannot be decoded"):
        dataset = load_dataset(load_config([*overrides, "data.bad_files=skip"]).data)
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 12


def test_an_image_above_the_pixel_limit_is_a_bad_file_named_with_the_limit(tmp_path):
    """A 100-megapixel PNG printed PIL's DecompressionBombWarning and trained; now it is
    refused like an undecodable file (error, or skipped by policy), naming the limit."""
    write_folder(tmp_path, per_class=4)
    Image.new("1", (10_000, 10_000)).save(tmp_path / "cat" / "big.png")  # 100 MP, 12 KB
    Image.new("1", (20_000, 9_000)).save(tmp_path / "dog" / "huge.png")  # over PIL's error
    # a JPEG decodes at an eighth of its size: a 100 MP photo is 1.6 MP to decode, and trains
    Image.new("L", (10_000, 10_000), 90).save(tmp_path / "fox" / "photo.jpg", quality=20)
    overrides = ["data.name=folder", f"data.path={tmp_path}", "data.image_size=16",
                 "data.workers=0", "data.num_val=3", "data.num_test=3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match="2 files cannot be decoded") as err:
            load_dataset(load_config(overrides).data)
        with pytest.warns(UserWarning, match="skipping 2 files that cannot be decoded"):
            dataset = load_dataset(load_config([*overrides, "data.bad_files=skip"]).data)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    message = str(err.value)
    assert "cat/big.png: ImageTooLarge: 10000 x 10000 = 100,000,000 pixels" in message
    assert "dog/huge.png: ImageTooLarge: more than 178,956,970 pixels" in message
    assert message.count("over the limit of 89,478,485 pixels") == 2
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 13


def test_folder_structure_errors(tmp_path):
    load = lambda *o: load_dataset(load_config(["data.name=folder", "data.workers=0", *o]).data)  # noqa: E731
    with pytest.raises(DataError, match="data.path: .*nowhere does not exist"):
        load(f"data.path={tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="data.path: not set"):
        load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class folders in .*empty .the folder is empty"):
        load(f"data.path={tmp_path / 'empty'}")
    save(tmp_path / "loose" / "x.png", pattern(0))
    with pytest.raises(DataError, match="leave fewer than 2 of the 1 training images"):
        load(f"data.path={tmp_path / 'loose'}")
    write_folder(tmp_path / "tree")
    (tmp_path / "tree" / "owl").mkdir()
    with pytest.raises(DataError, match="1 class folders hold no images: .*owl"):
        load(f"data.path={tmp_path / 'tree'}")
    (tmp_path / "list.txt").write_text("cat\nwolf\n")
    (tmp_path / "tree_list.txt").write_text("cat\ndog\nfox\n")
    with pytest.raises(DataError, match="data.class_list: 1 classes have no folder .*wolf"):
        load(f"data.path={tmp_path / 'tree'}", f"data.class_list={tmp_path / 'list.txt'}")
    write_folder(tmp_path / "split" / "train", classes=("cat",))
    write_folder(tmp_path / "split" / "test", classes=("cat", "eel"))
    with pytest.raises(DataError, match="has class folders that .* lacks: eel"):
        load(f"data.path={tmp_path / 'split'}")
    with pytest.raises(
        DataError,
        match="data.num_val: 20 validation and 2 test images leave fewer than 2 of the 12 labelled",
    ):
        load(
            f"data.path={tmp_path / 'tree'}",
            "data.num_val=20",
            "data.num_test=2",
            f"data.class_list={tmp_path / 'tree_list.txt'}",
        )
