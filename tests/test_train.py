"""End to end: the CLI trains, writes everything a run promises, resumes exactly, never clobbers."""

import json

import numpy as np
import pytest
import torch
import yaml
from knn_reference import brute_force_accuracy, brute_force_scores
from PIL import Image
from safetensors.torch import load_file
from sklearn.metrics import balanced_accuracy_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_run import OWN, write_images

from adios.cli import main
from adios.config import load_config
from adios.data.datasets import load_dataset
from adios.evaluation.features import extract_features
from adios.models import build_backbone
from adios.perf import resolve_precision
from adios.train import CHECKPOINT

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "data.num_train=48", "data.num_val=16", "data.num_test=24", "model.width=4",
    "masker.fbase=8", "masker.n_masks=3", "objective.proj_hidden=32", "objective.proj_out=16",
    "optim.batch_size=16", "optim.warmup_epochs=1", "train.knn_bank=48", "train.progress=false",
    "train.device=cpu", "train.threads=1",
]


def run(tmp_path, name, *args):
    return main(["train", f"run_dir={tmp_path / name}", *TINY, *args])


# a small k and more held-out images make the kNN accuracies sensitive to the bank and the vote
KNN = ["train.knn_k=3", "data.num_val=48", "data.num_test=64"]


def test_cli_run_writes_checkpoint_metrics_pictures_and_summary(tmp_path, capsys):
    assert run(tmp_path, "r", "train.epochs=2", *KNN) == 0
    run_dir = tmp_path / "r"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run_dir)
    for name in ("config.yaml", CHECKPOINT, "metrics.jsonl", "summary.json", "masks.png",
                 "masks/epoch_001.png", "masks/epoch_002.png", "encoder.safetensors",
                 "masker.safetensors"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("knn_acc", "knn_acc_random_init", "mask_fg_ari", "mask_mbo",
                "mask_fg_ari_untrained", "mask_mbo_untrained", "mask_fg_ari_random",
                "mask_mbo_random", "mask_sizes", "wall_s", "seed"):
        assert key in summary, key
    assert len(summary["mask_sizes"]) == 3 and summary["seed"] == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "knn_acc" in r] == [0, 1, 2]
    assert all("loss" in r and "mask_sizes" in r for r in rows if "lr" in r)
    # the checkpoint loads without executing code, the encoder exports as safetensors
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 2
    encoder = load_file(run_dir / "encoder.safetensors")
    backbone = {k[len("backbone."):]: v for k, v in state["objective"].items()
                if k.startswith("backbone.")}
    assert encoder.keys() == backbone.keys()
    assert all(torch.equal(encoder[k], backbone[k]) for k in encoder)
    # the kNN numbers, recomputed by brute force: bank = the first knn_bank training images,
    # epoch rows on val, the summary on test; trained = the export, random init = the run's init
    cfg = load_config([*TINY, *KNN])
    dataset = load_dataset(cfg.data)
    bank = dataset.train.subset(slice(0, cfg.train.knn_bank))
    knn = {row["epoch"]: row["knn_acc"] for row in rows if "knn_acc" in row}
    for weights, split, reported in [
        (state["init"]["backbone"], dataset.val, knn[0]),
        (encoder, dataset.val, knn[2]),
        (encoder, dataset.test, summary["knn_acc"]),
        (state["init"]["backbone"], dataset.test, summary["knn_acc_random_init"]),
    ]:
        assert reported == pytest.approx(brute_force_knn(cfg, weights, bank, split))
    # beside it: balanced accuracy (scikit-learn) and the majority-class rate (counted)
    labels = dataset.test.labels.numpy()
    predictions = brute_force_knn(cfg, encoder, bank, dataset.test, scores=True).argmax(1)
    balanced = balanced_accuracy_score(labels, predictions)
    assert summary["knn_balanced_acc"] == pytest.approx(balanced)
    majority = np.bincount(dataset.train.labels.numpy()).argmax()
    assert summary["majority_rate"] == pytest.approx(np.mean(labels == majority))


def brute_force_knn(cfg, weights, bank, query, scores=False):
    """Top-1 (or the class scores) of the weighted vote (tests/knn_reference.py) on the
    features of ``weights``."""
    backbone = build_backbone("resnet18", 32, width=4)
    backbone.load_state_dict(weights)
    features = [
        extract_features(backbone, split.images, cfg.data.mean, cfg.data.std, torch.device("cpu"))
        for split in (bank, query)
    ]
    if scores:
        return brute_force_scores(features[0], bank.labels, features[1], 8, cfg.train.knn_k,
                                  cfg.train.knn_temperature)
    return brute_force_accuracy(features[0], bank.labels, features[1], query.labels,
                                8, cfg.train.knn_k, cfg.train.knn_temperature)


@pytest.mark.parametrize("mode", ["adios", "adios-s"])
def test_resumed_run_ends_identical_to_uninterrupted_run(tmp_path, mode):
    args = ["train.epochs=3", f"masking.mode={mode}", "seed=3"]
    assert run(tmp_path, "whole", *args) == 0
    assert run(tmp_path, "split", *args, "--stop-after-epoch", "1") == 0
    assert not (tmp_path / "split" / "summary.json").exists()
    assert main(["train", "--resume", str(tmp_path / "split")]) == 0
    for name in ("encoder.safetensors", "masker.safetensors"):
        whole, split = load_file(tmp_path / "whole" / name), load_file(tmp_path / "split" / name)
        assert whole.keys() == split.keys()
        for key in whole:
            assert torch.equal(whole[key], split[key]), f"{name}:{key}"
    whole_ckpt = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)
    split_ckpt = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    for key, value in whole_ckpt["encoder_opt"]["state"].items():
        assert torch.equal(value["momentum_buffer"], split_ckpt["encoder_opt"]["state"][key]
                           ["momentum_buffer"])
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # nothing logged twice across the interruption


def test_existing_run_dir_is_never_overwritten_silently(tmp_path, capsys):
    assert run(tmp_path, "r", "train.epochs=1") == 0
    before = (tmp_path / "r" / "encoder.safetensors").read_bytes()
    assert run(tmp_path, "r", "train.epochs=1", "seed=1") == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--overwrite" in err
    assert (tmp_path / "r" / "encoder.safetensors").read_bytes() == before
    assert run(tmp_path, "r", "train.epochs=1", "seed=1", "--overwrite") == 0
    assert (tmp_path / "r" / "encoder.safetensors").read_bytes() != before


def test_bad_override_is_rejected_before_anything_is_written(tmp_path, capsys):
    assert run(tmp_path, "r", "optim.lr=abc") == 2
    assert "optim.lr: expected a number, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_plain_objective_without_masker(tmp_path):
    assert run(tmp_path, "r", "train.epochs=1", "masking.mode=none") == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "knn_acc" in summary and "mask_mbo" not in summary
    assert not (tmp_path / "r" / "masker.safetensors").exists()


@pytest.mark.parametrize("scaling, factor", [("none", 1.0), ("linear", 64 / 256)])
def test_lr_scaling_multiplies_every_rate_by_global_batch_over_reference(scaling, factor):
    from adios.train import build_models, build_optimizers

    cfg = load_config(["model.width=4", "masker.fbase=8", "optim.batch_size=64",
                       "optim.lr=0.4", "optim.mask_lr=0.02", "optim.probe_lr=0.1",
                       f"optim.lr_scaling={scaling}", "optim.lr_reference_batch=256"])
    models = build_models(cfg, num_classes=3, device=torch.device("cpu"))
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    probe_params = set(models.probe.parameters())
    for group in encoder_opt.param_groups:
        expected = (0.1 if probe_params & set(group["params"]) else 0.4) * factor
        assert group["lr"] == pytest.approx(expected) and group["base_lr"] == group["lr"]
    assert all(g["lr"] == pytest.approx(0.02 * factor) for g in masker_opt.param_groups)


TOKENS = [
    "data.num_train=16", "data.num_val=8", "data.num_test=16", "optim.batch_size=8",
    "train.knn_bank=16", "train.progress=false", "train.device=cpu", "train.threads=1",
    "train.epochs=1",
]


@pytest.mark.parametrize("preset, heads", [
    ("shapes-vit-simclr-token-adios", ["objective.proj_hidden=32", "objective.proj_out=16"]),
    ("shapes-vit-mae-token-adios", ["objective.decoder_dim=16", "objective.decoder_depth=1"]),
])
def test_token_run_reports_where_the_hidden_patches_go(tmp_path, preset, heads):
    """A token-adios run trains both players, pictures its hidden patches and reports their
    share on objects (learned draws, top-k and random); adios eval masks gives the same."""
    run_dir = tmp_path / "tokens"
    assert main(["train", f"run_dir={run_dir}", f"preset={preset}", *TOKENS, *heads]) == 0
    for name in ("masks.png", "masks/epoch_001.png", "masker.safetensors", "encoder.safetensors"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    shares = [summary[f"token_hidden_on_objects{s}"] for s in ("", "_topk", "_random")]
    assert all(0 < share < 1 for share in shares)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "lr" in r]
    assert steps and all(r["kept_tokens"] == 16 and "adv_loss" in r for r in steps)
    assert main(["eval", "masks", str(run_dir)]) == 0
    tokens = json.loads((run_dir / "eval_masks.json").read_text())["tokens"]
    assert tokens == pytest.approx({k: v for k, v in summary.items() if k.startswith("token_")})
    assert (run_dir / "eval_masks_tokens.png").is_file()


# ---- your own images: a folder given by data.path alone, as a new user gives it

def tensorboard_images(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    accumulator.Reload()
    return {tag: accumulator.Images(tag) for tag in accumulator.Tags()["images"]}


def test_a_flat_unlabelled_folder_trains_and_its_summary_holds_no_accuracies(tmp_path, capsys):
    write_images(tmp_path / "images", 40)
    run_dir = tmp_path / "run"
    assert main(["train", f"data.path={tmp_path / 'images'}", f"run_dir={run_dir}", *OWN]) == 0
    err = capsys.readouterr().err
    assert "data.name=folder (read off the folder)" in err and "hue 0.5" in err
    # the default preset's precision is auto: what this CPU computes fastest (adios.perf)
    precision = resolve_precision("auto", torch.device("cpu"))
    assert f"adios: cpu, 1 threads, precision {precision}" in err and "unlabelled" in err
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["data"]["name"] == "folder"
    dataset = load_dataset(load_config([f"data.path={tmp_path / 'images'}", "data.name=folder",
                                        *OWN]).data)
    assert cfg["data"]["mean"] == list(dataset.mean) != [0.5, 0.5, 0.5]  # measured, recorded
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not [key for key in summary if "acc" in key or "majority" in key]
    assert summary["labels"].startswith("none") and summary["feature_spread"] > 0
    assert len(summary["mask_sizes"]) == 4 and summary["loss_last_epoch"] > 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not [row for row in rows if "knn_acc" in row or "probe_acc" in row]
    # the masks: a picture without a ground-truth column, and the same in TensorBoard
    for name in ("masks.png", "masks/epoch_001.png"):
        assert (run_dir / name).is_file(), name
    images = tensorboard_images(run_dir)
    assert set(images) == {"masks/val", "masks/test"}
    with Image.open(run_dir / "masks.png") as picture:
        assert (images["masks/test"][0].width, images["masks/test"][0].height) == picture.size


def test_class_folders_without_data_name_train_on_that_folder(tmp_path, capsys):
    write_images(tmp_path / "pets", 40, classes=("cat", "dog"))
    run_dir = tmp_path / "run"
    assert main(["train", f"data.path={tmp_path / 'pets'}", f"run_dir={run_dir}", *OWN]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["name"] == "folder"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["knn_acc"] <= 1 and "labels" not in summary
    assert (run_dir / "masks.png").is_file()
    # a data.name that contradicts the folder stops the command before anything is written
    capsys.readouterr()
    assert main(["train", f"data.path={tmp_path / 'pets'}", "data.name=shapes",
                 f"run_dir={tmp_path / 'no'}", *OWN]) == 2
    assert "data.name=shapes generates its scenes" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
