"""The error every dataset reader raises; light to import, so the CLI can catch it cheaply."""


class DataError(ValueError):
    """A dataset that cannot be used as configured; the message names the file or setting."""
