"""Errors a user can cause on the exporter side. Each message names the file, tensor or argument at fault."""

from gptoss.errors import GptOssError


class CheckpointError(GptOssError):
    """A checkpoint (or its config) is missing, malformed or disagrees with itself."""


class ExportError(GptOssError):
    """An export cannot proceed: bad arguments, unknown target or scheme, existing output."""
