"""``adios bench data``: augmentation vs training-step throughput, as text and as JSON."""

import json

from adios.cli import main

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "data.num_train=32",
    "data.num_val=8",
    "data.num_test=8",
    "model.width=4",
    "masker.fbase=8",
    "masker.n_masks=2",
    "objective.proj_hidden=16",
    "objective.proj_out=8",
    "optim.batch_size=8",
    "train.device=cpu",
    "train.threads=1",
    "train.progress=false",
]


def test_bench_data_json_and_text(capsys):
    assert (
        main(["bench", "data", "--json", "--batches", "5", "--steps", "1", "--warmup", "1", *TINY])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    for key in ("augment_images_per_s", "train_images_per_s", "ratio"):
        assert result[key] > 0
    assert (
        abs(result["ratio"] - result["augment_images_per_s"] / result["train_images_per_s"])
        < 1e-9 * result["ratio"]
    )
    assert result["preset"] == "shapes-paper" and result["batch_size"] == 8
    assert result["source"] == "memory" and result["augment_batches"] == 5
    assert main(["bench", "data", "--batches", "1", "--steps", "1", "--warmup", "0", *TINY]) == 0
    text = capsys.readouterr().out
    assert "augmentation pipeline" in text and "training step" in text and "ratio" in text
