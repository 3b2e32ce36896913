"""``adios data check``: its report and exit status on clean and broken datasets."""

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adios.cli import main


def write_tree(root: Path) -> None:
    rng = np.random.default_rng(1)
    for split, count in (("train", 4), ("test", 2)):
        for name in ("ant", "bee"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    write_tree(root)
    return root


def check(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["data", "check", *args, "--no-progress", "data.workers=0"])
    out, err = capsys.readouterr()
    return status, out, err


def test_clean_folder_passes_with_counts_sizes_and_modes(clean, capsys):
    status, out, _ = check(capsys, str(clean))
    assert status == 0
    assert "train: 8 images" in out and "test: 4 images" in out
    assert "per class: ant 4, bee 4" in out and "per class: ant 2, bee 2" in out
    assert "sizes (w x h): 24x20 8" in out and "modes: RGB 8" in out
    assert "duplicates: none" in out and out.strip().endswith("OK: no problems found")
    # an image_size above the images' size is noted, not a problem (they are upscaled)
    status, out, _ = check(capsys, str(clean), "data.name=folder", "data.image_size=32")
    assert status == 0 and "smaller than data.image_size=32: 8" in out


def test_broken_folder_lists_each_problem_and_fails(clean, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, "JPEG")
    (root / "train" / "ant" / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    shutil.copy(root / "train" / "bee" / "1.png", root / "test" / "bee" / "copy.png")
    (root / "train" / "bee" / "readme.txt").write_text("notes")
    Image.new("LA", (24, 20)).save(root / "train" / "bee" / "gray.png")
    status, out, _ = check(capsys, f"data.path={root}", "data.name=folder")
    assert status == 1
    assert "PROBLEM: 1 unreadable files in train" in out and "ant/cut.jpg" in out
    assert "PROBLEM: 1 groups of identical images (1 across splits)" in out
    assert "bee/1.png = test:" in out and "copy.png" in out
    assert "skipped (no image extension" in out and "readme.txt" in out
    assert "modes: RGB 8, LA 1" in out
    assert "2 problems" in out


def test_missing_path_and_nothing_to_check(tmp_path, capsys):
    status, _, err = check(capsys, str(tmp_path / "nowhere"))
    assert status == 2 and "nowhere does not exist" in err
    status, _, err = check(capsys)
    assert status == 2 and "nothing on disk to check" in err


def test_cifar_batches_are_detected_and_duplicates_found(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    rows[5] = rows[0]  # a test image that is also a training image
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    for i, name in enumerate([*(f"data_batch_{b}" for b in range(1, 6)), "test_batch"]):
        batch = {"data": rows[i : i + 1], "labels": [i]}
        (folder / name).write_bytes(pickle.dumps(batch))
    status, out, _ = check(capsys, str(tmp_path))
    assert status == 1 and "cifar10 (official layout)" in out
    assert "train: 5 images" in out and "class4 1, class5 0" in out
    assert "1 groups of identical images (1 across splits)" in out and "train:0 = test:0" in out


def test_check_prints_the_mean_and_std_that_training_measures(tmp_path, capsys):
    """Images stored at data.image_size are not resized: their statistics, computed directly."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    pixels[..., 0] //= 2  # channels that differ
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    status, out, _ = check(capsys, str(tmp_path), "data.image_size=16")
    assert status == 0 and "a folder of images without class folders (unlabelled)" in out
    values = pixels.reshape(-1, 3) / 255
    mean = ", ".join(f"{v:.4f}" for v in values.mean(0))
    std = ", ".join(f"{v:.4f}" for v in values.std(0))
    assert f"mean [{mean}] std [{std}]" in out
    assert f"data.mean=[{mean}] data.std=[{std}]" in out
    from adios.config import load_config
    from adios.data.datasets import load_dataset

    dataset = load_dataset(load_config(["data.name=folder", f"data.path={tmp_path}",
                                        "data.image_size=16", "data.workers=0"]).data)
    assert ", ".join(f"{v:.4f}" for v in dataset.mean) == mean
    assert ", ".join(f"{v:.4f}" for v in dataset.std) == std
