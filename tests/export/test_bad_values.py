"""Silent garbage is refused (issue 12 item 5): a NaN or infinity in any float tensor of a checkpoint, and a config
value that is not finite, out of range, or absurdly large, each stop the export with one line naming the file and the
tensor or field. Before, NaN in an unquantized tensor (sinks, router, norms, an fp32 q_proj) exported with exit 0 and
every logit of the bundle was NaN."""

import json
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner

from gptoss.compile.cli import main
from gptoss.compile.pipeline import export_bundle
from gptoss.export.checkpoint import Checkpoint
from gptoss.export.config import INT_BOUNDS, POSITIVE_FLOATS, ModelConfig
from gptoss.export.errors import CheckpointError
from gptoss.export.safetensors_io import SafetensorsFile
from gptoss.export.synth import synth_config, write_synthetic
from helpers import FP32, rewrite_safetensors

SMALL = synth_config("tiny", vocab=256, layers=2)


@pytest.fixture
def small_hf(tmp_path):
    return write_synthetic(tmp_path / "hf", SMALL, layout="hf", seed=3)


def poison(path, key, index, value):
    """Rewrite file `path` with tensor `key`'s element `index` set to `value` (same dtype)."""
    st = SafetensorsFile(path)
    a = np.array(st.get(key))
    a[index] = value
    del st
    rewrite_safetensors(path, put={key: a})


# ------------------------------------------------------------------------------------------ tensor values
UNQUANTIZED = {                                       # file key -> the canonical tensor that reads it
    "model.layers.1.self_attn.sinks": ("layers.1.sinks", (2,)),
    "model.layers.0.mlp.router.weight": ("layers.0.router.weight", (3, 7)),
    "model.layers.0.mlp.router.bias": ("layers.0.router.bias", (5,)),
    "model.layers.1.input_layernorm.weight": ("layers.1.attn_norm", (9,)),
    "model.norm.weight": ("final_norm", (0,)),
    "model.layers.0.self_attn.q_proj.weight": ("layers.0.qkv.weight", (3, 5)),
    "model.layers.0.self_attn.v_proj.bias": ("layers.0.qkv.bias", (4,)),
    "model.layers.1.mlp.experts.down_proj_bias": ("layers.1.experts.down.bias", (2, 6)),
    "lm_head.weight": ("unembedding", (200, 63)),
}


@pytest.mark.parametrize("key", sorted(UNQUANTIZED))
@pytest.mark.parametrize("value, kind", [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "-infinity")])
def test_non_finite_tensor_is_named_with_its_file(small_hf, key, value, kind):
    name, index = UNQUANTIZED[key]
    poison(small_hf / "model.safetensors", key, index, value)
    ckpt = Checkpoint.open(small_hf)                       # headers are fine: the values are checked on read
    with pytest.raises(CheckpointError) as e:
        ckpt.read(name)
    msg = str(e.value)
    assert msg.startswith(f"{small_hf / 'model.safetensors'}: tensor {key!r} holds {kind} at index {list(index)}")
    assert "\n" not in msg


def test_dense_experts_and_shards_are_checked_too(tmp_path):
    dense = write_synthetic(tmp_path / "dense", SMALL, layout="hf-dense", seed=3)
    poison(dense / "model.safetensors", "model.layers.1.mlp.experts.gate_up_proj", (3, 10, 20), np.nan)
    with pytest.raises(CheckpointError, match=r"'model.layers.1.mlp.experts.gate_up_proj' holds NaN at index \[3, 10, 20\]"):
        Checkpoint.open(dense).read("layers.1.experts.gate_up.weight")
    sharded = write_synthetic(tmp_path / "sharded", SMALL, layout="hf", seed=3, max_shard_bytes=100_000)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"]
    shard = sharded / index["model.layers.1.post_attention_layernorm.weight"]
    poison(shard, "model.layers.1.post_attention_layernorm.weight", (7,), np.inf)
    with pytest.raises(CheckpointError, match=rf"^{shard}: tensor 'model.layers.1.post_attention_layernorm.weight' "):
        Checkpoint.open(sharded).read("layers.1.mlp_norm")


def test_finite_values_read_unchanged(small_hf):
    """The check hands out the same zero-copy memmap as before, and does not refuse the extremes of bf16."""
    key = "model.layers.0.self_attn.sinks"
    big = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)
    poison(small_hf / "model.safetensors", key, (0,), big)
    poison(small_hf / "model.safetensors", key, (1,), -big)
    sinks = Checkpoint.open(small_hf).read("layers.0.sinks")
    assert isinstance(sinks, np.memmap) and float(sinks[0]) == big and float(sinks[1]) == -big


def test_export_of_nan_sinks_stops_with_one_line_and_leaves_nothing(small_hf, tmp_path):
    """End to end through the CLI: an unquantized tensor the quantizer never sees."""
    key = "model.layers.1.self_attn.sinks"
    poison(small_hf / "model.safetensors", key, (3,), np.nan)
    out = tmp_path / "b"
    args = ["export", str(small_hf), "-o", str(out), "--target", "cpu"]
    for part, scheme in FP32.items():
        args += ["--quant", f"{part}={scheme}"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    error = r.output.strip().splitlines()[-1]
    assert error.startswith("Error: ") and f"model.safetensors: tensor {key!r} holds NaN at index [3]" in error
    assert "Traceback" not in r.output
    assert not out.exists() and not list(tmp_path.glob(".b.*"))


def test_export_of_nan_fp32_q_proj_names_the_file(small_hf, tmp_path):
    key = "model.layers.0.self_attn.q_proj.weight"
    poison(small_hf / "model.safetensors", key, (3, 5), np.nan)
    with pytest.raises(CheckpointError, match=rf"model.safetensors: tensor '{key}' holds NaN at index \[3, 5\]"):
        export_bundle(small_hf, tmp_path / "b", target="cpu", quant=FP32)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


# ------------------------------------------------------------------------------------------ config values
BAD_CONFIG = {
    "rope_theta": (float("nan"), "rope_theta must be a finite number > 0, got nan"),
    "rms_norm_eps": (-1e-5, "rms_norm_eps must be a finite number > 0, got -1e-05"),
    "swiglu_limit": (float("inf"), "swiglu_limit must be a finite number > 0, got inf"),
    "max_position_embeddings": (-5, "max_position_embeddings must be in [2, "),
    "num_hidden_layers": (5000, "num_hidden_layers must be in [1, 1024], got 5000"),
    "vocab_size": (1e12, "vocab_size must be in [1, "),
    "hidden_size": (64.5, "hidden_size must be an integer, got 64.5"),
    "head_dim": ("64", "head_dim must be an integer, got '64'"),
    "num_key_value_heads": (True, "num_key_value_heads must be an integer, got True"),
}


@pytest.mark.parametrize("field", sorted(BAD_CONFIG))
def test_bad_config_value_is_one_line_naming_file_and_field(small_hf, field):
    value, message = BAD_CONFIG[field]
    path = small_hf / "config.json"
    cfg = json.loads(path.read_text())
    cfg[field] = value
    if field == "num_hidden_layers":
        del cfg["layer_types"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        Checkpoint.open(small_hf)
    assert str(e.value).startswith(f"{path}: invalid model config: ") and message in str(e.value)


@pytest.mark.parametrize("value", [0, 1, -5])
def test_max_position_embeddings_too_small_is_refused_by_the_cli(small_hf, tmp_path, value):
    """0 used to export a bundle that can never generate, -5 to crash with a ValueError traceback."""
    cfg = json.loads((small_hf / "config.json").read_text())
    cfg["max_position_embeddings"] = value
    (small_hf / "config.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(main, ["export", str(small_hf), "-o", str(tmp_path / "b"), "--target", "portable"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"max_position_embeddings must be in [2, 4194304], got {value}" in r.output.strip().splitlines()[-1]


def test_rope_scaling_that_is_not_an_object(small_hf):
    cfg = json.loads((small_hf / "config.json").read_text())
    cfg["rope_scaling"] = [1, 2]
    (small_hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json: rope_scaling is not a JSON object"):
        Checkpoint.open(small_hf)


def test_original_config_values_are_checked(tmp_path):
    ck = write_synthetic(tmp_path / "orig", SMALL, layout="original", seed=3)
    path = ck / "original" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["rope_theta"], cfg["num_experts"] = float("-inf"), 8.0
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="rope_theta must be a finite number > 0, got -inf") as e:
        Checkpoint.open(ck)
    assert "num_experts" not in str(e.value)     # 8.0 is the integer 8


def test_a_billion_layers_is_refused_before_anything_is_allocated(tmp_path):
    """num_hidden_layers=1e9 without layer_types: a MemoryError after 27 s before. Run under a 1 GiB address-space
    limit, so that a regression fails fast instead of eating the machine's memory."""
    cfg = SMALL.to_hf()
    cfg["num_hidden_layers"] = 1e9
    del cfg["layer_types"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    code = ("import resource, json, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from gptoss.export.config import ModelConfig\n"
            "from gptoss.export.errors import CheckpointError\n"
            "try:\n"
            f"    ModelConfig.from_hf(json.load(open({str(tmp_path / 'config.json')!r})), 'config.json')\n"
            "except CheckpointError as e:\n"
            "    print(e)\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "num_hidden_layers must be in [1, 1024], got 1000000000" in r.stdout and time.time() - t0 < 20


def test_every_config_field_is_checked():
    """A new field of ModelConfig gets a bound (INT_BOUNDS) or a positivity check (POSITIVE_FLOATS)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"layer_types"}
    assert fields == set(INT_BOUNDS) | set(POSITIVE_FLOATS)
    for name, (low, high) in INT_BOUNDS.items():
        with pytest.raises(CheckpointError, match=name):
            SMALL.replace(**{name: high + 1})
        with pytest.raises(CheckpointError, match=name):
            SMALL.replace(**{name: low - 1})
    for name in POSITIVE_FLOATS:
        for bad in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(CheckpointError, match=name):
                SMALL.replace(**{name: bad})


def test_published_presets_are_within_bounds():
    from gptoss.export.config import PRESETS

    for cfg in PRESETS.values():
        assert ModelConfig.from_hf(cfg.to_hf()) == cfg
