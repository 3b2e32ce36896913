"""The published recipe: each paper preset beside the reference script it reproduces.

The numbers below are facts read from the authors' repository (YugeTen/adios): the training
scripts ``bash_files/training/<dataset>/<backbone>/<method>.sh`` and, where a script sets nothing,
the argparse defaults of ``src/args/*.py`` and ``src/methods/*.py``. They are given under the
reference's own argument names; :data:`OURS` says which config key of ours each one is, and
:func:`effective` reads that key from a resolved config (filling what a ``null`` means).

``python -m adios.reference > docs/presets.md`` regenerates the side-by-side table;
``tests/test_reference.py`` checks every preset against its script and that the file is current.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from adios.config import Config, load_config
from adios.objectives import OBJECTIVES

REPOSITORY = "YugeTen/adios"
SCRIPTS = "bash_files/training/"

# The reference code's defaults for what no script sets (file: argument = value).
DEFAULTS: dict[str, Any] = {
    "lars": True,  # src/methods/base.py --lars
    "grad_clip_lars": True,  # src/methods/base.py --grad_clip_lars
    "eta_lars": 0.02,  # src/methods/base.py --eta_lars
    "exclude_bias_n_norm": True,  # src/methods/base.py
    "momentum": 0.9,  # src/args/utils.py extra_optimizer_args for sgd
    "scheduler": "warmup_cosine",  # every script
    "warmup_epochs": 10,  # src/methods/base.py --warmup_epochs
    "warmup_start_lr": 0.003,  # src/methods/base.py --warmup_start_lr
    "min_lr": 0.0,  # src/methods/base.py --min_lr
    "classifier_lr": 0.1,  # src/methods/base.py --classifier_lr
    "brightness": 0.8,  # src/args/dataset.py
    "contrast": 0.8,
    "saturation": 0.8,
    "hue": 0.2,
    "jitter_p": 0.8,  # src/utils/pretrain_dataloader.py RandomApply(ColorJitter, p=0.8)
    "grayscale_p": 0.2,  # RandomGrayscale(p=0.2)
    "gaussian_prob": 0.5,  # src/args/dataset.py --gaussian_prob
    "blur_sigma": (0.1, 2.0),  # pretrain_dataloader.py GaussianBlur, PIL radius in crop pixels
    "solarization_prob": 0.0,  # src/args/dataset.py --solarization_prob
    "min_scale": 0.08,  # src/args/dataset.py --min_scale
    "flip_p": 0.5,  # RandomHorizontalFlip(p=0.5)
    "temperature": 0.1,  # src/methods/simclr_adios.py --temperature
    "alpha_entropy": 0.0,
    "unet_norm": "gn",
    "base_tau_momentum": 0.99,  # src/methods/base.py BaseMomentumModel
    "final_tau_momentum": 1.0,
}
# train_mask_epoch: src/methods/base_adios.py, 0 for BaseADIOSModel, 10 for the momentum (BYOL) one
TRAIN_MASK_EPOCH = {"simclr": 0, "simsiam": 0, "byol": 10}
IMAGE_SIZE = {"imagenet100s": 96, "stl10": 96, "imagenet100": 224}  # src/args/utils.py
# Normalisation of src/utils/pretrain_dataloader.py (ImagenetTransform, STLTransform).
MEAN_STD = {
    "imagenet100s": ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
    "imagenet100": ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261)),
}

# What each script passes (its own argument names and values), copied as facts.
SCRIPT_ARGS: dict[str, dict[str, Any]] = {
    "imagenet100s-simclr-adios": {
        "script": "imagenet100s/resnet18/simclr_adios.sh",
        "dataset": "imagenet100s", "encoder": "resnet18", "method": "simclr_adios",
        "alpha_entropy": 0.711773255433044, "alpha_sparsity": 0.9229467944410698,
        "batch_size": 128, "classifier_lr": 0.1, "mask_lr": 0.014515024186652984,
        "weight_decay": 0.0001, "max_epochs": 500, "lr": 0.11127702230184772,
        "temperature": 0.2, "brightness": 0.8, "contrast": 0.8, "hue": 0.2, "saturation": 0.8,
        "N": 4, "mask_fbase": 32, "output_dim": 128, "proj_hidden_dim": 2048, "unet_norm": "in",
    },
    "imagenet100s-byol-adios": {
        "script": "imagenet100s/resnet18/byol_adios.sh",
        "dataset": "imagenet100s", "encoder": "resnet18", "method": "byol_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.40384562663515944, "batch_size": 128,
        "lr": 0.24140186236916927, "mask_lr": 0.06599301363636853, "max_epochs": 500,
        "weight_decay": 1e-05, "brightness": 0.4, "contrast": 0.4, "hue": 0.1,
        "saturation": 0.2, "N": 6, "mask_fbase": 16, "output_dim": 256,
        "pred_hidden_dim": 8192, "proj_hidden_dim": 4096, "unet_norm": "gn",
    },
    "imagenet100s-simsiam-adios": {
        "script": "imagenet100s/resnet18/simsiam_adios.sh",
        "dataset": "imagenet100s", "encoder": "resnet18", "method": "simsiam_adios",
        "alpha_entropy": 0.2857646914017864, "alpha_sparsity": 0.200319625755856,
        "batch_size": 128, "classifier_lr": 0.1, "lr": 0.8470842123448166, "mask_fbase": 16,
        "mask_lr": 0.08023435854528733, "max_epochs": 500, "use_both_mask": True,
        "use_no_mask": True, "use_symmetry_mask": False, "weight_decay": 1e-05,
        "brightness": 0.4, "contrast": 0.4, "hue": 0.1, "saturation": 0.4, "N": 4,
        "output_dim": 2048, "pred_hidden_dim": 512, "proj_hidden_dim": 2048, "unet_norm": "gn",
        "num_blocks": 4,
    },
    "imagenet100s-vit-simclr-adios": {
        "script": "imagenet100s/vittiny/simclr_adios.sh",
        "dataset": "imagenet100s", "encoder": "vit_tiny", "method": "simclr_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.8890717462273039, "batch_size": 128,
        "lr": 0.11572042971808227, "mask_lr": 0.03340125573939769, "max_epochs": 300,
        "temperature": 0.2, "weight_decay": 0.0001, "brightness": 0.8, "contrast": 0.8,
        "hue": 0.2, "saturation": 0.8, "N": 6, "mask_fbase": 16, "output_dim": 128,
        "proj_hidden_dim": 2048, "unet_norm": "gn",
    },
    "stl10-simclr-adios": {
        "script": "stl10/resnet18/simclr_adios.sh",
        "dataset": "stl10", "encoder": "resnet18", "method": "simclr_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.0, "batch_size": 256, "classifier_lr": 0.1,
        "lr": 0.13234838295784523, "mask_lr": 0.01946841419435407,
        "weight_decay": 8.504658547335148e-05, "temperature": 0.2, "max_epochs": 400, "N": 6,
        "mask_fbase": 128, "output_dim": 256, "proj_hidden_dim": 2048, "unet_norm": "gn",
    },
    "stl10-byol-adios": {
        "script": "stl10/resnet18/byol_adios.sh",
        "dataset": "stl10", "encoder": "resnet18", "method": "byol_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 1.7193143216139353, "batch_size": 128,
        "classifier_lr": 0.1, "lr": 0.2920279558260822, "mask_lr": 0.09281403683825379,
        "weight_decay": 9.912019840903654e-06, "max_epochs": 400, "N": 6, "mask_fbase": 64,
        "output_dim": 256, "pred_hidden_dim": 8192, "proj_hidden_dim": 4096, "unet_norm": "gn",
    },
    "stl10-simsiam-adios": {
        "script": "stl10/resnet18/simsiam_adios.sh",
        "dataset": "stl10", "encoder": "resnet18", "method": "simsiam_adios",
        "batch_size": 128, "lr": 0.4436168048573669, "mask_lr": 0.038296424016559166,
        "weight_decay": 7.227625739330174e-06, "alpha_entropy": 0.0, "alpha_sparsity": 1.0,
        "use_both_mask": False, "use_no_mask": True, "use_symmetry_mask": False,
        "max_epochs": 400, "brightness": 0.5521874334305088, "contrast": 0.4775521429505951,
        "hue": 0.2, "saturation": 0.5784474905390056, "N": 6, "mask_fbase": 32,
        "output_dim": 256, "proj_hidden_dim": 2048, "pred_hidden_dim": 512, "unet_norm": "gn",
        "num_blocks": 5,
    },
    "imagenet100-simclr-adios-s": {
        "script": "imagenet100/resnet18/simclr_adios_s.sh",
        "dataset": "imagenet100", "encoder": "resnet18", "method": "simclr_adios_s",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.75, "batch_size": 128, "temperature": 0.2,
        "lr": 0.18955780763100336, "mask_lr": 0.4987622134866454, "weight_decay": 0.0001,
        "max_epochs": 400, "brightness": 0.7, "contrast": 0.6, "hue": 0.15, "saturation": 0.8,
        "N": 4, "mask_fbase": 8, "output_dim": 128, "proj_hidden_dim": 2048, "unet_norm": "gn",
    },
    "imagenet100-byol-adios-s": {
        "script": "imagenet100/resnet18/byol_adios_s.sh",
        "dataset": "imagenet100", "encoder": "resnet18", "method": "byol_adios_s",
        "alpha_entropy": 0.0, "alpha_sparsity": 1.0, "batch_size": 128,
        "lr": 0.8087906078374081, "mask_lr": 0.12952098519347935, "max_epochs": 400,
        "weight_decay": 1e-05, "brightness": 0.5, "contrast": 0.2, "hue": 0.05,
        "saturation": 0.25, "N": 6, "mask_fbase": 32, "output_dim": 256,
        "pred_hidden_dim": 8192, "proj_hidden_dim": 4096, "unet_norm": "gn",
    },
    "imagenet100s-vit-byol-adios": {
        "script": "imagenet100s/vittiny/byol_adios.sh",
        "dataset": "imagenet100s", "encoder": "vit_tiny", "method": "byol_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.9517975576926448, "batch_size": 128,
        "classifier_lr": 0.1, "lr": 0.21411127909038455, "mask_lr": 0.32636188418935613,
        "max_epochs": 300, "weight_decay": 1e-05, "brightness": 0.4, "contrast": 0.4,
        "hue": 0.1, "saturation": 0.2, "N": 6, "mask_fbase": 8, "output_dim": 256,
        "pred_hidden_dim": 8192, "proj_hidden_dim": 4096, "unet_norm": "gn",
    },
    "imagenet100s-vit-simsiam-adios": {
        "script": "imagenet100s/vittiny/simsiam_adios.sh",
        "dataset": "imagenet100s", "encoder": "vit_tiny", "method": "simsiam_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.7217629549008437, "batch_size": 128,
        "classifier_lr": 0.1, "lr": 0.4968768680935606, "mask_lr": 0.0665602736669426,
        "use_both_mask": True, "use_no_mask": False, "use_symmetry_mask": False,
        "weight_decay": 1e-05, "max_epochs": 300, "brightness": 0.4, "contrast": 0.4,
        "hue": 0.1, "saturation": 0.4, "N": 4, "mask_fbase": 16, "output_dim": 2048,
        "pred_hidden_dim": 512, "proj_hidden_dim": 2048, "unet_norm": "gn", "num_blocks": 4,
    },
    "stl10-vit-simclr-adios": {
        "script": "stl10/vittiny/simclr_adios.sh",
        "dataset": "stl10", "encoder": "vit_tiny", "method": "simclr_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.39131043617986705, "batch_size": 128,
        "classifier_lr": 0.1, "lr": 0.102523479861102, "mask_lr": 0.0941063568112331,
        "weight_decay": 0.0001, "temperature": 0.2, "max_epochs": 200, "N": 4,
        "mask_fbase": 32, "output_dim": 128, "proj_hidden_dim": 2048, "unet_norm": "gn",
    },
    "stl10-vit-byol-adios": {
        "script": "stl10/vittiny/byol_adios.sh",
        "dataset": "stl10", "encoder": "vit_tiny", "method": "byol_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.8269158678071891, "batch_size": 64,
        "classifier_lr": 0.1, "lr": 0.44397171059658247, "mask_lr": 0.20463999909125877,
        "weight_decay": 1e-05, "max_epochs": 200, "N": 6, "mask_fbase": 32,
        "output_dim": 256, "pred_hidden_dim": 8192, "proj_hidden_dim": 4096, "unet_norm": "gn",
    },
    "stl10-vit-simsiam-adios": {
        "script": "stl10/vittiny/simsiam_adios.sh",
        "dataset": "stl10", "encoder": "vit_tiny", "method": "simsiam_adios",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.8581936366173779, "batch_size": 128,
        "lr": 0.2917762337709393, "mask_lr": 0.0931682474492948, "max_epochs": 200,
        "use_both_mask": False, "use_no_mask": False, "use_symmetry_mask": True,
        "weight_decay": 1e-05, "brightness": 0.4, "contrast": 0.4, "hue": 0.1,
        "saturation": 0.4, "N": 6, "mask_fbase": 16, "output_dim": 2048,
        "pred_hidden_dim": 512, "proj_hidden_dim": 2048, "unet_norm": "gn", "num_blocks": 4,
    },
    "imagenet100-simsiam-adios-s": {
        "script": "imagenet100/resnet18/simsiam_adios_s.sh",
        "dataset": "imagenet100", "encoder": "resnet18", "method": "simsiam_adios_s",
        "alpha_entropy": 0.0, "alpha_sparsity": 0.5, "batch_size": 128, "classifier_lr": 0.1,
        "lr": 0.5424648008289498, "mask_lr": 0.4846424666121607, "use_both_mask": True,
        "use_no_mask": True, "use_symmetry_mask": True, "weight_decay": 1e-05,
        "max_epochs": 400, "brightness": 0.4, "contrast": 0.4, "hue": 0.1, "saturation": 0.4,
        "N": 4, "mask_fbase": 32, "output_dim": 2048, "pred_hidden_dim": 512,
        "proj_hidden_dim": 2048, "unet_norm": "gn", "num_blocks": 4,
    },
}

_NORM = {"gn": "group", "in": "instance", "no": "none"}


def reference_values(preset: str) -> dict[str, Any]:
    """What the reference trains for ``preset``, as our config keys (script over defaults)."""
    args = {**DEFAULTS, **SCRIPT_ARGS[preset]}
    method = args["method"]
    objective = method.split("_")[0]
    mean, std = MEAN_STD[args["dataset"]]
    ours: dict[str, Any] = {
        "data.image_size": IMAGE_SIZE[args["dataset"]],
        "data.mean": mean,
        "data.std": std,
        "model.backbone": args["encoder"],
        "masker.n_masks": args["N"],
        "masker.fbase": args["mask_fbase"],
        "masker.norm": _NORM[args["unet_norm"]],
        # SimSiam's U-Net depth is an argument; SimCLR and BYOL use log2(size) - 1
        "masker.num_blocks": args.get("num_blocks", IMAGE_SIZE[args["dataset"]].bit_length() - 2),
        "masking.mode": "adios-s" if method.endswith("_s") else "adios",
        "masking.alpha_sparsity": args["alpha_sparsity"],
        "masking.alpha_entropy": args["alpha_entropy"],
        "objective.name": objective,
        "objective.proj_hidden": args["proj_hidden_dim"],
        "objective.proj_out": args["output_dim"],
        "optim.name": "lars" if args["lars"] else "sgd",
        "optim.lars_clip": args["grad_clip_lars"],
        "optim.eta": args["eta_lars"],
        "optim.momentum": args["momentum"],
        "optim.batch_size": args["batch_size"],
        "optim.lr": args["lr"],
        "optim.mask_lr": args["mask_lr"],
        "optim.weight_decay": args["weight_decay"],
        "optim.mask_weight_decay": args["weight_decay"],  # the masker's groups inherit it
        "optim.warmup_epochs": args["warmup_epochs"],
        "optim.warmup_start_lr": args["warmup_start_lr"],
        "optim.final_lr_fraction": args["min_lr"],
        "optim.schedule_every": "epoch",  # schedulers step on the last batch of an epoch
        "optim.train_mask_epochs": TRAIN_MASK_EPOCH[objective],
        "optim.probe_lr": args["classifier_lr"],
        "optim.probe_lars": True,  # the classifier is a group of the encoder's LARS optimiser
        "optim.lr_scaling": "none",
        "train.epochs": args["max_epochs"],
        "train.probe_views": "both",  # BaseModel.training_step: mean CE over the two crops
        "train.bn_stats": "mixed",
        "data.drop_last": True,  # src/utils/pretrain_dataloader.py DataLoader(drop_last=True)
    }
    for view in ("view_a", "view_b"):  # one pipeline for both crops
        ours.update({
            f"augment.{view}.brightness": args["brightness"],
            f"augment.{view}.contrast": args["contrast"],
            f"augment.{view}.saturation": args["saturation"],
            f"augment.{view}.hue": args["hue"],
            f"augment.{view}.jitter_p": args["jitter_p"],
            f"augment.{view}.grayscale_p": args["grayscale_p"],
            f"augment.{view}.blur_p": args["gaussian_prob"],
            f"augment.{view}.blur_sigma": args["blur_sigma"],
            f"augment.{view}.solarize_p": args["solarization_prob"],
            f"augment.{view}.crop_scale": (args["min_scale"], 1.0),
            f"augment.{view}.flip_p": args["flip_p"],
        })
    if args["encoder"] == "resnet18":
        ours["model.stem"] = "imagenet"  # the CIFAR stem only for cifar10/cifar100
    else:  # timm's vit_tiny_patch16_224 (src/utils/backbones.py), timm's own weight init
        ours["model.vit_init"] = "timm"
    if objective == "simclr":
        ours["objective.temperature"] = args["temperature"]
    if objective in ("byol", "simsiam"):
        ours["objective.pred_hidden"] = args["pred_hidden_dim"]
    if objective == "byol":
        ours["objective.base_momentum"] = args["base_tau_momentum"]
        ours["objective.final_momentum"] = args["final_tau_momentum"]
    if objective == "simsiam":
        ours["optim.fixed_predictor_lr"] = True  # src/methods/simsiam_adios.py static_lr
        # base.py patches the static rate into the scheduler after its constructor has set every
        # group to warmup_start_lr: the predictor trains epoch 0 at that rate
        ours["optim.fixed_predictor_lr_from_epoch"] = 1
        for flag in ("use_symmetry_mask", "use_no_mask", "use_both_mask"):
            ours[f"masking.{flag}"] = args[flag]
    if method.endswith("_s"):
        ours["masking.independent_draws"] = True  # inpaint_forward and mask_forward each draw
        if objective == "simsiam":  # simsiam_adios_s.py: one chosen_mask for both views
            ours["masking.shared_view_index"] = True
    return ours


def effective(cfg: Config, key: str) -> Any:
    """The value ``key`` takes in training: ``null`` settings resolved to what they mean."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    if value is not None:
        return value
    if key == "optim.mask_weight_decay":
        return cfg.optim.weight_decay
    if key == "masker.num_blocks":
        return cfg.data.image_size.bit_length() - 2
    if key.startswith("objective."):  # the objective's own default head size
        name = key.split(".")[1]
        return inspect.signature(OBJECTIVES[cfg.objective.name].__init__).parameters[name].default
    return value


def markdown() -> str:
    """docs/presets.md: every paper preset, key by key beside the script it reproduces."""
    lines = [
        "# Paper presets beside the reference scripts",
        "",
        f"Generated by `python -m adios.reference > docs/presets.md` from `adios/reference.py` "
        f"(the scripts' numbers, read from {REPOSITORY}) and the resolved presets; "
        "`tests/test_reference.py` fails when this file is out of date or a preset disagrees "
        "with its script. Where a script sets nothing the reference's argparse default counts. "
        "What we deliberately do differently is in docs/fidelity.md.",
        "",
    ]
    for preset in SCRIPT_ARGS:
        cfg = load_config([f"preset={preset}"])
        reference = reference_values(preset)
        lines += [
            f"## `{preset}`",
            "",
            f"Script: `{SCRIPTS}{SCRIPT_ARGS[preset]['script']}`",
            "",
            "| key | preset | reference | |",
            "|---|---|---|---|",
        ]
        for key, want in reference.items():
            got = effective(cfg, key)
            flag = "" if _same(got, want) else "DIFFERS"
            lines.append(f"| `{key}` | {_show(got)} | {_show(want)} | {flag} |")
        lines.append("")
    return "\n".join(lines)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, tuple | list):
        return isinstance(got, tuple | list) and len(got) == len(want) and all(
            _same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    return got == want


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


if __name__ == "__main__":
    sys.stdout.write(markdown())
