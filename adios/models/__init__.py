"""Backbones, the occlusion model, projection heads and batch-norm statistics control."""

from __future__ import annotations

from typing import Literal

from torch import nn

from adios.models.heads import (
    byol_projector,
    mlp,
    simclr_projector,
    simsiam_predictor,
    simsiam_projector,
)
from adios.models.masker import OcclusionModel, build_masker
from adios.models.norm import BatchNorm1d, BatchNorm2d, batch_groups, frozen_bn_stats
from adios.models.resnet import ResNet18
from adios.models.vit import VIT_INITS, ViTInit, patch_size_for, timm_init_, vit_small, vit_tiny

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "OcclusionModel",
    "ResNet18",
    "batch_groups",
    "build_backbone",
    "build_masker",
    "byol_projector",
    "frozen_bn_stats",
    "mlp",
    "patch_size_for",
    "simclr_projector",
    "simsiam_predictor",
    "simsiam_projector",
    "timm_init_",
    "vit_small",
    "vit_tiny",
]

BackboneName = Literal["resnet18", "vit_tiny", "vit_small"]
_VIT_FACTORIES = {"vit_tiny": vit_tiny, "vit_small": vit_small}


def build_backbone(
    name: BackboneName,
    image_size: int,
    width: int = 64,
    stem: Literal["auto", "cifar", "cifar-reference", "imagenet"] = "auto",
    vit_init: ViTInit = "torchvision",
) -> nn.Module:
    """Backbone returning (B, out_dim) features; ``model.out_dim`` gives the size.

    ``stem="auto"`` picks the CIFAR stem (no early downsampling) up to 64 px, the ImageNet stem
    above. ``width`` and ``stem`` only exist for the ResNet, ``vit_init`` (torchvision's or the
    reference's timm initialisation) only for a ViT; asking the other backbone for them is an
    error rather than a silent no-op.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"build_backbone: image_size must be a positive int, got {image_size!r}")
    if stem not in ("auto", "cifar", "cifar-reference", "imagenet"):
        raise ValueError(
            "build_backbone: stem must be 'auto', 'cifar', 'cifar-reference' or 'imagenet', "
            f"got {stem!r}"
        )
    if vit_init not in VIT_INITS:
        raise ValueError(
            f"build_backbone: vit_init must be 'torchvision' or 'timm', got {vit_init!r}"
        )
    if name == "resnet18":
        if vit_init != "torchvision":
            raise ValueError(f"build_backbone: option vit_init={vit_init!r} applies to ViTs only")
        if stem == "auto":
            stem = "cifar" if image_size <= 64 else "imagenet"
        return ResNet18(width=width, stem=stem)
    if name in _VIT_FACTORIES:
        if width != 64:
            raise ValueError(f"build_backbone: option width={width!r} applies to resnet18 only")
        if stem != "auto":
            raise ValueError(f"build_backbone: option stem={stem!r} applies to resnet18 only")
        return _VIT_FACTORIES[name](image_size, init=vit_init)
    raise ValueError(
        f"build_backbone: unknown backbone {name!r}; choose from resnet18, vit_tiny, vit_small"
    )
