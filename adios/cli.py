"""Command line: ``adios train``, ``adios config``, ``adios presets``, ``adios data check``,
``adios bench data``, ``adios bench step``, ``adios eval ...``, ``adios compare``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adios.errors import AdiosError, ConfigError, NonFiniteError

# Only the standard library above: main() takes Ctrl-C and SIGTERM before the imports of a
# second or more (numpy, yaml, torch), which come after it (PRELOAD, and inside the commands).
if TYPE_CHECKING:
    from adios.config import Config

OVERRIDES_HELP = (
    "preset=NAME and dotted overrides KEY=VALUE, e.g. preset=shapes-simclr-adios optim.lr=0.3 "
    "(see `adios config --keys`)"
)


def _train(args: argparse.Namespace) -> int:
    from adios.rundir import resume_config
    from adios.train import train

    if args.stop_after_epoch is not None and args.stop_after_epoch < 1:
        raise ConfigError("--stop-after-epoch: must be at least 1")
    if args.resume is not None:
        cfg = resume_config(args.resume, args.overrides)
    else:
        cfg = _config_for_path(args.overrides)
    run_dir = train(cfg, resume=args.resume is not None, overwrite=args.overwrite,
                    stop_after_epoch=args.stop_after_epoch)
    if os.environ.get("RANK", "0") == "0":  # torchrun: one process reports
        print(run_dir)
    return 0


def _config_for_path(overrides: list[str], training: bool = True) -> Config:
    """The configuration, its ``data.name`` read off what ``data.path`` holds unless given (a
    name that contradicts the path is an error). A training run says when the name changes,
    and which of the scenes preset's settings then apply to other data."""
    from adios.config import DEFAULT_PRESET, DataConfig, load_config, parse_overrides, read_preset
    from adios.data.readers import ARRAY_FORMATS, dataset_name

    tree = parse_overrides(overrides)
    preset = tree.get("preset", DEFAULT_PRESET)
    given = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    preset_data = read_preset(preset).get("data", {}) if isinstance(preset, str) else {}
    named = given.get("name", preset_data.get("name", DataConfig.name))
    path = given.get("path", preset_data.get("path"))
    explicit = "name" in given or named in ARRAY_FORMATS  # given, or a preset's for its data
    name = named if path is None else dataset_name(named, path, explicit)
    cfg = load_config(overrides if name == named else [*overrides, f"data.name={name}"])
    if training and name != named:
        note = f"adios: data.path={path}: data.name={name} (read off the folder)"
        if named == "shapes":
            view = cfg.augment.view_a
            note += (f"; preset {cfg.preset} was tuned on the built-in scenes and its settings "
                     f"apply as they are (augment hue {view.hue}, crop scale "
                     f"{list(view.crop_scale)}, data.num_train={cfg.data.num_train}, "
                     f"{cfg.train.epochs} epochs): override augment.view_a.* / view_b.* and "
                     "data.num_train to change them")
        print(note, file=sys.stderr)
    return cfg


def _config(args: argparse.Namespace) -> int:
    import yaml

    from adios.config import describe, load_config, to_dict

    if args.keys:
        print("\n".join(describe()))
        return 0
    print(yaml.safe_dump(to_dict(load_config(args.overrides)), sort_keys=False), end="")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from adios.config import preset_names, read_preset

    for name in preset_names():
        doc = read_preset(name).get("description", "")
        print(f"{name:32s} {doc}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from adios.data.check import check_dataset

    paths = [word for word in args.overrides if "=" not in word]
    if len(paths) > 1:
        raise ConfigError(f"data.path: give one PATH, got {' '.join(paths)}")
    overrides = [word for word in args.overrides if "=" in word]
    cfg = _config_for_path(overrides + [f"data.path={p}" for p in paths], training=False)
    return check_dataset(cfg.data, detect=False, progress=not args.no_progress)


def _bench_data(args: argparse.Namespace) -> int:
    from adios.bench import bench_data, format_bench
    from adios.config import load_config

    result = bench_data(load_config(args.overrides), batches=args.batches, steps=args.steps,
                        warmup=args.warmup)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _bench_step(args: argparse.Namespace) -> int:
    from adios.bench_step import bench_step, format_step_table
    from adios.config import load_config

    try:
        n_masks = tuple(int(n) for n in args.masks.split(","))
    except ValueError:
        raise ConfigError(f"--masks: expected numbers like 4,6, got {args.masks!r}") from None
    rows = bench_step(load_config(args.overrides), steps=args.steps, warmup=args.warmup,
                      repeats=args.repeats, n_masks=n_masks,
                      schemes=tuple(w for w in args.schemes.split(",") if w),
                      maskers=tuple(w for w in args.maskers.split(",") if w),
                      learned=tuple(w for w in args.learned.split(",") if w),
                      schedules=tuple(w for w in args.schedules.split(",") if w),
                      tokens=args.tokens)
    print(json.dumps(rows) if args.json else format_step_table(rows))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the one-line form of every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("adios").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"adios: error: {where}{message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="adios", description="Adversarial masked-image self-supervised learning (ADIOS). "
        "Errors are one line (exit status 2); add --debug to any command for the traceback."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train an encoder and an occlusion model",
                       description="Train with a preset (default: shapes-laptop) and "
                       "overrides; prints the run directory as its last line.")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--resume", metavar="RUN_DIR", type=Path,
                   help="continue a run from its last checkpoint (overrides apply on top)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty run directory (run_dir)")
    p.add_argument("--stop-after-epoch", type=int, metavar="K",
                   help="stop (resumably) after epoch K, e.g. to train in chunks")
    p.set_defaults(func=_train)

    p = sub.add_parser("config", help="print the resolved configuration",
                       description="Print the configuration a train command would use.")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--keys", action="store_true", help="list every key, its default and type")
    p.set_defaults(func=_config)

    p = sub.add_parser("presets", help="list the shipped presets",
                       description="List the YAML presets shipped in the package.")
    p.set_defaults(func=_presets)

    p = sub.add_parser("data", help="inspect a dataset on disk",
                       description="Dataset tools.").add_subparsers(
        dest="data_command", required=True, metavar="TOOL")
    p = p.add_parser("check", help="report counts, sizes, modes, unreadable files, duplicates",
                     description="Scan a dataset with the same options as training (data.name=, "
                     "data.class_list=, preset=, ...): counts per split and class, image sizes "
                     "and modes, unreadable files, duplicates. Without data.name or preset the "
                     "format is detected from PATH. Exit status 1 when problems are found.")
    p.add_argument("overrides", nargs="*", metavar="PATH | KEY=VALUE",
                   help="the dataset folder (sets data.path) and overrides")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_data_check)

    bench = sub.add_parser("bench", help="measure throughput",
                           description="Benchmarks.").add_subparsers(
        dest="bench_command", required=True, metavar="WHAT")
    p = bench.add_parser("step", help="images/s and peak memory of a training step, per "
                         "masking mode and schedule",
                         description="Time the full training step (both players, optimisers, "
                         "probe) on random views of the preset's batch and image size: plain "
                         "objective, ADIOS-s and full ADIOS per number of masks, under the "
                         "reference, fast and single-pass schedules. Configurations are "
                         "measured round-robin and each reports the median of its rounds, so "
                         "the ratios come from the same run.")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--masks", default="4,6", metavar="N,N",
                   help="numbers of masks for full ADIOS (default 4,6; ADIOS-s uses the first)")
    p.add_argument("--schemes", default="", metavar="NAME,NAME",
                   help="fixed masking schemes to time too: mae, beit, rectangles, oracle "
                   "(random object layers; default none)")
    p.add_argument("--maskers", default="", metavar="KIND,KIND",
                   help="masker kinds to time the learned rows with, round-robin in one run: "
                   "unet, slots (default: the configuration's masker.kind)")
    p.add_argument("--learned", default="adios-s,adios", metavar="MODE,MODE",
                   help="learned pixel-mask modes to time (default adios-s,adios; '' for none)")
    p.add_argument("--schedules", default="reference,fast,single-pass", metavar="NAME,NAME",
                   help="schedules of the learned modes (default reference,fast,single-pass)")
    p.add_argument("--tokens", action="store_true",
                   help="ViT: also time token-random and token-adios (fast, single-pass), with "
                   "their cost vs token-random and speed-up vs ADIOS-s (docs/tokens.md)")
    p.add_argument("--steps", type=int, default=1, metavar="N",
                   help="timed steps per configuration and round (default 1)")
    p.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="rounds over all configurations; the median is reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, metavar="N",
                   help="untimed steps per configuration first, the first measuring peak "
                   "memory (default 1)")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows")
    p.set_defaults(func=_bench_step)
    p = bench.add_parser("data", help="augmentation vs training-step images/s for a preset",
                     description="Images/s of the data pipeline (batch source + two-view "
                     "augmentation) and of the full training step on the preset's models, "
                     "side by side with their ratio (augmentation / training; above 1 the "
                     "model is never starved).")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--batches", type=int, default=20, metavar="N",
                   help="timed augmentation batches (default 20)")
    p.add_argument("--steps", type=int, default=5, metavar="N",
                   help="timed training steps (default 5)")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="untimed batches and steps first (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_bench_data)

    _add_eval_parsers(sub)

    p = sub.add_parser("compare", help="masking schemes x objectives x seeds, one table",
                       description="Run a grid file (presets, masking schemes, objectives, seeds, "
                       "a budget in epochs or minutes per cell, overrides): every cell is a run "
                       "directory under the grid's output folder, evaluated with kNN and the "
                       "fast linear probe (chosen on val, test scored once). Finished cells are "
                       "skipped and interrupted ones resume, so the same command continues an "
                       "interrupted grid. Writes results.md, results.csv, cells.csv and "
                       "results.png. Example grids: grids/ in the repository.")
    p.add_argument("overrides", nargs="*", metavar="GRID | KEY=VALUE",
                   help="the grid file, and overrides for every cell (e.g. train.device=cuda)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: the grid's)")
    p.add_argument("--seeds", metavar="LIST",
                   help="run only these of the grid's seeds now, e.g. 0 or 1,2 (the tables "
                   "still cover every seed that has finished)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="list the cells and their state (done, resume, ...) and stop")
    mode.add_argument("--table-only", action="store_true",
                      help="only rewrite the tables and plot from the finished cells")
    p.set_defaults(func=_compare)
    return parser


def _compare(args: argparse.Namespace) -> int:
    from adios.compare import main as compare_main

    return compare_main(args)


def _eval(args: argparse.Namespace) -> int:
    from adios.evaluation.commands import main as eval_main

    return eval_main(args)


EVAL_TARGET = "RUN_DIR | KEY=VALUE"
EVAL_TARGET_HELP = ("a run directory (config.yaml + weights), and data.* overrides to evaluate on "
                    "another dataset (e.g. data.name=cifar10 data.path=DIR); with --encoder, the "
                    "model options instead (preset=, model.*, data.image_size, data.mean/std)")


def _add_eval_parsers(sub: argparse._SubParsersAction) -> None:
    """``adios eval knn|linear|masks|robustness|transfer|report``."""
    tools = sub.add_parser(
        "eval", help="evaluate a trained encoder and masker",
        description="Evaluations that never select anything on the test split: k, temperature "
        "and weight decay are chosen on the validation split, the final probe is fitted on "
        "train+val and test is scored once. Results go to eval_*.json (and pictures) in the run "
        "directory, or --out.").add_subparsers(dest="eval_command", required=True,
                                                metavar="WHAT")

    def model_parser(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = tools.add_parser(name, help=summary, description=description)
        p.add_argument("overrides", nargs="*", metavar=EVAL_TARGET, help=EVAL_TARGET_HELP)
        p.add_argument("--encoder", type=Path, metavar="FILE",
                       help="an exported encoder (safetensors) instead of a run directory")
        p.add_argument("--masker", type=Path, metavar="FILE",
                       help="with --encoder: an exported masker (safetensors)")
        p.add_argument("--out", type=Path, metavar="DIR",
                       help="where results go (default: the run directory, or the encoder's)")
        p.set_defaults(func=_eval)
        return p

    model_parser("knn", "weighted kNN on frozen features",
                 "Weighted kNN on L2-normalised backbone features: k and temperature chosen on "
                 "val (bank: train), then test scored once (bank: train+val) for the chosen and "
                 "the conventional settings (k=20 and k=200, T=0.1).")
    p = model_parser("linear", "linear probe on frozen features",
                     "Linear probe. Default: the standard recipe (SGD lr 0.1, momentum 0.9, "
                     "lr/10 at 60% and 80% of the epochs, crop+flip augmentation on the "
                     "device; meant for a GPU). --fast: L-BFGS logistic regression on cached "
                     "features, weight decay chosen on val; runs on a laptop.")
    p.add_argument("--fast", action="store_true",
                   help="cached features + full-batch L-BFGS, weight decay chosen on val")
    p.add_argument("--epochs", type=int, default=100, help="standard recipe epochs (100)")
    p.add_argument("--batch-size", type=int, default=256, help="standard recipe batch (256)")
    model_parser("masks", "mask quality against ground-truth objects",
                 "Foreground ARI (multi-object scenes), mBO, best-mask coverage, mask sizes and "
                 "collapsed masks on the test scenes, for the masker, the masker at "
                 "initialisation and random blobs.")
    p = model_parser("robustness", "backgrounds test on the built-in scenes",
                     "Probes fitted on scenes whose background follows the label, scored on "
                     "only-foreground, only-background, same-class and random backgrounds; the "
                     "same-minus-random gap is the reliance on the background.")
    p.add_argument("--correlation", type=float, metavar="C",
                   help="how often the training background follows the label (default: the "
                   "dataset's data.scenes.background_class_correlation, or 0.9 when it is 0)")
    model_parser("transfer", "kNN and fast linear probe on another dataset",
                 "Probe a model trained on one dataset on another (data.name=... data.path=...): "
                 "kNN and the fast linear probe, written to eval_transfer_<name>.json.")
    p = tools.add_parser("report", help="HTML + PNG report of a run",
                         description="Write report.html (self-contained) and report.png (its "
                         "key panels) from a run directory: training curves, mask pictures, "
                         "summary.json and every eval_*.json.")
    p.add_argument("overrides", nargs="*", metavar="RUN_DIR",
                   help="the run directory (with --evaluate: also train.device=... etc.)")
    p.add_argument("--evaluate", action="store_true",
                   help="first run the cheap evaluations: knn, linear --fast, masks, robustness")
    p.add_argument("--html", type=Path, metavar="FILE",
                   help="where the HTML goes (default RUN_DIR/report.html; PNG alongside)")
    p.set_defaults(func=_eval)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (what schedulers and ``kill`` send) stops a run like Ctrl-C does."""
    raise KeyboardInterrupt("SIGTERM")


# what each command imports (torch and the rest: seconds), loaded before the command starts
PRELOAD = {"train": ("adios.train",), "eval": ("adios.evaluation.commands",),
           "compare": ("adios.compare",), "bench": ("adios.bench", "adios.bench_step"),
           "data": ("adios.data.check",), "config": ("yaml", "adios.config"),
           "presets": ("adios.config",)}


def _take_signals(handler: Callable[[int, object], None]) -> dict[int, Any]:
    """Route Ctrl-C (unless ignored) and SIGTERM (unless handled) to ``handler``; returns the
    handlers replaced. Outside the main thread signals are left alone."""
    replaced: dict[int, Any] = {}
    with contextlib.suppress(ValueError):  # not the main thread
        for signum, usual in ((signal.SIGINT, signal.default_int_handler),
                              (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is usual:
                replaced[signum] = signal.signal(signum, handler)
    return replaced


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A stop while the command's modules are imported is held until they are: raised inside
    # an import, a KeyboardInterrupt can be swallowed by a library's bare except (the command
    # then ran on), or leave a module half-initialised (an "unexpected" error).
    stops: list[int] = []
    replaced = _take_signals(lambda signum, frame: stops.append(signum))
    try:
        try:
            _preload(argv)
        finally:
            for signum, usual in replaced.items():
                signal.signal(signum, _terminate if signum == signal.SIGTERM else usual)
        if stops:
            raise KeyboardInterrupt("SIGTERM" if stops[0] == signal.SIGTERM else "SIGINT")
        return _run(argv)
    except KeyboardInterrupt as err:  # before the command started (during the imports)
        name = "SIGTERM" if err.args == ("SIGTERM",) else "SIGINT"
        print(f"adios: {'interrupted' if name == 'SIGINT' else 'stopped by ' + name}",
              file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    finally:
        for signum, usual in replaced.items():
            signal.signal(signum, usual)


def _preload(argv: list[str]) -> None:
    """Import what the command named in ``argv`` needs (nothing for --help or a typo)."""
    if "-h" in argv or "--help" in argv:
        return
    command = next((word for word in argv if not word.startswith("-")), "")
    for module in PRELOAD.get(command, ()):
        importlib.import_module(module)


def _run(argv: list[str]) -> int:
    # --debug anywhere: show the traceback of an error instead of one line
    debug = "--debug" in argv or os.environ.get("ADIOS_DEBUG", "") not in ("", "0")
    argv = [word for word in argv if word != "--debug"]
    parser = build_parser()
    # overrides may come before or after options: collect the stray KEY=VALUE words
    args, extra = parser.parse_known_args(argv)
    unknown = [word for word in extra if word.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = args.overrides + extra
    from adios.rundir import active_note, interrupted, release_active

    try:
        return args.func(args)
    except KeyboardInterrupt as err:
        name = "SIGTERM" if err.args == ("SIGTERM",) else "SIGINT"
        message = interrupted(name)
        if args.command == "compare":
            message += "; the same adios compare command continues the grid"
        print(f"adios: {message}", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    except Exception as err:  # noqa: BLE001 - every failure is one line unless --debug
        if debug:
            traceback.print_exc()
        note = active_note() if isinstance(err, NonFiniteError) else ""  # what is intact
        print(f"adios: error: {_message(err)}{note}", file=sys.stderr)
        return 2 if isinstance(err, AdiosError | OSError) else 1
    finally:
        release_active()


def _message(err: BaseException) -> str:
    if isinstance(err, AdiosError):
        return str(err)
    if isinstance(err, OSError):  # a file the user named: missing, unreadable, a folder, ...
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}; check the path and its permissions"
    return (f"unexpected {type(err).__name__}: {err}; this is a bug in adios: rerun with "
            f"--debug and report the traceback")


if __name__ == "__main__":
    sys.exit(main())
