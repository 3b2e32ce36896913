"""Put the hard (argmax) masks of several finished runs side by side, for the docs.

Crops the image, ground-truth and argmax columns out of each run's ``masks.png`` (the same eight
held-out test scenes in every run of a preset family, since the data seed is fixed) and lays them
out as one picture: image, objects, then one column per run. Used for docs/slots_masks.png:

    python scripts/masks_side_by_side.py docs/slots_masks.png \
        U-Net=runs/compare/scenes-slots/shapes-simclr-adios/simclr-adios-seed{0,1,2} \
        slots=runs/compare/scenes-slots/shapes-simclr-adios-slots/simclr-adios-seed{0,1,2}

(``NAME=RUN_DIR`` per run; bash expands the braces into three arguments, each named NAME.)
"""

from __future__ import annotations

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

    columns = runs(ink.any(axis=0), 40)
    rows = runs(ink[:, columns[0][0]:columns[0][1]].mean(axis=1) > 0.5, 40)
    size = min(b - a for a, b in rows + columns)
    return np.stack([np.stack([picture[r:r + size, c:c + size] for c, _ in columns])
                     for r, _ in rows])


def main(argv: list[str]) -> int:
    out, specs = Path(argv[0]), [a.split("=", 1) for a in argv[1:]]
    grids = [(name, panels(Path(run) / "masks.png"), Path(run).name) for name, run in specs]
    first = grids[0][1]
    columns = [("image", first[:, 0]), ("objects", first[:, 1])]
    columns += [(f"{name}\n{run.replace('simclr-adios-', '')}", grid[:, 2])
                for name, grid, run in grids]
    n_rows = first.shape[0]
    figure = Figure(figsize=(1.1 * len(columns), 1.1 * n_rows + 0.5))
    axes = figure.subplots(n_rows, len(columns), squeeze=False)
    for j, (title, column) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=8)
        for i in range(n_rows):
            axes[i, j].imshow(column[i])
            axes[i, j].set_axis_off()
    figure.suptitle("hard masks (argmax) on held-out test scenes", fontsize=9)
    figure.tight_layout()
    save(figure, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
