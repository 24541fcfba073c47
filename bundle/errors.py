"""Errors about a bundle: a missing or unlisted file, a malformed manifest, a failed checksum, a path that
leaves the bundle folder. Each message names the file and the manifest key at fault."""

from gptoss.errors import GptOssError


class BundleError(GptOssError):
    """A bundle is missing a file, its manifest is malformed, or a file fails its checksum."""


class TokenizerError(BundleError):
    """The bundle's tokenizer folder is missing, malformed or fails its checksum."""
