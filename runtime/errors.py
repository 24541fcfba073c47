"""Errors the runtime raises on purpose. Each message names the bundle file, manifest key or argument at fault.

Bundle problems (a bad manifest, a missing file, a failed checksum, a bad tokenizer folder) are the bundle
contract's own `BundleError` / `TokenizerError` (gptoss.bundle), re-exported here. Every one of them derives from
the project's one base class, `gptoss.errors.GptOssError`.
"""

from gptoss.bundle.errors import BundleError, TokenizerError
from gptoss.errors import GptOssError

__all__ = ["ArgumentError", "BundleError", "ContextOverflowError", "NonFiniteLogitsError", "ProviderError",
           "RuntimeErrorBase", "TokenizerError", "check_context"]


class RuntimeErrorBase(GptOssError):
    """Base class of the errors only the runtime raises (the CLI prints every GptOssError as `Error: ...`)."""


class ProviderError(RuntimeErrorBase):
    """The requested execution provider is unavailable or did not take the graph."""


class ArgumentError(RuntimeErrorBase, ValueError):
    """A call's argument is out of range or of the wrong type (sampling settings, tools, messages). Also a
    ValueError, as such mistakes were before."""


class NonFiniteLogitsError(RuntimeErrorBase):
    """The graph returned NaN or infinite logits: nothing can be sampled from them (a damaged bundle, or weights
    with non-finite values). Raised instead of silently picking token 0."""


class ContextOverflowError(RuntimeErrorBase):
    """The prompt, or the prompt plus what was generated, would pass the context length.

    `tokens` holds the new tokens generated before the limit was reached (empty when the prompt alone is
    too long), so a caller can keep them.
    """

    def __init__(self, message: str, *, needed: int, limit: int, tokens: list[int] | None = None):
        super().__init__(message)
        self.needed, self.limit = needed, limit
        self.tokens = list(tokens or [])


def check_context(needed: int, limit: int, what: str, generated: list[int] | None = None) -> None:
    """The one context check: raise ContextOverflowError when `needed` tokens do not fit in `limit`.

    `what` says what needs them ("the prompt", "scoring", ...); `generated`: the tokens generated so far."""
    if needed <= limit:
        return
    tail = f"; {len(generated)} new tokens were generated" if generated else ""
    raise ContextOverflowError(
        f"context overflow: {what} needs {needed} tokens and the context holds {limit} (max_context; a bundle's "
        f"model allows up to its max_position_embeddings){tail}", needed=needed, limit=limit, tokens=generated)
