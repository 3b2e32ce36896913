import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion

from adios.evaluation.scores import (
    balanced_accuracy,
    confusion_matrix,
    majority_class,
    majority_rate,
)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_matches_sklearn_with_skewed_and_absent_classes(seed):
    generator = torch.Generator().manual_seed(seed)
    # skewed labels over classes 0-4 (class 5 never occurs), noisy predictions over 0-5
    labels = torch.multinomial(torch.tensor([8.0, 4, 2, 1, 1]), 300, True, generator=generator)
    predictions = torch.where(
        torch.rand(300, generator=generator) < 0.6, labels, torch.randint(6, (300,))
    )
    assert balanced_accuracy(predictions, labels, 6) == pytest.approx(
        balanced_accuracy_score(labels.numpy(), predictions.numpy())
    )
    np.testing.assert_array_equal(
        confusion_matrix(predictions, labels, 6), sk_confusion(labels, predictions, labels=range(6))
    )


def test_always_the_majority_class_scores_its_frequency_but_balanced_one_over_k():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    always_zero = torch.zeros(6, dtype=torch.long)
    assert balanced_accuracy(always_zero, labels, 3) == pytest.approx(1 / 3)
    assert majority_rate(labels, labels) == pytest.approx(0.5)


def test_majority_class_comes_from_training_labels_ignoring_unlabelled():
    train = torch.tensor([-1, -1, -1, 2, 2, 1, 1, 0])  # -1: unlabelled (STL-10); tie 1-2: lower
    assert majority_class(train) == 1
    test = torch.tensor([1, 2, 2, 2, 0])
    assert majority_rate(train, test) == pytest.approx(1 / 5)  # test's own majority would be 3/5
    with pytest.raises(ValueError, match="no labelled"):
        majority_class(torch.tensor([-1, -1]))
