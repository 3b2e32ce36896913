"""The training loop, top to bottom: data, models, optimisers, the min-max game, logging, summary.

Every random draw of an epoch (order, augmentation, ADIOS-s mask choice) comes from a generator
seeded by (seed, epoch), and a checkpoint is written atomically at the end of every epoch, so a
run resumed from epoch k ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from adios.api import encoder_metadata, masker_metadata
from adios.checkpoint import export_safetensors, load_optimizer_state, load_state, write_json
from adios.config import Config, to_dict
from adios.data.datasets import Dataset, Split, knn_bank
from adios.distributed import check_batch_size, check_supported, from_main, replicate
from adios.distributed import setup as setup_distributed
from adios.engine import (
    Models,
    build_models,
    build_optimizers,
    epoch_batches,
    epoch_generator,
    iteration,
    setup,
    train_step,
)
from adios.errors import ConfigError, RunDirError
from adios.evaluation.features import extract_features, feature_spread, predict_masks
from adios.evaluation.knn import knn_predict
from adios.evaluation.mask_metrics import image_variation, mask_quality
from adios.evaluation.scores import balanced_accuracy, majority_rate
from adios.masking.adios import mask_confidence, mask_sizes
from adios.masking.blobs import random_blob_masks
from adios.masking.tokens import TOKEN_MODES, draw_visible, hidden_on_objects_report, hidden_pixels
from adios.perf import check_precision, peak_memory_mb, pick_device, resolve_auto
from adios.rundir import check_run_dir, open_run_dir
from adios.runlog import MetricsLog, NullLog, read_metrics
from adios.viz import mask_figure

CHECKPOINT = "checkpoint.pt"
CONFIDENCE_IMAGES = 128  # validation images whose mask confidence is logged every epoch


def knn_eval(cfg: Config, backbone: nn.Module, bank: Split, query: Split, num_classes: int,
             dataset: Dataset, device: torch.device) -> float:
    return knn_scores(cfg, backbone, bank, query, num_classes, dataset, device)["top1"]


def knn_scores(cfg: Config, backbone: nn.Module, bank: Split, query: Split, num_classes: int,
               dataset: Dataset, device: torch.device) -> dict[str, float]:
    """Top-1 and balanced accuracy of the monitor's kNN (train.knn_k, train.knn_temperature)."""
    extract = lambda images: extract_features(  # noqa: E731
        backbone, images, dataset.mean, dataset.std, device, cfg.train.eval_batch_size)
    predictions = knn_predict(extract(bank.images), bank.labels.cpu(), extract(query.images),
                              num_classes, k=cfg.train.knn_k,
                              temperature=cfg.train.knn_temperature).argmax(1).cpu()
    labels = query.labels.cpu()
    return {"top1": (predictions == labels).double().mean().item(),
            "balanced_accuracy": balanced_accuracy(predictions, labels, num_classes)}


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False,
          stop_after_epoch: int | None = None) -> Path:
    """Train, evaluate, and return the run directory (which holds everything the run made).

    Under torchrun every process runs this; process 0 alone writes (adios/distributed.py).
    """
    started = time.time()
    device = pick_device(cfg.train.device)
    env, device = setup_distributed(device)
    cfg = resolve_auto(cfg, device)
    check_precision(cfg.train.precision, device)
    check_batch_size(cfg.optim.batch_size, env)
    check_supported(cfg, env)
    main = env.is_main
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    say = (lambda msg: tqdm.write(msg)) if cfg.train.progress and main else (lambda msg: None)

    # a run directory that cannot be used is said now, before the images are decoded and checked
    from_main(env, lambda: check_run_dir(cfg, resume=resume, overwrite=overwrite))
    # ---- data on the device, models, optimisers, batch source (adios.engine, shared with
    # compare and bench)
    s = setup(cfg, device, env, progress=cfg.train.progress and main)
    trainer, models, dataset = s.trainer, s.models, s.dataset
    encoder_opt, masker_opt, scaler = trainer.encoder_opt, trainer.masker_opt, trainer.scaler
    steps_per_epoch, total_steps = trainer.steps_per_epoch, trainer.total_steps
    labelled = s.labelled
    n_train = len(dataset.train_files) if dataset.train_files is not None else len(dataset.train)
    if cfg.optim.batch_size > n_train:
        raise ConfigError(f"optim.batch_size: {cfg.optim.batch_size} is more than the {n_train} "
                          f"training images; lower it or use more images (data.num_train)")
    if cfg.data.mean is None or cfg.data.std is None:  # measured on the training images
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, mean=dataset.mean, std=dataset.std))
    if main:
        print(startup_line(cfg, device, dataset, n_train), file=sys.stderr, flush=True)
    bank = knn_bank(s.train_split, cfg.train.knn_bank)
    init = {"backbone": copy.deepcopy(models.backbone.state_dict()),
            "masker": copy.deepcopy(models.masker.state_dict()) if models.masker else None}

    # ---- the run directory, locked (adios/rundir.py): only now that all of the above is valid
    run = from_main(env, lambda: open_run_dir(cfg, resume=resume, overwrite=overwrite))
    run_dir = run.path
    checkpoint = run.load_checkpoint() if run.resume else None
    if checkpoint is not None:
        run.check_classes(checkpoint, dataset.num_classes if labelled else 0, cfg)
        from_main(env, lambda: run.reconcile(cfg, checkpoint))  # apply or refuse changes
    elif main:
        run.write_config(cfg)
    start_epoch = 0
    train_s, images_seen = 0.0, 0  # step-loop seconds and images over all epochs: the curves' x
    if checkpoint is not None:
        source = str(run_dir / CHECKPOINT)
        load_state(models.objective, checkpoint["objective"], source)
        if models.masker is not None:
            load_state(models.masker, checkpoint.get("masker") or {}, source)
            load_optimizer_state(masker_opt, checkpoint.get("masker_opt") or {}, source)
        if models.probe is not None:
            load_state(models.probe, checkpoint.get("probe") or {}, source)
        load_optimizer_state(encoder_opt, checkpoint["encoder_opt"], source)
        init = checkpoint["init"]
        start_epoch = checkpoint["epoch"]
        train_s, images_seen = checkpoint.get("train_s", 0.0), checkpoint.get("images_seen", 0)
        say(f"resuming {run_dir} after epoch {start_epoch}")
    if scaler is not None and checkpoint is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    if env.enabled:
        models.replicas = replicate(models.objective, models.masker, models.probe, env,
                                    sync_bn=cfg.train.sync_bn)
    log = run.closing(MetricsLog(run_dir, resume_step=start_epoch * steps_per_epoch,
                                 wandb_project=cfg.train.wandb_project, config=to_dict(cfg))
                      if main else NullLog())
    if start_epoch == 0 and labelled and main:
        knn0 = knn_eval(cfg, models.backbone, bank, s.val_split, dataset.num_classes, dataset,
                        device)
        log.write({"epoch": 0, "step": 0, "images_seen": 0, "train_s": 0.0, "knn_acc": knn0,
                   "val_majority_rate": majority_rate(s.train_split.labels, s.val_split.labels),
                   **_confidence(cfg, models, dataset, device)})

    # ---- the game
    models.objective.train()
    for epoch in range(start_epoch, cfg.train.epochs):
        bar = tqdm(epoch_batches(s, epoch), total=steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not (cfg.train.progress and main), dynamic_ncols=True)
        tick = epoch_start = time.perf_counter()
        for i, (step, batch, draws) in enumerate(bar):
            stats = iteration(s, batch, step, draws)
            images_seen += batch[0].shape[0] * env.world_size
            if (step + 1) % cfg.train.finite_every == 0:  # and before every save
                run.check_finite({"encoder": models.objective, "masker": models.masker}, step + 1)
            stats["images_per_s"] = (batch[0].shape[0] * env.world_size
                                     / (time.perf_counter() - tick))
            tick = time.perf_counter()
            stats["lr"] = encoder_opt.param_groups[0]["lr"]
            bar.set_postfix_str(_postfix(stats))
            if (step + 1) % cfg.train.log_every == 0 or i == steps_per_epoch - 1:
                log.write({"epoch": epoch + 1, "step": step + 1, **stats})

        # ---- end of epoch: monitor, picture, checkpoint (atomically)
        done = epoch + 1
        train_s += time.perf_counter() - epoch_start
        row: dict[str, Any] = {"epoch": done, "step": done * steps_per_epoch,
                               "images_seen": images_seen, "train_s": train_s,
                               "elapsed_s": time.time() - started,
                               "peak_mem_mb": peak_memory_mb(device)}
        if labelled and main and _due(cfg.train.knn_every, done, cfg.train.epochs):
            row["knn_acc"] = knn_eval(cfg, models.backbone, bank, s.val_split,
                                      dataset.num_classes, dataset, device)
        picture = main and _due(cfg.train.picture_every, done, cfg.train.epochs)
        if models.masker is not None and main and cfg.masking.mode not in TOKEN_MODES:
            masks = predict_masks(models.masker, dataset.val.images[:CONFIDENCE_IMAGES],
                                  dataset.mean, dataset.std, device)
            row["mask_confidence"] = mask_confidence(masks)
        if models.masker is not None and picture:
            shown = dataset.val.images[:8]
            masks = _picture_masks(cfg, models, shown, dataset, device)
            truth = None if dataset.val.instances is None else dataset.val.instances[:8]
            picture_path = mask_figure(shown, masks, run_dir / "masks" / f"epoch_{done:03d}.png",
                                       title=f"epoch {done}", truth=truth)
            log.image("masks/val", picture_path, done * steps_per_epoch)
        log.write(row)
        say(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
        state = {"epoch": done, "objective": models.objective.state_dict(),
                 "encoder_opt": encoder_opt.state_dict(), "init": init,
                 "config": to_dict(cfg), "train_s": train_s, "images_seen": images_seen}
        if models.masker is not None:
            state.update(masker=models.masker.state_dict(), masker_opt=masker_opt.state_dict())
        if models.probe is not None:
            state["probe"] = models.probe.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if main:
            run.save_checkpoint(state)  # refuses non-finite weights
        if stop_after_epoch is not None and done >= stop_after_epoch and done < cfg.train.epochs:
            log.close()
            run.release()
            say(f"stopped after epoch {done}; continue with: adios train --resume {run_dir}")
            return run_dir

    # ---- the trained models and what they learned, measured on held-out data
    if not main:
        return run_dir
    run.settle_config()  # a resume with no epoch left saved no checkpoint to write it with
    export_safetensors(models.backbone.state_dict(), run_dir / "encoder.safetensors",
                       metadata=encoder_metadata(cfg, models.backbone))
    if models.masker is not None:
        export_safetensors(models.masker.state_dict(), run_dir / "masker.safetensors",
                           metadata=masker_metadata(cfg))
    summary = summarize(cfg, models, init, dataset, device, run_dir)
    if (run_dir / "masks.png").is_file():
        log.image("masks/test", run_dir / "masks.png", total_steps)
    if not s.labelled:  # what shows whether an unlabelled run learned: its loss, beside masks
        losses = [r["loss"] for r in read_metrics(run_dir)
                  if r.get("epoch") == cfg.train.epochs and "loss" in r]
        summary["loss_last_epoch"] = sum(losses) / len(losses) if losses else None
    # wall_s: this invocation only (a resumed run's earlier sessions are not in it); train_s:
    # the seconds inside training steps over every session
    summary.update(wall_s=time.time() - started, train_s=train_s, seed=cfg.seed,
                   epochs=cfg.train.epochs, steps=total_steps, run_dir=str(run_dir),
                   peak_mem_mb=peak_memory_mb(device), processes=env.world_size,
                   resumes=run.resumes)
    write_json(summary, run_dir / "summary.json")
    log.close()
    run.release()
    return run_dir


def summarize(cfg: Config, models: Models, init: dict, dataset: Dataset,
              device: torch.device, run_dir: Path) -> dict[str, Any]:
    """Held-out numbers: kNN vs an untrained encoder, masks vs untrained masker and random blobs."""
    test = dataset.test
    summary: dict[str, Any] = {}
    if test.labels is None:
        summary["labels"] = ("none: no accuracies can be measured; judge the run by its masks "
                             "(masks.png), its loss and the spread of its features")
        untrained = copy.deepcopy(models.backbone)
        untrained.load_state_dict(init["backbone"])
        for suffix, backbone in (("", models.backbone), ("_random_init", untrained)):
            features = extract_features(backbone, test.images, dataset.mean, dataset.std,
                                        device, cfg.train.eval_batch_size)
            summary[f"feature_spread{suffix}"] = feature_spread(features)
    else:
        bank = knn_bank(dataset.train, cfg.train.knn_bank)
        scores = knn_scores(cfg, models.backbone, bank, test, dataset.num_classes, dataset,
                            device)
        summary["knn_acc"] = scores["top1"]
        summary["knn_balanced_acc"] = scores["balanced_accuracy"]
        # what always answering the most frequent training class scores on test
        summary["majority_rate"] = majority_rate(dataset.train.labels, test.labels)
        untrained = copy.deepcopy(models.backbone)
        untrained.load_state_dict(init["backbone"])
        summary["knn_acc_random_init"] = knn_eval(cfg, untrained, bank, test,
                                                  dataset.num_classes, dataset, device)
    if cfg.masking.mode in TOKEN_MODES:
        summary.update(_token_summary(cfg, models, dataset, device, run_dir))
    elif models.masker is not None:
        masks = predict_masks(models.masker, test.images, dataset.mean, dataset.std, device)
        summary["mask_sizes"] = mask_sizes(masks).mean(0).tolist()
        untrained_masker = copy.deepcopy(models.masker)
        untrained_masker.load_state_dict(init["masker"])
        scored = test.images if test.instances is not None else test.images[:8]
        untrained_masks = predict_masks(untrained_masker, scored, dataset.mean, dataset.std,
                                        device)
        if test.instances is not None:
            references = {
                "": masks,
                "_untrained": untrained_masks,
                "_random": random_blob_masks(
                    len(test), masks.shape[1], cfg.data.image_size,
                    generator=torch.Generator().manual_seed(cfg.seed)),
            }
            for suffix, m in references.items():
                quality = mask_quality(test.instances.cpu(), m)
                summary[f"mask_fg_ari{suffix}"] = quality["fg_ari"]
                summary[f"mask_mbo{suffix}"] = quality["mbo"]
                summary[f"mask_image_variation{suffix}"] = image_variation(m)
                summary[f"mask_image_variation_argmax{suffix}"] = image_variation(m, hard=True)
        truth = None if test.instances is None else test.instances[:8]
        mask_figure(test.images[:8], masks[:8], run_dir / "masks.png",
                    title="test scenes" if truth is not None else "test images", truth=truth,
                    untrained=untrained_masks[:8])
    return summary


def startup_line(cfg: Config, device: torch.device, dataset: Dataset, n_train: int) -> str:
    """What a run trains on and with, said once before the first step."""
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    else:
        where += f", {torch.get_num_threads()} threads"
    layout = "channels_last" if cfg.train.channels_last else "contiguous (NCHW)"
    labels = (f"{dataset.num_classes} classes" if dataset.train.labels is not None
              else "unlabelled")
    fmt = lambda values: "[" + ", ".join(f"{v:.4g}" for v in values) + "]"  # noqa: E731
    return (f"adios: {where}, precision {cfg.train.precision}, memory format {layout}; data "
            f"{cfg.data.name}: {n_train} train / {len(dataset.val)} val / {len(dataset.test)} "
            f"test images at {cfg.data.image_size} px, {labels}, mean {fmt(dataset.mean)} "
            f"std {fmt(dataset.std)}")


def _confidence(cfg: Config, models: Models, dataset: Dataset,
                device: torch.device) -> dict[str, float]:
    """The untrained masker's confidence, the start of the curve the report draws."""
    if models.masker is None or cfg.masking.mode in TOKEN_MODES:  # token scores are no masks
        return {}
    masks = predict_masks(models.masker, dataset.val.images[:CONFIDENCE_IMAGES], dataset.mean,
                          dataset.std, device)
    return {"mask_confidence": mask_confidence(masks)}


def _token_scores(models: Models, images: torch.Tensor, dataset: Dataset,
                  device: torch.device) -> torch.Tensor:
    """The token masker's keep scores (N, L), or equal ones for token-random."""
    if models.masker is None:
        return torch.zeros(len(images), models.backbone.num_patches)
    return predict_masks(models.masker, images, dataset.mean, dataset.std, device)


def _picture_masks(cfg: Config, models: Models, images: torch.Tensor, dataset: Dataset,
                   device: torch.device) -> torch.Tensor:
    """What a mask picture shows: the soft masks, or (token modes) the hidden patches of one
    seeded draw, as a single mask."""
    if cfg.masking.mode not in TOKEN_MODES:
        return predict_masks(models.masker, images, dataset.mean, dataset.std, device)
    keep = draw_visible(_token_scores(models, images, dataset, device), cfg.masking.keep_ratio,
                        cfg.seed)
    return hidden_pixels(keep, models.backbone.grid, cfg.data.image_size)


def _token_summary(cfg: Config, models: Models, dataset: Dataset, device: torch.device,
                   run_dir: Path) -> dict[str, Any]:
    """Token modes on scenes: the share of hidden patch area on objects, learned vs random
    (adios.masking.tokens.hidden_on_objects_report), and a picture of the hidden patches."""
    test = dataset.test
    mask_figure(test.images[:8], _picture_masks(cfg, models, test.images[:8], dataset, device),
                run_dir / "masks.png", title="test images: hidden patches")
    if test.instances is None:
        return {}
    scores = _token_scores(models, test.images, dataset, device)
    return hidden_on_objects_report(scores, test.instances.cpu(), cfg.masking.keep_ratio,
                                    cfg.seed)


def _due(every: int, epoch: int, last: int) -> bool:
    return epoch == last or (every > 0 and epoch % every == 0)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(f"{v:.2f}" for v in value) + "]"
    return str(value)


def _postfix(stats: dict[str, Any]) -> str:
    keys = ("loss", "adv_loss", "mask_sizes", "probe_acc", "images_per_s")
    return " ".join(f"{k.replace('images_per_s', 'img/s')}={_fmt(stats[k])}" for k in keys
                    if k in stats)


# the step's parts, importable from here as before (they live in adios.engine)
__all__ = ["train", "train_step", "build_models", "build_optimizers", "epoch_generator",
           "pick_device", "Models", "RunDirError"]
