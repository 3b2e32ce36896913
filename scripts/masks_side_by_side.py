"""Put the hard (argmax) masks of several finished runs side by side, for the docs.

Crops the image, ground-truth and argmax columns out of each run's ``masks.png`` (the same eight
held-out test scenes in every run of a preset family, since the data seed is fixed) and lays them
out as one picture: image, objects, then one column per run. Used for docs/slots_masks.png:

    python scripts/masks_side_by_side.py docs/slots_masks.png \
        U-Net=runs/compare/scenes-slots/shapes-simclr-adios/simclr-adios-seed{0,1,2} \
        slots=runs/compare/scenes-slots/shapes-simclr-adios-slots/simclr-adios-seed{0,1,2}

(``NAME=RUN_DIR`` per run; bash expands the braces into three arguments, each named NAME.)
``--column K`` takes another column of each run's picture instead of the argmax masks (column 2):
for token runs, whose pictures are image, hidden patches, visible view, ``--column 2`` is the
visible view and ``--column 1`` the hidden patches; ``--title`` replaces the picture's title.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from adios.evaluation.figures import save


def panels(path: Path) -> np.ndarray:
    """(rows, columns, H, W, 3): the picture's grid of image panels, found from its white gaps."""
    picture = np.asarray(Image.open(path).convert("RGB"))
    ink = picture.min(axis=2) < 245

    def runs(mask: np.ndarray, min_length: int) -> list[tuple[int, int]]:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_length]

    columns = runs(ink.mean(axis=0) > 0.5, 40)  # panel columns are ink on most rows; titles not
    rows = runs(ink[:, columns[0][0]:columns[0][1]].mean(axis=1) > 0.5, 40)
    size = min(b - a for a, b in rows + columns)
    return np.stack([np.stack([picture[r:r + size, c:c + size] for c, _ in columns])
                     for r, _ in rows])


def _seed(run_name: str) -> str:
    """'seed 1' for run folders named ...-seed1 or ...-s1, else ''."""
    found = re.search(r"-(?:seed|s)(\d+)$", run_name)
    return f"seed {found.group(1)}" if found else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--column", type=int, default=2)
    parser.add_argument("--title", default="hard masks (argmax) on held-out test scenes")
    args = parser.parse_args(argv)
    specs = [a.split("=", 1) for a in args.runs]
    grids = [(name, panels(Path(run) / "masks.png"), Path(run).name) for name, run in specs]
    first = grids[0][1]
    columns = [("image", first[:, 0])]
    if first.shape[1] > 3 and args.column != 1:  # mask pictures of scenes: ground truth next
        columns.append(("objects", first[:, 1]))
    columns += [(f"{name}\n{_seed(run)}", grid[:, args.column]) for name, grid, run in grids]
    n_rows = first.shape[0]
    figure = Figure(figsize=(1.1 * len(columns), 1.1 * n_rows + 0.5))
    axes = figure.subplots(n_rows, len(columns), squeeze=False)
    for j, (title, column) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=8)
        for i in range(n_rows):
            axes[i, j].imshow(column[i])
            axes[i, j].set_axis_off()
    figure.suptitle(args.title, fontsize=9)
    figure.tight_layout()
    save(figure, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
