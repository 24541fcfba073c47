"""Errors the runtime raises on purpose. Each message names the bundle file, manifest key or argument at fault.

The runtime cannot import `gptoss.export.errors` (arrows go one way), so it has its own small tree.
"""


class RuntimeErrorBase(Exception):
    """Base class of every error the runtime raises on purpose (the CLI prints these as `Error: ...`)."""


class BundleError(RuntimeErrorBase):
    """A bundle is missing a file, its manifest is malformed, or a file fails its checksum."""


class ProviderError(RuntimeErrorBase):
    """The requested execution provider is unavailable or did not take the graph."""


class ContextOverflowError(RuntimeErrorBase):
    """The prompt, or the prompt plus what was generated, would pass the context length.

    `tokens` holds the new tokens generated before the limit was reached (empty when the prompt alone is
    too long), so a caller can keep them.
    """

    def __init__(self, message: str, *, needed: int, limit: int, tokens: list[int] | None = None):
        super().__init__(message)
        self.needed, self.limit = needed, limit
        self.tokens = list(tokens or [])
