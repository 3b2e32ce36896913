"""The backgrounds test: variants keep the objects, and a background-reading encoder shows a gap."""

import dataclasses

import torch
from torch import nn

from adios.config import DataConfig
from adios.data.datasets import load_dataset
from adios.data.scenes import SceneConfig, generate_backgrounds, generate_scenes
from adios.evaluation.robustness import background_variants, evaluate_backgrounds, split_seeds

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_variants_keep_the_objects_and_swap_only_the_background():
    config = SceneConfig(background_class_correlation=0.5)
    scenes = generate_scenes(12, config, seed=5)
    variants = background_variants(scenes, seed=99, fill=(128, 128, 128))
    objects = scenes.instances.unsqueeze(1).expand_as(scenes.images) > 0
    for name in ("original", "only_fg", "mixed_same", "mixed_rand"):
        assert torch.equal(variants[name][objects], scenes.images[objects]), name
    assert (variants["only_fg"][~objects] == 128).all()
    assert torch.equal(variants["only_bg"], scenes.backgrounds)
    same = generate_backgrounds(
        12, dataclasses.replace(config, background_class_correlation=1.0), 99, scenes.largest_shape
    )
    rand = generate_backgrounds(
        12, dataclasses.replace(config, background_class_correlation=0.0), 99
    )
    assert torch.equal(variants["mixed_same"][~objects], same[~objects])
    assert torch.equal(variants["mixed_rand"][~objects], rand[~objects])
    assert not torch.equal(variants["mixed_same"], scenes.images)


def test_split_seeds_give_the_datasets_own_objects():
    data = DataConfig(num_train=6, num_val=4, num_test=5, seed=2)
    dataset = load_dataset(data)
    for split, seed in zip((dataset.train, dataset.val, dataset.test), split_seeds(2), strict=True):
        scenes = generate_scenes(len(split), data.scenes, seed)
        assert torch.equal(scenes.instances, split.instances)


class CornerColours(nn.Module):
    """An encoder that sees only the image corners, i.e. the background."""

    out_dim = 13

    def forward(self, x):
        corners = [x[:, :, :4, :4], x[:, :, :4, -4:], x[:, :, -4:, :4], x[:, :, -4:, -4:]]
        return torch.cat(
            [c.mean(dim=(2, 3)) for c in corners] + [torch.ones_like(x[:, :1, 0, 0])], dim=1
        )


class Blind(nn.Module):
    out_dim = 2

    def forward(self, x):
        return torch.ones(x.shape[0], 2, device=x.device)


def test_a_background_reader_leans_on_the_background_and_a_blind_encoder_does_not():
    config = SceneConfig(
        background_class_correlation=1.0, shapes=("circle", "square", "plus", "star")
    )
    args = (config, (160, 60, 80), 0, MEAN, STD, torch.device("cpu"))
    result, variants = evaluate_backgrounds(CornerColours(), *args)
    assert set(variants) == {"original", "only_fg", "only_bg", "mixed_same", "mixed_rand"}
    for probe in ("linear", "knn"):
        table = result[probe]
        assert table["original"]["top1"] > 0.9 and table["only_bg"]["top1"] > 0.9
        assert table["mixed_rand"]["top1"] < 0.5
        assert table["background_gap"] > 0.5
        assert table["background_gap"] == table["mixed_same"]["top1"] - table["mixed_rand"]["top1"]
    blind, _ = evaluate_backgrounds(Blind(), *args)
    assert blind["linear"]["background_gap"] == 0.0 and blind["knn"]["background_gap"] == 0.0
