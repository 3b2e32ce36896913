"""Siamese self-supervised objectives (SimCLR, BYOL, SimSiam) behind one interface."""

import inspect
from typing import Any, Literal

from torch import nn

from adios.objectives.base import SiameseObjective
from adios.objectives.byol import BYOL
from adios.objectives.simclr import SimCLR
from adios.objectives.simsiam import SimSiam

OBJECTIVES: dict[str, type[SiameseObjective]] = {"simclr": SimCLR, "byol": BYOL, "simsiam": SimSiam}


def build_objective(
    name: Literal["simclr", "byol", "simsiam"], backbone: nn.Module, **kwargs: Any
) -> SiameseObjective:
    """Build the objective called ``name`` around ``backbone``; reject misspelt options loudly
    (a config typo must not silently fall back to a default)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "backbone"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"{cls.__name__} got unknown options {unknown}; it accepts {sorted(accepted)}"
        )
    return cls(backbone, **kwargs)


__all__ = ["BYOL", "OBJECTIVES", "SiameseObjective", "SimCLR", "SimSiam", "build_objective"]
