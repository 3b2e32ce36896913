"""The training loop, top to bottom: data, models, optimisers, the min-max game, logging, summary.

Every random draw of an epoch (order, augmentation, ADIOS-s mask choice) comes from a generator
seeded by (seed, epoch), and a checkpoint is written atomically at the end of every epoch, so a
run resumed from epoch k ends with exactly the parameters of an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from adios.api import encoder_metadata, masker_metadata
from adios.checkpoint import (
    RunDirError,
    export_safetensors,
    load_checkpoint,
    prepare_run_dir,
    save_atomic,
    write_json,
)
from adios.config import Config, save_config, to_dict
from adios.data.augment import TwoViewAugment
from adios.data.datasets import (
    Dataset,
    Split,
    knn_bank,
    load_dataset,
    to_device,
    training_batches,
)
from adios.distributed import (
    Replicas,
    check_batch_size,
    from_main,
    process_generator,
    replicate,
    shard,
)
from adios.distributed import setup as setup_distributed
from adios.evaluation.features import extract_features, predict_masks
from adios.evaluation.knn import knn_accuracy
from adios.evaluation.mask_metrics import mask_quality
from adios.masking.adios import (
    frozen,
    mask_confidence,
    mask_sizes,
    penalty_term,
    reverse_gradient,
    siamese_loss,
)
from adios.masking.blobs import random_blob_masks
from adios.masking.schemes import LEARNED, fixed_scheme, views_with_objects
from adios.models import OcclusionModel, build_backbone
from adios.objectives import build_objective
from adios.objectives.base import SiameseObjective
from adios.optim import apply_schedule, build_optimizer, param_groups
from adios.perf import (
    autocast,
    backward,
    channels_last,
    check_precision,
    compile_module,
    grad_scaler,
    optimizer_step,
    peak_memory_mb,
    use_channels_last,
)
from adios.runlog import MetricsLog, NullLog
from adios.viz import mask_figure

CHECKPOINT = "checkpoint.pt"
CONFIDENCE_IMAGES = 128  # validation images whose mask confidence is logged every epoch


@dataclass
class Models:
    objective: SiameseObjective  # owns the backbone and heads (and BYOL's target)
    masker: nn.Module | None
    probe: nn.Module | None  # online linear probe on detached features
    replicas: Replicas | None = None  # their DistributedDataParallel wrappers (torchrun)

    @property
    def backbone(self) -> nn.Module:
        return self.objective.backbone


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """All randomness of one epoch; a resumed run redraws exactly the same numbers."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def build_models(cfg: Config, num_classes: int | None, device: torch.device) -> Models:
    backbone = build_backbone(
        cfg.model.backbone, cfg.data.image_size, width=cfg.model.width, stem=cfg.model.stem
    )
    kwargs = {"temperature": cfg.objective.temperature} if cfg.objective.name == "simclr" else {}
    if cfg.objective.name == "byol":
        kwargs.update(base_momentum=cfg.objective.base_momentum,
                      final_momentum=cfg.objective.final_momentum)
    for key in ("proj_hidden", "proj_out", "pred_hidden"):
        value = getattr(cfg.objective, key)
        if value is not None:
            if key == "pred_hidden" and cfg.objective.name == "simclr":
                raise ValueError("objective.pred_hidden: SimCLR has no predictor")
            kwargs[key] = value
    objective = build_objective(cfg.objective.name, backbone, **kwargs)
    masker = None
    if cfg.masking.mode in LEARNED:
        masker = OcclusionModel(
            cfg.data.image_size, cfg.masker.n_masks, fbase=cfg.masker.fbase, norm=cfg.masker.norm,
            blur_sigma=cfg.masker.blur_sigma,
        )
    probe = nn.Linear(backbone.out_dim, num_classes) if num_classes else None
    models = Models(objective.to(device), masker and masker.to(device), probe and probe.to(device))
    if cfg.train.channels_last:
        use_channels_last(models.objective, models.masker)
    if cfg.train.compile:
        compile_module(models.backbone)
    return models


def build_optimizers(cfg: Config, models: Models) -> tuple[torch.optim.Optimizer, Any]:
    o = cfg.optim
    # optim.lr_scaling=linear: rates are per lr_reference_batch images of the global batch
    scale = o.batch_size / o.lr_reference_batch if o.lr_scaling == "linear" else 1.0
    lr, mask_lr = o.lr * scale, o.mask_lr * scale
    groups = param_groups([models.objective], weight_decay=o.weight_decay, lr=lr)
    if models.probe is not None:
        groups.append({"params": list(models.probe.parameters()), "lr": o.probe_lr * scale,
                       "weight_decay": 0.0, "lars_exclude": True})
    encoder_opt = build_optimizer(o.name, groups, lr=lr, weight_decay=o.weight_decay,
                                  momentum=o.momentum, eta=o.eta)
    masker_opt = None
    if models.masker is not None:
        mgroups = param_groups([models.masker], weight_decay=o.mask_weight_decay, lr=mask_lr)
        masker_opt = build_optimizer(o.mask_name or o.name, mgroups, lr=mask_lr,
                                     weight_decay=o.mask_weight_decay, momentum=o.momentum,
                                     eta=o.eta)
    for opt in (encoder_opt, masker_opt):
        for group in opt.param_groups if opt is not None else []:
            group["base_lr"] = group["lr"]
    return encoder_opt, masker_opt


def train_step(
    cfg: Config,
    models: Models,
    encoder_opt: torch.optim.Optimizer,
    masker_opt: torch.optim.Optimizer | None,
    a: Tensor,
    b: Tensor,
    labels: Tensor | None,
    generator: torch.Generator,
    objects: tuple[Tensor, Tensor] | None = None,
    *,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One round of the game: the encoder minimises the SSL loss, then the masker maximises it.

    A fixed masking scheme (mae, beit, rectangles, oracle) draws one mask per image instead of
    a masker: the ADIOS-s path with a single mask, and no masker step. ``objects`` are the
    views' object layers (a, b), which the oracle hides.

    ``masking.schedule=single-pass`` plays both moves at once: one forward and one backward pass,
    the SSL loss reaching the masker through :func:`reverse_gradient`, then both optimisers step.
    In a torchrun run (``models.replicas``) the differentiable forwards go through their DDP
    wrappers, except the masker step's frozen encoder passes, which therefore never reduce
    encoder gradients. ``scaler``: fp16 loss scaling (:func:`adios.perf.grad_scaler`).
    """
    mode, schedule = cfg.masking.mode, cfg.masking.schedule
    objective, masker, probe = models.objective, models.masker, models.probe
    replicas = models.replicas
    encode = replicas.encoder if replicas else objective.forward_views
    mask = replicas.masker if replicas and replicas.masker else masker
    classify = replicas.probe if replicas and replicas.probe else probe
    single_pass = schedule == "single-pass"
    both = objective.masks_both_views
    if cfg.train.channels_last:
        a, b = channels_last(a), channels_last(b)
    amp = autocast(cfg.train.precision, a.device)
    masks_b = masks_a = index_a = index_b = None
    scheme = fixed_scheme(cfg.masking, cfg.data.image_size)
    if scheme is not None:
        objects_a, objects_b = objects if objects is not None else (None, None)
        masks_b = scheme(b.shape[0], generator, b.device, objects_b)
        masks_a = scheme(a.shape[0], generator, a.device, objects_a) if both else None
        index_b = torch.zeros(b.shape[0], dtype=torch.long, device=b.device)
        index_a = torch.zeros(a.shape[0], dtype=torch.long, device=a.device)
        mode = "adios-s"
    if masker is not None:
        with amp:
            masks_b = mask(b)  # kept with its graph: the masker step reuses this forward
            masks_a = mask(a) if both else None
        if mode == "adios-s":
            n_masks = masks_b.shape[1]
            index_b = torch.randint(n_masks, (b.shape[0],), generator=generator).to(b.device)
            index_a = torch.randint(n_masks, (a.shape[0],), generator=generator).to(a.device)

    def detach(masks: Tensor | None) -> Tensor | None:
        return None if masks is None else masks.detach()

    # 1. encoder step: masks fixed, minimise the SSL loss (+ the probe on detached features);
    # single-pass: the masks' gradient is the loss's, reversed, and the masker pays its penalty
    seen = reverse_gradient if single_pass and masker is not None else detach
    with amp:
        loss, out_a = siamese_loss(objective, a, b, seen(masks_b), mode, masks_a=seen(masks_a),
                                   index_b=index_b, index_a=index_a,
                                   schedule="fast" if single_pass else schedule, encode=encode)
        total = loss
        if probe is not None and labels is not None:
            logits = classify(out_a["h"].detach())
            known = (labels >= 0).sum().clamp_min(1)  # unlabelled images (STL-10) carry label -1
            probe_loss = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum") / known
            total = total + probe_loss
        if single_pass and masker is not None:
            penalty = penalty_term(masks_b) + (penalty_term(masks_a) if both else 0.0)
            total = total + cfg.masking.alpha_sparsity * penalty
    stats = {"loss": loss.item()}
    if scheme is not None:
        stats["mask_sizes"] = mask_sizes(masks_b).mean(0).tolist()
    if probe is not None and labels is not None:
        stats["probe_loss"] = probe_loss.item()
        stats["probe_acc"] = ((logits.argmax(1) == labels).sum() / known).item()
    encoder_opt.zero_grad(set_to_none=True)
    if single_pass and masker_opt is not None:
        masker_opt.zero_grad(set_to_none=True)
    backward(total, scaler)
    optimizer_step(encoder_opt, scaler)

    if single_pass and masker is not None:
        if masker_opt is not None:
            optimizer_step(masker_opt, scaler)
        stats.update(adv_loss=stats["loss"], penalty=float(penalty.detach()))
        stats["mask_sizes"] = mask_sizes(masks_b.detach().float()).mean(0).tolist()
    # 2. masker step: encoder frozen (weights and batch-norm statistics), maximise loss - penalty
    elif masker is not None and masker_opt is not None:
        with amp:
            if schedule == "reference":  # the plain schedule recomputes the masks
                masks_b = mask(b)
                masks_a = mask(a) if both else None
            with frozen(objective):  # the bare encoder: no DDP gradient reduction for it
                adv_loss, _ = siamese_loss(objective, a, b, masks_b, mode, masks_a=masks_a,
                                           index_b=index_b, index_a=index_a, schedule=schedule)
            penalty = penalty_term(masks_b) + (penalty_term(masks_a) if both else 0.0)
        masker_opt.zero_grad(set_to_none=True)
        backward(-(adv_loss - cfg.masking.alpha_sparsity * penalty), scaler)
        optimizer_step(masker_opt, scaler)
        stats.update(adv_loss=adv_loss.item(), penalty=float(penalty.detach()))
        stats["mask_sizes"] = mask_sizes(masks_b.detach().float()).mean(0).tolist()
    if scaler is not None:
        scaler.update()
    return stats


def knn_eval(cfg: Config, backbone: nn.Module, bank: Split, query: Split, num_classes: int,
             dataset: Dataset, device: torch.device) -> float:
    extract = lambda images: extract_features(  # noqa: E731
        backbone, images, dataset.mean, dataset.std, device, cfg.train.eval_batch_size)
    return knn_accuracy(extract(bank.images), bank.labels.cpu(), extract(query.images),
                        query.labels.cpu(), num_classes, k=cfg.train.knn_k,
                        temperature=cfg.train.knn_temperature)


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False,
          stop_after_epoch: int | None = None) -> Path:
    """Train, evaluate, and return the run directory (which holds everything the run made).

    Under torchrun every process runs this; process 0 alone writes (adios/distributed.py).
    """
    started = time.time()
    device = pick_device(cfg.train.device)
    env, device = setup_distributed(device)
    check_precision(cfg.train.precision, device)
    check_batch_size(cfg.optim.batch_size, env)
    run_dir = from_main(env, lambda: prepare_run_dir(cfg, resume=resume, overwrite=overwrite))
    cfg.run_dir = str(run_dir)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT) if resume else None
    main = env.is_main
    if not resume and main:
        save_config(cfg, run_dir / "config.yaml")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    say = (lambda msg: tqdm.write(msg)) if cfg.train.progress and main else (lambda msg: None)

    # ---- data: uint8 tensors on the device, augmented there in batches
    dataset = load_dataset(cfg.data, bank_size=cfg.train.knn_bank,
                           progress=cfg.train.progress and main)
    train_split, val_split = to_device(dataset.train, device), to_device(dataset.val, device)
    labelled = train_split.labels is not None
    augment = TwoViewAugment(cfg.augment.view_a, cfg.augment.view_b, cfg.data.image_size,
                             dataset.mean, dataset.std)
    bank = knn_bank(train_split, cfg.train.knn_bank)

    # ---- models and optimisers
    torch.manual_seed(cfg.seed)
    models = build_models(cfg, dataset.num_classes if labelled else None, device)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    init = {"backbone": copy.deepcopy(models.backbone.state_dict()),
            "masker": copy.deepcopy(models.masker.state_dict()) if models.masker else None}
    oracle = getattr(fixed_scheme(cfg.masking, cfg.data.image_size), "needs_objects", False)
    batches = shard(training_batches(dataset, train_split, cfg.optim.batch_size,
                                     cfg.data.workers, instances=oracle), env)
    steps_per_epoch = len(batches)
    total_steps = cfg.train.epochs * steps_per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    mask_warmup = cfg.optim.mask_warmup_epochs
    mask_warmup_steps = (warmup_steps if mask_warmup is None
                         else round(mask_warmup * steps_per_epoch))

    start_epoch = 0
    if checkpoint is not None:
        models.objective.load_state_dict(checkpoint["objective"])
        if models.masker is not None:
            models.masker.load_state_dict(checkpoint["masker"])
            masker_opt.load_state_dict(checkpoint["masker_opt"])
        if models.probe is not None:
            models.probe.load_state_dict(checkpoint["probe"])
        encoder_opt.load_state_dict(checkpoint["encoder_opt"])
        init = checkpoint["init"]
        start_epoch = checkpoint["epoch"]
        say(f"resuming {run_dir} after epoch {start_epoch}")
    scaler = grad_scaler(cfg.train.precision, device)
    if scaler is not None and checkpoint is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    if env.enabled:
        models.replicas = replicate(models.objective, models.masker, models.probe, env,
                                    sync_bn=cfg.train.sync_bn)
    log = (MetricsLog(run_dir, resume_step=start_epoch * steps_per_epoch,
                      wandb_project=cfg.train.wandb_project, config=to_dict(cfg)) if main
           else NullLog())
    if start_epoch == 0 and labelled and main:
        knn0 = knn_eval(cfg, models.backbone, bank, val_split, dataset.num_classes, dataset, device)
        log.write({"epoch": 0, "step": 0, "knn_acc": knn0, **_confidence(models, dataset, device)})

    # ---- the game
    models.objective.train()
    for epoch in range(start_epoch, cfg.train.epochs):
        generator = epoch_generator(cfg.seed, epoch)  # the batch order: the same everywhere
        draws = process_generator(generator, env)  # this process's augmentations and masks
        bar = tqdm(batches.epoch(generator), total=steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not (cfg.train.progress and main), dynamic_ncols=True)
        tick = time.perf_counter()
        for i, (images, labels, *instances) in enumerate(bar):
            step = epoch * steps_per_epoch + i
            objects = None
            if oracle:
                a, b, objects = views_with_objects(augment, images, instances[0], draws)
            else:
                a, b = augment(images, draws)
            apply_schedule(encoder_opt, step, total_steps, warmup_steps,
                           cfg.optim.final_lr_fraction)
            if masker_opt is not None:
                apply_schedule(masker_opt, step, total_steps, mask_warmup_steps,
                               cfg.optim.final_lr_fraction)
            stats = train_step(cfg, models, encoder_opt, masker_opt, a, b, labels, draws,
                               objects, scaler=scaler)
            models.objective.after_encoder_step(step, total_steps)
            if not all(math.isfinite(v) for v in stats.values() if isinstance(v, float)):
                raise FloatingPointError(f"non-finite loss at step {step}: {stats}")
            stats["images_per_s"] = (images.shape[0] * env.world_size
                                     / (time.perf_counter() - tick))
            tick = time.perf_counter()
            stats["lr"] = encoder_opt.param_groups[0]["lr"]
            bar.set_postfix_str(_postfix(stats))
            if (step + 1) % cfg.train.log_every == 0 or i == steps_per_epoch - 1:
                log.write({"epoch": epoch + 1, "step": step + 1, **stats})

        # ---- end of epoch: monitor, picture, checkpoint (atomically)
        done = epoch + 1
        row: dict[str, Any] = {"epoch": done, "step": done * steps_per_epoch,
                               "elapsed_s": time.time() - started,
                               "peak_mem_mb": peak_memory_mb(device)}
        if labelled and main and _due(cfg.train.knn_every, done, cfg.train.epochs):
            row["knn_acc"] = knn_eval(cfg, models.backbone, bank, val_split,
                                      dataset.num_classes, dataset, device)
        picture = main and _due(cfg.train.picture_every, done, cfg.train.epochs)
        if models.masker is not None and main:
            shown = dataset.val.images[:CONFIDENCE_IMAGES]
            masks = predict_masks(models.masker, shown, dataset.mean, dataset.std, device)
            row["mask_confidence"] = mask_confidence(masks)
            if picture:
                truth = None if dataset.val.instances is None else dataset.val.instances[:8]
                mask_figure(shown, masks, run_dir / "masks" / f"epoch_{done:03d}.png",
                            title=f"epoch {done}", truth=truth)
        log.write(row)
        say(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
        state = {"epoch": done, "objective": models.objective.state_dict(),
                 "encoder_opt": encoder_opt.state_dict(), "init": init,
                 "config": to_dict(cfg)}
        if models.masker is not None:
            state.update(masker=models.masker.state_dict(), masker_opt=masker_opt.state_dict())
        if models.probe is not None:
            state["probe"] = models.probe.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        if main:
            save_atomic(state, run_dir / CHECKPOINT)
        if stop_after_epoch is not None and done >= stop_after_epoch and done < cfg.train.epochs:
            log.close()
            say(f"stopped after epoch {done}; continue with: adios train --resume {run_dir}")
            return run_dir

    # ---- the trained models and what they learned, measured on held-out data
    if not main:
        return run_dir
    export_safetensors(models.backbone.state_dict(), run_dir / "encoder.safetensors",
                       metadata=encoder_metadata(cfg, models.backbone))
    if models.masker is not None:
        export_safetensors(models.masker.state_dict(), run_dir / "masker.safetensors",
                           metadata=masker_metadata(cfg))
    summary = summarize(cfg, models, init, dataset, device, run_dir)
    summary.update(wall_s=time.time() - started, seed=cfg.seed, epochs=cfg.train.epochs,
                   steps=total_steps, run_dir=str(run_dir), peak_mem_mb=peak_memory_mb(device),
                   processes=env.world_size)
    write_json(summary, run_dir / "summary.json")
    log.close()
    return run_dir


def summarize(cfg: Config, models: Models, init: dict, dataset: Dataset,
              device: torch.device, run_dir: Path) -> dict[str, Any]:
    """Held-out numbers: kNN vs an untrained encoder, masks vs untrained masker and random blobs."""
    test = dataset.test
    summary: dict[str, Any] = {}
    if test.labels is not None:
        bank = knn_bank(dataset.train, cfg.train.knn_bank)
        summary["knn_acc"] = knn_eval(cfg, models.backbone, bank, test, dataset.num_classes,
                                      dataset, device)
        untrained = copy.deepcopy(models.backbone)
        untrained.load_state_dict(init["backbone"])
        summary["knn_acc_random_init"] = knn_eval(cfg, untrained, bank, test,
                                                  dataset.num_classes, dataset, device)
    if models.masker is not None:
        masks = predict_masks(models.masker, test.images, dataset.mean, dataset.std, device)
        summary["mask_sizes"] = mask_sizes(masks).mean(0).tolist()
        if test.instances is not None:
            untrained_masker = copy.deepcopy(models.masker)
            untrained_masker.load_state_dict(init["masker"])
            references = {
                "": masks,
                "_untrained": predict_masks(untrained_masker, test.images, dataset.mean,
                                            dataset.std, device),
                "_random": random_blob_masks(
                    len(test), masks.shape[1], cfg.data.image_size,
                    generator=torch.Generator().manual_seed(cfg.seed)),
            }
            for suffix, m in references.items():
                quality = mask_quality(test.instances.cpu(), m)
                summary[f"mask_fg_ari{suffix}"] = quality["fg_ari"]
                summary[f"mask_mbo{suffix}"] = quality["mbo"]
            mask_figure(test.images[:8], masks[:8], run_dir / "masks.png", title="test scenes",
                        truth=test.instances[:8], untrained=references["_untrained"][:8])
    return summary


def _confidence(models: Models, dataset: Dataset, device: torch.device) -> dict[str, float]:
    """The untrained masker's confidence, the start of the curve the report draws."""
    if models.masker is None:
        return {}
    masks = predict_masks(models.masker, dataset.val.images[:CONFIDENCE_IMAGES], dataset.mean,
                          dataset.std, device)
    return {"mask_confidence": mask_confidence(masks)}


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


__all__ = ["train", "train_step", "RunDirError"]
