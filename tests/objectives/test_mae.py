"""MAE: patch order, the loss on hidden patches only (brute force), and what the encoder sees."""

import pytest
import torch

from adios.models.vit import ViTBackbone
from adios.objectives.mae import MAE, hidden_patches, patchify


def tiny_mae() -> MAE:
    torch.manual_seed(0)
    backbone = ViTBackbone(16, 4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    return MAE(backbone, decoder_dim=8, decoder_depth=1, decoder_heads=2)


def test_patchify_is_the_vits_row_major_token_order():
    index = torch.arange(16.0).view(1, 1, 4, 4)  # patch (r, c) filled with r * 4 + c
    image = index.repeat_interleave(4, 2).repeat_interleave(4, 3).expand(2, 3, 16, 16)
    patches = patchify(image, 4)
    assert patches.shape == (2, 16, 4 * 4 * 3)
    assert torch.equal(patches, torch.arange(16.0).view(1, 16, 1).expand(2, 16, 48))


def test_loss_is_the_normalised_error_on_hidden_patches():
    mae = tiny_mae()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 1, 2, 3], [15, 4, 9, 7]])
    loss, features = mae.per_image_loss(x, keep)
    prediction, _ = mae.reconstruct(x, keep)
    assert features.shape == (2, 16)
    for i in range(2):
        terms = []
        for patch in sorted(set(range(16)) - set(keep[i].tolist())):
            r, c = divmod(patch, 4)
            target = x[i, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(1, 2, 0).flatten()
            target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
            terms.append((prediction[i, patch] - target).pow(2).mean())
        assert loss[i].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_reconstruction_never_sees_hidden_pixels():
    mae = tiny_mae()
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    hidden = hidden_patches(keep, 16)
    assert hidden.sum(1).tolist() == [12, 12] and not hidden[0, 5] and hidden[0, 6]
    changed = x.clone()
    changed[:, :, 12:, 4:8] = 50.0  # patch 13: hidden in both images
    assert torch.equal(mae.reconstruct(changed, keep)[0], mae.reconstruct(x, keep)[0])
    changed[:, :, :4, :4] = 50.0  # patch 0: visible in image 0
    out = mae.reconstruct(changed, keep)[0]
    assert not torch.allclose(out[0], mae.reconstruct(x, keep)[0][0])


def test_needs_a_vit():
    with pytest.raises(ValueError, match="ViT"):
        MAE(torch.nn.Linear(2, 2))
