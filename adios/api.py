"""The Python API: trained models that describe themselves, and the ADIOS parts for your own loop.

An exported ``encoder.safetensors`` / ``masker.safetensors`` carries, in its safetensors header,
everything needed to rebuild the module and feed it correctly (architecture, stem, width, image
size, normalisation, preset, adios version), so :func:`load_encoder` needs nothing but the file.
Header values are JSON strings, because safetensors metadata is ``dict[str, str]``.

The building blocks re-exported here are the ones the trainer itself uses (docs/own-loop.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from adios.checkpoint import nonfinite
from adios.config import Config, load_config, to_dict
from adios.data.augment import TwoViewAugment, ViewConfig, normalize
from adios.data.datasets import fit_size
from adios.errors import AdiosError
from adios.masking.adios import (
    frozen,
    mask_confidence,
    mask_sizes,
    masked_copies,
    one_mask_per_sample,
    penalty_term,
    siamese_loss,
    sparsity_penalty,
)
from adios.models import OcclusionModel, ResNet18, build_backbone
from adios.models.masker import build_masker
from adios.objectives import build_objective

ENCODER_FILE = "encoder.safetensors"
MASKER_FILE = "masker.safetensors"
FORMAT = 1  # bumped when the meaning of a metadata key changes


class ModelFileError(AdiosError, ValueError):
    """A weights file that cannot be turned into a module (no metadata, wrong kind, missing,
    a header that does not describe its weights, weights that are not finite floats)."""


def _version() -> str:
    from adios import __version__

    return __version__


def _common(cfg: Config, kind: str) -> dict[str, Any]:
    """What every exported file says about itself: nothing about where it was trained (no
    path), since weights are shared."""
    return {"format": FORMAT, "kind": kind, "image_size": cfg.data.image_size,
            "mean": list(cfg.data.mean), "std": list(cfg.data.std), "preset": cfg.preset,
            "dataset": cfg.data.name, "adios_version": _version()}


def _masker_config(cfg: Config) -> dict[str, Any]:
    """The settings :func:`build_masker` rebuilds a masker from, and nothing else."""
    full = to_dict(cfg)
    return {"data": {"name": cfg.data.name, "image_size": cfg.data.image_size,
                     "mean": full["data"]["mean"], "std": full["data"]["std"]},
            "model": {"backbone": cfg.model.backbone}, "masker": full["masker"],
            "masking": {"mode": cfg.masking.mode, "schedule": cfg.masking.schedule},
            "objective": {"name": cfg.objective.name}}


def _encode(values: dict[str, Any]) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in values.items()}


def encoder_metadata(cfg: Config, backbone: nn.Module) -> dict[str, str]:
    """Header of an exported encoder. The stem is read off the module, so ``stem=auto`` is
    recorded as what it resolved to."""
    values = _common(cfg, "encoder")
    values.update(backbone=cfg.model.backbone, out_dim=int(backbone.out_dim))
    if isinstance(backbone, ResNet18):
        values.update(width=cfg.model.width,
                      stem="cifar" if isinstance(backbone.maxpool, nn.Identity) else "imagenet")
    else:  # a torchvision VisionTransformer
        values.update(patch_size=int(backbone.patch_size))
    return _encode(values)


def masker_metadata(cfg: Config) -> dict[str, str]:
    """Header of an exported masker: the masking mode and the masker's settings (the module
    itself is rebuilt from the configuration, by the trainer's own build_masker)."""
    values = _common(cfg, "masker")
    m = cfg.masker
    values.update(config=_masker_config(cfg), mode=cfg.masking.mode, n_masks=m.n_masks,
                  fbase=m.fbase, norm=m.norm, blur_sigma=m.blur_sigma)
    return _encode(values)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded adios metadata of a safetensors file; empty for a file written without it."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error type for a broken file
        raise ModelFileError(f"{path}: not a readable safetensors file "
                             f"({' '.join(str(err).split()):.200})") from None
    try:
        return {key: json.loads(value) for key, value in sorted(raw.items())}
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: header metadata is not adios metadata ({err})") from None


def _checked_module(weights: Path, build: Callable[[], nn.Module]) -> nn.Module:
    """The module ``build`` makes, holding the file's weights. The header's description is first
    built without memory (on the meta device) and compared with the file's tensor names and
    shapes, so a header that lies cannot allocate a huge model; the weights must be finite and
    of the module's own dtypes."""
    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except Exception as err:  # a header value no model accepts: KeyError, ValueError, ...
        raise ModelFileError(f"{weights}: its header does not describe a model adios builds "
                             f"({type(err).__name__}: {err}); export it again") from None
    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as err:
        raise ModelFileError(f"{weights}: not a readable safetensors file "
                             f"({' '.join(str(err).split()):.200})") from None
    wrong = sorted(key for key in expected.keys() | shapes.keys()
                   if key not in expected or tuple(expected[key].shape) != shapes.get(key))
    if wrong:
        raise ModelFileError(
            f"{weights}: its weights do not match the model its header describes ({len(wrong)} "
            f"tensors missing, extra or of another shape, e.g. {wrong[0]}); export it again")
    state = load_file(str(weights))
    odd = sorted(key for key, t in state.items() if t.dtype != expected[key].dtype)
    if odd:
        raise ModelFileError(f"{weights}: {odd[0]} is {state[odd[0]].dtype}, not "
                             f"{expected[odd[0]].dtype}; export it again")
    if nonfinite({"weights": state}):
        raise ModelFileError(f"{weights}: non-finite (NaN or inf) weights; the model diverged "
                             f"or the file was changed")
    module = build()
    module.load_state_dict(state)
    return module


def _locate(path: str | Path, file_name: str, kind: str) -> tuple[Path, dict[str, Any]]:
    """The weights file and its metadata; a run directory's config.yaml stands in for files
    exported before metadata existed."""
    path = Path(path)
    run_dir = path if path.is_dir() else None
    weights = path / file_name if run_dir else path
    if not weights.is_file():
        raise ModelFileError(f"{weights}: no such file" + (
            " (the run has not finished, or it trained no masker)" if run_dir else ""))
    meta = read_metadata(weights)
    if not meta:
        config = run_dir / "config.yaml" if run_dir else None
        if config is None or not config.is_file():
            raise ModelFileError(
                f"{weights} carries no adios metadata (exported by an older version); pass its "
                f"run directory, whose config.yaml describes the model, instead of the file")
        cfg = load_config([], base=yaml.safe_load(config.read_text()))
        if kind == "encoder":
            backbone = build_backbone(cfg.model.backbone, cfg.data.image_size,
                                      width=cfg.model.width, stem=cfg.model.stem)
            raw = encoder_metadata(cfg, backbone)
        else:
            raw = masker_metadata(cfg)
        meta = {key: json.loads(value) for key, value in sorted(raw.items())}
        meta["adios_version"] = None  # unknown: the file predates the header
    if meta.get("kind") != kind:
        raise ModelFileError(f"{weights} holds a {meta.get('kind')!r}, not an {kind}")
    return weights, meta


def _encoder_module(meta: dict[str, Any]) -> nn.Module:
    """torchvision's ResNet-18 at width 64 (conv1/maxpool replaced for the CIFAR stem); at other
    widths, which torchvision cannot build, adios's ResNet18 (torchvision's blocks and module
    names); the ViTs are torchvision VisionTransformers."""
    if meta["backbone"] == "resnet18" and meta["width"] == 64:
        module = torchvision.models.resnet18(weights=None)
        module.fc = nn.Identity()
        if meta["stem"] == "cifar":
            module.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            module.maxpool = nn.Identity()
        module.out_dim = 512
        return module
    if meta["backbone"] == "resnet18":
        return build_backbone("resnet18", meta["image_size"], width=meta["width"],
                              stem=meta["stem"])
    return build_backbone(meta["backbone"], meta["image_size"])


def load_encoder(path_or_run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A trained encoder in eval mode, mapping normalised images (B, 3, S, S) to features
    (B, out_dim); ``module.adios_metadata`` says S, the mean/std to normalise with, and more."""
    weights, meta = _locate(path_or_run_dir, ENCODER_FILE, "encoder")
    module = _checked_module(weights, lambda: _encoder_module(meta))
    module.adios_metadata = meta
    return module.to(device).eval()


def load_masker(path_or_run_dir: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A trained masker in eval mode: for ADIOS, normalised images -> N soft masks summing to 1
    (for token-adios, the token masker's patch scores)."""
    weights, meta = _locate(path_or_run_dir, MASKER_FILE, "masker")
    module = _checked_module(weights, lambda: build_masker(load_config([], base=meta["config"])))
    module.adios_metadata = meta
    return module.to(device).eval()


def preprocess(module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """uint8 images, channels first (B, 3, H, W), of any size, as the module was trained on
    them: resized (shorter side) to its image size, centre-cropped, normalised."""
    meta = module.adios_metadata
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        hint = (" (channels last: pass images.permute(0, 3, 1, 2))"
                if images.dim() == 4 and images.shape[-1] == 3 else "")
        raise ValueError(f"expected uint8 images, channels first (B, 3, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}{hint}")
    images = fit_size(images, meta["image_size"])
    return normalize(images.to(next(module.parameters()).device), meta["mean"], meta["std"])


__all__ = [
    "ModelFileError",
    "OcclusionModel",
    "TwoViewAugment",
    "ViewConfig",
    "build_backbone",
    "build_objective",
    "encoder_metadata",
    "frozen",
    "load_encoder",
    "load_masker",
    "mask_confidence",
    "mask_sizes",
    "masked_copies",
    "masker_metadata",
    "one_mask_per_sample",
    "penalty_term",
    "preprocess",
    "read_metadata",
    "siamese_loss",
    "sparsity_penalty",
]
