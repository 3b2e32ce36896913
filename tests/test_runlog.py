"""Metrics logging: JSONL by default; the optional W&B sink, offline, receives the same rows."""

import json
import struct

import pytest

from adios.runlog import WANDB_ID, MetricsLog, flat_scalars, read_metrics

ROWS = [
    {"epoch": 0, "step": 0, "knn_acc": 0.25, "mask_confidence": 0.3},
    {"epoch": 1, "step": 10, "loss": 4.5, "mask_sizes": [0.2, 0.3, 0.5], "lr": 0.002},
    {"epoch": 1, "step": 10, "elapsed_s": 12.5, "knn_acc": 0.375},
]


def test_flat_scalars_spreads_lists_and_drops_step_and_epoch():
    assert flat_scalars(ROWS[1]) == {"loss": 4.5, "mask_sizes/0": 0.2, "mask_sizes/1": 0.3,
                                     "mask_sizes/2": 0.5, "lr": 0.002}


def test_default_log_is_jsonl_and_tensorboard_only(tmp_path):
    log = MetricsLog(tmp_path)
    for row in ROWS:
        log.write(row)
    log.close()
    assert read_metrics(tmp_path) == ROWS
    assert any((tmp_path / "tb").iterdir())
    assert not (tmp_path / "wandb").exists() and not (tmp_path / WANDB_ID).exists()


def test_read_metrics_of_a_run_that_logged_nothing_is_empty_and_skips_a_cut_line(tmp_path):
    assert read_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 5.0}]


def wandb_history(run_dir):
    """History rows of an offline W&B run, read from its .wandb file (a LevelDB-style log of
    protobuf records in 32 KiB blocks, 7-byte file header, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, pos, block, chunks, buffer = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        buffer += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            chunks.append(buffer)
            buffer = b""
    rows = []
    for chunk in chunks:
        record = pb.Record()
        record.ParseFromString(chunk)
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                     for i in record.history.item}
            rows.append({k: v for k, v in items.items() if not k.startswith("_")})
    return rows


def test_wandb_sink_offline_receives_every_row(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = MetricsLog(tmp_path, wandb_project="adios-test", config={"seed": 3})
    for row in ROWS:
        log.write(row)
    log.close()
    wandb.teardown()  # finish() returns before the W&B service has written the file
    assert read_metrics(tmp_path) == ROWS  # the JSONL record is unchanged by the extra sink
    run_id = (tmp_path / WANDB_ID).read_text().strip()
    assert run_id and list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    history = wandb_history(tmp_path)
    # rows of one step are merged by W&B into one history row
    expected = [{**flat_scalars(ROWS[0]), "epoch": 0},
                {**flat_scalars(ROWS[1]), **flat_scalars(ROWS[2]), "epoch": 1}]
    assert history == expected
