"""The token masker: one score per patch, equal scores at initialisation, image-dependent after."""

import pytest
import torch

from adios.models.token_masker import TokenMasker


def test_scores_per_patch_start_equal_and_depend_on_the_image():
    torch.manual_seed(0)
    masker = TokenMasker(32, 4, dim=16, heads=2)
    x = torch.randn(3, 3, 32, 32)
    scores = masker(x)
    assert scores.shape == (3, 64) and masker.num_patches == 64
    assert torch.equal(scores, torch.zeros(3, 64))  # zero head: token-random at the start
    scores.sum().backward()
    assert masker.score.weight.grad.abs().sum() > 0  # ... but it learns
    torch.nn.init.normal_(masker.score.weight)
    out = masker(x)
    assert not torch.allclose(out[0], out[1])  # scores depend on the image
    moved = x.clone()
    moved[0, :, :4, :4] += 1.0  # patch 0 of image 0: attention spreads it to every score
    changed = masker(moved)[0] != out[0]
    assert changed.sum() > 1 and torch.equal(masker(moved)[1:], out[1:])


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        TokenMasker(30, 4)
    with pytest.raises(ValueError, match="multiple"):
        TokenMasker(32, 4, dim=10, heads=4)
    with pytest.raises(ValueError, match="expected input"):
        TokenMasker(32, 4, dim=16, heads=2)(torch.randn(1, 3, 16, 16))
