"""Curve bookkeeping: evaluation points, means over seeds, budgets (grid runs: test_compare)."""

import statistics

import pytest

from adios.compare.curves import (
    axis_unit,
    budget_table,
    curve_problems,
    evaluation_points,
    image_budget_title,
    mean_curves,
    value_at,
)


def test_evaluation_points_are_untrained_every_kth_and_last():
    assert evaluation_points(5, 2) == [0, 2, 4, 5]
    assert evaluation_points(4, 2) == [0, 2, 4]
    assert evaluation_points(3, 0) == [0, 3]
    assert evaluation_points(3, 1) == [0, 1, 2, 3]


def row(epoch, seed=0, scheme="none", knn=0.5, seconds=None):
    return {
        "preset": "p",
        "objective": "simclr",
        "scheme": scheme,
        "seed": seed,
        "epoch": epoch,
        "step": 2 * epoch,
        "images_seen": 100 * epoch,
        "train_s": 10.0 * epoch if seconds is None else seconds,
        "knn_val": knn,
    }


def test_curve_problems_name_gaps_duplicates_and_backwards_time():
    whole = [row(0), row(2), row(4), row(5)]
    assert curve_problems(whole, 5, 2) == []
    assert curve_problems(whole[:2], 5, 2, done=3) == []  # mid-run: epoch 3 is not a point
    assert "evaluation points [0, 4, 5]" in curve_problems([row(0), row(4), row(5)], 5, 2)[0]
    duplicated = [row(0), row(2), row(2), row(4), row(5)]
    assert any("evaluation points" in p for p in curve_problems(duplicated, 5, 2))
    restarted_clock = [row(0), row(2), row(4, seconds=5.0), row(5)]
    assert curve_problems(restarted_clock, 5, 2) == [
        "train_s does not increase: [0.0, 20.0, 5.0, 50.0]"
    ]


def test_mean_curves_average_seeds_pointwise_with_std_from_two_seeds():
    rows = [row(0, 0, knn=0.2), row(2, 0, knn=0.4, seconds=30.0)]
    rows += [row(0, 1, knn=0.3), row(2, 1, knn=0.6, seconds=50.0), row(0, 0, "mae", 0.1)]
    curves = mean_curves(rows)
    none = curves[("p", "simclr", "none")]
    assert [p["epoch"] for p in none] == [0, 2] and [p["seeds"] for p in none] == [2, 2]
    assert none[1]["knn_val"] == pytest.approx(0.5)
    assert none[1]["knn_val_std"] == pytest.approx(statistics.stdev([0.4, 0.6]))
    assert none[1]["train_s"] == pytest.approx(40.0)
    assert curves[("p", "simclr", "mae")][0]["knn_val_std"] is None  # one seed: no band
    assert value_at(none, "images_seen", 199)["epoch"] == 0
    assert value_at(none, "images_seen", 200)["epoch"] == 2
    assert value_at(none, "train_s", -1) is None


def test_budget_table_reads_the_last_point_before_each_budget_and_equal_wallclock():
    # none: 100 images and 10 s per epoch; adios: 100 images and 40 s per epoch
    rows = [row(e, knn=0.1 * e) for e in (0, 1, 2, 3)]
    rows += [row(e, scheme="adios", knn=0.2 * e, seconds=40.0 * e) for e in (0, 1, 2, 3)]
    lines = budget_table(rows, image_budgets=(150, 300, 1000))
    header = lines[2]
    assert "150 images" in header and "equal wall-clock" in header
    by_scheme = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines[4:6]}
    # none at 150 images: epoch 1 (100 images) -> 10.0; at 300: epoch 3 -> 30.0; 1000: not reached
    assert by_scheme["none"][2:5] == ["10.0", "30.0", "–"]
    # equal wall-clock = none's 30 s: adios had done epoch 0 only (40 s per epoch) -> 0.0
    assert by_scheme["adios"][5] == "0.0 (epoch 0)" and by_scheme["none"][5] == "30.0 (epoch 3)"


def test_default_image_budgets_are_fractions_of_the_longest_curve():
    """none saw 400 images (4 epochs), adios 200 so far: budgets 100, 200 and 400 images."""
    rows = [row(e, knn=0.1 * e) for e in (0, 1, 2, 3, 4)]
    rows += [row(e, scheme="adios", knn=0.2 * e) for e in (0, 1, 2)]
    lines = budget_table(rows)
    assert lines[2].startswith("| scheme | objective | 100 images | 200 images | 400 images |")
    by_scheme = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in lines[4:6]}
    assert by_scheme["none"][2:5] == ["10.0", "20.0", "40.0"]
    assert by_scheme["adios"][2:5] == ["20.0", "40.0", "–"]  # 400 not reached yet


def test_axis_units_follow_the_largest_value():
    assert axis_unit("images_seen", 1_000_000) == ("training images seen (millions)", 1e-6)
    assert axis_unit("images_seen", 16_384) == ("training images seen (thousands)", 1e-3)
    assert axis_unit("train_s", 5 * 3600) == ("training wall-clock (hours, steps only)", 1 / 3600)
    assert axis_unit("train_s", 1800) == ("training wall-clock (minutes, steps only)", 1 / 60)
    assert axis_unit("epoch", 8) == ("epochs", 1.0)


def test_image_budget_titles():
    assert image_budget_title(250_000) == "0.25M images"
    assert image_budget_title(1_000_000) == "1M images"
    assert image_budget_title(4096) == "4,096 images"


def test_equal_wallclock_waits_for_a_finished_scheme():
    """A curve still running must not set the equal-time budget at wherever it has got to."""
    rows = [row(e, knn=0.1 * e) for e in (0, 1, 2, 3)]  # none: finished, 30 s
    rows += [row(e, scheme="adios", knn=0.2 * e, seconds=5.0 * e) for e in (0, 1)]  # running
    finished = {("p", "simclr", "none")}
    header = budget_table(rows, image_budgets=(100,), finished=finished)[2]
    assert "0 min (equal wall-clock)" in header  # the column is there (30 s and 5 s both
    # print as 0 min; the entries below tell the two budgets apart)
    by_scheme = {line.split(" | ")[0].strip("| "): line.split(" | ")
                 for line in budget_table(rows, image_budgets=(100,), finished=finished)[4:6]}
    assert by_scheme["none"][3] == "30.0 (epoch 3)"  # not epoch 0 at a 5 s budget
    assert "equal wall-clock" not in budget_table(rows, image_budgets=(100,), finished=set())[2]
