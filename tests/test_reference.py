"""Every paper preset trains its reference script's recipe, and docs/presets.md is current.

The table below is copied by hand from the authors' scripts (YugeTen/adios,
bash_files/training/...), independently of adios/reference.py: a preset, the reference module
and this table must all agree. Jitter is (brightness, contrast, saturation, hue); scripts that set
none use the reference default 0.8, 0.8, 0.8, 0.2. No script sets blur (p 0.5, sigma 0.1-2 px),
solarisation (0) or the LARS mode (clip, --grad_clip_lars defaults to true). Every script
of bash_files/training/ (fifteen) has its preset here.
"""

from pathlib import Path

import pytest

from adios.config import load_config
from adios.reference import SCRIPT_ARGS, effective, markdown, reference_values

# preset: (script, N, alpha_sparsity, alpha_entropy, lr, mask_lr, weight_decay, batch, epochs,
#          temperature or None, fbase, unet norm, (proj_hidden, out, pred_hidden or None), jitter)
SCRIPTS = {
    "imagenet100s-simclr-adios": (
        "imagenet100s/resnet18/simclr_adios.sh", 4, 0.9229467944410698, 0.711773255433044,
        0.11127702230184772, 0.014515024186652984, 1e-4, 128, 500, 0.2, 32, "instance",
        (2048, 128, None), (0.8, 0.8, 0.8, 0.2)),
    "imagenet100s-byol-adios": (
        "imagenet100s/resnet18/byol_adios.sh", 6, 0.40384562663515944, 0.0,
        0.24140186236916927, 0.06599301363636853, 1e-5, 128, 500, None, 16, "group",
        (4096, 256, 8192), (0.4, 0.4, 0.2, 0.1)),
    "imagenet100s-simsiam-adios": (
        "imagenet100s/resnet18/simsiam_adios.sh", 4, 0.200319625755856, 0.2857646914017864,
        0.8470842123448166, 0.08023435854528733, 1e-5, 128, 500, None, 16, "group",
        (2048, 2048, 512), (0.4, 0.4, 0.4, 0.1)),
    "imagenet100s-vit-simclr-adios": (
        "imagenet100s/vittiny/simclr_adios.sh", 6, 0.8890717462273039, 0.0,
        0.11572042971808227, 0.03340125573939769, 1e-4, 128, 300, 0.2, 16, "group",
        (2048, 128, None), (0.8, 0.8, 0.8, 0.2)),
    "stl10-simclr-adios": (
        "stl10/resnet18/simclr_adios.sh", 6, 0.0, 0.0, 0.13234838295784523,
        0.01946841419435407, 8.504658547335148e-05, 256, 400, 0.2, 128, "group",
        (2048, 256, None), (0.8, 0.8, 0.8, 0.2)),
    "stl10-byol-adios": (
        "stl10/resnet18/byol_adios.sh", 6, 1.7193143216139353, 0.0, 0.2920279558260822,
        0.09281403683825379, 9.912019840903654e-06, 128, 400, None, 64, "group",
        (4096, 256, 8192), (0.8, 0.8, 0.8, 0.2)),
    "stl10-simsiam-adios": (
        "stl10/resnet18/simsiam_adios.sh", 6, 1.0, 0.0, 0.4436168048573669,
        0.038296424016559166, 7.227625739330174e-06, 128, 400, None, 32, "group",
        (2048, 256, 512), (0.5521874334305088, 0.4775521429505951, 0.5784474905390056, 0.2)),
    "imagenet100-simclr-adios-s": (
        "imagenet100/resnet18/simclr_adios_s.sh", 4, 0.75, 0.0, 0.18955780763100336,
        0.4987622134866454, 1e-4, 128, 400, 0.2, 8, "group", (2048, 128, None),
        (0.7, 0.6, 0.8, 0.15)),
    "imagenet100-byol-adios-s": (
        "imagenet100/resnet18/byol_adios_s.sh", 6, 1.0, 0.0, 0.8087906078374081,
        0.12952098519347935, 1e-5, 128, 400, None, 32, "group", (4096, 256, 8192),
        (0.5, 0.2, 0.25, 0.05)),
    "imagenet100s-vit-byol-adios": (
        "imagenet100s/vittiny/byol_adios.sh", 6, 0.9517975576926448, 0.0,
        0.21411127909038455, 0.32636188418935613, 1e-5, 128, 300, None, 8, "group",
        (4096, 256, 8192), (0.4, 0.4, 0.2, 0.1)),
    "imagenet100s-vit-simsiam-adios": (
        "imagenet100s/vittiny/simsiam_adios.sh", 4, 0.7217629549008437, 0.0,
        0.4968768680935606, 0.0665602736669426, 1e-5, 128, 300, None, 16, "group",
        (2048, 2048, 512), (0.4, 0.4, 0.4, 0.1)),
    "stl10-vit-simclr-adios": (
        "stl10/vittiny/simclr_adios.sh", 4, 0.39131043617986705, 0.0, 0.102523479861102,
        0.0941063568112331, 1e-4, 128, 200, 0.2, 32, "group", (2048, 128, None),
        (0.8, 0.8, 0.8, 0.2)),
    "stl10-vit-byol-adios": (
        "stl10/vittiny/byol_adios.sh", 6, 0.8269158678071891, 0.0, 0.44397171059658247,
        0.20463999909125877, 1e-5, 64, 200, None, 32, "group", (4096, 256, 8192),
        (0.8, 0.8, 0.8, 0.2)),
    "stl10-vit-simsiam-adios": (
        "stl10/vittiny/simsiam_adios.sh", 6, 0.8581936366173779, 0.0, 0.2917762337709393,
        0.0931682474492948, 1e-5, 128, 200, None, 16, "group", (2048, 2048, 512),
        (0.4, 0.4, 0.4, 0.1)),
    "imagenet100-simsiam-adios-s": (
        "imagenet100/resnet18/simsiam_adios_s.sh", 4, 0.5, 0.0, 0.5424648008289498,
        0.4846424666121607, 1e-5, 128, 400, None, 32, "group", (2048, 2048, 512),
        (0.4, 0.4, 0.4, 0.1)),
}
# SimSiam scripts: --use_symmetry_mask, --use_no_mask, --use_both_mask, --num_blocks
SIMSIAM = {
    "imagenet100s-simsiam-adios": (False, True, True, 4),
    "stl10-simsiam-adios": (False, True, False, 5),
    "imagenet100s-vit-simsiam-adios": (False, False, True, 4),
    "stl10-vit-simsiam-adios": (True, False, False, 4),
    "imagenet100-simsiam-adios-s": (True, True, True, 4),
}


@pytest.mark.parametrize("preset", sorted(SCRIPTS))
def test_preset_matches_its_script_key_by_key(preset: str) -> None:
    (script, n, alpha, entropy, lr, mask_lr, wd, batch, epochs, temperature, fbase, norm,
     heads, jitter) = SCRIPTS[preset]
    cfg = load_config([f"preset={preset}"])
    assert script in cfg.description and SCRIPT_ARGS[preset]["script"] == script
    expected = {
        "masker.n_masks": n, "masking.alpha_sparsity": alpha, "masking.alpha_entropy": entropy,
        "optim.lr": lr, "optim.mask_lr": mask_lr, "optim.weight_decay": wd,
        "optim.mask_weight_decay": wd, "optim.batch_size": batch, "train.epochs": epochs,
        "masker.fbase": fbase, "masker.norm": norm, "objective.proj_hidden": heads[0],
        "objective.proj_out": heads[1], "optim.name": "lars", "optim.lars_clip": True,
        "optim.eta": 0.02, "optim.warmup_epochs": 10, "optim.warmup_start_lr": 0.003,
        "data.drop_last": True,  # the reference's pretraining DataLoader(drop_last=True)
    }
    if "-vit-" in preset:  # src/utils/backbones.py builds timm's vit_tiny_patch16_224
        expected["model.vit_init"] = "timm"
    if preset.endswith("-adios-s"):  # mask_forward and inpaint_forward each draw an index
        expected["masking.independent_draws"] = True
    if preset in SIMSIAM:
        symmetry, no_mask, both_mask, blocks = SIMSIAM[preset]
        expected.update({
            "masking.use_symmetry_mask": symmetry, "masking.use_no_mask": no_mask,
            "masking.use_both_mask": both_mask, "masker.num_blocks": blocks,
            # static_lr, patched in after the scheduler set epoch 0 to warmup_start_lr
            "optim.fixed_predictor_lr": True, "optim.fixed_predictor_lr_from_epoch": 1,
        })
    if preset in SIMSIAM and preset.endswith("-adios-s"):
        expected["masking.shared_view_index"] = True  # simsiam_adios_s.py: one chosen_mask
    if temperature is not None:
        expected["objective.temperature"] = temperature
    if heads[2] is not None:
        expected["objective.pred_hidden"] = heads[2]
    for view in ("view_a", "view_b"):
        for name, value in zip(("brightness", "contrast", "saturation", "hue"), jitter,
                               strict=True):
            expected[f"augment.{view}.{name}"] = value
        expected.update({f"augment.{view}.jitter_p": 0.8, f"augment.{view}.blur_p": 0.5,
                         f"augment.{view}.blur_sigma": (0.1, 2.0),
                         f"augment.{view}.solarize_p": 0.0})
    for key, value in expected.items():
        got = effective(cfg, key)
        same_kind = isinstance(got, bool) == isinstance(value, bool)  # True is not 1 here
        assert got == value and same_kind, f"{preset}: {key} = {got!r}, script {value!r}"
    # ... and the reference module (the docs' source) says the same for every key it lists
    reference = reference_values(preset)
    for key, value in expected.items():
        assert reference[key] == value, f"adios/reference.py: {key}"
    for key, value in reference.items():
        assert effective(cfg, key) == value, f"{preset}: {key}"


def test_every_paper_preset_has_a_script_row() -> None:
    assert sorted(SCRIPT_ARGS) == sorted(SCRIPTS)
    # the fifteen scripts of bash_files/training/ each have their preset
    assert len({row[0] for row in SCRIPTS.values()}) == 15


def test_docs_presets_table_is_current() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "presets.md"
    assert path.read_text() == markdown(), "regenerate: python -m adios.reference > docs/presets.md"
    assert "DIFFERS" not in path.read_text()
