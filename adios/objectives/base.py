"""The interface every siamese objective offers to the training loop and the masking code."""

from abc import ABC, abstractmethod

from torch import Tensor, nn


class SiameseObjective(nn.Module, ABC):
    """A siamese self-supervised method: a backbone, its heads (and target network) and its loss.

    The loop encodes any batch of views with :meth:`forward_views` - unmasked views, or several
    masked copies concatenated into one pass - and scores two aligned batches with
    :meth:`pair_loss`, so ADIOS never needs to know which method it is attacking.
    """

    #: Whether the masker occludes both views (SimSiam in the reference) or only view b.
    masks_both_views: bool = False

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @property
    def feature_dim(self) -> int:
        """Width of the backbone features ``h`` (what a linear probe reads)."""
        return self.backbone.out_dim

    @abstractmethod
    def forward_views(self, x: Tensor) -> dict[str, Tensor]:
        """Encode one batch of views: ``h`` backbone features, ``z`` projection, and where the
        method has them ``p`` prediction and ``t`` target projection (computed without grad)."""

    @abstractmethod
    def pair_loss(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
        """Symmetrised loss of two encoded batches where ``a[k][i]`` and ``b[k][i]`` are views of
        the same image ``i``."""

    @abstractmethod
    def head_modules(self) -> list[nn.Module]:
        """The trainable parts besides the backbone (projector, predictor), for param groups."""

    def after_encoder_step(self, step: int, total_steps: int) -> None:
        """Hook run after each encoder optimiser step (BYOL updates its target here)."""

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """Loss of two batches of views; a convenience for the unmasked case."""
        return self.pair_loss(self.forward_views(view_a), self.forward_views(view_b))
