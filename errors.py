"""The one base class of every error this project raises on purpose.

Each subpackage derives its own errors from `GptOssError` (CheckpointError, ExportError, QuantError,
BundleError, ...), so a command line catches everything a user can cause in one place and prints it as one
line. This module imports nothing: every layer of the project may use it.
"""


class GptOssError(Exception):
    """An error a user can cause (bad input, a missing file, an unknown name). The message names the file,
    tensor, key or argument at fault."""
