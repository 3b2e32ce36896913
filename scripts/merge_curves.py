"""One curves picture from several grids' curves.csv (``adios compare`` writes one per grid),
e.g. an ablation whose variants are grids of their own. Each file may rename its schemes:

    python scripts/merge_curves.py OUT.png base/curves.csv masks8/curves.csv:adios-s=adios-s-N8

Reference lines: the untrained encoder (the epoch-0 points) and chance for 10 classes.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

from adios.compare.curves import References, curve_plot

NUMBERS = ("seed", "epoch", "step", "images_seen")


def read(spec: str) -> list[dict]:
    path, _, renames = spec.partition(":")
    names = dict(item.split("=", 1) for item in renames.split(",") if item)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update({key: int(row[key]) for key in NUMBERS})
        row["train_s"], row["knn_val"] = float(row["train_s"]), float(row["knn_val"])
        row["scheme"] = names.get(row["scheme"], row["scheme"])
    return rows


def main(out: str, *specs: str) -> None:
    rows = [row for spec in specs for row in read(spec)]
    untrained = [r["knn_val"] for r in rows if r["epoch"] == 0]
    refs = {r["preset"]: References(untrained=statistics.mean(untrained), chance=0.1)
            for r in rows}
    print(curve_plot(rows, refs, Path(out)))


if __name__ == "__main__":
    main(*sys.argv[1:])
