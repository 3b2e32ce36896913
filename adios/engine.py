"""One training iteration, built in one place: what ``train``, ``compare`` and ``bench`` all run.

:func:`setup` builds everything a run steps with (data, views, models, optimisers, scaler,
batch source, schedule numbers); :func:`iteration` turns one raw batch into views and plays one
round of the game (:func:`train_step`) with the learning-rate schedules, BYOL's EMA update and
the fp16 scaler. The training loop, the compare calibration and ``adios bench data`` iterate
with :func:`iterations`, so what they time is exactly what trains.

:func:`train_step` reads top to bottom: :func:`draw_masks` (the learned masker's forward, or
the fixed scheme's draw), then either :func:`single_pass_step` or :func:`encoder_step` followed
by :func:`masker_step`. Token modes (``token-random`` / ``token-adios``: the ViT encodes only
the drawn patch tokens) take :func:`token_train_step`: :func:`draw_tokens`, then
:func:`token_encoder_step` and :func:`token_masker_step`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adios.config import Config
from adios.data.augment import TwoViewAugment
from adios.data.datasets import (
    Dataset,
    Split,
    data_device,
    load_dataset,
    to_device,
    training_batches,
)
from adios.distributed import DistEnv, Replicas, gather_lists, process_generator, shard
from adios.errors import ConfigError, NonFiniteError
from adios.masking.adios import (
    frozen,
    mask_sizes,
    penalty_term,
    reverse_gradient,
    siamese_loss,
    size_entropy_term,
)
from adios.masking.schemes import LEARNED, MaskScheme, fixed_scheme, views_with_objects
from adios.masking.tokens import (
    TOKEN_MODES,
    gumbel_top_k,
    keep_count,
    masker_objective,
    token_losses,
)
from adios.models import build_backbone, build_masker
from adios.objectives import build_objective
from adios.objectives.base import SiameseObjective
from adios.optim import apply_epoch_schedule, apply_schedule, build_optimizer, param_groups
from adios.perf import (
    autocast,
    backward,
    channels_last,
    compile_module,
    grad_scaler,
    make_deterministic,
    optimizer_step,
    pick_device,
    resolve_auto,
    synchronize,
    upload,
    use_channels_last,
)


@dataclass
class Models:
    objective: SiameseObjective  # owns the backbone and heads (and BYOL's target)
    masker: nn.Module | None
    probe: nn.Module | None  # online linear probe on detached features
    replicas: Replicas | None = None  # their DistributedDataParallel wrappers (torchrun)
    scheme: MaskScheme | None = None  # a fixed masking scheme (mae, beit, rectangles, oracle)

    @property
    def backbone(self) -> nn.Module:
        return self.objective.backbone


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """All randomness of one epoch; a resumed run redraws exactly the same numbers."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def build_models(cfg: Config, num_classes: int | None, device: torch.device) -> Models:
    """The players; settings they cannot be built with are a ConfigError (before any write)."""
    try:
        return _build_models(cfg, num_classes, device)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model: {err}") from None


def _build_models(cfg: Config, num_classes: int | None, device: torch.device) -> Models:
    backbone = build_backbone(
        cfg.model.backbone, cfg.data.image_size, width=cfg.model.width, stem=cfg.model.stem,
        vit_init=cfg.model.vit_init,
    )
    kwargs = {"temperature": cfg.objective.temperature} if cfg.objective.name == "simclr" else {}
    if cfg.objective.name == "mae":
        kwargs.update(decoder_dim=cfg.objective.decoder_dim,
                      decoder_depth=cfg.objective.decoder_depth,
                      decoder_heads=cfg.objective.decoder_heads)
    if cfg.objective.name == "byol":
        kwargs.update(base_momentum=cfg.objective.base_momentum,
                      final_momentum=cfg.objective.final_momentum)
    if cfg.objective.name == "simsiam":  # the SimSiam + ADIOS loss terms (masking.use_*)
        kwargs.update({flag: getattr(cfg.masking, flag)
                       for flag in ("use_symmetry_mask", "use_no_mask", "use_both_mask")})
    for key in ("proj_hidden", "proj_out", "pred_hidden"):
        value = getattr(cfg.objective, key)
        if value is not None:
            if key == "pred_hidden" and cfg.objective.name == "simclr":
                raise ValueError("objective.pred_hidden: SimCLR has no predictor")
            kwargs[key] = value
    objective = build_objective(cfg.objective.name, backbone, **kwargs)
    masker = build_masker(cfg) if cfg.masking.mode in (*LEARNED, "token-adios") else None
    probe = nn.Linear(backbone.out_dim, num_classes) if num_classes else None
    models = Models(objective.to(device), masker and masker.to(device), probe and probe.to(device),
                    scheme=fixed_scheme(cfg.masking, cfg.data.image_size))
    if resolve_auto(cfg, device).train.channels_last:
        use_channels_last(models.objective, models.masker)
    if cfg.train.compile:
        compile_module(models.backbone)
    return models


def build_optimizers(cfg: Config, models: Models) -> tuple[torch.optim.Optimizer, Any]:
    o = cfg.optim
    # optim.lr_scaling=linear: rates are per lr_reference_batch images of the global batch
    scale = o.batch_size / o.lr_reference_batch if o.lr_scaling == "linear" else 1.0
    lr, mask_lr = o.lr * scale, o.mask_lr * scale
    predictor = getattr(models.objective, "predictor", None) if o.fixed_predictor_lr else None
    if predictor is None:
        groups = param_groups([models.objective], weight_decay=o.weight_decay, lr=lr)
    else:  # optim.fixed_predictor_lr: the predictor's groups keep their base lr
        held = {id(p) for p in predictor.parameters()}
        rest = [(n, p) for n, p in models.objective.named_parameters() if id(p) not in held]
        groups = param_groups(rest, weight_decay=o.weight_decay, lr=lr) + [
            {**g, "fixed_lr": True, "fixed_from_epoch": o.fixed_predictor_lr_from_epoch}
            for g in param_groups(predictor, weight_decay=o.weight_decay, lr=lr)]
    if models.probe is not None and o.probe_lars:  # its weight under LARS, no weight decay
        groups += param_groups(models.probe, weight_decay=0.0, lr=o.probe_lr * scale)
    elif models.probe is not None:
        groups.append({"params": list(models.probe.parameters()), "lr": o.probe_lr * scale,
                       "weight_decay": 0.0, "lars_exclude": True})
    encoder_opt = build_optimizer(o.name, groups, lr=lr, weight_decay=o.weight_decay,
                                  momentum=o.momentum, eta=o.eta, clip_lars=o.lars_clip)
    masker_opt = None
    if models.masker is not None:
        mask_wd = o.weight_decay if o.mask_weight_decay is None else o.mask_weight_decay
        mgroups = param_groups([models.masker], weight_decay=mask_wd, lr=mask_lr)
        masker_opt = build_optimizer(o.mask_name or o.name, mgroups, lr=mask_lr,
                                     weight_decay=mask_wd, momentum=o.momentum, eta=o.eta,
                                     clip_lars=o.lars_clip)
    for opt in (encoder_opt, masker_opt):
        for group in opt.param_groups if opt is not None else []:
            group["base_lr"] = group["lr"]
    return encoder_opt, masker_opt


# ----------------------------------------------------------------------------- one round


@dataclass
class DrawnMasks:
    """This step's masks. Learned ones (B, N, H, W) keep their graph (the masker step reuses
    the forward); a fixed scheme's (B, 1, H, W) are plain tensors and occlude the views as they
    are. ``index_*``: ADIOS-s's mask per image."""

    b: Tensor | None = None
    a: Tensor | None = None  # objectives that mask both views
    index_b: Tensor | None = None
    index_a: Tensor | None = None
    fixed: bool = False


def draw_masks(cfg: Config, models: Models, a: Tensor, b: Tensor, generator: torch.Generator,
               objects: tuple[Tensor, Tensor] | None, amp: AbstractContextManager) -> DrawnMasks:
    """The masks of view b (and of view a when the objective masks both views)."""
    both = models.objective.masks_both_views
    if models.scheme is not None:
        objects_a, objects_b = objects if objects is not None else (None, None)
        masks_b = models.scheme(b.shape[0], generator, b.device, objects_b)
        masks_a = models.scheme(a.shape[0], generator, a.device, objects_a) if both else None
        return DrawnMasks(masks_b, masks_a, fixed=True)
    if models.masker is None:
        return DrawnMasks()
    mask = _masker(models)
    with amp:
        drawn = DrawnMasks(mask(b), mask(a) if both else None)
    if cfg.masking.mode == "adios-s":
        draw_indices(drawn, generator, cfg.masking.shared_view_index)
    return drawn


def draw_indices(masks: DrawnMasks, generator: torch.Generator, shared: bool = False) -> None:
    """ADIOS-s: a mask index per image of each view, from the step's generator; ``shared``
    (``masking.shared_view_index``): view a takes view b's indices."""
    n_masks, device = masks.b.shape[1], masks.b.device
    masks.index_b = upload(torch.randint(n_masks, (masks.b.shape[0],), generator=generator),
                           device)
    if shared:
        masks.index_a = masks.index_b
        return
    batch_a = masks.a.shape[0] if masks.a is not None else masks.b.shape[0]
    masks.index_a = upload(torch.randint(n_masks, (batch_a,), generator=generator), device)


def _masker(models: Models) -> Callable[[Tensor], Tensor]:
    replicas = models.replicas
    return replicas.masker if replicas and replicas.masker else models.masker


def _detach(masks: Tensor | None) -> Tensor | None:
    return None if masks is None else masks.detach()


def _occlude(x: Tensor, masks: Tensor | None) -> Tensor:
    return x if masks is None else x * (1.0 - masks)


def _penalty(masks: DrawnMasks) -> Tensor:
    return penalty_term(masks.b) + (penalty_term(masks.a) if masks.a is not None else 0.0)


def _entropy(cfg: Config, masks: DrawnMasks) -> Tensor | float:
    """``masking.alpha_entropy`` times the mask-size entropy term (0 when the weight is 0)."""
    if cfg.masking.alpha_entropy == 0:
        return 0.0
    views = [masks.b] if masks.a is None else [masks.b, masks.a]
    return cfg.masking.alpha_entropy * size_entropy_term(*views)


def _encoder_loss(cfg: Config, models: Models, a: Tensor, b: Tensor, labels: Tensor | None,
                  masks: DrawnMasks, seen: Callable[[Tensor | None], Tensor | None],
                  schedule: str) -> tuple[Tensor, dict[str, Any]]:
    """The encoder's objective (SSL loss + the online probe on detached features), the masks
    passed through ``seen`` (detached, or gradient-reversed for the single pass). Its
    statistics stay tensors: :func:`read_stats` reads them, once per step."""
    objective, replicas = models.objective, models.replicas
    encode = replicas.encoder if replicas else objective.forward_views
    masked_stats = cfg.train.bn_stats == "mixed"
    if masks.fixed:  # one fixed mask per image hides its pixels; the views go in occluded
        loss, out_a = siamese_loss(objective, _occlude(a, masks.a), _occlude(b, masks.b), None,
                                   "none", encode=encode, masked_stats=masked_stats,
                                   occluded=(masks.a is not None, True))
    else:
        loss, out_a = siamese_loss(objective, a, b, seen(masks.b), cfg.masking.mode,
                                   masks_a=seen(masks.a), index_b=masks.index_b,
                                   index_a=masks.index_a, schedule=schedule, encode=encode,
                                   masked_stats=masked_stats)
    stats: dict[str, Any] = {"loss": loss.detach()}
    if masks.fixed:
        stats["mask_sizes"] = mask_sizes(masks.b).mean(0)
    features, targets = out_a["h"], labels
    if cfg.train.probe_views == "both" and models.probe is not None and labels is not None:
        with torch.no_grad():  # both views re-encoded unmasked, as the reference; one probe
            features = torch.cat([models.backbone(view) for view in (a, b)])  # call: mean CE
        targets = labels.repeat(2)
    return loss + _probe_loss(models, features, targets, stats), stats


def _probe_loss(models: Models, features: Tensor, labels: Tensor | None,
                stats: dict[str, Any]) -> Tensor | float:
    """The online probe's loss on detached features (0 without a probe or labels); its loss
    and accuracy go into ``stats``."""
    probe, replicas = models.probe, models.replicas
    if probe is None or labels is None:
        return 0.0
    classify = replicas.probe if replicas and replicas.probe else probe
    logits = classify(features.detach())
    known = (labels >= 0).sum().clamp_min(1)  # unlabelled images (STL-10) carry label -1
    probe_loss = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum") / known
    stats["probe_loss"] = probe_loss.detach()
    stats["probe_acc"] = (logits.argmax(1) == labels).sum() / known
    return probe_loss


def encoder_step(cfg: Config, models: Models, encoder_opt: torch.optim.Optimizer, a: Tensor,
                 b: Tensor, labels: Tensor | None, masks: DrawnMasks,
                 amp: AbstractContextManager,
                 scaler: torch.amp.GradScaler | None) -> dict[str, Any]:
    """Masks fixed: the encoder (and the probe) minimise the SSL loss."""
    schedule = cfg.masking.schedule
    with amp:
        total, stats = _encoder_loss(cfg, models, a, b, labels, masks, _detach,
                                     "fast" if schedule == "single-pass" else schedule)
    encoder_opt.zero_grad(set_to_none=True)
    backward(total, scaler)
    optimizer_step(encoder_opt, scaler)
    return stats


def masker_step(cfg: Config, models: Models, masker_opt: torch.optim.Optimizer, a: Tensor,
                b: Tensor, masks: DrawnMasks, amp: AbstractContextManager,
                scaler: torch.amp.GradScaler | None) -> dict[str, Any]:
    """Encoder frozen (weights and batch-norm statistics): the masker maximises loss - penalty."""
    schedule, objective = cfg.masking.schedule, models.objective
    with amp:
        if schedule == "reference":  # the plain schedule recomputes the masks
            mask = _masker(models)
            masks = DrawnMasks(mask(b), mask(a) if masks.a is not None else None,
                               masks.index_b, masks.index_a)
        with frozen(objective):  # the bare encoder: no DDP gradient reduction for it
            adv_loss, _ = siamese_loss(objective, a, b, masks.b, cfg.masking.mode,
                                       masks_a=masks.a, index_b=masks.index_b,
                                       index_a=masks.index_a, schedule=schedule)
        penalty = _penalty(masks)
        entropy = _entropy(cfg, masks)
    masker_opt.zero_grad(set_to_none=True)
    backward(-(adv_loss - cfg.masking.alpha_sparsity * penalty + entropy), scaler)
    optimizer_step(masker_opt, scaler)
    return {"adv_loss": adv_loss.detach(), "penalty": penalty.detach(),
            "entropy_term": _detach_stat(entropy),
            "mask_sizes": mask_sizes(masks.b.detach().float()).mean(0)}


def single_pass_step(cfg: Config, models: Models, encoder_opt: torch.optim.Optimizer,
                     masker_opt: torch.optim.Optimizer | None, a: Tensor, b: Tensor,
                     labels: Tensor | None, masks: DrawnMasks, amp: AbstractContextManager,
                     scaler: torch.amp.GradScaler | None) -> dict[str, Any]:
    """Both moves on one forward and one backward: the masks see the loss's gradient reversed
    (:func:`reverse_gradient`) and pay their penalty; then both optimisers step."""
    with amp:
        total, stats = _encoder_loss(cfg, models, a, b, labels, masks, reverse_gradient, "fast")
        penalty = _penalty(masks)
        entropy = _entropy(cfg, masks)  # the masker maximises it: minimised here with a minus
        total = total + cfg.masking.alpha_sparsity * penalty - entropy
    encoder_opt.zero_grad(set_to_none=True)
    if masker_opt is not None:
        masker_opt.zero_grad(set_to_none=True)
    backward(total, scaler)
    optimizer_step(encoder_opt, scaler)
    if masker_opt is not None:
        optimizer_step(masker_opt, scaler)
    stats.update(adv_loss=stats["loss"], penalty=penalty.detach(),
                 entropy_term=_detach_stat(entropy),
                 mask_sizes=mask_sizes(masks.b.detach().float()).mean(0))
    return stats


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
) -> dict[str, Any]:
    """One round of the game: the encoder minimises the SSL loss, then the masker maximises it.

    A fixed masking scheme (``models.scheme``: mae, beit, rectangles, oracle) draws one mask per
    image and has no masker step; ``objects`` are the views' object layers (a, b), which the
    oracle hides. ``masking.schedule=single-pass`` plays both moves at once. In a torchrun run
    (``models.replicas``) the differentiable forwards go through their DDP wrappers, except the
    masker step's frozen encoder passes, which therefore never reduce encoder gradients.
    ``scaler``: fp16 loss scaling (:func:`adios.perf.grad_scaler`). Without ``masker_opt`` the
    masker only draws masks (its step is skipped).
    """
    if cfg.masking.mode in TOKEN_MODES:
        return token_train_step(cfg, models, encoder_opt, masker_opt, a, b, labels, generator,
                                scaler=scaler)
    if resolve_auto(cfg, a.device).train.channels_last:  # auto: as build_models decided
        a, b = channels_last(a), channels_last(b)
    amp = autocast(cfg.train.precision, a.device)
    masks = draw_masks(cfg, models, a, b, generator, objects, amp)
    if cfg.masking.schedule == "single-pass" and models.masker is not None:
        stats = single_pass_step(cfg, models, encoder_opt, masker_opt, a, b, labels, masks, amp,
                                 scaler)
    else:
        stats = encoder_step(cfg, models, encoder_opt, a, b, labels, masks, amp, scaler)
        if models.masker is not None and masker_opt is not None:
            if cfg.masking.mode == "adios-s" and cfg.masking.independent_draws:
                # the masker step's own draw, as the reference
                draw_indices(masks, generator, cfg.masking.shared_view_index)
            stats.update(masker_step(cfg, models, masker_opt, a, b, masks, amp, scaler))
    if scaler is not None:
        scaler.update()
    return read_stats(stats)


def _detach_stat(value: Tensor | float) -> Tensor | float:
    return value.detach() if isinstance(value, Tensor) else float(value)


def read_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A step's statistics as Python numbers (0-d tensors to floats, 1-d to lists), read in
    one device-to-host copy. Each ``.item()`` makes the host wait for the GPU, so a step reads
    them all once, at its end, after its backward passes are queued."""
    keys = [k for k, v in stats.items() if isinstance(v, Tensor)]
    if not keys:
        return stats
    parts = [stats[k].detach().reshape(-1) for k in keys]
    dtype = torch.float32 if parts[0].device.type == "mps" else torch.float64  # no MPS float64
    values = torch.cat([p.to(dtype) for p in parts]).tolist()
    out, start = dict(stats), 0
    for key, part in zip(keys, parts, strict=True):
        chunk = values[start:start + part.numel()]
        out[key] = chunk if stats[key].dim() else chunk[0]
        start += part.numel()
    return out


# ----------------------------------------------------------------------------- token modes


@dataclass
class DrawnTokens:
    """This step's visible tokens of view b: ``keep`` (B, K) patch indices, drawn by Gumbel
    top-k from ``scores`` (B, L) (the token masker's, with their graph; zeros for
    token-random)."""

    scores: Tensor
    keep: Tensor


def draw_tokens(cfg: Config, models: Models, b: Tensor, generator: torch.Generator,
                amp: AbstractContextManager) -> DrawnTokens:
    patches = models.backbone.num_patches
    if models.masker is None:
        scores = b.new_zeros(b.shape[0], patches, dtype=torch.float32)
    else:
        with amp:
            scores = models.masker(b)
    return DrawnTokens(scores, gumbel_top_k(scores, keep_count(patches, cfg.masking.keep_ratio),
                                            generator))


def token_encoder_step(cfg: Config, models: Models, encoder_opt: torch.optim.Optimizer,
                       a: Tensor, b: Tensor, labels: Tensor | None, tokens: DrawnTokens,
                       amp: AbstractContextManager, scaler: torch.amp.GradScaler | None
                       ) -> tuple[dict[str, Any], Tensor]:
    """The encoder (and the probe) minimise the loss on the visible tokens; also returns the
    per-image losses (detached), the single-pass masker's rewards."""
    with amp:
        per_image, features = token_losses(models.objective, a, b, tokens.keep)
        loss = per_image.float().mean()
        stats = {"loss": loss.detach(), "kept_tokens": float(tokens.keep.shape[1])}
        total = loss + _probe_loss(models, features, labels, stats)
    encoder_opt.zero_grad(set_to_none=True)
    backward(total, scaler)
    optimizer_step(encoder_opt, scaler)
    return stats, per_image.detach()


def token_masker_step(cfg: Config, models: Models, masker_opt: torch.optim.Optimizer, a: Tensor,
                      b: Tensor, tokens: DrawnTokens, rewards: Tensor | None,
                      amp: AbstractContextManager,
                      scaler: torch.amp.GradScaler | None) -> dict[str, Any]:
    """The masker ascends the score-function estimate of the loss of its draws, minus the
    diversity penalty. Rewards: the given ones (single-pass) or, by default, the losses of the
    same draws under the updated encoder, frozen (a forward pass, no backward)."""
    if rewards is None:
        with frozen(models.objective), torch.no_grad(), amp:
            rewards, _ = token_losses(models.objective, a, b, tokens.keep)
    loss, penalty = masker_objective(tokens.scores, tokens.keep, rewards,
                                     cfg.masking.token_diversity)
    masker_opt.zero_grad(set_to_none=True)
    backward(loss, scaler)
    optimizer_step(masker_opt, scaler)
    return {"adv_loss": rewards.float().mean(), "diversity_kl": penalty.detach()}


def token_train_step(cfg: Config, models: Models, encoder_opt: torch.optim.Optimizer,
                     masker_opt: torch.optim.Optimizer | None, a: Tensor, b: Tensor,
                     labels: Tensor | None, generator: torch.Generator, *,
                     scaler: torch.amp.GradScaler | None = None) -> dict[str, Any]:
    """One round with token masking: draw view b's visible tokens, the encoder's step, then
    (token-adios) the masker's. Not under torchrun yet (no DDP wrappers on this path)."""
    if models.replicas is not None:
        raise NotImplementedError("token masking modes do not support torchrun (DDP) yet")
    amp = autocast(cfg.train.precision, a.device)
    tokens = draw_tokens(cfg, models, b, generator, amp)
    stats, per_image = token_encoder_step(cfg, models, encoder_opt, a, b, labels, tokens, amp,
                                          scaler)
    if models.masker is not None and masker_opt is not None:
        rewards = per_image if cfg.masking.schedule == "single-pass" else None
        stats.update(token_masker_step(cfg, models, masker_opt, a, b, tokens, rewards, amp,
                                       scaler))
    if scaler is not None:
        scaler.update()
    return read_stats(stats)


# ----------------------------------------------------------------------------- the loop's parts


@dataclass
class Trainer:
    """What one step needs: the models, their optimisers, the scaler and the schedule numbers."""

    cfg: Config
    models: Models
    encoder_opt: torch.optim.Optimizer
    masker_opt: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler | None
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    mask_warmup_steps: int

    def step(self, a: Tensor, b: Tensor, labels: Tensor | None, draws: torch.Generator,
             step: int, objects: tuple[Tensor, Tensor] | None = None) -> dict[str, Any]:
        """Step ``step`` of the run on a pair of views: schedules, the game, BYOL's EMA."""
        self.schedule(step)
        stats = train_step(self.cfg, self.models, self.encoder_opt, self.masker_opt, a, b,
                           labels, draws, objects, scaler=self.scaler)
        self.models.objective.after_encoder_step(step, self.total_steps)
        if not all(math.isfinite(v) for v in stats.values() if isinstance(v, float)):
            shown = ", ".join(f"{k}={v:.4g}" for k, v in stats.items() if isinstance(v, float))
            raise NonFiniteError(f"training diverged: non-finite loss at step {step} ({shown}); "
                                 f"lower the learning rates (optim.lr, optim.mask_lr)")
        return stats

    def schedule(self, step: int) -> None:
        """Both optimisers' learning rates for ``step``: warm-up + cosine, moved every step or
        once per epoch (``optim.schedule_every``); the encoder's cosine spans
        ``epochs - optim.train_mask_epochs`` epochs, the masker's all of them."""
        o, epochs = self.cfg.optim, self.cfg.train.epochs
        encoder_epochs = max(1, epochs - o.train_mask_epochs)
        opts = [(self.encoder_opt, encoder_epochs, o.warmup_epochs, self.warmup_steps)]
        if self.masker_opt is not None:
            mask_warmup = o.warmup_epochs if o.mask_warmup_epochs is None else o.mask_warmup_epochs
            opts.append((self.masker_opt, epochs, mask_warmup, self.mask_warmup_steps))
        for opt, span, warmup_epochs, warmup_steps in opts:
            if o.schedule_every == "epoch":
                apply_epoch_schedule(opt, step // self.steps_per_epoch, span, round(warmup_epochs),
                                     o.final_lr_fraction, o.warmup_start_lr)
            else:
                apply_schedule(opt, step, span * self.steps_per_epoch, warmup_steps,
                               o.final_lr_fraction, warmup_start_lr=o.warmup_start_lr)


def build_trainer(cfg: Config, num_classes: int | None, device: torch.device,
                  steps_per_epoch: int) -> Trainer:
    """Models (seeded by ``cfg.seed``), optimisers, scaler and schedule for ``steps_per_epoch``."""
    torch.manual_seed(cfg.seed)
    models = build_models(cfg, num_classes, device)
    encoder_opt, masker_opt = build_optimizers(cfg, models)
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    mask_warmup = cfg.optim.mask_warmup_epochs
    return Trainer(
        cfg, models, encoder_opt, masker_opt, grad_scaler(cfg.train.precision, device),
        steps_per_epoch=steps_per_epoch,
        total_steps=cfg.train.epochs * steps_per_epoch,
        warmup_steps=warmup_steps,
        mask_warmup_steps=(warmup_steps if mask_warmup is None
                           else round(mask_warmup * steps_per_epoch)),
    )


@dataclass
class Setup:
    """Everything a run steps with; :func:`setup` builds it."""

    cfg: Config
    device: torch.device
    env: DistEnv
    dataset: Dataset
    train_split: Split  # on the device, or the host above its budget (data_device)
    val_split: Split
    augment: TwoViewAugment
    batches: Any  # the batch source (this process's shard under torchrun)
    trainer: Trainer

    @property
    def models(self) -> Models:
        return self.trainer.models

    @property
    def labelled(self) -> bool:
        return self.train_split.labels is not None

    @property
    def needs_objects(self) -> bool:
        """The oracle hides ground-truth objects: batches carry instance maps."""
        return getattr(self.models.scheme, "needs_objects", False)


def setup(cfg: Config, device: torch.device | None = None, env: DistEnv | None = None, *,
          progress: bool = False) -> Setup:
    """Data on the device, the two-view augmentation, the models and the batch source."""
    make_deterministic(cfg.train.deterministic)
    device = pick_device(cfg.train.device) if device is None else device
    env = DistEnv() if env is None else env
    dataset = load_dataset(cfg.data, bank_size=cfg.train.knn_bank, progress=progress,
                           share=(env.rank, env.world_size), gather=gather_lists(env))
    resident = data_device(dataset, device)  # the host above a share of the GPU's memory
    train_split, val_split = to_device(dataset.train, resident), to_device(dataset.val, resident)
    augment = TwoViewAugment(cfg.augment.view_a, cfg.augment.view_b, cfg.data.image_size,
                             dataset.mean, dataset.std)
    labelled = train_split.labels is not None
    oracle = getattr(fixed_scheme(cfg.masking, cfg.data.image_size), "needs_objects", False)
    batches = shard(training_batches(dataset, train_split, cfg.optim.batch_size,
                                     cfg.data.workers, instances=oracle,
                                     drop_last=cfg.data.drop_last, device=device), env)
    trainer = build_trainer(cfg, dataset.num_classes if labelled else None, device, len(batches))
    return Setup(cfg, device, env, dataset, train_split, val_split, augment, batches, trainer)


def views(s: Setup, images: Tensor, instances: list[Tensor], draws: torch.Generator
          ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """A raw batch's two views (and, for the oracle, their object layers). A whole-image
    source (``data.load_size``) ends each batch with the images' extents instead."""
    if s.needs_objects:
        return views_with_objects(s.augment, images, instances[0], draws)
    extents = instances[-1] if getattr(s.batches, "has_extents", False) else None
    a, b = s.augment(images, draws, extents)
    return a, b, None


def iteration(s: Setup, batch: tuple[Tensor, ...], step: int,
              draws: torch.Generator) -> dict[str, Any]:
    """One full training iteration from a raw batch (images, labels[, instances | extents])."""
    images, labels, *instances = batch
    a, b, objects = views(s, images, instances, draws)
    return s.trainer.step(a, b, labels, draws, step, objects)


def epoch_batches(s: Setup, epoch: int) -> Iterator[tuple[int, tuple[Tensor, ...], Any]]:
    """(step, raw batch, this process's generator) for every batch of ``epoch``."""
    generator = epoch_generator(s.cfg.seed, epoch)  # the batch order: the same everywhere
    draws = process_generator(generator, s.env)  # this process's augmentations and masks
    for i, batch in enumerate(s.batches.epoch(generator)):
        yield epoch * s.trainer.steps_per_epoch + i, batch, draws


def iterations(s: Setup, start_epoch: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """The training loop's iterations, epoch after epoch without end: (images, stats) each."""
    for epoch in itertools.count(start_epoch):
        for step, batch, draws in epoch_batches(s, epoch):
            yield batch[0].shape[0], iteration(s, batch, step, draws)


def timed(run: Callable[[], int], count: int, warmup: int, device: torch.device) -> float:
    """Images per second of ``run()`` (which returns how many images it took) over ``count``
    calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    synchronize(device)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        images += run()
    synchronize(device)
    return images / (time.perf_counter() - start)


__all__ = [
    "DrawnMasks",
    "DrawnTokens",
    "Models",
    "Setup",
    "Trainer",
    "build_models",
    "build_optimizers",
    "build_trainer",
    "draw_masks",
    "draw_tokens",
    "encoder_step",
    "epoch_batches",
    "epoch_generator",
    "iteration",
    "iterations",
    "masker_step",
    "read_stats",
    "setup",
    "single_pass_step",
    "timed",
    "token_encoder_step",
    "token_masker_step",
    "token_train_step",
    "train_step",
    "views",
]
