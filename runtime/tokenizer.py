"""The bundle's tokenizer: o200k_harmony rebuilt offline from `tokenizer/` inside a bundle.

Bundle folder format (written by `gptoss.export.tokenizer_files.write_bundle_tokenizer`):

    tokenizer/
      encoding.json        {"format_version": 1, "name": "o200k_harmony", "pat_str": "...",
                            "special_tokens": {"<|start|>": 200006, ...}, "n_vocab": 201088,
                            "ranks_file": "o200k_base.tiktoken", "ranks_sha256": "<hex>"}
      o200k_base.tiktoken  tiktoken's own ranks format: one `base64(token_bytes) rank` per line

The runtime needs nothing else (no network, no tiktoken cache). Only stdlib + tiktoken here.
"""

from __future__ import annotations

import base64
import codecs
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import tiktoken

ENCODING_FILE = "encoding.json"
FORMAT_VERSION = 1


class TokenizerError(Exception):
    """The bundle's tokenizer folder is missing, malformed or fails its checksum. Names the file."""


def parse_ranks(data: bytes, source: str = "<ranks>") -> dict[bytes, int]:
    """Parse tiktoken's ranks format (`base64(token) rank` per line) into {token_bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"{source}:{lineno}: expected 'base64 rank', got {line[:60]!r}")
        try:
            ranks[base64.b64decode(parts[0], validate=True)] = int(parts[1])
        except ValueError as exc:
            raise TokenizerError(f"{source}:{lineno}: {exc}") from exc
    return ranks


def load_encoding(tokenizer_dir: Path) -> tiktoken.Encoding:
    """Build the tiktoken Encoding described by `tokenizer_dir/encoding.json`, offline.

    Verifies the ranks file's sha256 and that ids cover exactly `n_vocab`.
    """
    tokenizer_dir = Path(tokenizer_dir)
    spec_path = tokenizer_dir / ENCODING_FILE
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TokenizerError(f"{spec_path}: missing (a bundle's tokenizer folder needs it)") from exc
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{spec_path}: not valid JSON: {exc}") from exc
    missing = {"name", "pat_str", "special_tokens", "n_vocab", "ranks_file", "ranks_sha256"} - set(spec)
    if missing:
        raise TokenizerError(f"{spec_path}: missing keys {sorted(missing)}")
    if spec.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise TokenizerError(f"{spec_path}: format_version {spec['format_version']}, expected {FORMAT_VERSION}")

    ranks_path = tokenizer_dir / spec["ranks_file"]
    try:
        data = ranks_path.read_bytes()
    except FileNotFoundError as exc:
        raise TokenizerError(f"{ranks_path}: missing (named by {spec_path})") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec["ranks_sha256"]:
        raise TokenizerError(f"{ranks_path}: sha256 {digest} does not match {spec['ranks_sha256']} in {spec_path}")
    ranks = parse_ranks(data, str(ranks_path))

    special_tokens = {str(k): int(v) for k, v in spec["special_tokens"].items()}
    n_vocab = int(spec["n_vocab"])
    ids = {*ranks.values(), *special_tokens.values()}
    if len(ids) != n_vocab or min(ids) != 0 or max(ids) != n_vocab - 1:
        raise TokenizerError(
            f"{spec_path}: n_vocab is {n_vocab} but the ids present are {len(ids)} distinct in "
            f"[{min(ids)}, {max(ids)}]"
        )
    # Not `explicit_n_vocab`: o200k_harmony names id 200018 twice (<|endofprompt|>, <|reserved_200018|>).
    return tiktoken.Encoding(
        spec["name"], pat_str=spec["pat_str"], mergeable_ranks=ranks, special_tokens=special_tokens
    )


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
