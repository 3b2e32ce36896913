"""``adios bench step``: what one training step costs, per masking mode and schedule.

For a preset (and overrides) it times the training loop's step (:meth:`adios.engine.Trainer.step`:
learning-rate schedules, both players, optimiser steps, the online probe, BYOL's EMA update and
the fp16 scaler) for the plain objective (no masks), ADIOS-s and full ADIOS with each requested
number of masks, under the ``reference``, ``fast`` and ``single-pass`` schedules, and any fixed
schemes asked for (``schemes``: mae, beit, rectangles, oracle). ``learned`` and ``schedules``
narrow the ADIOS rows (e.g. ADIOS-s under fast only). ``tokens`` adds token masking with a ViT
(:mod:`adios.masking.tokens`): ``token-random`` and ``token-adios`` under fast and single-pass,
each with its cost against ``token-random`` and its speed-up over ADIOS-s (the same ViT on
full-resolution masked images, same schedule, else fast); MAE, which only has token modes, gets
the token rows alone. The views are random tensors of
the preset's batch and image size (a step's cost does not depend on pixel values), the oracle's
object layers random blobs, so no dataset is needed.

Measurement: every configuration is built up front; a first, untimed step of each measures its
peak memory (:class:`adios.perf.MemoryWindow`: its models, optimiser states and one step's
activations); then ``repeats`` rounds visit the configurations in turn (round-robin), timing
``steps`` steps each, and each configuration reports the median of its rounds. Interleaving
spreads slow spells of a shared machine over all rows alike, so the ratios between rows, which
come from the same run, are more reliable than the absolute numbers.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, get_args, get_type_hints

import torch

from adios.config import Config, ConfigError, MaskerConfig
from adios.engine import Trainer, build_trainer
from adios.masking.blobs import random_blob_masks
from adios.masking.schemes import LEARNED, SCHEMES
from adios.masking.tokens import TOKEN_MODES
from adios.perf import MemoryWindow, check_precision, pick_device, resolve_auto, synchronize

SCHEDULES = ("reference", "fast", "single-pass")
FIXED = tuple(s for s in SCHEMES if s not in ("none", *LEARNED))
TOKEN_SCHEDULES = ("fast", "single-pass")
OBJECTS = 4  # random object layers per image for the oracle
PROBE_CLASSES = 10


@dataclass
class _Case:
    masking: str
    n_masks: int
    schedule: str
    cfg: Config
    masker: str = "-"  # masker.kind of the learned rows
    trainer: Trainer | None = None
    peak_mb: float | None = None
    seconds: list[float] | None = None
    steps_done: int = 0


def cases(cfg: Config, n_masks: tuple[int, ...], schemes: tuple[str, ...] = (),
          learned: tuple[str, ...] = LEARNED, schedules: tuple[str, ...] = SCHEDULES,
          tokens: bool = False, maskers: tuple[str, ...] = ()) -> list[_Case]:
    """Plain objective, ADIOS-s (with the first N) and full ADIOS per N, under each schedule,
    for each masker kind in ``maskers`` (default: the configuration's), then each fixed scheme
    asked for, then (``tokens``) the token modes."""

    def variant(masking: str, n: int, schedule: str, kind: str | None = None) -> _Case:
        derived = copy.deepcopy(cfg)
        derived.masking = replace(cfg.masking, mode=masking, schedule=schedule)
        if n:
            derived.masker = replace(cfg.masker, n_masks=n, kind=kind or cfg.masker.kind)
        return _Case(masking, n, schedule, derived, derived.masker.kind if n else "-")

    token_rows = [variant("token-random", 0, "fast")]
    token_rows += [variant("token-adios", 0, s) for s in schedules if s in TOKEN_SCHEDULES]
    if cfg.objective.name == "mae":  # no pixel-mask modes for MAE
        return token_rows
    out = [variant("none", 0, "fast")]
    for kind in maskers or (cfg.masker.kind,):
        if "adios-s" in learned:
            out += [variant("adios-s", n_masks[0], s, kind) for s in schedules]
        if "adios" in learned:
            out += [variant("adios", n, s, kind) for n in n_masks for s in schedules]
    out += [variant(scheme, 0, "fast") for scheme in schemes]
    return out + (token_rows if tokens else [])


HOST = torch.device("cpu")


def _move(trainer: Trainer, device: torch.device) -> None:
    """A configuration's models and optimiser states to ``device``. 0-d optimiser states stay
    where they are (Adam keeps its step count on the CPU by design)."""
    models = trainer.models
    for module in (models.objective, models.masker, models.probe):
        if module is not None:
            module.to(device)
    for optimizer in (trainer.encoder_opt, trainer.masker_opt):
        for state in optimizer.state.values() if optimizer is not None else ():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    state[key] = value.to(device)


def to_device(trainer: Trainer, device: torch.device) -> None:
    """Bring one configuration to the device for its timed round; :func:`to_host` takes it
    back, so that only one configuration's models are there at a time (all of them at once,
    every N and schedule, would not fit a GPU that fits one training run)."""
    if device != HOST:
        _move(trainer, device)


def to_host(trainer: Trainer) -> None:
    _move(trainer, HOST)


def bench_step(
    cfg: Config,
    *,
    steps: int = 1,
    warmup: int = 1,
    repeats: int = 3,
    n_masks: tuple[int, ...] = (4, 6),
    schemes: tuple[str, ...] = (),
    learned: tuple[str, ...] = LEARNED,
    schedules: tuple[str, ...] = SCHEDULES,
    tokens: bool = False,
    maskers: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """One row per configuration: images/s (median over rounds), peak memory and ratios."""
    if steps < 1 or repeats < 1 or warmup < 1:
        raise ConfigError("bench step: --steps, --repeats and --warmup must be >= 1")
    if not n_masks or any(n < 2 for n in n_masks):
        raise ConfigError("bench step: --masks needs numbers of masks >= 2")
    if not set(schemes) <= set(FIXED):
        raise ConfigError(f"bench step: --schemes takes fixed schemes from {', '.join(FIXED)}")
    if not set(learned) <= set(LEARNED):
        raise ConfigError(f"bench step: --learned takes modes from {', '.join(LEARNED)}")
    if not schedules or not set(schedules) <= set(SCHEDULES):
        raise ConfigError(f"bench step: --schedules takes schedules from {', '.join(SCHEDULES)}")
    if (tokens or cfg.objective.name == "mae") and not cfg.model.backbone.startswith("vit"):
        raise ConfigError("bench step: --tokens needs a ViT (model.backbone=vit_tiny or vit_small)")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    cfg = resolve_auto(cfg, device)
    check_precision(cfg.train.precision, device)
    batch, size = cfg.optim.batch_size, cfg.data.image_size
    data = torch.Generator().manual_seed(cfg.seed)
    a = torch.randn(batch, 3, size, size, generator=data).to(device)
    b = (a.cpu() + 0.3 * torch.randn(batch, 3, size, size, generator=data)).to(device)
    labels = torch.randint(PROBE_CLASSES, (batch,), generator=data).to(device)
    objects = tuple(
        random_blob_masks(batch, OBJECTS, size, generator=data).to(device) for _ in range(2)
    )
    planned = warmup + repeats * steps  # steps per configuration: its schedule's length

    def run(case: _Case, count: int) -> float:
        to_device(case.trainer, device)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(count):
            generator = torch.Generator().manual_seed(case.steps_done)
            case.trainer.step(a, b, labels, generator, case.steps_done, objects)
            case.steps_done += 1
        synchronize(device)
        seconds = (time.perf_counter() - start) / count
        to_host(case.trainer)
        return seconds

    kinds = get_args(get_type_hints(MaskerConfig)["kind"])
    if not set(maskers) <= set(kinds):
        raise ConfigError(f"bench step: --maskers takes masker kinds from {', '.join(kinds)}")
    todo = cases(cfg, n_masks, schemes, learned, schedules, tokens, maskers)
    for case in todo:  # build, and measure memory on the first (untimed) step
        gc.collect()
        window = MemoryWindow(device).open()
        case.cfg.train.epochs = 1
        case.trainer = build_trainer(case.cfg, PROBE_CLASSES, device, steps_per_epoch=planned)
        case.trainer.models.objective.train()
        run(case, 1)
        case.peak_mb = window.peak_mb()  # the high-water mark, from before run() moved it back
    for _ in range(warmup - 1):
        for case in todo:
            run(case, 1)
    for case in todo:
        case.seconds = []
    for _ in range(repeats):
        for case in todo:
            case.seconds.append(run(case, steps))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {
        "preset": cfg.preset,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "backbone": cfg.model.backbone,
        "width": cfg.model.width,
        "image_size": size,
        "batch_size": batch,
        "objective": cfg.objective.name,
        "precision": cfg.train.precision,
        "channels_last": cfg.train.channels_last,
        "compile": cfg.train.compile,
        "steps": steps,
        "repeats": repeats,
        "load_average_1min": load,
    }
    rows = []
    for case in todo:
        seconds = statistics.median(case.seconds)
        rows.append(
            {
                "masking": case.masking,
                "masker": case.masker,
                "n_masks": case.n_masks,
                "schedule": case.schedule,
                "images_per_s": batch / seconds,
                "seconds_per_step": seconds,
                "peak_mem_mb": case.peak_mb,
                **meta,
            }
        )
    plain = rows[0]["images_per_s"]
    for row in rows:
        same = {
            r["schedule"]: r["images_per_s"]
            for r in rows
            if (r["masking"], r["masker"], r["n_masks"])
            == (row["masking"], row["masker"], row["n_masks"])
        }
        row["cost_vs_plain"] = plain / row["images_per_s"]
        row["speedup_vs_reference"] = row["images_per_s"] / same.get("reference", float("nan"))
        row["speedup_vs_fast"] = row["images_per_s"] / same.get("fast", float("nan"))
    _token_ratios(rows)
    return rows


def _token_ratios(rows: list[dict[str, Any]]) -> None:
    """Token rows: cost against token-random, speed-up over ADIOS-s (same schedule, else fast)."""
    speed: dict[tuple[str, str], float] = {}
    for r in rows:  # with several --maskers, the first kind's ADIOS-s rows
        speed.setdefault((r["masking"], r["schedule"]), r["images_per_s"])
    nan = float("nan")
    for row in rows:
        if row["masking"] not in TOKEN_MODES:
            continue
        row["cost_vs_token_random"] = speed[("token-random", "fast")] / row["images_per_s"]
        adios_s = speed.get(("adios-s", row["schedule"]), speed.get(("adios-s", "fast"), nan))
        row["speedup_vs_adios_s"] = row["images_per_s"] / adios_s


def _times(ratio: float | None) -> str:
    """``1.23x``, or ``-`` where a row has no such ratio (no masker, or a schedule not timed)."""
    return "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}x"


def format_step_table(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    load = first["load_average_1min"]
    what = (
        f"preset {first['preset']}: {first['objective']} on {first['backbone']} width "
        f"{first['width']} at {first['image_size']} px, batch {first['batch_size']}, "
        f"{first['precision']}{', channels_last' if first['channels_last'] else ''}"
        f"{', compiled' if first['compile'] else ''}; {first['device']} "
        f"({first['threads']} threads){f', load average {load:.2f}' if load is not None else ''}"
    )
    how = (
        f"median of {first['repeats']} interleaved rounds of {first['steps']} step(s); "
        "cost = time per step / plain step; speed-up = images/s / the reference's (or fast's)"
    )
    header = (
        f"{'masking':12s} {'masker':6s} {'N':>2s} {'schedule':11s} {'images/s':>9s} {'s/step':>7s} "
        f"{'cost':>6s} {'vs ref':>7s} {'vs fast':>7s} {'peak MB':>8s}"
    )
    lines = [what, how, "", header]
    for r in rows:
        plain = r["masking"] not in LEARNED  # no masker: schedules do not apply
        scheduled = not plain or r["masking"] == "token-adios"
        peak = "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        vs_ref = _times(None if plain else r["speedup_vs_reference"])
        vs_fast = _times(None if plain else r["speedup_vs_fast"])
        lines.append(
            f"{r['masking']:12s} {r['masker']:6s} {r['n_masks'] or '-':>2} "
            f"{r['schedule'] if scheduled else '-':11s} "
            f"{r['images_per_s']:9.1f} {r['seconds_per_step']:7.3f} {r['cost_vs_plain']:5.2f}x "
            f"{vs_ref:>7s} {vs_fast:>7s} {peak:>8s}"
        )
    tokens = [r for r in rows if r["masking"] in TOKEN_MODES]
    if tokens:
        lines += ["", "token masking: cost vs token-random; speed-up vs ADIOS-s (same schedule, "
                  "else fast) on full-resolution masked images"]
    for r in tokens:
        vs_adios_s = r["speedup_vs_adios_s"]
        lines.append(
            f"  {r['masking']:12s} {r['schedule'] if r['masking'] == 'token-adios' else '-':11s} "
            f"{r['cost_vs_token_random']:5.2f}x token-random, "
            + ("no ADIOS-s row" if math.isnan(vs_adios_s) else f"{_times(vs_adios_s):>6s} ADIOS-s")
        )
    return "\n".join(lines)
