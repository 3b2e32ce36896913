"""Reports say what a run is from its configuration, and their mask panel shows what moves."""

import json

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from adios.cli import main
from adios.errors import RunDirError
from adios.evaluation.figures import curve_panels, draw_curves, save, with_epoch_float
from adios.evaluation.report import RunRecord, run_description, run_title, write_report

CONFIG = {
    "preset": "shapes-simclr-adios", "seed": 3,
    "data": {"name": "shapes", "image_size": 32, "num_train": 2048, "num_val": None,
             "num_test": None, "seed": 0},
    "model": {"backbone": "resnet18", "width": 16},
    "masker": {"n_masks": 4}, "objective": {"name": "simclr"},
    "masking": {"mode": "adios", "alpha_sparsity": 1.0},
    "optim": {"name": "adamw", "batch_size": 64, "lr": 0.002}, "train": {"epochs": 2},
}
METRICS = [
    {"epoch": 0, "step": 0, "knn_acc": 0.3, "mask_confidence": 0.27},
    {"epoch": 1, "step": 5, "loss": 9.0, "adv_loss": 8.0, "mask_sizes": [0.25] * 4},
    {"epoch": 1, "step": 10, "elapsed_s": 5.0, "knn_acc": 0.32, "mask_confidence": 0.41},
    {"epoch": 2, "step": 20, "elapsed_s": 10.0, "knn_acc": 0.35, "mask_confidence": 0.58},
]


def make_run(tmp_path, config=CONFIG, name="final_copy"):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    (run_dir / "summary.json").write_text(json.dumps({"wall_s": 120.0, "knn_acc": 0.35}))
    return run_dir


def test_title_and_header_come_from_the_config_not_the_directory(tmp_path):
    record = RunRecord.read(make_run(tmp_path))
    title = "SimCLR + ADIOS (N=4) on shapes, seed 3 (preset shapes-simclr-adios)"
    assert run_title(record) == title
    header = dict(run_description(record))
    assert header["data"] == ("shapes 32 px, 2,048/1,024/1,024 scenes train/val/test "
                              "(data seed 0)")
    html_path, _ = write_report(record.run_dir)
    page = html_path.read_text()
    assert "final_copy" not in page and "None" not in page.split("<h2>Configuration")[0]


def test_real_dataset_defaults_are_named_not_none(tmp_path):
    config = {**CONFIG, "data": {**CONFIG["data"], "name": "cifar10", "num_train": None}}
    header = dict(run_description(RunRecord.read(make_run(tmp_path, config))))
    assert header["data"] == ("cifar10 32 px, all/10 % of train/all images train/val/test "
                              "(data seed 0)")


def test_mask_confidence_panel_comes_before_sizes_with_its_references():
    rows = with_epoch_float(METRICS)
    titles = [p["title"] for p in curve_panels(rows)]
    confidence = next(i for i, t in enumerate(titles) if t.startswith("mask confidence"))
    assert confidence < titles.index("mask sizes")
    ax = Figure().add_subplot()
    draw_curves(ax, rows, curve_panels(rows)[confidence])
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["confidence"].get_ydata(), [0.27, 0.41, 0.58])
    assert lines["uniform (1/4)"].get_ydata()[0] == 0.25 and lines["hard masks"].get_ydata()[0] == 1
    low, high = ax.get_ylim()
    assert 0.15 <= low < 0.25 and high >= 1.0


def test_png_report_draws_the_confidence_panel(tmp_path):
    _, png = write_report(make_run(tmp_path))
    picture = matplotlib.image.imread(png)
    assert picture.shape[0] > 300 and picture.shape[1] > 1000


def picture(path, value=128):
    figure = Figure(figsize=(1, 1))
    figure.figimage(np.full((8, 8), value / 255), cmap="gray")
    save(figure, path)


@pytest.mark.parametrize(("name", "caption"), [
    ("shapes", "Learned masks on the test scenes"),
    ("folder", "Learned masks on the test images of the image folder"),
    ("cifar10", "Learned masks on the cifar10 test images"),
])
def test_the_mask_caption_says_what_the_images_are(tmp_path, name, caption):
    """The caption said "test scenes" for a run on any data."""
    config = {**CONFIG, "data": {**CONFIG["data"], "name": name}}
    run = make_run(tmp_path, config)
    picture(run / "masks.png")
    html_path, _ = write_report(run)
    page = html_path.read_text()
    assert caption in page
    assert name == "shapes" or "scenes" not in page.split("<h2>Configuration")[0]


def test_the_report_is_written_atomically_and_never_through_a_link(tmp_path, monkeypatch, capsys):
    """report.html was opened and written through a symbolic link in the run directory, and
    pictures were written in place (a failure left half a PNG)."""
    run = make_run(tmp_path)
    victim = tmp_path / "victim.html"
    victim.write_text("precious")
    (run / "report.html").symlink_to(victim)
    assert main(["eval", "report", str(run)]) == 2
    assert f"{run / 'report.html'} is a symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious" and not (run / "report.png").exists()
    (run / "report.html").unlink()
    # --html elsewhere: a link there is replaced by the report, its target untouched
    elsewhere = tmp_path / "out" / "mine.html"
    elsewhere.parent.mkdir()
    elsewhere.symlink_to(victim)
    write_report(run, elsewhere)
    assert victim.read_text() == "precious" and not elsewhere.is_symlink()
    assert "<html" in elsewhere.read_text()
    # a picture that fails half-way leaves the old one whole, and no temporary file
    html_path, png_path = write_report(run)
    before = png_path.read_bytes()

    def half(self, file, **options):
        file.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half)
    with pytest.raises(OSError, match="disk full"):
        write_report(run)
    assert png_path.read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [
        "config.yaml", "metrics.jsonl", "report.html", "report.png", "summary.json"]
    with pytest.raises(RunDirError, match="is a symbolic link"):
        (run / "tb").symlink_to(tmp_path / "out")
        write_report(run)
