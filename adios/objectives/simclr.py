"""SimCLR: contrast each view's projection against every other image's views (NT-Xent)."""

from torch import Tensor, nn

from adios.models.heads import simclr_projector
from adios.objectives.base import SiameseObjective
from adios.objectives.losses import NTXentLoss


class SimCLR(SiameseObjective):
    """SimCLR with a Linear-ReLU-Linear projector.

    For negatives from other processes set ``self.loss.gather`` and ``self.loss.rank`` (see
    :func:`adios.objectives.losses.nt_xent`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden: int = 2048,
        proj_out: int = 128,
        temperature: float = 0.2,
    ):
        super().__init__(backbone)
        self.projector = simclr_projector(backbone.out_dim, hidden=proj_hidden, out=proj_out)
        self.loss = NTXentLoss(temperature)

    def forward_views(self, x: Tensor, keep: Tensor | None = None) -> dict[str, Tensor]:
        """``keep`` (B, K) patch indices: a ViT encodes only those tokens (token masking)."""
        h = self.backbone(x) if keep is None else self.backbone(x, keep)
        return {"h": h, "z": self.projector(h)}

    def pair_loss(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
        # NT-Xent is symmetric in its two views already: every view of both batches is an anchor.
        return self.loss(a["z"], b["z"])

    def head_modules(self) -> list[nn.Module]:
        return [self.projector]
