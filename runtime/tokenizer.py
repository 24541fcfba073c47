"""The bundle's tokenizer: o200k_harmony rebuilt offline from a bundle's `tokenizer/` folder.

The folder's format (encoding.json + tiktoken ranks, checksummed) is gptoss.bundle.tokenizer's; this module
turns it into a tiktoken Encoding with the rules a chat runtime needs. The runtime needs nothing else (no
network, no tiktoken cache). Only stdlib + tiktoken here.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import tiktoken

from gptoss.bundle.errors import TokenizerError
from gptoss.bundle.tokenizer import load_encoding

__all__ = ["IncrementalDecoder", "Tokenizer", "TokenizerError", "as_tokenizer", "load_encoding"]


class IncrementalDecoder:
    """Turn token ids into text one at a time, emitting only complete UTF-8 characters.

    A multi-byte character split across tokens is held back until its last byte arrives;
    `flush()` returns whatever is left (invalid bytes become U+FFFD).
    """

    def __init__(self, encoding: tiktoken.Encoding, skip_special: bool = True, special_ids: frozenset[int] | None = None):
        self._encoding = encoding
        self._skip_special = skip_special
        if special_ids is None:
            special_ids = frozenset(encoding._special_tokens.values())  # noqa: SLF001 - no public accessor
        self._special_ids = special_ids
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """Feed one token; return the text it completes ('' while a character is still partial)."""
        if self._skip_special and token_id in self._special_ids:
            return ""
        return self._utf8.decode(self._encoding.decode_single_token_bytes(token_id))

    def add_bytes(self, data: bytes) -> str:
        return self._utf8.decode(data)

    def flush(self) -> str:
        """End of stream: return the held-back bytes (replacement characters if incomplete)."""
        return self._utf8.decode(b"", final=True)

    def stream(self, token_ids: Iterable[int]) -> Iterator[str]:
        """Yield non-empty text pieces for `token_ids`, then the flushed tail."""
        for token_id in token_ids:
            piece = self.add(token_id)
            if piece:
                yield piece
        tail = self.flush()
        if tail:
            yield tail


TextStreamer = IncrementalDecoder


@dataclass
class Tokenizer:
    """o200k_harmony with the rules a chat runtime needs.

    `encode_text` never produces control tokens: `<|start|>` typed by a user is plain text.
    """

    encoding: tiktoken.Encoding

    def __post_init__(self):
        self.special_ids: frozenset[int] = frozenset(self.encoding._special_tokens.values())  # noqa: SLF001

    @classmethod
    def from_dir(cls, tokenizer_dir: Path) -> "Tokenizer":
        return cls(load_encoding(tokenizer_dir))

    @classmethod
    def from_tiktoken(cls, name: str = "o200k_harmony") -> "Tokenizer":
        """tiktoken's registry (needs its cache or the network); bundles use `from_dir`."""
        return cls(tiktoken.get_encoding(name))

    @property
    def name(self) -> str:
        return self.encoding.name

    @property
    def n_vocab(self) -> int:
        return self.encoding.n_vocab

    def encode_text(self, text: str) -> list[int]:
        """Encode untrusted text: special-token strings are encoded as ordinary text."""
        return self.encoding.encode_ordinary(text)

    def decode(self, token_ids: Iterable[int], errors: str = "replace") -> str:
        return self.encoding.decode(list(token_ids), errors=errors)

    def decode_bytes(self, token_ids: Iterable[int]) -> bytes:
        return self.encoding.decode_bytes(list(token_ids))

    def token_id(self, name: str) -> int:
        """Id of a special token, by full name (`<|start|>`) or bare name (`start`)."""
        full = name if name.startswith("<|") else f"<|{name}|>"
        try:
            return self.encoding._special_tokens[full]  # noqa: SLF001 - no public accessor
        except KeyError:
            raise KeyError(f"{name!r} is not a special token of {self.encoding.name}") from None

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_ids

    def incremental_decoder(self, skip_special: bool = True) -> IncrementalDecoder:
        return IncrementalDecoder(self.encoding, skip_special=skip_special, special_ids=self.special_ids)


@functools.lru_cache(maxsize=1)
def _registry_tokenizer() -> Tokenizer:
    return Tokenizer.from_tiktoken()


def as_tokenizer(obj: "Tokenizer | tiktoken.Encoding | Path | str | None") -> Tokenizer:
    """Accept a Tokenizer, a tiktoken Encoding, a bundle tokenizer folder, or None (tiktoken's registry)."""
    if isinstance(obj, Tokenizer):
        return obj
    if isinstance(obj, tiktoken.Encoding):
        return Tokenizer(obj)
    if isinstance(obj, (str, Path)):
        return Tokenizer.from_dir(Path(obj))
    if obj is None:
        return _registry_tokenizer()
    raise TypeError(f"expected a Tokenizer, tiktoken.Encoding or tokenizer folder, got {type(obj).__name__}")
