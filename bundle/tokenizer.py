"""The tokenizer folder of a bundle, as a format: what the exporter writes and the runtime reads, offline.

    tokenizer/
      encoding.json        {"format_version": 1, "name": "o200k_harmony", "pat_str": "...",
                            "special_tokens": {"<|start|>": 200006, ...}, "n_vocab": 201088,
                            "ranks_file": "o200k_base.tiktoken", "ranks_sha256": "<hex>"}
      o200k_base.tiktoken  tiktoken's own ranks format: one `base64(token_bytes) rank` per line, rank order

Only the standard library at import; `load_encoding` imports tiktoken when called (the runtime's tokenizer and the
exporter's KV-cache calibration both build their Encoding with it).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import TokenizerError

DIR = "tokenizer"
ENCODING_FILE = "encoding.json"
RANKS_FILE = "o200k_base.tiktoken"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class EncodingSpec:
    name: str
    pat_str: str
    special_tokens: dict[str, int]
    n_vocab: int
    ranks_file: str
    ranks_sha256: str

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "pat_str": self.pat_str,
                "special_tokens": self.special_tokens, "n_vocab": self.n_vocab, "ranks_file": self.ranks_file,
                "ranks_sha256": self.ranks_sha256}

    @classmethod
    def from_json(cls, doc, path: Path) -> "EncodingSpec":
        if not isinstance(doc, dict):
            raise TokenizerError(f"{path}: not a JSON object")
        missing = {"name", "pat_str", "special_tokens", "n_vocab", "ranks_file", "ranks_sha256"} - set(doc)
        if missing:
            raise TokenizerError(f"{path}: missing keys {sorted(missing)}")
        if doc.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise TokenizerError(f"{path}: format_version {doc['format_version']}, expected {FORMAT_VERSION}")
        special = doc["special_tokens"]
        if not isinstance(special, dict):
            raise TokenizerError(f"{path}: 'special_tokens' must be an object of name -> id")
        try:
            return cls(str(doc["name"]), str(doc["pat_str"]), {str(k): int(v) for k, v in special.items()},
                       int(doc["n_vocab"]), str(doc["ranks_file"]), str(doc["ranks_sha256"]))
        except (TypeError, ValueError) as e:
            raise TokenizerError(f"{path}: malformed value ({e})") from None


def parse_ranks(data: bytes, source: str = "<ranks>") -> dict[bytes, int]:
    """tiktoken's ranks format (`base64(token) rank` per line) -> {token_bytes: rank}."""
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
            raise TokenizerError(f"{source}:{lineno}: {exc}") from None
    return ranks


def format_ranks(ranks: dict[bytes, int]) -> bytes:
    """{token_bytes: rank} -> tiktoken's ranks format, in rank order (the official file's bytes for o200k_base)."""
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n"
                    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


def write_tokenizer_dir(bundle_dir: Path, name: str, ranks_bytes: bytes, special_tokens: dict[str, int],
                        pat_str: str) -> dict:
    """Write `bundle_dir/tokenizer/`; return the manifest's "tokenizer" entry (paths relative to bundle_dir)."""
    spec = EncodingSpec(name, pat_str, dict(special_tokens), max(special_tokens.values()) + 1, RANKS_FILE,
                        hashlib.sha256(ranks_bytes).hexdigest())
    folder = Path(bundle_dir) / DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RANKS_FILE).write_bytes(ranks_bytes)
    (folder / ENCODING_FILE).write_text(json.dumps(spec.to_json(), indent=1, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    return {"dir": DIR, "files": [f"{DIR}/{ENCODING_FILE}", f"{DIR}/{RANKS_FILE}"], "name": name,
            "n_vocab": spec.n_vocab, "ranks_sha256": spec.ranks_sha256}


def read_encoding_spec(folder: Path) -> EncodingSpec:
    """Parse `folder/encoding.json` alone (not the ranks it names); TokenizerError naming the file."""
    spec_path = Path(folder) / ENCODING_FILE
    try:
        doc = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"{spec_path}: missing (a bundle's tokenizer folder needs it)") from None
    except (OSError, ValueError) as exc:    # JSONDecodeError, UnicodeDecodeError, an integer past 4300 digits
        raise TokenizerError(f"{spec_path}: not valid JSON: {exc}") from None
    return EncodingSpec.from_json(doc, spec_path)


def read_tokenizer_dir(folder: Path) -> tuple[EncodingSpec, dict[bytes, int]]:
    """Parse `folder/encoding.json` and its ranks file; verify the ranks' sha256 and that the ids cover exactly
    [0, n_vocab). Every error is a TokenizerError naming the file."""
    from .files import confined

    spec_path = Path(folder) / ENCODING_FILE
    spec = read_encoding_spec(folder)
    ranks_path = confined(Path(folder), spec.ranks_file, f"{spec_path}: 'ranks_file'")
    try:
        data = ranks_path.read_bytes()
    except FileNotFoundError:
        raise TokenizerError(f"{ranks_path}: missing (named by {spec_path})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.ranks_sha256:
        raise TokenizerError(f"{ranks_path}: sha256 {digest} does not match {spec.ranks_sha256} in {spec_path}")
    ranks = parse_ranks(data, str(ranks_path))
    ids = {*ranks.values(), *spec.special_tokens.values()}
    if len(ids) != spec.n_vocab or min(ids) != 0 or max(ids) != spec.n_vocab - 1:
        raise TokenizerError(f"{spec_path}: n_vocab is {spec.n_vocab} but the ids present are {len(ids)} distinct "
                             f"in [{min(ids)}, {max(ids)}]")
    return spec, ranks


def load_encoding(folder: Path):
    """The tiktoken Encoding described by `folder/encoding.json`, offline (checksummed ranks)."""
    import tiktoken

    spec, ranks = read_tokenizer_dir(Path(folder))
    # Not `explicit_n_vocab`: o200k_harmony names id 200018 twice (<|endofprompt|>, <|reserved_200018|>).
    return tiktoken.Encoding(spec.name, pat_str=spec.pat_str, mergeable_ranks=ranks,
                             special_tokens=spec.special_tokens)
