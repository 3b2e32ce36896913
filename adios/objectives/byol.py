"""BYOL: an online network predicts the projection of a slowly moving (EMA) target network."""

import copy

import torch
from torch import Tensor, nn

from adios.models.heads import byol_projector
from adios.objectives.base import SiameseObjective
from adios.objectives.losses import byol_loss
from adios.optim import cosine_momentum


class BYOL(SiameseObjective):
    """BYOL with Linear-BN-ReLU-Linear projector and predictor.

    The target backbone and projector are frozen copies of the online ones, moved towards them by
    :meth:`after_encoder_step`. They are submodules, so ``.to()``, ``.train()``/``.eval()`` and
    ``state_dict`` cover them, but they hold no trainable parameters.
    """

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden: int = 4096,
        proj_out: int = 256,
        pred_hidden: int = 4096,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
    ):
        super().__init__(backbone)
        self.projector = byol_projector(backbone.out_dim, hidden=proj_hidden, out=proj_out)
        self.predictor = byol_projector(proj_out, hidden=pred_hidden, out=proj_out)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = base_momentum
        self.final_momentum = final_momentum

    def requires_grad_(self, requires_grad: bool = True) -> "BYOL":
        """Freeze/unfreeze the online network only: the target must never become trainable."""
        super().requires_grad_(requires_grad)
        self.target_backbone.requires_grad_(False)
        self.target_projector.requires_grad_(False)
        return self

    def forward_views(self, x: Tensor) -> dict[str, Tensor]:
        h = self.backbone(x)
        z = self.projector(h)
        with torch.no_grad():
            t = self.target_projector(self.target_backbone(x))
        return {"h": h, "z": z, "p": self.predictor(z), "t": t}

    def pair_loss(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
        return byol_loss(a["p"], b["t"]) + byol_loss(b["p"], a["t"])

    def head_modules(self) -> list[nn.Module]:
        return [self.projector, self.predictor]

    @torch.no_grad()
    def after_encoder_step(self, step: int, total_steps: int) -> None:
        """EMA of the parameters: ``target = tau * target + (1 - tau) * online`` with tau on a
        cosine schedule. Buffers (BN running statistics) are the target's own, from its passes."""
        tau = cosine_momentum(step, total_steps, self.base_momentum, self.final_momentum)
        pairs = [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]
        for online, target in pairs:
            for online_param, target_param in zip(
                online.parameters(), target.parameters(), strict=True
            ):
                target_param.lerp_(online_param, 1.0 - tau)
