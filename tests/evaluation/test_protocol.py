"""Model selection never sees the test split; the metrics match scikit-learn's."""

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    recall_score,
    top_k_accuracy_score,
)
from torch import nn

import adios.evaluation.knn as knn_module
import adios.evaluation.linear as linear_module
from adios.data.datasets import Dataset, Split
from adios.evaluation.knn import evaluate_knn, select_knn
from adios.evaluation.linear import evaluate_linear_fast
from adios.evaluation.protocol import (
    FeatureSet,
    LabelledFeatures,
    SealedLabels,
    classification_metrics,
    extract_feature_set,
)

NUM_CLASSES = 7


class TrapSplit(Split):
    """A split that records in ``log`` every read of its labels."""

    def __init__(self, images, labels, log):
        super().__init__(images)
        self._hidden, self._log = labels, log

    @property
    def labels(self):
        self._log.append("test labels read")
        return self._hidden

    @labels.setter
    def labels(self, value):  # the dataclass __init__ assigns None
        pass


class MeanColour(nn.Module):
    """A stand-in backbone: channel means and a constant, so that the direction of the feature
    (all cosine kNN sees) follows the red level."""

    out_dim = 4

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), torch.ones_like(x[:, :1, 0, 0])], dim=1)


def split_of(n, generator, log=None):
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
    images[:, 0] = (labels * 30).to(torch.uint8)[:, None, None]  # the red channel tells the class
    images[:, 0] += torch.randint(0, 10, (n, 8, 8), generator=generator, dtype=torch.uint8)
    return Split(images, labels) if log is None else TrapSplit(images, labels, log)


def test_test_labels_are_read_only_after_selection_and_prediction(monkeypatch):
    log = []
    generator = torch.Generator().manual_seed(0)
    dataset = Dataset(
        split_of(60, generator),
        split_of(30, generator),
        split_of(40, generator, log),
        NUM_CLASSES,
        [f"c{i}" for i in range(NUM_CLASSES)],
        (0.5,) * 3,
        (0.25,) * 3,
    )

    def spy(name, function):
        def wrapped(*args, **kwargs):
            log.append(f"{name} starts")
            for arg in args:  # only train and val reach selection
                if isinstance(arg, torch.Tensor | LabelledFeatures):
                    assert len(arg) in (60, 30), f"{name} got a split of {len(arg)}"
            result = function(*args, **kwargs)
            log.append(f"{name} done")
            return result

        return wrapped

    monkeypatch.setattr(knn_module, "select_knn", spy("knn selection", knn_module.select_knn))
    monkeypatch.setattr(
        linear_module,
        "select_weight_decay",
        spy("linear selection", linear_module.select_weight_decay),
    )
    features = extract_feature_set(
        MeanColour(), dataset, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), batch_size=16
    )
    assert log == [] and not features.test_labels.opened  # extraction leaves the labels sealed

    knn = evaluate_knn(features, ks=(1, 5, 20), temperatures=(0.1, 0.5))
    assert log[:2] == ["knn selection starts", "knn selection done"]
    assert set(log[2:]) == {"test labels read"}
    log.clear()
    linear, _ = evaluate_linear_fast(features, weight_decays=(1e-3, 1e-1))
    assert log[:2] == ["linear selection starts", "linear selection done"]
    assert set(log[2:]) == {"test labels read"}
    assert knn["test"]["selected"]["top1"] > 0.5 and linear["test"]["top1"] > 0.5


def features_where_val_and_test_disagree():
    """Val favours k=1 (labels follow the nearest point), test favours a large k (labels follow
    the region while the nearest point is noise)."""
    generator = torch.Generator().manual_seed(3)
    n_clusters, per_cluster = 6, 30
    centres = torch.randn(n_clusters, 16, generator=generator) * 3
    points = centres.repeat_interleave(per_cluster, 0) + torch.randn(
        n_clusters * per_cluster, 16, generator=generator
    )
    region = torch.arange(n_clusters).repeat_interleave(per_cluster) % 3
    noisy = torch.where(
        torch.rand(len(region), generator=generator) < 0.45,
        torch.randint(0, 3, (len(region),), generator=generator),
        region,
    )
    train = LabelledFeatures(points, noisy)
    # val: near-copies of training points with the training point's (noisy) label -> k=1 wins
    pick = torch.randperm(len(points), generator=generator)[:60]
    val = LabelledFeatures(
        points[pick] + 0.01 * torch.randn(60, 16, generator=generator), noisy[pick]
    )
    # test: fresh points of each region with the region's label -> a large k wins
    test_region = torch.randint(0, n_clusters, (90,), generator=generator)
    test = centres[test_region] + torch.randn(90, 16, generator=generator)
    return train, val, test, test_region % 3


def brute_force_accuracy(bank, query_features, query_labels, k, temperature):
    scores = knn_module.knn_predict(
        bank.features, bank.labels, query_features, 3, k=k, temperature=temperature
    )
    return (scores.argmax(1) == query_labels).double().mean().item()


def test_selection_uses_val_not_test():
    """This test fails if the selection step is handed the test split."""
    train, val, test, test_labels = features_where_val_and_test_disagree()
    ks, temperatures = (1, 50), (0.1,)
    on_val = {k: brute_force_accuracy(train, val.features, val.labels, k, 0.1) for k in ks}
    on_test = {k: brute_force_accuracy(train, test, test_labels, k, 0.1) for k in ks}
    assert max(on_val, key=on_val.get) == 1 and max(on_test, key=on_test.get) == 50
    features = FeatureSet(train, val, test, SealedLabels(lambda: test_labels), ["a", "b", "c"])
    result = evaluate_knn(features, ks=ks, temperatures=temperatures)
    assert result["selected"]["k"] == 1
    assert select_knn(train, val, 3, ks, temperatures).k == 1


def test_sealed_labels_open_only_when_scoring():
    reads = []
    sealed = SealedLabels(lambda: reads.append(1) or torch.tensor([0, 1]))
    assert not sealed.opened and reads == []
    sealed.score(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), ["a", "b"])
    assert sealed.opened and reads == [1]


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_classification_metrics_match_sklearn():
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, NUM_CLASSES - 1, (200,), generator=generator)  # class 6 absent
    scores = torch.randn(200, NUM_CLASSES, generator=generator)
    scores[torch.arange(200), labels] += 1.0
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    scores[0, 6] = 100.0  # a prediction of the absent class (sklearn warns; that is the point)
    metrics = classification_metrics(scores, labels, names)
    predictions = scores.argmax(1).numpy()
    assert metrics["top1"] == pytest.approx(accuracy_score(labels.numpy(), predictions))
    assert metrics["top5"] == pytest.approx(
        top_k_accuracy_score(labels.numpy(), scores.numpy(), k=5, labels=range(NUM_CLASSES))
    )
    np.testing.assert_array_equal(
        metrics["confusion"],
        confusion_matrix(labels.numpy(), predictions, labels=range(NUM_CLASSES)),
    )
    recall = recall_score(labels.numpy(), predictions, labels=range(NUM_CLASSES - 1), average=None)
    np.testing.assert_allclose([metrics["per_class"][n] for n in names[:-1]], recall)
    assert metrics["per_class"]["c6"] is None
    # sklearn's balanced accuracy averages recall over the classes present in y_true
    assert metrics["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(labels.numpy(), predictions)
    )
