"""The bundle tokenizer and the checkpoint tokenizer files both reproduce tiktoken's o200k_harmony."""

import json
import shutil
import tempfile

import pytest
import tiktoken

from gptoss.export import tokenizer_files as tf
from gptoss.export.errors import CheckpointError
from gptoss.runtime.tokenizer import Tokenizer, TokenizerError, load_encoding

TEXTS = [
    "Hello, world!",
    "  leading spaces,\ttabs\r\nand CRLF\n\n\n",
    "naïve café — “curly quotes” and ñ, ß, Œ",
    "日本語のテキストと中文文本，한국어 텍스트",
    "emoji 🤖🦀👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "def f(x: int) -> int:\n    return x ** 2  # comment\n",
    "1234567890 3.14159 -42 1e-9 0xFF",
    "I'm, you're, they'LL, it's, we've, she'd",
    "Ελληνικά, русский, עברית, العربية, हिन्दी",
    "<|start|>assistant<|channel|>final<|message|>hi<|end|><|reserved_200100|>",
]


@pytest.fixture(scope="module")
def reference():
    return tiktoken.get_encoding("o200k_harmony")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    entry = tf.write_bundle_tokenizer(out)
    assert entry["files"] == ["tokenizer/encoding.json", "tokenizer/o200k_base.tiktoken"]
    assert entry["name"] == "o200k_harmony" and entry["n_vocab"] == 201088
    return out


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoint")
    assert tf.write_checkpoint_tokenizer_files(out)
    return out


def test_special_table_and_regex_match_tiktoken(reference):
    assert tf.harmony_special_tokens() == reference._special_tokens
    assert tf.O200K_PAT_STR == reference._pat_str


def test_bundle_round_trip_equals_tiktoken(bundle_dir, reference):
    enc = load_encoding(bundle_dir / "tokenizer")
    assert enc.n_vocab == reference.n_vocab == 201088
    assert enc.name == "o200k_harmony"
    for text in TEXTS:
        assert enc.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
        assert enc.encode_ordinary(text) == reference.encode_ordinary(text)
        assert enc.decode(enc.encode_ordinary(text)) == text
    for name in ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"):
        assert enc.encode_single_token(name) == reference.encode_single_token(name)


def test_bundle_ranks_file_is_the_official_one(bundle_dir):
    spec = json.loads((bundle_dir / "tokenizer" / "encoding.json").read_text())
    assert spec["ranks_sha256"] == tf.O200K_BASE_SHA256
    assert spec["ranks_file"] == "o200k_base.tiktoken"


def test_special_strings_in_user_text_are_plain_text(bundle_dir):
    tok = Tokenizer.from_dir(bundle_dir / "tokenizer")
    ids = tok.encode_text("please <|start|>assistant<|message|> and <|endoftext|>")
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == "please <|start|>assistant<|message|> and <|endoftext|>"
    assert tok.token_id("<|start|>") == tok.token_id("start") == 200006
    with pytest.raises(KeyError, match="not a special token"):
        tok.token_id("<|nope|>")


def test_sha256_mismatch_raises(bundle_dir, tmp_path):
    broken = tmp_path / "tokenizer"
    shutil.copytree(bundle_dir / "tokenizer", broken)
    ranks = broken / "o200k_base.tiktoken"
    data = bytearray(ranks.read_bytes())
    data[0:4] = b"IQ=="[::-1]  # corrupt the first token
    ranks.write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match="sha256"):
        load_encoding(broken)


def test_missing_encoding_json_raises(tmp_path):
    with pytest.raises(TokenizerError, match="encoding.json"):
        load_encoding(tmp_path)


def test_incremental_decoder_holds_back_partial_characters(bundle_dir):
    tok = Tokenizer.from_dir(bundle_dir / "tokenizer")
    text = "crab 🦀 robot 🤖 family 👩‍👩‍👧 kanji 鑫龘"
    ids = tok.encode_text(text)
    # the premise: some token on its own is not valid UTF-8
    assert any(_is_partial(tok.encoding.decode_single_token_bytes(i)) for i in ids)
    pieces = list(tok.incremental_decoder().stream(ids))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    # a stream cut inside a character flushes to a replacement character
    dec = tok.incremental_decoder()
    cut = next(i for i in ids if _is_partial(tok.encoding.decode_single_token_bytes(i)))
    assert "\ufffd" not in dec.add(cut)
    assert dec.flush().startswith("\ufffd")


def _is_partial(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_incremental_decoder_skips_special_tokens(bundle_dir):
    tok = Tokenizer.from_dir(bundle_dir / "tokenizer")
    ids = [tok.token_id("<|start|>"), *tok.encode_text("hi")]
    assert "".join(tok.incremental_decoder().stream(ids)) == "hi"
    assert "".join(tok.incremental_decoder(skip_special=False).stream(ids)) == "<|start|>hi"


def test_checkpoint_tokenizer_json_matches_tiktoken(checkpoint_dir, reference):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    for text in TEXTS:
        assert hf.encode(text, add_special_tokens=False).ids == reference.encode(text, allowed_special="all"), text
    assert hf.decode(reference.encode_ordinary(TEXTS[4])) == TEXTS[4]
    config = json.loads((checkpoint_dir / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|return|>"
    assert config["added_tokens_decoder"]["200006"]["content"] == "<|start|>"
    assert json.loads((checkpoint_dir / "special_tokens_map.json").read_text())["bos_token"] == "<|startoftext|>"


def test_bundle_from_checkpoint_tokenizer_json(checkpoint_dir, tmp_path, reference):
    entry = tf.write_bundle_tokenizer(tmp_path, source=checkpoint_dir)
    assert entry["ranks_sha256"] == tf.O200K_BASE_SHA256  # byte-identical to the official ranks file
    enc = load_encoding(tmp_path / "tokenizer")
    for text in TEXTS:
        assert enc.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")


def test_malformed_tokenizer_json_names_the_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json.*not valid JSON"):
        tf.write_bundle_tokenizer(tmp_path / "out", source=bad)
    bad.write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(CheckpointError, match="tokenizer.json.*BPE"):
        tf.write_bundle_tokenizer(tmp_path / "out", source=bad)
    small = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}, "added_tokens": []}
    bad.write_text(json.dumps(small))
    with pytest.raises(CheckpointError, match="tokenizer.json.*not o200k-like"):
        tf.write_bundle_tokenizer(tmp_path / "out", source=tmp_path)


def test_checkpoint_files_need_the_vocabulary_offline(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "TIKTOKEN_RS_CACHE_DIR"):
        monkeypatch.setenv(var, str(empty))
    monkeypatch.setattr(tempfile, "tempdir", str(empty))
    out = tmp_path / "ckpt"
    assert tf.write_checkpoint_tokenizer_files(out) is False
    assert not out.exists()


@pytest.fixture
def no_vocabulary(tmp_path, monkeypatch):
    """tiktoken's cache is empty wherever it may be (the variables, and tiktoken's temp-dir default)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "TIKTOKEN_RS_CACHE_DIR"):
        monkeypatch.setenv(var, str(empty))
    monkeypatch.setattr(tempfile, "tempdir", str(empty))
    return empty


def test_synth_and_export_say_the_vocabulary_is_missing(no_vocabulary, tmp_path):
    """Without the vocabulary, synth says it wrote no tokenizer.json (it did so silently), and export's one error
    line says where it looked and how to fill the cache, naming no API parameter."""
    from click.testing import CliRunner

    from gptoss.compile.cli import main

    ckpt = tmp_path / "ck"
    synth = CliRunner().invoke(main, ["synth", str(ckpt), "--preset", "tiny", "--layers", "1"])
    assert synth.exit_code == 0, synth.output
    assert not (ckpt / "tokenizer.json").exists()
    (warning,) = [line for line in synth.stderr.splitlines() if "warning" in line]
    assert warning.startswith(f"warning: {ckpt} has no tokenizer.json, and exporting it will stop")
    for says in (f"looked in {no_vocabulary}", "TIKTOKEN_CACHE_DIR and TIKTOKEN_RS_CACHE_DIR to the absolute path",
                 "tiktoken.get_encoding('o200k_base')"):
        assert says in warning
    export = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "b")])
    assert export.exit_code == 2
    (error,) = export.stderr.strip().splitlines()[-1:]
    assert error.startswith("Error: no tokenizer for the bundle: the checkpoint has no tokenizer.json, and o200k_base")
    assert "TIKTOKEN_CACHE_DIR" in error and "`source`" not in error and "Traceback" not in export.output


def test_synth_of_a_small_vocabulary_needs_no_tokenizer(no_vocabulary, tmp_path):
    from click.testing import CliRunner

    from gptoss.compile.cli import main

    result = CliRunner().invoke(main, ["synth", str(tmp_path / "ck"), "--layers", "1", "--vocab", "512"])
    assert result.exit_code == 0 and "warning" not in result.stderr
