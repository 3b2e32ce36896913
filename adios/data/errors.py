"""The error every dataset reader raises (defined with the others in :mod:`adios.errors`)."""

from adios.errors import DataError

__all__ = ["DataError"]
