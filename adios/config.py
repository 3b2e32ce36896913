"""Typed configuration: dataclass defaults, YAML presets shipped in the package, dotted overrides.

A preset is a partial YAML document over the dataclass defaults; the command line adds
``key.sub=value`` overrides on top. Everything is validated before any work starts, so a typo in
a key or a value out of range fails in a second with a message naming the key and what is
allowed, instead of an hour into a run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from adios.config_data import SceneConfig, ViewConfig
from adios.errors import ConfigError

DEFAULT_PRESET = "shapes-laptop"
# bounds that keep every derived number in range (a float32 rate, a step count, a seed mixed
# with the epoch and the rank in adios.engine): beyond them a value is surely a typo
MAX_RATE = 1e6
MAX_EPOCHS = 1e6
SCENE_MEAN, SCENE_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # data.mean/std of the scenes


@dataclass
class DataConfig:
    # readers and their layouts: adios/data/readers.py and README "Datasets"
    name: Literal["shapes", "cifar10", "cifar100", "stl10", "folder", "fashion-mnist"] = "shapes"
    path: str | None = None  # dataset root; fashion-mnist: null = Debian's package location
    image_size: int = 32  # every split is held (and a streamed image decoded) at this size
    seed: int = 0  # fixes generated scenes and the train/val carve: the same across train seeds
    # null: all images of a real dataset (validation: 10 % of the labelled training images);
    # 4096 / 1024 / 1024 generated scenes
    num_train: int | None = None
    num_val: int | None = None
    num_test: int | None = None
    split: Literal["train", "train+unlabeled"] = "train"  # stl10: the pretraining images
    class_list: str | None = None  # folder: file of class folder names to keep (ImageNet-100)
    # folder: decode into memory, or stream from worker processes; "auto" streams when the
    # training images take more than memory_limit_mb as uint8 at image_size
    loader: Literal["auto", "memory", "stream"] = "auto"
    memory_limit_mb: int = 4096
    workers: int | None = None  # decoding processes; null: the usable cores, at most 8
    bad_files: Literal["error", "skip"] = "error"  # folder: undecodable images stop the run
    # normalisation; null: measured on the training images when the data is loaded (`adios data
    # check` prints them), and recorded in the run's config.yaml; the scenes: 0.5 and 0.25
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # folder: null = every image resized (shorter side) to image_size and centre-cropped; an int
    # = the whole image kept, longer side resized to load_size (zero-padded to a square), and the
    # training crops drawn from it as the reference does (docs/fidelity.md: memory and start-up)
    load_size: int | None = None
    # the last, partial batch of an epoch: false keeps it when it holds two or more images;
    # true drops it, as the reference's DataLoader(drop_last=True) (the paper presets)
    drop_last: bool = False
    scenes: SceneConfig = field(default_factory=SceneConfig)

    def __post_init__(self) -> None:
        _check(self.image_size >= 16, "image_size", "must be at least 16")
        _check(self.num_train is None or self.num_train >= 2, "num_train", "must be at least 2")
        _check(self.num_val is None or self.num_val >= 1, "num_val", "must be at least 1")
        _check(self.num_test is None or self.num_test >= 1, "num_test", "must be at least 1")
        _check(self.split == "train" or self.name == "stl10", "split", "applies to stl10 only")
        _check(self.class_list is None or self.name == "folder", "class_list",
               "applies to data.name=folder only")
        _check(self.loader != "stream" or self.name == "folder", "loader",
               "only class-folder datasets (data.name=folder) can be streamed")
        _check(self.memory_limit_mb >= 0, "memory_limit_mb", "must be >= 0")
        _check(self.workers is None or self.workers >= 0, "workers", "must be >= 0")
        if self.name == "shapes":  # the scenes' fixed statistics, whatever they hold
            self.mean = self.mean or SCENE_MEAN
            self.std = self.std or SCENE_STD
        _check(self.std is None or all(s > 0 for s in self.std), "std", "must be positive")
        _check(self.load_size is None or self.name == "folder", "load_size",
               "applies to data.name=folder only (the other readers keep the whole image)")
        _check(self.load_size is None or self.load_size >= self.image_size, "load_size",
               "must be at least data.image_size")
        # the scenes follow data.image_size; a different data.scenes.image_size is a conflict
        if self.name == "shapes" and self.scenes.image_size != self.image_size:
            _check(self.scenes.image_size == SceneConfig().image_size, "scenes.image_size",
                   "set data.image_size instead")
            self.scenes = dataclasses.replace(self.scenes, image_size=self.image_size)


@dataclass
class AugmentConfig:
    view_a: ViewConfig = field(default_factory=ViewConfig)
    view_b: ViewConfig = field(default_factory=ViewConfig)


@dataclass
class ModelConfig:
    backbone: Literal["resnet18", "vit_tiny", "vit_small"] = "resnet18"
    width: int = 64
    # cifar-reference: the reference code's 32 px stem, 3x3 conv with padding 2 (34x34 maps) and
    # PyTorch's default init (docs/fidelity.md); cifar: padding 1, kaiming init
    stem: Literal["auto", "cifar", "cifar-reference", "imagenet"] = "auto"
    # ViTs only. timm: the reference's timm ViT initialisation (truncated normal 0.02 for every
    # Linear and the embeddings, PyTorch's default for the patch conv; docs/fidelity.md), on in
    # the ViT paper presets; torchvision: torchvision's own
    vit_init: Literal["torchvision", "timm"] = "torchvision"

    def __post_init__(self) -> None:
        _check(self.width >= 1, "width", "must be a positive integer")


@dataclass
class MaskerConfig:
    # unet: the paper's OcclusionModel; slots: slot attention (adios/models/slots.py, docs/slots.md)
    kind: Literal["unet", "slots"] = "unet"
    n_masks: int = 4
    fbase: int = 32  # unet: base channels; slots: the CNN's channels
    norm: Literal["group", "instance", "none"] = "group"
    blur_sigma: float = 0.0  # px; > 0 smooths the masks (our addition, see OcclusionModel)
    num_blocks: int | None = None  # U-Net depth; null: log2(image_size) - 1
    slot_dim: int = 64  # slots: width of the slots, keys and values
    slot_iters: int = 3  # slots: attention rounds
    # slots: attention on an image_size / stride map, mask logits upsampled bilinearly; 2 costs
    # about what the U-Net does at 32 px, 1 five times more (docs/slots.md)
    slot_stride: int = 2
    token_dim: int = 64  # token-adios: width of the one-block token masker (TokenMasker)
    token_heads: int = 4

    def __post_init__(self) -> None:
        _check(self.kind == "unet" or self.blur_sigma == 0, "blur_sigma",
               "applies to masker.kind=unet only")
        _check(self.kind == "unet" or self.num_blocks is None, "num_blocks",
               "applies to masker.kind=unet only")
        _check(self.slot_dim >= 1, "slot_dim", "must be a positive integer")
        _check(self.slot_iters >= 1, "slot_iters", "must be at least 1")
        _check(self.slot_stride in (1, 2, 4, 8), "slot_stride", "must be 1, 2, 4 or 8")
        _check(self.n_masks >= 2, "n_masks", "must be at least 2")
        _check(self.num_blocks is None or self.num_blocks >= 2, "num_blocks", "must be >= 2")
        _check(self.blur_sigma >= 0, "blur_sigma", "must be >= 0")
        _check(self.fbase >= 8 and self.fbase % 8 == 0, "fbase", "must be a multiple of 8")
        _check(self.token_heads >= 1 and self.token_dim % self.token_heads == 0, "token_dim",
               "must be a positive multiple of token_heads")


@dataclass
class ObjectiveConfig:
    name: Literal["simclr", "byol", "simsiam", "mae"] = "simclr"  # mae: token modes only
    temperature: float = 0.2
    proj_hidden: int | None = None  # None: the objective's published default
    proj_out: int | None = None
    pred_hidden: int | None = None
    base_momentum: float = 0.99
    final_momentum: float = 1.0
    decoder_dim: int = 128  # mae: the light decoder (adios/objectives/mae.py)
    decoder_depth: int = 2
    decoder_heads: int = 4

    def __post_init__(self) -> None:
        _check(self.decoder_depth >= 1, "decoder_depth", "must be at least 1")
        _check(self.decoder_heads >= 1 and self.decoder_dim % self.decoder_heads == 0,
               "decoder_dim", "must be a positive multiple of decoder_heads")
        _check(self.temperature > 0, "temperature", "must be positive")
        _check(0 <= self.base_momentum <= self.final_momentum <= 1, "base_momentum",
               "need 0 <= base_momentum <= final_momentum <= 1")


@dataclass
class MaskingConfig:
    # adios / adios-s: learned masks; the others are fixed schemes without a masker, one
    # occluding mask per image (adios/masking/schemes.py documents each and its defaults);
    # token-random / token-adios: a ViT encodes only keep_ratio of the patch tokens, drawn at
    # random or by a learned token masker (adios/masking/tokens.py, docs/tokens.md)
    mode: Literal["adios", "adios-s", "none", "mae", "beit", "rectangles", "oracle",
                  "token-random", "token-adios"] = "adios"
    alpha_sparsity: float = 1.0
    # masker objective + alpha_entropy * sum over the batch of sum_n softmax(s)_n log softmax(s)_n
    # (s: an image's mask sizes); > 0 makes mask sizes less equal (the reference's alpha_entropy)
    alpha_entropy: float = 0.0
    # adios-s: draw the mask index again for the masker step (the reference); false: one draw
    independent_draws: bool = False
    # adios-s with an objective that masks both views (SimSiam): one mask index per image for
    # both views (the reference's simsiam_adios_s); false: each view draws its own
    shared_view_index: bool = False
    # SimSiam + ADIOS, per mask the mean of -cos terms: always (p_a~, z_b) and (p_b~, z_a) (~ =
    # masked), plus (p_b, z_a~), (p_a, z_b~) [symmetry], (p_a, z_b), (p_b, z_a) [no mask],
    # (p_a~, z_b~), (p_b~, z_a~) [both masked]: the reference's use_*_mask flags
    use_symmetry_mask: bool = True
    use_no_mask: bool = True
    use_both_mask: bool = True
    # fast: exact, the unmasked view encoded once and the N masked copies in one batched pass;
    # reference: the straightforward schedule (same updates, for tests and benchmarks);
    # single-pass: both players step on one forward/backward (gradient reversal; README)
    schedule: Literal["fast", "reference", "single-pass"] = "fast"
    ratio: float | None = None  # fraction hidden; null: mae 0.75, beit 0.30, rectangles 0.25
    patch_size: int | None = None  # mae, px; null: image_size / 6 (16 px at 96 px)
    min_block_area: int | None = None  # beit, px; null: 64 px at 96 px, scaled by area
    block_aspect: tuple[float, float] = (0.3, 3.3)  # beit blocks and rectangles
    oracle_margin: int = 0  # oracle, px: > 0 dilates the object mask, < 0 erodes it
    oracle_box: bool = False  # oracle: hide the object's bounding box
    oracle_shuffle: bool = False  # oracle: each image gets another image's mask
    keep_ratio: float = 0.25  # token modes: fraction of the patch tokens the encoder sees
    token_diversity: float = 1.0  # token-adios: weight of KL(batch-mean keep dist. || uniform)

    def __post_init__(self) -> None:
        _check(0 < self.keep_ratio < 1, "keep_ratio", "must be in (0, 1)")
        _check(self.token_diversity >= 0, "token_diversity", "must be >= 0")
        _check(self.alpha_sparsity >= 0, "alpha_sparsity", "must be >= 0")
        _check(self.alpha_entropy >= 0, "alpha_entropy", "must be >= 0")
        _check(self.ratio is None or 0 < self.ratio < 1, "ratio", "must be in (0, 1)")
        _check(self.patch_size is None or self.patch_size >= 1, "patch_size", "must be >= 1")
        _check(self.min_block_area is None or self.min_block_area >= 1, "min_block_area",
               "must be >= 1")
        _check(0 < self.block_aspect[0] <= self.block_aspect[1], "block_aspect",
               "need 0 < min <= max")


@dataclass
class OptimConfig:
    name: Literal["lars", "sgd", "adamw"] = "lars"
    batch_size: int = 128  # the global batch: split evenly over the processes of a torchrun run
    lr: float = 0.3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    eta: float = 0.02
    # LARS clip mode (the reference's default): the step is min(r, lr) * (g + wd w), not
    # lr * r * (g + wd w), r the trust ratio (adios/optim.py)
    lars_clip: bool = False
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 0.0  # every group's lr at step 0 (the reference: 0.003)
    # step: the schedule moves every step; epoch: once per epoch, as the reference's
    # LinearWarmupCosineAnnealingLR (warm-up reaches the peak at epoch warmup_epochs - 1)
    schedule_every: Literal["step", "epoch"] = "step"
    # the encoder's schedule spans epochs - train_mask_epochs (at least 1), the masker's all
    # epochs (the reference's train_mask_epoch: 0, BYOL 10)
    train_mask_epochs: int = 0
    mask_warmup_epochs: float | None = None  # None: same as warmup_epochs
    final_lr_fraction: float = 0.0
    mask_name: Literal["lars", "sgd", "adamw"] | None = None  # None: same as `name`
    mask_lr: float = 0.3
    mask_weight_decay: float | None = 0.0  # null: the encoder's weight_decay (the reference)
    probe_lr: float = 0.1
    # the online probe's weight under LARS in the encoder's optimiser (the reference); false:
    # plain momentum SGD
    probe_lars: bool = False
    # SimSiam: the predictor keeps its base lr, never warmed up or decayed (the reference and
    # the SimSiam paper)
    fixed_predictor_lr: bool = False
    # schedule_every=epoch: the predictor follows the schedule for its first epochs, then holds
    # its base lr; 1 = the reference, whose scheduler sets every group to warmup_start_lr
    # before the fixed rate takes over at the end of epoch 0
    fixed_predictor_lr_from_epoch: int = 0
    # linear: every learning rate above is per lr_reference_batch images and is multiplied by
    # batch_size / lr_reference_batch (the reference code's rule); none: used as given
    lr_scaling: Literal["none", "linear"] = "none"
    lr_reference_batch: int = 256

    def __post_init__(self) -> None:
        _check(self.batch_size >= 2, "batch_size", "must be at least 2")
        _check(self.lr_reference_batch >= 1, "lr_reference_batch", "must be at least 1")
        for key in ("lr", "mask_lr", "probe_lr"):
            value = getattr(self, key)
            _check(0 < value <= MAX_RATE, key, f"must be positive and at most {MAX_RATE:g}")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.mask_weight_decay is None or self.mask_weight_decay >= 0,
               "mask_weight_decay", "must be >= 0")
        _check(self.warmup_start_lr >= 0, "warmup_start_lr", "must be >= 0")
        _check(self.train_mask_epochs >= 0, "train_mask_epochs", "must be >= 0")
        _check(self.fixed_predictor_lr_from_epoch == 0 or (
            self.fixed_predictor_lr and self.schedule_every == "epoch"),
            "fixed_predictor_lr_from_epoch", "needs fixed_predictor_lr and schedule_every=epoch")
        _check(self.fixed_predictor_lr_from_epoch >= 0, "fixed_predictor_lr_from_epoch",
               "must be >= 0")
        _check(0 <= self.momentum < 1, "momentum", "must be in [0, 1)")
        _check(self.eta > 0, "eta", "must be positive")
        _check(0 <= self.warmup_epochs <= MAX_EPOCHS, "warmup_epochs",
               f"must be in [0, {MAX_EPOCHS:g}]")
        _check(self.mask_warmup_epochs is None or 0 <= self.mask_warmup_epochs <= MAX_EPOCHS,
               "mask_warmup_epochs", f"must be in [0, {MAX_EPOCHS:g}]")
        _check(0 <= self.final_lr_fraction <= 1, "final_lr_fraction", "must be in [0, 1]")


@dataclass
class TrainConfig:
    epochs: int = 100
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda, then mps, then cpu
    threads: int | None = None  # torch CPU threads; None: torch's default
    log_every: int = 10
    wandb_project: str | None = None  # also log to this Weights & Biases project (extra `wandb`)
    # steps between checks that every parameter is finite (also before every save): a diverged
    # run stops with the last good checkpoint instead of saving NaN weights
    finite_every: int = 10
    picture_every: int = 1  # epochs between mask pictures; 0 = only at the end
    knn_every: int = 1  # epochs between kNN monitor evaluations; 0 = only at the end
    knn_k: int = 20
    knn_temperature: float = 0.1
    knn_bank: int = 4096  # training images used as the kNN memory bank (at most the split size)
    eval_batch_size: int = 256
    progress: bool = True
    # autocast; fp16 (loss scaling): CUDA only; auto: bf16 where the device computes it natively
    # (a CUDA GPU with bf16, a CPU with AMX-BF16 or AVX512-BF16), else fp32 (adios/perf.py)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    # NHWC memory layout for the backbone, the masker and the views; auto: on for a ResNet
    channels_last: bool | Literal["auto"] = False
    compile: bool = False  # torch.compile the backbone (slow to start; pays off on long runs)
    sync_bn: bool = False  # torchrun: batch-norm statistics over all processes' batches
    # what the encoder's batch-norm running statistics (used by kNN / linear evaluation) track:
    # unmasked = only the unmasked views, what evaluation sees (the default: ahead or level in 8
    # of 9 measured accuracies, RESULTS.md); mixed = every encoder-step pass, masked and
    # unmasked (the reference; the paper presets)
    bn_stats: Literal["mixed", "unmasked"] = "unmasked"
    probe_views: Literal["a", "both"] = "a"  # both: mean of the two views' CEs (the reference)
    # deterministic kernels, no cuDNN autotuning, no TF32 (adios/perf.py, make_deterministic):
    # what exact resume and identical reruns on a GPU need; slower there, no change on a CPU
    deterministic: bool = False

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", "must be at least 1")
        _check(self.threads is None or self.threads >= 1, "threads",
               "must be at least 1, or null for torch's default")
        _check(self.log_every >= 1, "log_every", "must be at least 1")
        _check(self.picture_every >= 0, "picture_every", "must be >= 0 (0: only at the end)")
        _check(self.knn_every >= 0, "knn_every", "must be >= 0 (0: only at the end)")
        _check(self.knn_bank >= 1, "knn_bank", "must be at least 1")
        _check(self.eval_batch_size >= 1, "eval_batch_size", "must be at least 1")
        _check(self.finite_every >= 1, "finite_every", "must be at least 1")
        _check(self.knn_k >= 1, "knn_k", "must be at least 1")
        _check(self.knn_temperature > 0, "knn_temperature", "must be positive")


@dataclass
class Config:
    preset: str = DEFAULT_PRESET
    description: str = ""
    seed: int = 0
    run_dir: str | None = None  # None: runs/<preset, named for its data>-<timestamp>
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    masker: MaskerConfig = field(default_factory=MaskerConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check(0 <= self.seed < 2**32, "seed", "must be in [0, 2^32)")
        _check(self.masking.mode != "oracle" or self.data.name == "shapes", "masking.mode",
               "oracle needs ground-truth object masks, which only data.name=shapes has")
        tokens = self.masking.mode.startswith("token-")
        _check(not tokens or self.model.backbone.startswith("vit"), "masking.mode",
               "token modes drop patch tokens, which needs model.backbone=vit_tiny or vit_small")
        _check(self.model.vit_init == "torchvision" or self.model.backbone.startswith("vit"),
               "model.vit_init", "initialises a ViT: needs model.backbone=vit_tiny or vit_small")
        _check(not tokens or self.objective.name in ("simclr", "mae"), "masking.mode",
               "token modes support objective.name=simclr or mae")
        _check(tokens or self.objective.name != "mae", "objective.name",
               "mae reconstructs dropped tokens: use masking.mode=token-random or token-adios")
        _check(not tokens or self.masking.schedule != "reference", "masking.schedule",
               "token modes have schedules fast and single-pass")
        size = self.data.image_size
        _check(self.masking.patch_size is None or self.masking.patch_size <= size,
               "masking.patch_size", "must be at most data.image_size")
        _check(self.masking.min_block_area is None or self.masking.min_block_area <= size**2,
               "masking.min_block_area", "must be at most data.image_size squared")
        _check(self.masker.kind == "unet" or size % self.masker.slot_stride == 0,
               "masker.slot_stride", "must divide data.image_size")
        _check(self.masker.kind == "unet" or not tokens, "masker.kind",
               "slots masks pixels (adios, adios-s); token modes have their own token masker")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


# ----------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (no tags that build Python objects), reading YAML 1.2 floats.

    YAML 1.1 reads ``1e-3`` (no dot, no exponent sign) as a string; everyone writes learning
    rates that way, so every YAML document of the package (presets, overrides, config.yaml,
    grids) goes through this loader.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?)$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str, where: str) -> Any:
    """Parse plain YAML; anything else (a syntax error, a python/object tag) is a ConfigError
    naming ``where`` (a file, or an override's key)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"{where}: not plain YAML (only mappings, lists, numbers and strings are read): "
            f"{reason:.300}"
        ) from None


def read_yaml(path: Path, what: str = "file") -> Any:
    """Read and parse a YAML file of settings; a missing or unreadable file, or one that is not
    a mapping, is a ConfigError naming it."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read this {what} ({err})") from None
    data = load_yaml(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a mapping of settings (KEY: VALUE lines) but "
                          f"{'nothing' if data is None else 'a ' + type(data).__name__}; "
                          f"restore this {what}")
    return data


# ----------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    folder = resources.files("adios") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        available = ", ".join(preset_names())
        raise ConfigError(f"preset: unknown preset {name!r}; available: {available}")
    text = (resources.files("adios") / "presets" / f"{name}.yaml").read_text()
    return load_yaml(text, f"preset {name}") or {}


# ----------------------------------------------------------------------------- building


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.3", "data.scenes.max_objects=3"]`` -> nested dict of YAML-parsed values."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item!r}: an override is key=value, e.g. optim.lr=0.3")
        value = load_yaml(raw, key) if raw != "" else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} was already given a value")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> Config:
    """Resolve ``preset=NAME`` (default DEFAULT_PRESET) and dotted overrides into a Config.

    With ``base`` (a resolved config saved in a run directory), the preset is not re-read: the
    overrides apply on top of exactly what the run used.
    """
    tree = parse_overrides(overrides or [])
    if base is None:
        preset = tree.pop("preset", DEFAULT_PRESET)
        if not isinstance(preset, str):
            raise ConfigError(f"preset: expected a preset name, got {preset!r}")
        base = merge(read_preset(preset), {"preset": preset})
    return build(Config, merge(base, tree), "")


def build(cls: type, data: Any, path: str) -> Any:
    """Construct dataclass ``cls`` from a dict, checking every key and value against its type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key; allowed keys here: {allowed}")
        kwargs[key] = _coerce(hints[key], value, where)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{path}.{err}" if path else str(err)) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where)
            except ConfigError as err:
                errors.append(str(err).split(": ", 1)[-1])
        nullable = " or null" if type(None) in args else ""
        raise ConfigError(f"{where}: {' or '.join(errors)}{nullable}")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{where}: got {value!r}; allowed values: {allowed}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list like [1, 2], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # a bug in a dataclass, not user input


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data form (lists, not tuples) for YAML/JSON and checkpoints."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def config_yaml(cfg: Config) -> str:
    """The text of a run's config.yaml (adios.rundir writes it, atomically)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per key with its type and default, for ``adios config --keys``."""
    lines = []
    defaults = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            lines += describe(type(value), key + ".")
        else:
            lines.append(f"{key} = {value!r}    ({_type_name(hints[f.name])})")
    return lines


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))
