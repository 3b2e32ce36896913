"""``adios bench step``: one row per masking mode x schedule, as JSON and as a table."""

import json

import pytest
import torch

from adios.cli import main

TINY = [
    "preset=shapes-paper",  # a base that does not move when the default preset is tuned
    "model.width=4",
    "masker.fbase=8",
    "objective.proj_hidden=16",
    "objective.proj_out=8",
    "optim.batch_size=8",
    "train.device=cpu",
    "train.threads=1",
]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_step_json_rows_and_table(capsys):
    assert main(["bench", "step", "--json", "--masks", "2,3", "--repeats", "2", *TINY]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = [("none", 0, "fast")]
    expected += [("adios-s", 2, s) for s in ("reference", "fast", "single-pass")]
    expected += [("adios", n, s) for n in (2, 3) for s in ("reference", "fast", "single-pass")]
    assert [(r["masking"], r["n_masks"], r["schedule"]) for r in rows] == expected
    plain = rows[0]["images_per_s"]
    for row in rows:
        assert row["images_per_s"] > 0 and row["batch_size"] == 8
        assert row["images_per_s"] == pytest.approx(8 / row["seconds_per_step"])
        assert row["cost_vs_plain"] == pytest.approx(plain / row["images_per_s"])
        assert row["peak_mem_mb"] is None or row["peak_mem_mb"] > 0
    fast = {
        (r["masking"], r["n_masks"]): r["images_per_s"] for r in rows if r["schedule"] == "fast"
    }
    for row in rows:
        assert row["speedup_vs_fast"] == pytest.approx(
            row["images_per_s"] / fast[row["masking"], row["n_masks"]]
        )

    assert main(["bench", "step", "--masks", "2", "--repeats", "1", *TINY]) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and "peak MB" in text and "single-pass" in text
    assert len([line for line in text.splitlines() if line.startswith("adios ")]) == 3


def test_bench_step_rejects_bad_options(capsys):
    assert main(["bench", "step", "--masks", "four", *TINY]) == 2
    assert "--masks" in capsys.readouterr().err
    assert main(["bench", "step", "--repeats", "0", *TINY]) == 2
    assert "--repeats" in capsys.readouterr().err
