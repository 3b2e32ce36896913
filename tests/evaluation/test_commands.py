"""``adios eval`` end to end on a tiny run: results JSON for the test split, and the report."""

import base64
import json
import re
import shutil

import matplotlib.image
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import balanced_accuracy_score
from tiny_run import OWN, write_images

from adios.cli import main
from adios.config import load_config
from adios.data.datasets import load_dataset
from adios.engine import build_models
from adios.evaluation.commands import _evaluation_base, load_setup
from adios.evaluation.features import extract_features
from adios.evaluation.knn import KNN_KS, knn_accuracy, knn_predict
from adios.models import build_backbone

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "data.num_train=48",
    "data.num_val=16",
    "data.num_test=24",
    "model.width=4",
    "masker.fbase=8",
    "masker.n_masks=3",
    "objective.proj_hidden=32",
    "objective.proj_out=16",
    "optim.batch_size=16",
    "optim.warmup_epochs=1",
    "train.knn_bank=48",
    "train.progress=false",
    "train.device=cpu",
    "train.threads=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", f"run_dir={path}", *TINY, "train.epochs=1"]) == 0
    return path


def read(path):
    return json.loads(path.read_text())


def test_knn_and_fast_linear_write_results_for_the_test_split(run_dir, capsys):
    assert main(["eval", "knn", str(run_dir)]) == 0
    assert main(["eval", "linear", str(run_dir), "--fast"]) == 0
    out = capsys.readouterr().out
    assert "knn test top-1" in out and "linear_fast test top-1" in out
    knn, linear = read(run_dir / "eval_knn.json"), read(run_dir / "eval_linear_fast.json")
    for result in (knn, linear):
        assert result["dataset"]["n_test"] == 24 and result["dataset"]["num_classes"] == 8
        assert result["command"].startswith("adios eval ")
    assert knn["bank"] == "train+val" and linear["fit_on"] == "train+val"
    assert knn["selected"]["k"] in KNN_KS and set(knn["test"]) == {
        "selected",
        "k20_t0.1",
        "k200_t0.1",
    }
    assert len(knn["val_grid"]) == 42 and knn["n_bank"] == 48 + 16
    test = linear["test"]
    assert sum(map(sum, test["confusion"])) == 24 and len(test["per_class"]) == 8
    assert 0 <= test["top1"] <= test["top5"] <= 1
    assert (run_dir / linear["confusion_png"]).is_file()

    # independent recomputation: the exported weights, the run's normalisation, bank train+val
    cfg = load_config(TINY)
    backbone = build_backbone("resnet18", 32, width=4)
    backbone.load_state_dict(load_file(run_dir / "encoder.safetensors"))
    dataset = load_dataset(cfg.data)
    extract = lambda images: extract_features(  # noqa: E731
        backbone, images, cfg.data.mean, cfg.data.std, torch.device("cpu")
    )
    bank = torch.cat([dataset.train.images, dataset.val.images])
    bank_labels = torch.cat([dataset.train.labels, dataset.val.labels])
    test_labels = dataset.test.labels.numpy()
    # the majority-class rate: the most frequent class of the fitting labels, scored on test
    majority = (test_labels == np.bincount(bank_labels.numpy()).argmax()).mean()
    assert linear["test"]["majority_rate"] == pytest.approx(majority)
    for row in knn["test"].values():
        expected = knn_accuracy(
            extract(bank),
            bank_labels,
            extract(dataset.test.images),
            dataset.test.labels,
            8,
            k=row["k"],
            temperature=row["temperature"],
        )
        assert row["top1"] == pytest.approx(expected)
        predictions = knn_predict(
            extract(bank),
            bank_labels,
            extract(dataset.test.images),
            8,
            row["k"],
            row["temperature"],
        ).argmax(1)
        assert row["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(test_labels, predictions.numpy())
        )
        assert row["majority_rate"] == pytest.approx(majority)


def test_exported_encoder_gives_the_same_numbers_and_data_overrides_get_their_own_file(
    run_dir, tmp_path
):
    assert main(["eval", "knn", str(run_dir)]) == 0
    args = ["--encoder", str(run_dir / "encoder.safetensors"), "--out", str(tmp_path)]
    assert main(["eval", "knn", *args, *TINY]) == 0
    from_run, from_file = read(run_dir / "eval_knn.json"), read(tmp_path / "eval_knn.json")
    assert from_file["test"] == from_run["test"]
    assert from_file["model"]["encoder"].endswith("encoder.safetensors")
    assert main(["eval", "knn", str(run_dir), "data.seed=1", "data.num_test=8"]) == 0
    other = read(run_dir / "eval_knn_shapes.json")
    assert other["dataset"]["seed"] == 1 and other["dataset"]["n_test"] == 8


@pytest.fixture(scope="module")
def blurred_run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "blurred"
    small = ["data.num_train=16", "optim.batch_size=8", "train.knn_bank=16", "train.epochs=1"]
    assert main(["train", f"run_dir={path}", *TINY, *small, "masker.blur_sigma=1.5"]) == 0
    return path


@pytest.mark.parametrize("blur_sigma", [0.0, 1.5])
def test_mask_evaluation_reproduces_the_runs_summary_with_its_own_initial_masker(
    request, blur_sigma
):
    """``eval masks`` scores the run's masker, its masker at initialisation (the one the run
    started from: seed, then build, as training does) and the seeded blobs exactly as the
    run's summary did, with the run's masker options (masker.blur_sigma)."""
    run_dir = request.getfixturevalue("blurred_run_dir" if blur_sigma else "run_dir")
    assert main(["eval", "masks", str(run_dir)]) == 0
    sources = read(run_dir / "eval_masks.json")["sources"]
    summary = read(run_dir / "summary.json")
    for source, suffix in (
        ("trained", ""),
        ("untrained", "_untrained"),
        ("random_blobs", "_random"),
    ):
        assert sources[source]["fg_ari"] == pytest.approx(summary[f"mask_fg_ari{suffix}"]), source
        assert sources[source]["mbo"] == pytest.approx(summary[f"mask_mbo{suffix}"]), source
    assert sources["trained"]["mbo"] != sources["untrained"]["mbo"]  # one epoch moved it
    cfg = load_config([*TINY, f"masker.blur_sigma={blur_sigma}"])
    torch.manual_seed(cfg.seed)
    initial = build_models(cfg, num_classes=8, device=torch.device("cpu")).masker.state_dict()
    setup = load_setup([str(run_dir)])
    for key, value in setup.init_masker.state_dict().items():
        assert torch.equal(value, initial[key]), key


def test_eval_writes_nothing_through_a_symbolic_link(run_dir, tmp_path, capsys):
    """Pictures were saved in place, following a link in the run directory to outside it."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    (run / "notes.txt").write_text("my notes on this run")
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    (run / "eval_masks_sizes.png").unlink(missing_ok=True)
    (run / "eval_masks_sizes.png").symlink_to(victim)
    assert main(["eval", "masks", str(run)]) == 2
    assert f"{run / 'eval_masks_sizes.png'} is a symbolic link" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious"
    # --out: results go to a folder of the user's; a link there is replaced, not followed
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval_masks_sizes.png").symlink_to(victim)
    assert main(["eval", "masks", str(run), "--out", str(out)]) == 0
    assert victim.read_bytes() == b"precious"
    assert not (out / "eval_masks_sizes.png").is_symlink()
    assert (run / "notes.txt").read_text() == "my notes on this run"


def test_an_unlabelled_run_is_evaluated_for_what_it_has(tmp_path, capsys):
    """kNN and the linear probes of a run on a folder without classes were an "unexpected
    ValueError ... a bug", and so was adios eval report --evaluate; the report now shows the
    feature spread and the loss summary.json holds for it."""
    write_images(tmp_path / "images", 40)
    run = tmp_path / "run"
    assert main(["train", f"data.path={tmp_path / 'images'}", f"run_dir={run}", *OWN]) == 0
    capsys.readouterr()
    for argv in (["eval", "knn"], ["eval", "linear", "--fast"], ["eval", "linear"]):
        assert main([*argv, str(run)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("adios: error:") == 1 and "have no labels" in err, argv
        assert "bug" not in err, argv
    assert main(["eval", "report", str(run), "--evaluate"]) == 0
    assert "no labels: kNN and linear probes skipped" in capsys.readouterr().err
    page = (run / "report.html").read_text()
    assert "feature spread" in page and "Labels: none" in page and "SSL loss, last epoch" in page
    assert "Learned masks on the test images of the image folder" in page
    assert not list(run.glob("eval_*"))


def test_model_overrides_on_a_run_are_refused(run_dir, capsys):
    assert main(["eval", "knn", str(run_dir), "model.width=8"]) == 2
    assert "fixed by its weights" in capsys.readouterr().err


def test_report_embeds_curves_masks_and_tables_and_renders_a_png(run_dir):
    assert main(["eval", "report", str(run_dir), "--evaluate"]) == 0
    for kind in ("knn", "linear_fast", "masks", "robustness"):
        assert (run_dir / f"eval_{kind}.json").is_file(), kind
    page = (run_dir / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', page)
    captions = [alt for _, alt in images]
    assert "training curves" in captions
    assert any("Learned masks" in c for c in captions)
    assert any("trained masks" in c for c in captions)
    assert any("Confusion matrix" in c for c in captions)
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data, _ in images)
    assert not re.search(r'src="(?!data:)', page)  # self-contained
    for title in ("kNN on shapes", "Linear probe, fast", "Mask quality", "Backgrounds test"):
        assert f"<caption>{title}" in page, title
    picture = matplotlib.image.imread(run_dir / "report.png")
    assert picture.shape[0] > 600 and picture.shape[1] > 1000


def test_another_dataset_name_does_not_inherit_the_runs_split_sizes():
    saved = {"seed": 0, "data": {"name": "shapes", "image_size": 48, "num_train": 4096}}
    assert _evaluation_base(saved, ["data.name=cifar10"])["data"] == {"image_size": 48}
    assert _evaluation_base(saved, ["data.name=shapes", "data.seed=2"]) is saved
    assert _evaluation_base(saved, ["data.num_train=10"]) is saved
