"""SimSiam: predict one view's projection from the other's, with a stop-gradient on the target."""

from torch import Tensor, nn

from adios.models.heads import simsiam_predictor, simsiam_projector
from adios.objectives.base import SiameseObjective
from adios.objectives.losses import negative_cosine


class SimSiam(SiameseObjective):
    """SimSiam with a 3-layer BN projector and a bottleneck predictor."""

    masks_both_views = True

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden: int = 2048,
        proj_out: int = 2048,
        pred_hidden: int = 512,
    ):
        super().__init__(backbone)
        self.projector = simsiam_projector(backbone.out_dim, hidden=proj_hidden, out=proj_out)
        self.predictor = simsiam_predictor(dim=proj_out, hidden=pred_hidden)

    def forward_views(self, x: Tensor) -> dict[str, Tensor]:
        h = self.backbone(x)
        z = self.projector(h)
        return {"h": h, "z": z, "p": self.predictor(z)}

    def pair_loss(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
        return 0.5 * negative_cosine(a["p"], b["z"]) + 0.5 * negative_cosine(b["p"], a["z"])

    def head_modules(self) -> list[nn.Module]:
        return [self.projector, self.predictor]
