"""Synthetic checkpoints: the published file layouts, determinism, the CLI, and OpenAI's loader accepting them."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from gptoss.export import synth
from gptoss.export.checkpoint import Checkpoint
from gptoss.compile.cli import main
from gptoss.export.config import preset
from gptoss.export.layout import file_tensors
from gptoss.export.synth import DIMENSIONS, canonical_rows, canonical_tensor, synth_config, write_synthetic

SMALL_ARGS = ["--vocab", "256", "--layers", "2"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def header(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}, f.metadata()


def test_hf_files_as_published(tiny_hf):
    assert {p.name for p in tiny_hf.iterdir()} >= {"config.json", "generation_config.json", "model.safetensors"}
    cfg = preset("tiny")
    assert json.loads((tiny_hf / "config.json").read_text()) == cfg.to_hf()
    gen = json.loads((tiny_hf / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [200002, 199999, 200012] and gen["pad_token_id"] == 199999
    assert gen["bos_token_id"] == 199998
    tensors, meta = header(tiny_hf / "model.safetensors")
    assert meta == {"format": "pt"}
    E, I, H = cfg.num_experts, cfg.intermediate_size, cfg.hidden_size
    assert tensors["model.layers.0.mlp.experts.gate_up_proj_blocks"] == ((E, 2 * I, H // 32, 16), "U8")
    assert tensors["model.layers.0.mlp.experts.gate_up_proj_scales"] == ((E, 2 * I, H // 32), "U8")
    assert tensors["model.layers.3.mlp.experts.down_proj_blocks"] == ((E, H, I // 32, 16), "U8")
    assert tensors["model.layers.0.mlp.experts.down_proj_bias"] == ((E, H), "BF16")
    assert tensors["model.layers.1.self_attn.q_proj.weight"] == ((cfg.q_dim, H), "BF16")
    assert tensors["model.layers.1.self_attn.k_proj.bias"] == ((cfg.kv_dim,), "BF16")
    assert tensors["model.layers.2.self_attn.sinks"] == ((cfg.num_attention_heads,), "BF16")
    assert tensors["model.layers.2.mlp.router.weight"] == ((E, H), "BF16")
    assert tensors["model.embed_tokens.weight"] == ((cfg.vocab_size, H), "BF16")
    assert tensors["lm_head.weight"] == ((cfg.vocab_size, H), "BF16")
    assert set(tensors) == {ft.key for ft in file_tensors(cfg, "hf")}
    assert not list(tiny_hf.parent.glob("*.tmp-*"))


def test_dense_files_as_published(tiny_dense):
    cfg = preset("tiny")
    assert "quantization_config" not in json.loads((tiny_dense / "config.json").read_text())
    tensors, _ = header(tiny_dense / "model.safetensors")
    E, I, H = cfg.num_experts, cfg.intermediate_size, cfg.hidden_size
    assert tensors["model.layers.0.mlp.experts.gate_up_proj"] == ((E, H, 2 * I), "BF16")
    assert tensors["model.layers.0.mlp.experts.down_proj"] == ((E, I, H), "BF16")
    assert not any(k.endswith(("_blocks", "_scales")) for k in tensors)


def test_original_files_as_published(tiny_original):
    folder = tiny_original / "original"
    assert {p.name for p in tiny_original.iterdir()} == {"original"}
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "dtypes.json"}
    cfg = preset("tiny")
    assert json.loads((folder / "config.json").read_text()) == cfg.to_original()
    tensors, _ = header(folder / "model.safetensors")
    E, I, H = cfg.num_experts, cfg.intermediate_size, cfg.hidden_size
    assert tensors["block.0.mlp.mlp1_weight.blocks"] == ((E, 2 * I, H // 32, 16), "U8")
    assert tensors["block.0.attn.qkv.weight"] == ((cfg.qkv_dim, H), "BF16")
    assert tensors["norm.scale"] == ((H,), "BF16")
    dtypes = json.loads((folder / "dtypes.json").read_text())
    assert set(dtypes) == set(tensors)
    assert dtypes["block.3.mlp.mlp2_weight.scales"] == "UE8" and dtypes["unembedding.weight"] == "BF16"


def test_openai_reference_loader_accepts_original(tiny_original):
    from gpt_oss.torch.model import Transformer

    model = Transformer.from_checkpoint(str(tiny_original / "original"), device="cpu")
    ckpt = Checkpoint.open(tiny_original)
    emb = ckpt.read("embedding").astype(np.float32)
    assert torch.equal(model.embedding.weight.float(), torch.from_numpy(emb))
    with torch.no_grad():
        logits = model(torch.tensor([200006, 17360, 200008, 12194, 13]))
    assert logits.shape == (5, 201088) and torch.isfinite(logits).all()
    assert logits.float().std() > 0.5  # signal made it through 4 layers


def test_sharded_hf(tmp_path):
    cfg = synth_config("tiny", vocab=256, layers=2)
    out = write_synthetic(tmp_path / "sh", cfg, layout="hf", max_shard_bytes=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and not (out / "model.safetensors").exists()
    assert files == [f"model-{k:05d}-of-{len(files):05d}.safetensors" for k in range(1, len(files) + 1)]
    sizes = {ft.key: math.prod(ft.shape) * (2 if ft.dtype == "BF16" else 1) for ft in file_tensors(cfg, "hf")}
    assert index["metadata"]["total_size"] == sum(sizes.values())
    assert set(index["weight_map"]) == set(sizes)
    for f in files:
        tensors, _ = header(out / f)
        assert {k for k, v in index["weight_map"].items() if v == f} == set(tensors)
        assert sum(sizes[k] for k in tensors) <= 100_000 or len(tensors) == 1


def test_rows_do_not_depend_on_chunking():
    cfg = preset("tiny")  # the embedding spans several generation blocks
    full = canonical_tensor(cfg, "embedding", seed=5)
    part = canonical_rows(cfg, "embedding", 5, 65_000, 140_000)
    assert np.array_equal(full[65_000:140_000].view(np.uint16), part.view(np.uint16))
    assert not np.array_equal(full[:100].view(np.uint16), canonical_rows(cfg, "embedding", 6, 0, 100).view(np.uint16))


def test_plausible_statistics():
    cfg = preset("tiny")
    f32 = lambda name: canonical_tensor(cfg, name, 0).astype(np.float32)  # noqa: E731
    assert abs(f32("embedding").std() - 1) < 0.01
    assert abs(f32("layers.0.attn_norm").mean() - 1) < 0.03
    assert abs(f32("unembedding").std() - 2 / 8) < 0.01
    blocks = canonical_tensor(cfg, "layers.0.experts.gate_up.blocks", 0)
    assert blocks.dtype == np.uint8 and np.unique(blocks).size == 256
    base = 127 + round(math.log2(1 / (math.sqrt(64) * 2.93)))
    assert set(np.unique(canonical_tensor(cfg, "layers.0.experts.down.scales", 0))) == {base - 1, base, base + 1}
    assert synth._distribution(preset("20b"), "layers.0.experts.down.scales")[1] == 120
    # router logits of a unit-rms token: top-k well separated from the rest
    x = np.random.default_rng(0).standard_normal((64, cfg.hidden_size)).astype(np.float32)
    logits = np.sort(x @ f32("layers.0.router.weight").T, axis=-1)[:, ::-1]
    k = cfg.experts_per_token
    assert np.median(logits[:, k - 1] - logits[:, k]) > 0.2 and logits.std() > 1
    sinks = f32("layers.0.sinks")
    assert sinks.std() > 0.3 and sinks.shape == (cfg.num_attention_heads,)


# --------------------------------------------------------------------------------- CLI
def test_cli_writes_and_refuses_existing(tmp_path):
    out = tmp_path / "ck"
    r = run("synth", out, *SMALL_ARGS, "--seed", 1)
    assert r.exit_code == 0, r.output
    sinks1 = Checkpoint.open(out).read("layers.0.sinks").copy()
    r = run("synth", out, *SMALL_ARGS)
    assert r.exit_code == 2 and "--force" in r.output and "Traceback" not in r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1
    assert np.array_equal(Checkpoint.open(out).read("layers.0.sinks").view(np.uint16), sinks1.view(np.uint16))
    r = run("synth", out, *SMALL_ARGS, "--seed", 2, "--force", "--layout", "original")
    assert r.exit_code == 0, r.output
    ckpt = Checkpoint.open(out)
    assert ckpt.layout == "original" and not (out / "model.safetensors").exists()
    assert not np.array_equal(ckpt.read("layers.0.sinks").view(np.uint16), sinks1.view(np.uint16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no tmp or old folders left


def test_cli_into_existing_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run("synth", tmp_path / "empty", *SMALL_ARGS).exit_code == 0
    assert Checkpoint.open(tmp_path / "empty").layout == "hf"


OVERRIDES = {"layers": 3, "hidden": 96, "intermediate": 128, "experts": 4, "top_k": 1, "heads": 8,
             "kv_heads": 1, "head_dim": 32, "window": 16, "vocab": 300}


def test_every_dimension_has_an_override():
    assert set(OVERRIDES) == set(DIMENSIONS)


@pytest.mark.parametrize("flag", sorted(OVERRIDES))
def test_cli_overrides(tmp_path, flag):
    value = OVERRIDES[flag]
    base = {"vocab": ["--layers", "2"], "layers": ["--vocab", "256"]}.get(flag, SMALL_ARGS)
    r = run("synth", tmp_path / "ck", *base, f"--{flag.replace('_', '-')}", value)
    assert r.exit_code == 0, r.output
    cfg = Checkpoint.open(tmp_path / "ck").config
    assert getattr(cfg, DIMENSIONS[flag]) == value
    assert getattr(cfg, DIMENSIONS[flag]) != getattr(preset("tiny"), DIMENSIONS[flag])


@pytest.mark.parametrize("args, message", [
    (["--hidden", "33"], "hidden_size (33) must be a multiple of 32"),
    (["--kv-heads", "3"], "not a multiple of num_key_value_heads (3)"),
    (["--top-k", "9"], "experts_per_token (9) > num_experts (8)"),
])
def test_cli_bad_dimensions(tmp_path, args, message):
    r = run("synth", tmp_path / "ck", *SMALL_ARGS, *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ck").exists()


def test_tokenizer_files_only_for_hf_with_full_vocab(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(synth, "write_checkpoint_tokenizer_files", lambda out: calls.append(out) or False)
    cfg = synth_config("tiny", layers=1)
    write_synthetic(tmp_path / "a", cfg, layout="hf")
    write_synthetic(tmp_path / "b", cfg, layout="original")
    write_synthetic(tmp_path / "c", cfg.replace(vocab_size=256), layout="hf")
    assert len(calls) == 1 and calls[0].name.startswith(".a.tmp-")


def test_progress_goes_to_stderr(tmp_path):
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "ck"), *SMALL_ARGS])
    assert r.exit_code == 0 and r.stdout.strip() == str(tmp_path / "ck") and "synth hf" in r.stderr


def test_transformers_loads_hf_and_dense_alike(tiny_hf, tiny_dense):
    """An independent reader of the HF layouts: transformers' MXFP4 dequantization equals our dense file."""
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_hf, dtype=torch.bfloat16, quantization_config=transformers.Mxfp4Config(dequantize=True))
    dense = transformers.AutoModelForCausalLM.from_pretrained(tiny_dense, dtype=torch.bfloat16)
    for a, b in zip(hf.model.layers, dense.model.layers):
        assert torch.equal(a.mlp.experts.gate_up_proj, b.mlp.experts.gate_up_proj)
        assert torch.equal(a.mlp.experts.down_proj, b.mlp.experts.down_proj)
        assert torch.equal(a.self_attn.k_proj.weight, b.self_attn.k_proj.weight)
    ids = torch.tensor([[200006, 17360, 200008, 12194, 13]])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, dense(ids).logits)
