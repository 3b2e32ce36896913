import numpy as np
import pytest
import torch
from knn_reference import brute_force_scores

from adios.evaluation.knn import evaluate_knn, knn_accuracy, knn_predict, select_knn
from adios.evaluation.protocol import FeatureSet, LabelledFeatures, SealedLabels

# float round-off, bf16 or channels_last kernels: .ci/run runs these again under AVX2 kernels
pytestmark = pytest.mark.isa


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(40, 8, generator=generator, dtype=torch.float64) * 3
    train_labels = torch.randint(0, 5, (40,), generator=generator)
    query = torch.randn(23, 8, generator=generator, dtype=torch.float64)
    query_labels = torch.randint(0, 5, (23,), generator=generator)
    return train, train_labels, query, query_labels


@pytest.mark.parametrize("k", [1, 5, 20, 40, 100])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5])
def test_scores_match_brute_force(data, k, temperature):
    train, train_labels, query, _ = data
    scores = knn_predict(train, train_labels, query, 5, k=k, temperature=temperature, chunk_size=7)
    expected = brute_force_scores(train, train_labels.numpy(), query, 5, k, temperature)
    assert scores.shape == (23, 5)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-10)


def test_k_beyond_train_size_is_clamped(data):
    train, train_labels, query, _ = data
    everyone = knn_predict(train, train_labels, query, 5, k=len(train))
    torch.testing.assert_close(knn_predict(train, train_labels, query, 5, k=1000), everyone)


@pytest.mark.parametrize("k", [1, 3, 20])
def test_accuracy_matches_brute_force(data, k):
    train, train_labels, query, query_labels = data
    expected_scores = brute_force_scores(train, train_labels.numpy(), query, 5, k, 0.1)
    expected = np.mean(expected_scores.argmax(axis=1) == query_labels.numpy())
    assert knn_accuracy(train, train_labels, query, query_labels, 5, k=k) == pytest.approx(expected)


def test_tie_goes_to_lowest_class():
    train = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    train_labels = torch.tensor([3, 1, 0])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_accuracy(train, train_labels, query, torch.tensor([1]), 4, k=2) == 1.0
    assert knn_accuracy(train, train_labels, query, torch.tensor([3]), 4, k=2) == 0.0


def test_small_temperature_does_not_overflow_float32(data):
    """exp(1 / 0.005) is far beyond float32; float32 features still get the float64 scores (to
    the float32 round-off of the similarities, amplified 200x by the temperature)."""
    train, train_labels, query, _ = data
    scores = knn_predict(train.float(), train_labels, query.float(), 5, k=5, temperature=0.005)
    expected = brute_force_scores(train.float(), train_labels, query.float(), 5, 5, 0.005)
    assert scores.dtype == torch.float64 and expected.max() > np.finfo(np.float32).max
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)


def test_selection_grid_and_test_scores_match_brute_force(data):
    """Every grid point's val accuracy, the choice, and the test scores of the chosen and the
    conventional settings (bank: train + val) equal the explicit-loop reference."""
    train, train_labels, query, query_labels = data
    val, val_labels = query[:12], query_labels[:12]
    test, test_labels = query[12:], query_labels[12:]
    ks, temperatures = (1, 3, 20, 200), (0.05, 0.5)
    selection = select_knn(
        LabelledFeatures(train, train_labels),
        LabelledFeatures(val, val_labels),
        5,
        ks,
        temperatures,
    )
    expected_grid = []
    for k in ks:
        for temperature in temperatures:
            scores = brute_force_scores(train, train_labels.numpy(), val, 5, k, temperature)
            expected_grid.append(np.mean(scores.argmax(axis=1) == val_labels.numpy()))
    assert [row["val_top1"] for row in selection.grid] == pytest.approx(expected_grid)
    best = int(np.argmax(expected_grid))  # the first maximum, as documented
    assert (selection.k, selection.temperature) == (ks[best // 2], temperatures[best % 2])

    features = FeatureSet(
        LabelledFeatures(train, train_labels),
        LabelledFeatures(val, val_labels),
        test,
        SealedLabels(lambda: test_labels),
        list("abcde"),
    )
    result = evaluate_knn(features, ks, temperatures)
    bank = torch.cat([train, val]).numpy()
    bank_labels = torch.cat([train_labels, val_labels]).numpy()
    for row in result["test"].values():
        scores = brute_force_scores(bank, bank_labels, test, 5, row["k"], row["temperature"])
        assert row["top1"] == pytest.approx(np.mean(scores.argmax(axis=1) == test_labels.numpy()))
    assert result["selected"]["k"] == selection.k
    assert {(r["k"], r["temperature"]) for r in result["test"].values()} >= {(20, 0.1), (200, 0.1)}
