"""Tokenizer files: o200k_harmony as a checkpoint carries it, and as a bundle carries it.

Two formats, one vocabulary:

* checkpoint (Hugging Face): `tokenizer.json` (a `tokenizers` BPE model over GPT-2 byte-level
  strings, vocab + merges, o200k regex Split then ByteLevel), `tokenizer_config.json`,
  `special_tokens_map.json`;
* bundle (the format is gptoss.bundle.tokenizer's, which the runtime reads): `tokenizer/encoding.json` plus
  `tokenizer/o200k_base.tiktoken` in tiktoken's own ranks format.

Nothing here touches the network: the o200k_base ranks come from tiktoken's cache (verified by
sha256) or from a checkpoint's `tokenizer.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from gptoss.bundle.tokenizer import RANKS_FILE, format_ranks, parse_ranks, write_tokenizer_dir

from .errors import CheckpointError, ExportError

O200K_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_N_RANKS = 199_998
HARMONY_N_VOCAB = 201_088
ENCODING_NAME = "o200k_harmony"

# The o200k pre-tokenizer regex (tiktoken's `pat_str`; the same string sits in gpt-oss's tokenizer.json).
O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Named ids of o200k_harmony; every other id in [199998, 201088) is `<|reserved_{id}|>`.
HARMONY_NAMED_TOKENS = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
    "<|endofprompt|>": 200018,  # inherited from o200k_base; id 200018 is also <|reserved_200018|>
}
_HARMONY_CONTROL = ("<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>")


def harmony_special_tokens() -> dict[str, int]:
    """o200k_harmony's special-token table, exactly as tiktoken builds it (1091 names, 1090 ids)."""
    named_ids = {v for k, v in HARMONY_NAMED_TOKENS.items() if k != "<|endofprompt|>"}
    reserved = {f"<|reserved_{i}|>": i for i in range(O200K_N_RANKS, HARMONY_N_VOCAB) if i not in named_ids}
    return {**HARMONY_NAMED_TOKENS, **reserved}


# ---------------------------------------------------------------------------------------------
# o200k_base ranks: from tiktoken's cache, or back out of a Hugging Face tokenizer.json
# ---------------------------------------------------------------------------------------------


_CACHE_VARIABLES = ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "TIKTOKEN_RS_CACHE_DIR")


def _cache_dirs() -> list[str]:
    """Where tiktoken (TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, its temp default) and openai-harmony
    (TIKTOKEN_RS_CACHE_DIR) keep downloaded vocabularies."""
    dirs = [os.environ.get(v) for v in _CACHE_VARIABLES]
    return [d for d in dirs if d] + [os.path.join(tempfile.gettempdir(), "data-gym-cache")]


def cached_o200k_base() -> Path | None:
    """tiktoken's (or openai-harmony's) cached o200k_base.tiktoken with the right sha256, or None."""
    key = hashlib.sha1(O200K_BASE_URL.encode()).hexdigest()
    for d in _cache_dirs():
        for path in (Path(d) / key, Path(d) / RANKS_FILE):
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == O200K_BASE_SHA256:
                return path
    return None


def o200k_base_missing() -> str:
    """Says that o200k_base is not in tiktoken's cache, where it was looked for, and how to put it there."""
    return (f"o200k_base, the tokenizer's vocabulary, is not in tiktoken's cache (looked in {', '.join(_cache_dirs())}):"
            " set TIKTOKEN_CACHE_DIR and TIKTOKEN_RS_CACHE_DIR to the absolute path of a folder that holds it, or fill"
            " that folder once, online, with python -c \"import tiktoken; tiktoken.get_encoding('o200k_base')\"")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest shift to U+0100+."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def _token_to_str(token: bytes, alphabet: dict[int, str]) -> str:
    return "".join(alphabet[b] for b in token)


def ranks_from_hf_tokenizer_json(path: Path) -> tuple[dict[bytes, int], dict[str, int], str]:
    """Back a checkpoint's byte-level BPE `tokenizer.json` out into (ranks, special_tokens, pat_str).

    rank = id for every non-special token; raises CheckpointError naming `path` when the file is
    malformed or not o200k-like.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from exc
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise CheckpointError(f"{path}: expected a `tokenizers` BPE model with a vocab (model.type == 'BPE')")
    added = doc.get("added_tokens") or []
    try:
        special_tokens = {str(t["content"]): int(t["id"]) for t in added}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed added_tokens ({exc})") from exc

    decoder = {ch: b for b, ch in bytes_to_unicode().items()}
    ranks: dict[bytes, int] = {}
    for text, token_id in model["vocab"].items():
        if text in special_tokens:
            continue
        try:
            ranks[bytes(decoder[ch] for ch in text)] = int(token_id)
        except KeyError:
            raise CheckpointError(f"{path}: vocab entry {text!r} is not a byte-level (GPT-2 alphabet) string") from None
    if sorted(ranks.values()) != list(range(O200K_N_RANKS)):
        raise CheckpointError(
            f"{path}: not o200k-like: expected {O200K_N_RANKS} byte-level tokens with ids 0..{O200K_N_RANKS - 1}, "
            f"found {len(ranks)} (ids {min(ranks.values(), default=None)}..{max(ranks.values(), default=None)})"
        )
    wrong = {k: special_tokens.get(k) for k in _HARMONY_CONTROL if special_tokens.get(k) != HARMONY_NAMED_TOKENS[k]}
    if wrong:
        raise CheckpointError(f"{path}: not o200k_harmony: harmony tokens missing or at other ids: {wrong}")
    pat_str = _split_regex(doc.get("pre_tokenizer"))
    if pat_str is None:
        raise CheckpointError(f"{path}: pre_tokenizer has no Split regex (o200k needs its pre-tokenizer regex)")
    return ranks, special_tokens, pat_str


def _split_regex(node) -> str | None:
    if not isinstance(node, dict):
        return None
    if node.get("type") == "Split" and isinstance(node.get("pattern"), dict):
        return node["pattern"].get("Regex")
    for child in node.get("pretokenizers") or []:
        found = _split_regex(child)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# bundle side
# ---------------------------------------------------------------------------------------------


def write_bundle_tokenizer(out_dir: Path, source: Path | None = None) -> dict:
    """Write `out_dir/tokenizer/` (gptoss.bundle.tokenizer's format); return the manifest's tokenizer entry.

    `source`: a checkpoint's `tokenizer.json` (or the folder holding it); None takes tiktoken's
    cached o200k_base. The returned dict's file paths are relative to `out_dir`.
    """
    if source is None:
        cached = cached_o200k_base()
        if cached is None:
            raise ExportError(f"no tokenizer for the bundle: the checkpoint has no tokenizer.json, and "
                              f"{o200k_base_missing()}")
        ranks_bytes = cached.read_bytes()
        special_tokens, pat_str = harmony_special_tokens(), O200K_PAT_STR
    else:
        source = Path(source)
        if source.is_dir():
            source = source / "tokenizer.json"
        ranks, special_tokens, pat_str = ranks_from_hf_tokenizer_json(source)
        ranks_bytes = format_ranks(ranks)
    return write_tokenizer_dir(Path(out_dir), ENCODING_NAME, ranks_bytes, special_tokens, pat_str)


# ---------------------------------------------------------------------------------------------
# checkpoint side: the Hugging Face files a real gpt-oss checkpoint carries
# ---------------------------------------------------------------------------------------------


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every (left, right) split of every token whose halves are tokens, in merge-priority order.

    With `ignore_merges` this makes a `tokenizers` BPE reproduce tiktoken: tiktoken merges the
    adjacent pair whose concatenation has the lowest rank, so a pair's priority is the rank of
    the token it makes (ties broken by the halves' ranks).
    """
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            lr, rr = ranks.get(left), ranks.get(right)
            if lr is not None and rr is not None:
                merges.append((rank, lr, rr, left, right))
    merges.sort()
    return [(left, right) for *_, left, right in merges]


def hf_tokenizer_json(ranks: dict[bytes, int], special_tokens: dict[str, int], pat_str: str) -> dict:
    """A `tokenizers` tokenizer.json document for a tiktoken-style byte-level BPE."""
    alphabet = bytes_to_unicode()
    vocab = {_token_to_str(tok, alphabet): rank for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])}
    merges = [[_token_to_str(a, alphabet), _token_to_str(b, alphabet)] for a, b in bpe_merges(ranks)]
    by_id: dict[int, str] = {}
    for name, token_id in special_tokens.items():  # one name per id: the named token wins over reserved
        if token_id not in by_id or by_id[token_id].startswith("<|reserved_"):
            by_id[token_id] = name
    added = [
        {"id": i, "content": by_id[i], "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i in sorted(by_id)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pat_str}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


def _tokenizer_config(added: list[dict]) -> dict:
    return {
        "added_tokens_decoder": {
            str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in added
        },
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "pad_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_checkpoint_tokenizer_files(out_dir: Path) -> bool:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into a checkpoint folder.

    Generated from tiktoken's cached o200k_base; returns False (writing nothing) when that
    vocabulary is not available offline. Takes a few seconds (merges for 200k tokens).
    """
    cached = cached_o200k_base()
    if cached is None:
        return False
    ranks = parse_ranks(cached.read_bytes(), str(cached))
    doc = hf_tokenizer_json(ranks, harmony_special_tokens(), O200K_PAT_STR)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    config = _tokenizer_config(doc["added_tokens"])
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    special_map = {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    return True
