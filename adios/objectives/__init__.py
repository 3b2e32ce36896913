"""Siamese self-supervised objectives (SimCLR, BYOL, SimSiam) behind one interface, and MAE
(token masking only)."""

import inspect
from typing import Any, Literal

from torch import nn

from adios.objectives.base import SiameseObjective
from adios.objectives.byol import BYOL
from adios.objectives.mae import MAE
from adios.objectives.simclr import SimCLR
from adios.objectives.simsiam import SimSiam

# the siamese objectives, which every masking scheme can attack; MAE needs token masking
OBJECTIVES: dict[str, type[SiameseObjective]] = {"simclr": SimCLR, "byol": BYOL, "simsiam": SimSiam}


def build_objective(
    name: Literal["simclr", "byol", "simsiam", "mae"], backbone: nn.Module, **kwargs: Any
) -> SiameseObjective | MAE:
    """Build the objective called ``name`` around ``backbone``; reject misspelt options loudly
    (a config typo must not silently fall back to a default)."""
    known = {**OBJECTIVES, "mae": MAE}
    if name not in known:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(known)}")
    cls = known[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "backbone"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown options {unknown}; it accepts {sorted(accepted)}"
        )
    return cls(backbone, **kwargs)


__all__ = ["BYOL", "MAE", "OBJECTIVES", "SiameseObjective", "SimCLR", "SimSiam", "build_objective"]
