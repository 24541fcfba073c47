"""Checkpoint.open: every malformed checkpoint is a CheckpointError naming file and tensor; reads are lazy and exact."""

import json
import shutil

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from gptoss.export.checkpoint import Checkpoint
from gptoss.export.errors import CheckpointError
from gptoss.export.safetensors_io import SafetensorsFile, SafetensorsWriter
from gptoss.export.synth import canonical_tensor, synth_config, write_synthetic
from helpers import rewrite_safetensors

SMALL = synth_config("tiny", vocab=256, layers=2)

def decode_mxfp4(blocks, scales):
    """The project's one decoder, which tests/quant proves bit-exact with OpenAI's reference for every byte."""
    from gptoss.quant.mxfp4 import decode_mxfp4 as decode

    return decode(np.asarray(blocks), np.asarray(scales)).astype(np.float64)


def bits(a):
    """Exact bit pattern, for comparing bf16 arrays."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint16) if a.dtype == ml_dtypes.bfloat16 else a


rewrite = rewrite_safetensors


@pytest.fixture
def small_hf(tmp_path):
    return write_synthetic(tmp_path / "hf", SMALL, layout="hf", seed=3)


@pytest.fixture
def small_original(tmp_path):
    return write_synthetic(tmp_path / "orig", SMALL, layout="original", seed=3)


def open_error(path, **kw) -> str:
    with pytest.raises(CheckpointError) as e:
        Checkpoint.open(path, **kw)
    return str(e.value)


# ------------------------------------------------------------------------------ malformed
def test_missing_tensor(small_hf):
    rewrite(small_hf / "model.safetensors", drop=["model.layers.1.self_attn.sinks"])
    msg = open_error(small_hf)
    assert "model.safetensors" in msg and "missing 1 tensors" in msg and "model.layers.1.self_attn.sinks" in msg


def test_missing_tensor_original(small_original):
    rewrite(small_original / "original/model.safetensors", drop=["block.0.mlp.mlp2_weight.scales"])
    msg = open_error(small_original)
    assert "original/model.safetensors" in msg and "block.0.mlp.mlp2_weight.scales" in msg


def test_extra_tensor(small_hf):
    rewrite(small_hf / "model.safetensors", put={"model.layers.0.self_attn.rogue": np.zeros(3, np.float32)})
    msg = open_error(small_hf)
    assert "model.safetensors" in msg and "unexpected" in msg and "model.layers.0.self_attn.rogue" in msg


def test_shape_disagrees_with_config(small_hf):
    cfg = json.loads((small_hf / "config.json").read_text())
    cfg["vocab_size"] = 300
    (small_hf / "config.json").write_text(json.dumps(cfg))
    msg = open_error(small_hf)
    assert "model.safetensors" in msg and "model.embed_tokens.weight" in msg
    assert "[300, 64]" in msg and "[256, 64]" in msg


def test_wrong_dtype(small_hf):
    rewrite(small_hf / "model.safetensors", put={"model.norm.weight": np.ones(64, np.float32)})
    msg = open_error(small_hf)
    assert "model.norm.weight" in msg and "BF16" in msg and "F32" in msg


def test_blocks_and_scales_disagree(small_hf):
    key = "model.layers.0.mlp.experts.gate_up_proj_scales"
    rewrite(small_hf / "model.safetensors", put={key: np.full((8, 128, 3), 120, np.uint8)})
    msg = open_error(small_hf)
    assert "disagree" in msg and key in msg and "model.layers.0.mlp.experts.gate_up_proj_blocks" in msg


def test_truncated_file(small_hf):
    path = small_hf / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    msg = open_error(small_hf)
    assert f"model.safetensors: truncated: tensor 'lm_head.weight' needs bytes up to {size} " \
           f"but the file has {size - 100}" in msg


@pytest.mark.parametrize("target", ["../elsewhere.safetensors", "/tmp/elsewhere.safetensors"])
def test_index_pointing_outside(tmp_path, target):
    ck = write_synthetic(tmp_path / "sharded", SMALL, layout="hf", max_shard_bytes=100_000)
    index = json.loads((ck / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    index["weight_map"]["model.norm.weight"] = target
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    msg = open_error(ck)
    assert "model.safetensors.index.json" in msg and "'model.norm.weight'" in msg and "outside" in msg


def test_scale_byte_255(small_hf):
    key = "model.layers.1.mlp.experts.down_proj_scales"
    scales = np.array(SafetensorsFile(small_hf / "model.safetensors").get(key))
    scales[2, 5, 1] = 255
    rewrite(small_hf / "model.safetensors", put={key: scales})
    ckpt = Checkpoint.open(small_hf)  # headers are fine: the check is on read
    ckpt.read("layers.0.experts.down.scales")
    with pytest.raises(CheckpointError, match=rf"model.safetensors: tensor '{key}': 1 scale bytes are 255.*\[2, 5, 1\]"):
        ckpt.read("layers.1.experts.down.scales")


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_bad_json_config(tmp_path, layout):
    ck = write_synthetic(tmp_path / "c", SMALL, layout=layout)
    cfg = ck / "config.json" if layout == "hf" else ck / "original/config.json"
    cfg.write_text('{"num_hidden_layers": 2,')
    msg = open_error(ck)
    assert str(cfg) in msg and "not valid JSON" in msg


def test_config_missing_field(small_original):
    cfg = json.loads((small_original / "original/config.json").read_text())
    del cfg["num_experts"]
    (small_original / "original/config.json").write_text(json.dumps(cfg))
    assert "'num_experts'" in open_error(small_original)


def test_dtypes_json_disagrees(small_original):
    path = small_original / "original/dtypes.json"
    dtypes = json.loads(path.read_text())
    assert dtypes["block.0.mlp.mlp1_weight.blocks"] == "FP4" and dtypes["block.0.attn.sinks"] == "BF16"
    dtypes["block.0.attn.sinks"] = "FP4"
    path.write_text(json.dumps(dtypes))
    msg = open_error(small_original)
    assert "dtypes.json" in msg and "block.0.attn.sinks" in msg


def test_not_a_checkpoint(tmp_path):
    assert "no checkpoint here" in open_error(tmp_path)
    assert "no such folder" in open_error(tmp_path / "nope")
    assert "unknown layout" in open_error(tmp_path, layout="gguf")


@pytest.mark.parametrize("corrupt, expected", [
    (lambda raw: raw[:8], "truncated: the header needs bytes"),
    (lambda raw: raw[:8] + b"{not json" + raw[17:], "header is not valid JSON"),
    (lambda raw: raw.replace(b'"BF16"', b'"BF17"', 1), "unknown dtype 'BF17'"),
    (lambda raw: raw.replace(b'"shape":[2,3]', b'"shape":[2,4]', 1), "data_offsets [0, 12] span 12 bytes"),
])
def test_safetensors_header_validation(tmp_path, corrupt, expected):
    path = tmp_path / "x.safetensors"
    with SafetensorsWriter(path, [("a", (2, 3), "BF16")]) as w:
        w.write("a", np.zeros((2, 3), ml_dtypes.bfloat16))
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(CheckpointError, match="x.safetensors") as e:
        SafetensorsFile(path)
    assert expected in str(e.value)


def test_writer_checks_order_shape_dtype(tmp_path):
    specs = [("a", (2, 3), "BF16"), ("b", (4,), "U8")]
    with pytest.raises(CheckpointError, match="out of order"):
        with SafetensorsWriter(tmp_path / "w.safetensors", specs) as w:
            w.write("b", np.zeros(4, np.uint8))
    with SafetensorsWriter(tmp_path / "w.safetensors", specs) as w:
        with pytest.raises(CheckpointError, match="dtype"):
            w.write("a", np.zeros((2, 3), np.float32))
        with pytest.raises(CheckpointError, match="declared shape"):
            w.write("a", np.zeros((3, 3), ml_dtypes.bfloat16))
        with pytest.raises(CheckpointError, match="got 1 rows"):  # a partial tensor is forgotten
            w.write_rows("a", [np.zeros((1, 3), ml_dtypes.bfloat16)])
        w.write_rows("a", [np.ones((1, 3), ml_dtypes.bfloat16), np.full((1, 3), 2, ml_dtypes.bfloat16)])
        w.write("b", np.arange(4, dtype=np.uint8))
    with pytest.raises(CheckpointError, match="1 tensors unwritten, first 'b'"):
        with SafetensorsWriter(tmp_path / "v.safetensors", specs) as w:
            w.write("a", np.zeros((2, 3), ml_dtypes.bfloat16))
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert f.get_tensor("a").float().tolist() == [[1, 1, 1], [2, 2, 2]]
        assert f.get_tensor("b").tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------------------ layouts
def test_layout_detection(tmp_path, tiny_hf, tiny_original, tiny_dense):
    assert Checkpoint.open(tiny_hf).layout == "hf"
    assert Checkpoint.open(tiny_dense).layout == "hf-dense" and Checkpoint.open(tiny_dense).dense_experts
    assert Checkpoint.open(tiny_original).layout == "original"
    assert Checkpoint.open(tiny_original / "original").layout == "original"
    both = tmp_path / "both"
    shutil.copytree(tiny_hf, both)
    shutil.copytree(tiny_original / "original", both / "original")
    assert Checkpoint.open(both).layout == "hf"
    assert Checkpoint.open(both, layout="original").weights_dir == both / "original"
    assert "no Hugging Face config.json" in open_error(tiny_original, layout="hf")
    assert "'hf-dense'" in open_error(tiny_hf, layout="hf-dense")


def test_names(tiny_hf, tiny_dense):
    ckpt = Checkpoint.open(tiny_hf)
    names = ckpt.canonical_names()
    assert names[0] == "embedding" and names[-2:] == ["final_norm", "unembedding"]
    assert ckpt.layer_names(1)[0] == "layers.1.attn_norm"
    assert "layers.1.experts.gate_up.blocks" in ckpt.layer_names(1)
    assert "layers.1.experts.gate_up.weight" in Checkpoint.open(tiny_dense).layer_names(1)
    assert len(names) == 3 + 4 * len(ckpt.layer_names(0))
    with pytest.raises(CheckpointError, match="no canonical tensor 'layers.0.qkv'"):
        ckpt.read("layers.0.qkv")


def test_reads_are_lazy_memmaps(tiny_hf, tiny_dense):
    ckpt = Checkpoint.open(tiny_hf)
    emb = ckpt.read("embedding")
    assert isinstance(emb, np.memmap) and not emb.flags.writeable and emb.dtype == ml_dtypes.bfloat16
    assert isinstance(ckpt.read("layers.0.experts.gate_up.blocks"), np.memmap)
    dense = Checkpoint.open(tiny_dense).read("layers.0.experts.down.weight")
    assert isinstance(dense, np.memmap) and dense.shape == (8, 64, 64)
    with safe_open(str(tiny_hf / "model.safetensors"), framework="np") as f:
        qkv = np.concatenate([f.get_tensor(f"model.layers.2.self_attn.{p}_proj.weight") for p in "qkv"])
    assert np.array_equal(bits(ckpt.read("layers.2.qkv.weight")), bits(qkv))


def test_read_values_round_trip(tiny_hf):
    ckpt = Checkpoint.open(tiny_hf)
    for name in ckpt.canonical_names():
        got, want = ckpt.read(name), canonical_tensor(ckpt.config, name, seed=0)
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert np.array_equal(bits(got), bits(want)), name
    t = ckpt.read_torch("layers.0.sinks")
    assert str(t.dtype) == "torch.bfloat16" and t.float().tolist() == ckpt.read("layers.0.sinks").astype(float).tolist()


def test_same_seed_same_weights_across_layouts(tiny_hf, tiny_original, tmp_path):
    hf, orig = Checkpoint.open(tiny_hf), Checkpoint.open(tiny_original)
    assert hf.config.to_original() == orig.config.to_original()  # original/config.json has fewer fields
    assert hf.canonical_names() == orig.canonical_names()
    for name in hf.canonical_names():
        assert np.array_equal(bits(hf.read(name)), bits(orig.read(name))), name
    other = Checkpoint.open(write_synthetic(tmp_path / "seed1", hf.config, layout="original", seed=1))
    assert not np.array_equal(bits(other.read("layers.0.sinks")), bits(hf.read("layers.0.sinks")))


def test_dense_is_dequantized_mxfp4(tiny_hf, tiny_dense):
    hf, dense = Checkpoint.open(tiny_hf), Checkpoint.open(tiny_dense)
    assert dense.config == hf.config
    for i in range(hf.config.num_hidden_layers):
        for part in ("gate_up", "down"):
            p = f"layers.{i}.experts.{part}."
            want = decode_mxfp4(hf.read(p + "blocks"), hf.read(p + "scales"))
            got = dense.read(p + "weight")
            assert np.array_equal(np.asarray(got, np.float64), want), p
        assert np.array_equal(bits(dense.read(f"layers.{i}.qkv.weight")), bits(hf.read(f"layers.{i}.qkv.weight")))


def test_sharded_equals_single(tmp_path, small_hf):
    sharded = Checkpoint.open(write_synthetic(tmp_path / "sh", SMALL, layout="hf", seed=3, max_shard_bytes=100_000))
    assert len(sharded.files) > 2
    single = Checkpoint.open(small_hf)
    for name in single.canonical_names():
        assert np.array_equal(bits(single.read(name)), bits(sharded.read(name))), name


def test_tokenizer_path(tmp_path, small_hf):
    ckpt = Checkpoint.open(small_hf)
    assert not ckpt.has_tokenizer and ckpt.tokenizer_path is None
    (small_hf / "tokenizer.json").write_text("{}")
    assert Checkpoint.open(small_hf).tokenizer_path == small_hf / "tokenizer.json"


def hf_cache_snapshot(checkpoint, cache, repo="openai/gpt-oss-tiny", revision="0123abcd"):
    """`checkpoint` laid out as the Hugging Face cache stores it: every file of snapshots/REV/ a relative symlink
    into blobs/, named by its sha256 (huggingface_hub's layout)."""
    import hashlib
    import os

    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot, blobs = repo_dir / "snapshots" / revision, repo_dir / "blobs"
    blobs.mkdir(parents=True)
    for src in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        blob = blobs / hashlib.sha256(src.read_bytes()).hexdigest()
        shutil.copyfile(src, blob)
        link = snapshot / src.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def test_hf_cache_snapshot_opens_through_its_symlinks(tmp_path):
    """Issue 11: the index check refused a cache snapshot's shards, which are symlinks into ../../blobs/."""
    sharded = write_synthetic(tmp_path / "sharded", SMALL, layout="hf", seed=3, max_shard_bytes=100_000)
    snapshot = hf_cache_snapshot(sharded, tmp_path / "hub")
    shard = snapshot / "model-00001-of-00004.safetensors"
    assert shard.is_symlink() and "blobs" in str(shard.resolve())
    ckpt = Checkpoint.open(snapshot)
    want = Checkpoint.open(sharded)
    assert len(ckpt.files) > 2 and ckpt.config == want.config
    for name in want.canonical_names():
        assert np.array_equal(bits(ckpt.read(name)), bits(want.read(name))), name


@pytest.mark.parametrize("name", ["sub/../model-00001-of-00004.safetensors", "..\\model-00001-of-00004.safetensors"])
def test_index_names_stay_plain_even_when_they_resolve_inside(tmp_path, name):
    ck = write_synthetic(tmp_path / "sharded", SMALL, layout="hf", max_shard_bytes=100_000)
    (ck / "sub").mkdir()
    index = json.loads((ck / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.norm.weight"] = name
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "points outside the checkpoint folder" in open_error(ck)
