"""Errors a user can cause. Each message names the file, tensor or argument at fault."""


class GptOssError(Exception):
    """Base class of every error this project raises on purpose."""


class CheckpointError(GptOssError):
    """A checkpoint (or its config) is missing, malformed or disagrees with itself."""


class ExportError(GptOssError):
    """An export cannot proceed: bad arguments, unknown target or scheme, existing output."""
