import pytest
import torch
from torch import nn

from adios.models.heads import (
    byol_projector,
    mlp,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
)
from adios.models.norm import BatchNorm1d


def describe(head: nn.Sequential) -> list[tuple]:
    """Layer-by-layer summary: type, dims and whether bias/affine parameters exist."""
    summary = []
    for layer in head:
        if isinstance(layer, nn.Linear):
            summary.append(
                ("Linear", layer.in_features, layer.out_features, layer.bias is not None)
            )
        elif isinstance(layer, nn.BatchNorm1d):
            assert isinstance(layer, BatchNorm1d)
            summary.append(("BN", layer.num_features, layer.affine))
        elif isinstance(layer, nn.ReLU):
            summary.append(("ReLU",))
        else:
            raise AssertionError(f"unexpected layer {layer}")
    return summary


def test_mlp_structure():
    assert describe(mlp([5, 7, 3])) == [
        ("Linear", 5, 7, False),
        ("BN", 7, True),
        ("ReLU",),
        ("Linear", 7, 3, True),
    ]
    assert describe(mlp([5, 7, 3], batch_norm=False, last_batch_norm=True)) == [
        ("Linear", 5, 7, True),
        ("ReLU",),
        ("Linear", 7, 3, False),
        ("BN", 3, True),
    ]
    assert describe(mlp([5, 3], last_batch_norm="no_affine")) == [
        ("Linear", 5, 3, False),
        ("BN", 3, False),
    ]


def test_simclr_projector():
    assert describe(simclr_projector(16, hidden=32, out=8)) == [
        ("Linear", 16, 32, True),
        ("ReLU",),
        ("Linear", 32, 8, True),
    ]
    assert describe(simclr_projector(512))[-1] == ("Linear", 2048, 128, True)


def test_byol_projector_and_predictor():
    assert describe(byol_projector(16, hidden=32, out=8)) == [
        ("Linear", 16, 32, False),
        ("BN", 32, True),
        ("ReLU",),
        ("Linear", 32, 8, True),
    ]
    predictor = byol_projector(256)
    assert describe(predictor)[0] == ("Linear", 256, 4096, False)
    assert describe(predictor)[-1] == ("Linear", 4096, 256, True)


def test_simsiam_projector_and_predictor():
    assert describe(simsiam_projector(16, hidden=32, out=24)) == [
        ("Linear", 16, 32, False),
        ("BN", 32, True),
        ("ReLU",),
        ("Linear", 32, 32, False),
        ("BN", 32, True),
        ("ReLU",),
        ("Linear", 32, 24, False),
        ("BN", 24, False),
    ]
    assert describe(simsiam_predictor(24, hidden=8)) == [
        ("Linear", 24, 8, False),
        ("BN", 8, True),
        ("ReLU",),
        ("Linear", 8, 24, True),
    ]
    assert describe(simsiam_predictor())[0] == ("Linear", 2048, 512, False)


@pytest.mark.parametrize(
    "head, in_dim, out_dim",
    [
        (simclr_projector(16, 32, 8), 16, 8),
        (byol_projector(16, 32, 8), 16, 8),
        (simsiam_projector(16, 32, 24), 16, 24),
        (simsiam_predictor(24, 8), 24, 24),
    ],
)
def test_output_shapes(head, in_dim, out_dim):
    assert head(torch.randn(4, in_dim)).shape == (4, out_dim)


def test_no_affine_output_is_standardised():
    # A last BN without affine outputs zero-mean, unit-variance features per dimension in training.
    out = simsiam_projector(16, hidden=32, out=24)(torch.randn(64, 16))
    torch.testing.assert_close(out.mean(0), torch.zeros(24), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(24), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "kwargs", [{"dims": [5]}, {"dims": [5, 0]}, {"dims": [5, 3], "last_batch_norm": "affine"}]
)
def test_mlp_validation(kwargs):
    with pytest.raises(ValueError):
        mlp(**kwargs)
