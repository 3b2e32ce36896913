"""The errors a user can fix: the CLI prints each as one ``adios: error: ...`` line (exit 2).

Every message names the file or the key at fault and says what to do. Light to import (no
torch), so any module can raise these and the CLI can catch them cheaply.
"""

from __future__ import annotations


class AdiosError(Exception):
    """A failure caused by the input (a setting, a file, a directory), not by a bug."""


class ConfigError(AdiosError, ValueError):
    """A bad key or value in a preset, an override, config.yaml or a grid; names the key."""


class RunDirError(AdiosError, RuntimeError):
    """A run directory (or a file in it) that cannot be used as asked: would be overwritten,
    cannot be resumed, is locked by another process, is unreadable, or its disk is full."""


class DataError(AdiosError, ValueError):
    """A dataset that cannot be used as configured; the message names the file or setting."""


class NonFiniteError(AdiosError, FloatingPointError):
    """Training diverged (a NaN or infinite loss or parameter); nothing non-finite was saved."""
