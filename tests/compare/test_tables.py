"""results.png: a zoomed axis, reference lines, error bars only over seeds, epochs per cell."""

import math

import pytest

from adios.compare.tables import METRICS, bar_figure


def row(scheme, seeds, knn, std, fg_ari=None, epochs=5):
    values = {f"{k}_{s}": None for k, _, _ in METRICS for s in ("mean", "std")}
    values.update(knn_mean=knn, knn_std=std, knn_k20_mean=knn - 0.01, knn_k20_std=std,
                  linear_mean=knn + 0.02, linear_std=std, fg_ari_mean=fg_ari,
                  fg_ari_std=0.01 if fg_ari is not None and len(seeds) > 1 else None,
                  epochs_mean=epochs, majority_mean=0.25)
    return {"preset": "p", "objective": "simclr", "scheme": scheme, "seeds": seeds, "failed": 0,
            "knn_random_init_mean": 0.30, "chance_mean": 0.2, "fg_ari_random_mean": 0.20,
            "mbo_random_mean": None, **values}


ROWS = [row("none", [0, 1], 0.36, 0.010, epochs=12), row("mae", [0], 0.34, None, epochs=9),
        row("adios", [0, 1], 0.33, 0.015, fg_ari=0.31, epochs=3)]


@pytest.fixture
def panels():
    figure = bar_figure(ROWS)
    return {ax.get_title(): ax for ax in figure.axes}


def test_error_bars_only_for_cells_with_two_seeds(panels):
    ax = panels["kNN test (k, T chosen on val)"]
    (bars,) = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    segments = bars.lines[2][0].get_segments()
    assert [round(s[0][0]) for s in segments] == [0, 2]  # none and adios, not mae (one seed)
    assert [pytest.approx(s[1][1] - s[0][1]) for s in segments] == [2.0, 3.0]  # 2 std, in %


def test_axis_is_zoomed_to_bars_and_references(panels):
    ax = panels["kNN test (k, T chosen on val)"]
    low, high = ax.get_ylim()
    assert 15 < low < 20 and 37 < high < 42  # chance at 20 %, the best bar + std at 37 %
    lines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()}
    assert lines["untrained encoder (kNN k=20)"] == pytest.approx(30)
    assert lines["chance"] == pytest.approx(20)
    assert lines["majority class"] == pytest.approx(25)


def test_epochs_are_written_on_the_bars(panels):
    texts = [t.get_text() for t in panels["linear test (fast probe)"].texts]
    assert texts == ["12 ep", "9 ep", "3 ep"]


def test_mask_panels_show_only_schemes_with_masks(panels):
    ax = panels["mask fg-ARI"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["adios"]
    lines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()}
    assert lines["random blob masks"] == pytest.approx(0.20)
    assert "mask mBO" not in panels  # no cell has mBO
    heights = [p.get_height() for p in ax.patches]
    assert heights == [pytest.approx(0.31)] and not any(math.isnan(h) for h in heights)


def test_backgrounds_gap_gets_a_panel_against_zero():
    rows = [dict(r, bg_gap_mean=gap, bg_gap_std=0.02 if len(r["seeds"]) > 1 else None)
            for r, gap in zip(ROWS, (0.10, 0.06, -0.01), strict=True)]
    ax = {a.get_title(): a for a in bar_figure(rows).axes}["gap (same - rand)"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([10.0, 6.0, -1.0])
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in ax.get_lines())
    assert "no reliance on the background" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gap (same - rand)" not in {a.get_title() for a in bar_figure(ROWS).axes}


def test_results_md_has_a_masks_table_with_references_and_image_variation(tmp_path):
    """Two finished seeds of a learned-mask scheme: the masks table shows each metric's mean and
    std over them beside its untrained and random-blob references; mask-free schemes stay out."""
    import json

    from adios.compare.grid import Cell, parse_grid
    from adios.compare.tables import write_tables

    grid = parse_grid({"preset": "shapes-simclr-adios", "schemes": ["none", "adios"],
                       "objectives": ["simclr"], "seeds": [0, 1], "budget": {"epochs": 1}},
                      "g.yaml", tmp_path)
    knn = {"test": {"selected": {"top1": 0.3}, "k20_t0.1": {"top1": 0.3}},
           "selected": {"k": 20}, "dataset": {"num_classes": 5}}
    variation = {0: 0.30, 1: 0.40}
    for scheme in ("none", "adios"):
        for seed in (0, 1):
            run = Cell("shapes-simclr-adios", "simclr", scheme, seed).run_dir(grid)
            run.mkdir(parents=True)
            (run / "eval_knn.json").write_text(json.dumps(knn))
            summary = {} if scheme == "none" else {
                "mask_fg_ari": 0.3, "mask_fg_ari_untrained": 0.1, "mask_fg_ari_random": 0.2,
                "mask_mbo": 0.25, "mask_mbo_untrained": 0.15, "mask_mbo_random": 0.16,
                "mask_image_variation_argmax": variation[seed],
                "mask_image_variation_argmax_untrained": 0.27}
            (run / "summary.json").write_text(json.dumps(summary))
    write_tables(grid)
    text = (tmp_path / "results.md").read_text()
    table = text[text.index("image variation (argmax)") - 200:]
    header, rows = table.splitlines()[2], table.splitlines()[4:]
    assert "fg-ARI untrained" in header and "mBO random blobs" in header
    assert rows[0].startswith("| adios | simclr | 0,1 |")
    assert "| 0.350 ± 0.071 | 0.270 ± 0.000 |" in rows[0]  # mean ± std of 0.30, 0.40; 0.27 twice
    assert not any(r.startswith("| none ") for r in rows if r.startswith("|"))
