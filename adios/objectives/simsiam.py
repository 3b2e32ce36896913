"""SimSiam: predict one view's projection from the other's, with a stop-gradient on the target."""

from torch import Tensor, nn

from adios.models.heads import simsiam_predictor, simsiam_projector
from adios.objectives.base import SiameseObjective
from adios.objectives.losses import negative_cosine

Outputs = dict[str, Tensor]


def masked_terms(
    use_symmetry_mask: bool = True, use_no_mask: bool = True, use_both_mask: bool = True
) -> list[tuple[str, str]]:
    """The (predictor view, target view) pairs of SimSiam + ADIOS, ``~`` marking a masked view.

    Always the masked predictions against the unmasked targets; the reference's three flags add
    the masked targets (symmetry), the plain SimSiam pair (no mask) and the both-masked pair.
    """
    terms = [("a~", "b"), ("b~", "a")]
    if use_symmetry_mask:
        terms += [("b", "a~"), ("a", "b~")]
    if use_no_mask:
        terms += [("a", "b"), ("b", "a")]
    if use_both_mask:
        terms += [("a~", "b~"), ("b~", "a~")]
    return terms


class SimSiam(SiameseObjective):
    """SimSiam with a 3-layer BN projector and a bottleneck predictor.

    Under ADIOS both views are masked, each with its own masks, and the loss of one mask is the
    mean of the :func:`masked_terms` chosen by the three flags (:meth:`masked_loss`).
    """

    masks_both_views = True

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden: int = 2048,
        proj_out: int = 2048,
        pred_hidden: int = 512,
        use_symmetry_mask: bool = True,
        use_no_mask: bool = True,
        use_both_mask: bool = True,
    ):
        super().__init__(backbone)
        self.projector = simsiam_projector(backbone.out_dim, hidden=proj_hidden, out=proj_out)
        self.predictor = simsiam_predictor(dim=proj_out, hidden=pred_hidden)
        self.terms = masked_terms(use_symmetry_mask, use_no_mask, use_both_mask)

    def forward_views(self, x: Tensor) -> Outputs:
        h = self.backbone(x)
        z = self.projector(h)
        return {"h": h, "z": z, "p": self.predictor(z)}

    def pair_loss(self, a: Outputs, b: Outputs) -> Tensor:
        return 0.5 * negative_cosine(a["p"], b["z"]) + 0.5 * negative_cosine(b["p"], a["z"])

    def masked_loss(self, a: Outputs, b: Outputs, a_masked: Outputs, b_masked: Outputs) -> Tensor:
        """Loss of one mask: the mean over ``self.terms`` of ``-cos(p_x, stopgrad(z_y))``."""
        views = {"a": a, "b": b, "a~": a_masked, "b~": b_masked}
        total = sum(negative_cosine(views[p]["p"], views[z]["z"]) for p, z in self.terms)
        return total / len(self.terms)

    def head_modules(self) -> list[nn.Module]:
        return [self.projector, self.predictor]
