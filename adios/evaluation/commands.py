"""What ``adios eval ...`` runs: load a model and a dataset, evaluate, write JSON (and pictures).

A model comes from a run directory (its config.yaml and weights: encoder.safetensors /
masker.safetensors, or checkpoint.pt, always loaded with ``weights_only=True``) or from an
exported encoder file plus the model options it was built with. The dataset is the run's own
unless ``data.*`` overrides say otherwise (another ``data.name`` starts from that dataset's
defaults at the run's image size); images are always normalised with the statistics the encoder
was trained with (the reference code's defect 9 in ADIOS.md §4 is to mix them up).

Results go to ``eval_<kind>.json`` in the output directory (the run directory by default);
evaluating on a dataset other than the run's own adds the dataset's name:
``eval_knn_cifar10.json``. Every file records the model, the dataset, the seeds and the command.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from adios.checkpoint import (
    finite_json,
    load_checkpoint,
    load_state,
    load_weights,
    nonfinite,
    write_json,
)
from adios.config import Config, load_config, read_yaml, to_dict
from adios.data.datasets import SCENE_COUNTS, Dataset, load_dataset
from adios.data.readers import UNLABELED
from adios.errors import ConfigError, RunDirError
from adios.evaluation.features import predict_masks
from adios.evaluation.figures import confusion_figure, save, size_histogram_figure
from adios.evaluation.knn import KNN_KS, KNN_TEMPERATURES, evaluate_knn
from adios.evaluation.linear import WEIGHT_DECAYS, evaluate_linear, evaluate_linear_fast
from adios.evaluation.masks import evaluate_masks, mask_sources
from adios.evaluation.protocol import FeatureSet, extract_feature_set
from adios.evaluation.robustness import DEFAULT_CORRELATION, evaluate_backgrounds
from adios.masking.tokens import TOKEN_MODES, draw_visible, hidden_on_objects_report, hidden_pixels
from adios.models import build_backbone, build_masker
from adios.perf import pick_device
from adios.rundir import refuse_links
from adios.viz import mask_figure

CHECKPOINT = "checkpoint.pt"
ALL_IMAGES = 2**62
# With a run directory the model is fixed by its weights; only these overrides make sense.
RUN_OVERRIDES = (
    "data.",
    "train.device",
    "train.threads",
    "train.eval_batch_size",
    "train.progress",
)


@dataclass
class EvalSetup:
    """A model to evaluate and the configuration of the evaluation."""

    model_cfg: Config  # how the model was built and trained (its input normalisation)
    cfg: Config  # model_cfg plus the evaluation's overrides (dataset, device)
    backbone: nn.Module
    masker: nn.Module | None
    init_masker: nn.Module | None
    device: torch.device
    out_dir: Path
    source: dict[str, Any]
    command: str = ""
    _dataset: Dataset | None = field(default=None, repr=False)
    _features: FeatureSet | None = field(default=None, repr=False)

    @property
    def mean(self) -> tuple[float, ...]:
        """The model's normalisation; unset (an --encoder without data.mean): the data's."""
        return tuple(self.model_cfg.data.mean or self.dataset().mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.model_cfg.data.std or self.dataset().std)

    @property
    def own_data(self) -> bool:
        return self.cfg.data == self.model_cfg.data

    def output_path(self, kind: str, suffix: str = ".json") -> Path:
        tag = "" if self.own_data else f"_{self.cfg.data.name}"
        return self.out_dir / f"eval_{kind}{tag}{suffix}"

    def dataset(self) -> Dataset:
        """The evaluation dataset; a streamed training split is decoded whole (bound it with
        data.num_train), since the probes need every training image. Evaluation needs no
        whole-image crop source (data.load_size): every split at image_size."""
        if self._dataset is None:
            data = dataclasses.replace(self.cfg.data, load_size=None)
            self._dataset = load_dataset(
                data, bank_size=ALL_IMAGES, progress=self.cfg.train.progress
            )
        return self._dataset

    def features(self) -> FeatureSet:
        """Features of all splits, extracted once and shared by kNN and the fast probe."""
        if self._features is None:
            self._features = extract_feature_set(
                self.backbone,
                self.dataset(),
                self.mean,
                self.std,
                self.device,
                self.cfg.train.eval_batch_size,
                self.cfg.train.progress,
            )
        return self._features

    def header(self, kind: str) -> dict[str, Any]:
        data = self.cfg.data
        header = {
            "eval": kind,
            "command": self.command,
            "model": {
                **self.source,
                "backbone": self.model_cfg.model.backbone,
                "width": self.model_cfg.model.width,
                "seed": self.model_cfg.seed,
                "trained_on": self.model_cfg.data.name,
            },
            "dataset": {
                "name": data.name,
                "path": data.path,
                "image_size": data.image_size,
                "seed": data.seed,
            },
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "device": str(self.device),
        }
        if self._dataset is not None:
            header["dataset"].update(
                {
                    f"n_{name}": len(getattr(self._dataset, name))
                    for name in ("train", "val", "test")
                },
                num_classes=self._dataset.num_classes,
            )
        return header


def _split_words(words: Sequence[str]) -> tuple[Path | None, list[str]]:
    """A positional RUN_DIR among KEY=VALUE overrides (the CLI collects both in one list)."""
    paths = [w for w in words if "=" not in w]
    if len(paths) > 1:
        raise ConfigError(f"expected one run directory, got {' '.join(paths)}")
    return (Path(paths[0]) if paths else None), [w for w in words if "=" in w]


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _build_masker(cfg: Config, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    masker = build_masker(cfg)  # the trained masker's own build (its blur included)
    load_state(masker, state, source)
    return masker.eval()


def load_setup(
    words: Sequence[str],
    encoder: Path | None = None,
    masker: Path | None = None,
    out_dir: Path | None = None,
    command: str = "",
) -> EvalSetup:
    """Resolve ``[RUN_DIR] KEY=VALUE...`` (or an exported ``encoder``) into an EvalSetup."""
    run_dir, overrides = _split_words(words)
    if (run_dir is None) == (encoder is None):
        raise ConfigError("give either a run directory or --encoder FILE (with its model options)")
    checkpoint = None
    if run_dir is not None:
        if masker is not None:
            raise ConfigError("--masker: a run directory brings its own masker")
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise RunDirError(f"{run_dir} is not a run directory: it holds no config.yaml")
        if out_dir is None or Path(out_dir).resolve() == run_dir.resolve():
            refuse_links(run_dir)  # as training does: nothing written through a link
        for item in overrides:
            if not item.startswith(RUN_OVERRIDES):
                raise ConfigError(
                    f"{item.partition('=')[0]}: a run's model is fixed by its "
                    f"weights; only data.* and train.device/threads/"
                    f"eval_batch_size/progress apply"
                )
        saved = read_yaml(config_path, "config.yaml")
        try:
            model_cfg = load_config([], base=saved)
        except ConfigError as err:
            raise ConfigError(f"{config_path}: {err}") from None
        cfg = load_config(overrides, base=_evaluation_base(saved, overrides))
        if (run_dir / CHECKPOINT).is_file():
            checkpoint = load_checkpoint(run_dir / CHECKPOINT)
        backbone_state, source = _run_backbone(run_dir, checkpoint)
        masker_state = _run_masker(run_dir, checkpoint)
        out_dir = out_dir or run_dir
    else:
        cfg = model_cfg = load_config(overrides)
        backbone_state = load_weights(encoder)
        source = {"encoder": str(encoder)}
        masker_state = load_weights(masker) if masker is not None else None
        if masker is not None:
            source["masker"] = str(masker)
        out_dir = out_dir or encoder.parent
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    try:
        backbone = build_backbone(
            model_cfg.model.backbone,
            model_cfg.data.image_size,
            width=model_cfg.model.width,
            stem=model_cfg.model.stem,
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    weights = source.get("weights", source.get("encoder"))
    bad = nonfinite({"encoder": backbone_state, "masker": masker_state})
    if bad:
        raise RunDirError(
            f"{run_dir or encoder}: the {' and '.join(bad)} weights ({weights}) hold NaN or inf: "
            "the training diverged; evaluate another run"
        )
    load_state(backbone, backbone_state, f"{run_dir or ''}{'/' if run_dir else ''}{weights}")
    init_state = (checkpoint or {}).get("init") or {}
    masker_source = str(masker) if masker is not None else f"{run_dir}/masker weights"
    return EvalSetup(
        model_cfg=model_cfg,
        cfg=cfg,
        backbone=backbone.to(device).eval(),
        masker=(
            None
            if masker_state is None
            else _build_masker(model_cfg, masker_state, masker_source).to(device)
        ),
        init_masker=(
            None
            if init_state.get("masker") is None
            else _build_masker(model_cfg, init_state["masker"], f"{run_dir}/{CHECKPOINT}").to(
                device
            )
        ),
        device=device,
        out_dir=Path(out_dir),
        source=source,
        command=command,
    )


def _evaluation_base(saved: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The run's configuration, with its data settings reset when data.name names another
    dataset: the run's split sizes (e.g. 4096 scenes) must not cut CIFAR down. Only the image
    size, the encoder's input size, carries over."""
    names = [item.partition("=")[2] for item in overrides if item.startswith("data.name=")]
    if not names or names[-1] == saved.get("data", {}).get("name"):
        return saved
    return {**saved, "data": {"image_size": saved.get("data", {}).get("image_size")}}


def _run_backbone(run_dir: Path, checkpoint: dict | None) -> tuple[dict, dict]:
    exported = run_dir / "encoder.safetensors"
    if exported.is_file():
        return load_weights(exported), {"run_dir": str(run_dir), "weights": exported.name}
    if checkpoint is None:
        raise RunDirError(f"{run_dir} holds neither encoder.safetensors nor {CHECKPOINT}")
    source = {"run_dir": str(run_dir), "weights": f"{CHECKPOINT} (epoch {checkpoint['epoch']})"}
    return _prefixed(checkpoint["objective"], "backbone."), source


def _run_masker(run_dir: Path, checkpoint: dict | None) -> dict | None:
    exported = run_dir / "masker.safetensors"
    if exported.is_file():
        return load_weights(exported)
    return None if checkpoint is None else checkpoint.get("masker")


# ----------------------------------------------------------------------------- the evaluations


def _write(setup: EvalSetup, kind: str, result: dict, started: float) -> dict:
    result = finite_json({**setup.header(kind), **result, "wall_s": time.time() - started})
    path = setup.output_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(result, path)
    result["path"] = str(path)
    return result


def labelled(setup: EvalSetup) -> bool:
    """Whether the evaluation's training images carry labels (a folder without class folders,
    or with one, has none): kNN and the linear probes score classes."""
    labels = setup.dataset().train.labels
    return labels is not None and bool((labels != UNLABELED).any())


def _require_labels(setup: EvalSetup, kind: str) -> None:
    """One error line, not a ValueError reported as a bug, for a probe of unlabelled images."""
    if not labelled(setup):
        where = f" at {setup.cfg.data.path}" if setup.cfg.data.path else ""
        raise ConfigError(
            f"{kind}: the {setup.cfg.data.name} images{where} have no labels (no class folders, "
            f"or one): kNN and linear probes score classes; give labelled images (data.path=DIR "
            f"with a folder per class), or judge the run by its masks, loss and feature spread "
            f"(masks.png, summary.json, adios eval report)")


def run_knn(
    setup: EvalSetup, ks: Sequence[int] = KNN_KS, temperatures: Sequence[float] = KNN_TEMPERATURES
) -> dict:
    _require_labels(setup, "knn")
    started = time.time()
    return _write(setup, "knn", evaluate_knn(setup.features(), ks, temperatures), started)


def run_linear_fast(setup: EvalSetup, weight_decays: Sequence[float] = WEIGHT_DECAYS) -> dict:
    _require_labels(setup, "linear")
    started = time.time()
    features = setup.features()
    result, _ = evaluate_linear_fast(features, weight_decays)
    picture = setup.output_path("linear_fast_confusion", ".png")
    confusion_figure(
        result["test"]["confusion"],
        features.class_names,
        picture,
        title=f"fast linear probe, test top-1 {result['test']['top1']:.1%}",
    )
    return _write(setup, "linear_fast", {**result, "confusion_png": picture.name}, started)


def run_linear(setup: EvalSetup, epochs: int = 100, batch_size: int = 256) -> dict:
    _require_labels(setup, "linear")
    started = time.time()
    dataset = setup.dataset()
    result = evaluate_linear(
        setup.backbone,
        dataset,
        setup.mean,
        setup.std,
        setup.device,
        epochs=epochs,
        batch_size=batch_size,
        eval_batch_size=setup.cfg.train.eval_batch_size,
        seed=setup.model_cfg.seed,
        progress=setup.cfg.train.progress,
    )
    picture = setup.output_path("linear_confusion", ".png")
    confusion_figure(
        result["test"]["confusion"],
        dataset.class_names,
        picture,
        title=f"linear probe ({epochs} epochs), test top-1 {result['test']['top1']:.1%}",
    )
    return _write(setup, "linear", {**result, "confusion_png": picture.name}, started)


def run_masks(setup: EvalSetup, n_pictures: int = 8) -> dict:
    """Mask quality on the test split (no choice is made, so test is the right split)."""
    started = time.time()
    if setup.model_cfg.masking.mode in TOKEN_MODES:
        return _run_token_masks(setup, n_pictures, started)
    if setup.masker is None:
        raise ConfigError("masks: this model has no masker (masking.mode=none, or no --masker)")
    if setup.cfg.data.image_size != setup.model_cfg.data.image_size:
        raise ConfigError("data.image_size: the masker only works at the size it was trained at")
    test = setup.dataset().test
    if test.instances is None:
        raise ConfigError(
            f"masks: dataset {setup.cfg.data.name!r} has no ground-truth instance "
            "maps (the built-in scenes do)"
        )
    sources = mask_sources(
        test.images,
        setup.masker,
        setup.init_masker,
        setup.mean,
        setup.std,
        setup.device,
        seed=setup.model_cfg.seed,
        batch_size=setup.cfg.train.eval_batch_size,
    )
    results = evaluate_masks(test.instances, sources)
    pictures = {}
    for name, masks in sources.items():
        path = setup.output_path(f"masks_{name}", ".png")
        mask_figure(
            test.images[:n_pictures],
            masks[:n_pictures],
            path,
            title=f"{name.replace('_', ' ')} masks, test scenes",
        )
        pictures[name] = path.name
    histogram = setup.output_path("masks_sizes", ".png")
    size_histogram_figure(
        {k: v["size_histogram"] for k, v in results.items()},
        histogram,
        title="mask sizes per image (test)",
    )
    return _write(
        setup,
        "masks",
        {
            "split": "test",
            "sources": results,
            "pictures": pictures,
            "size_histogram_png": histogram.name,
        },
        started,
    )


def _run_token_masks(setup: EvalSetup, n_pictures: int, started: float) -> dict:
    """Token modes: where the hidden patches go on the test scenes (share of hidden area on
    objects, the masker's draws and top-k vs random draws), and a picture of one draw."""
    test = setup.dataset().test
    if test.instances is None:
        raise ConfigError(f"masks: dataset {setup.cfg.data.name!r} has no instance maps")
    mode = setup.model_cfg.masking
    grid = setup.backbone.grid
    if setup.masker is None:  # token-random: equal scores
        scores = torch.zeros(len(test), grid * grid)
    else:
        scores = predict_masks(setup.masker, test.images, setup.mean, setup.std, setup.device,
                               setup.cfg.train.eval_batch_size)
    report = hidden_on_objects_report(scores, test.instances.cpu(), mode.keep_ratio,
                                      setup.model_cfg.seed)
    picture = setup.output_path("masks_tokens", ".png")
    keep = draw_visible(scores[:n_pictures], mode.keep_ratio, setup.model_cfg.seed)
    mask_figure(test.images[:n_pictures], hidden_pixels(keep, grid, test.images.shape[-1]),
                picture, title=f"{mode.mode}: hidden patches, test scenes")
    return _write(setup, "masks", {"split": "test", "tokens": report, "picture": picture.name},
                  started)


def run_robustness(setup: EvalSetup, correlation: float | None = None, n_pictures: int = 8) -> dict:
    """Backgrounds test; ``correlation`` defaults to the dataset's own when it is positive."""
    started = time.time()
    data = setup.cfg.data
    if data.name != "shapes":
        raise ConfigError(
            "robustness: the backgrounds test needs the built-in scenes (data.name=shapes)"
        )
    if correlation is None:
        correlation = data.scenes.background_class_correlation or DEFAULT_CORRELATION
    if not 0 <= correlation <= 1:
        raise ConfigError(f"--correlation: must be in [0, 1], got {correlation}")
    scene_config = dataclasses.replace(data.scenes, background_class_correlation=correlation)
    counts = (data.num_train, data.num_val, data.num_test)
    sizes = tuple(
        default if n is None else n for n, default in zip(counts, SCENE_COUNTS, strict=True)
    )
    result, variants = evaluate_backgrounds(
        setup.backbone,
        scene_config,
        sizes,
        data.seed,
        setup.mean,
        setup.std,
        setup.device,
        setup.cfg.train.eval_batch_size,
        setup.cfg.train.progress,
    )
    picture = setup.output_path("robustness_variants", ".png")
    _variants_figure(variants, picture, n_pictures)
    return _write(setup, "robustness", {**result, "variants_png": picture.name}, started)


def _variants_figure(variants: dict[str, torch.Tensor], path: Path, n: int) -> None:
    figure = Figure(figsize=(1.3 * n, 1.45 * len(variants)), layout="constrained")
    axes = figure.subplots(len(variants), n, squeeze=False)
    for row, (name, images) in enumerate(variants.items()):
        for column in range(n):
            ax = axes[row, column]
            ax.imshow(images[column].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name.replace("_", " "), fontsize=9)
    save(figure, path)


def run_transfer(setup: EvalSetup) -> dict:
    """kNN and the fast linear probe of this model on another dataset, in one file."""
    _require_labels(setup, "transfer")
    started = time.time()
    knn = evaluate_knn(setup.features())
    linear, _ = evaluate_linear_fast(setup.features())
    kind = f"transfer_{setup.cfg.data.name}"
    result = {"source_dataset": to_dict(setup.model_cfg.data), "knn": knn, "linear_fast": linear}
    result = finite_json({**setup.header(kind), **result, "wall_s": time.time() - started})
    path = setup.out_dir / f"eval_{kind}.json"
    write_json(result, path)
    result["path"] = str(path)
    return result


def run_cheap(setup: EvalSetup) -> list[dict]:
    """The evaluations a laptop runs in minutes: kNN and fast linear (on labelled images),
    masks (where there are ground-truth objects), backgrounds (on the scenes)."""
    results = [run_knn(setup), run_linear_fast(setup)] if labelled(setup) else []
    test = setup.dataset().test
    tokens = setup.model_cfg.masking.mode in TOKEN_MODES
    if (setup.masker is not None or tokens) and test.instances is not None:
        results.append(run_masks(setup))
    if setup.cfg.data.name == "shapes":
        results.append(run_robustness(setup))
    return results


def command_line(args: Any) -> str:
    """The ``adios eval`` command that reproduces this evaluation, for the results file."""
    words = ["adios", "eval", args.eval_command, *args.overrides]
    for option in ("encoder", "masker", "out", "html", "correlation", "epochs", "batch_size"):
        value = getattr(args, option, None)
        if value is not None and not (
            option in ("epochs", "batch_size") and getattr(args, "fast", False)
        ):
            words += [f"--{option.replace('_', '-')}", str(value)]
    for flag in ("fast", "evaluate"):
        if getattr(args, flag, False):
            words.append(f"--{flag}")
    return shlex.join(words)


# ----------------------------------------------------------------------------- command line


def _headline(result: dict) -> str:
    kind = result["eval"]
    if kind == "knn":
        parts = [
            f"{name} (k={t['k']}, T={t['temperature']:g}) {t['top1']:.1%} "
            f"(balanced {t['balanced_accuracy']:.1%})"
            for name, t in result["test"].items()
        ]
        majority = result["test"]["selected"]["majority_rate"]
        return f"knn test top-1: {'; '.join(parts)}; majority class {majority:.1%}"
    if kind in ("linear_fast", "linear"):
        extra = (
            f" (weight decay {result['selected']['weight_decay']:g} chosen on val)"
            if kind == "linear_fast"
            else ""
        )
        test = result["test"]
        return (
            f"{kind} test top-1 {test['top1']:.1%}, balanced {test['balanced_accuracy']:.1%}, "
            f"majority class {test['majority_rate']:.1%}{extra}"
        )
    if kind == "masks" and "tokens" in result:
        t = result["tokens"]
        topk = t.get("token_hidden_on_objects_topk")
        return (f"hidden patch area on objects: draws {t['token_hidden_on_objects']:.1%}, "
                + (f"top-k {topk:.1%}, " if topk is not None else "")
                + f"random {t['token_hidden_on_objects_random']:.1%}")
    if kind == "masks":
        return "masks: " + "; ".join(
            f"{name} fg-ARI {_fmt(q['fg_ari'])} mBO {_fmt(q['mbo'])}"
            for name, q in result["sources"].items()
        )
    if kind == "robustness":
        return (
            "backgrounds gap (same - random): "
            f"linear {result['linear']['background_gap']:+.1%}, "
            f"knn {result['knn']['background_gap']:+.1%}"
        )
    return (
        f"{kind}: knn {result['knn']['test']['selected']['top1']:.1%}, "
        f"linear {result['linear_fast']['test']['top1']:.1%}"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(args: Any) -> int:
    """``adios eval WHAT ...`` (the parser lives in :mod:`adios.cli`)."""
    command = command_line(args)
    if args.eval_command == "report":
        from adios.evaluation.report import write_report

        run_dir, overrides = _split_words(args.overrides)
        if run_dir is None:
            raise ConfigError("report: give the run directory")
        if args.evaluate:
            setup = load_setup([str(run_dir), *overrides], command=command)
            if not labelled(setup):
                print("adios: no labels: kNN and linear probes skipped; the report shows the "
                      "masks, the loss and the feature spread", file=sys.stderr)
            for result in run_cheap(setup):
                print(_headline(result))
        elif overrides:
            raise ConfigError("report: overrides only apply with --evaluate")
        html_path, png_path = write_report(run_dir, args.html)
        print(html_path)
        print(png_path)
        return 0
    setup = load_setup(
        args.overrides, encoder=args.encoder, masker=args.masker, out_dir=args.out, command=command
    )
    if args.eval_command == "knn":
        result = run_knn(setup)
    elif args.eval_command == "linear":
        result = (
            run_linear_fast(setup)
            if args.fast
            else run_linear(setup, epochs=args.epochs, batch_size=args.batch_size)
        )
    elif args.eval_command == "masks":
        result = run_masks(setup)
    elif args.eval_command == "robustness":
        result = run_robustness(setup, correlation=args.correlation)
    else:
        result = run_transfer(setup)
    print(_headline(result))
    print(result["path"])
    return 0
