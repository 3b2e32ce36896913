"""adios: adversarial masked-image self-supervised learning (ADIOS) in PyTorch.

``adios.load_encoder(path)``, ``adios.load_masker(path)`` and the building blocks for a training
loop of your own (docs/own-loop.md) live in :mod:`adios.api`; they are imported on first use, so
``import adios`` and the command line stay quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    api = importlib.import_module("adios.api")

    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'adios' has no attribute {name!r}")


def __dir__() -> list[str]:
    api = importlib.import_module("adios.api")

    return sorted([*globals(), *api.__all__])
