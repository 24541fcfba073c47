"""gptoss-export: portable and CPU-lowered graphs against the PyTorch reference, bundle contract, bad input."""

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from gptoss.bundle import load_manifest
from gptoss.compile.cli import main
from gptoss.compile.pipeline import export_bundle
from gptoss.export import load_model
from gptoss.export.config import preset
from gptoss.export.errors import CheckpointError, ExportError
from gptoss.targets.base import TargetError
from helpers import FP32
from ort_driver import BundleDriver

SEQ = 5 * preset("tiny").sliding_window + 16          # 56 tokens: decode steps run well past the window
PREFILL = SEQ - 16


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(11).integers(0, preset("tiny").vocab_size, SEQ)


@pytest.fixture(scope="module")
def reference(tiny_hf, tokens):
    return load_model(tiny_hf)(torch.from_numpy(tokens)).numpy()


INT4 = dict(attention="int4", embedding="int4", unembedding="int4")
BUNDLES = {
    "portable-hf": dict(target="portable"),
    "portable-original": dict(target="portable", source="original"),
    "cpu-fp32": dict(target="cpu", quant=FP32),
    "cpu-original-fp32": dict(target="cpu", quant=FP32, source="original"),
    "cpu-int8": dict(target="cpu"),
    "cpu-int4": dict(target="cpu", quant=INT4),
    "cpu-int8-b128": dict(target="cpu", quant=dict(attention="int8_b128", unembedding="int8_b128")),
    "cpu-last": dict(target="cpu", quant=FP32, logits="last"),
}


@pytest.fixture(scope="module")
def bundles(tiny_bundle):
    return {name: tiny_bundle(**how) for name, how in BUNDLES.items()}


def max_diff(a, b):
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("name", ["portable-hf", "portable-original"])
def test_portable_graph_matches_reference(bundles, name, tokens, reference):
    driver = BundleDriver(bundles[name])
    assert max_diff(driver.full(tokens), reference) <= 1e-4
    assert max_diff(driver.prefill_then_decode(tokens, PREFILL), reference) <= 1e-4


@pytest.mark.parametrize("name", ["cpu-fp32", "cpu-original-fp32"])
def test_cpu_lowered_graph_matches_reference(bundles, name, tokens, reference):
    driver = BundleDriver(bundles[name])
    assert max_diff(driver.full(tokens), reference) <= 1e-3
    assert max_diff(driver.prefill_then_decode(tokens, PREFILL), reference) <= 1e-3


@pytest.mark.parametrize("name, max_rel, min_top1", [("cpu-int8", 0.04, 0.8), ("cpu-int8-b128", 0.04, 0.8),
                                                    ("cpu-int4", 0.4, 0.3)])
def test_quantized_dense_weights_stay_close(bundles, name, max_rel, min_top1, tokens, reference):
    """Loose bounds around the measured error (docs/quantization.md) so that a regression fails."""
    got = BundleDriver(bundles[name]).prefill_then_decode(tokens, PREFILL)
    rel = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    top1 = float((got.argmax(-1) == reference.argmax(-1)).mean())
    assert rel <= max_rel and top1 >= min_top1


def test_int8_b128_blocks_the_dense_weights_by_128_padding_a_short_last_block(bundles):
    """tiny's hidden size is 64: the qkv and unembedding rows are one zero-padded block; o_proj's 256 are two."""
    model = onnx.load(str(bundles["cpu-int8-b128"] / "model.onnx"), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert nodes and all(a["block_size"] == 128 and a["bits"] == 8 for a in attrs)
    assert {a["K"] for a in attrs} == {64, 256}
    sizes = {t.name: list(t.dims) for t in model.graph.initializer}
    assert all(sizes[n.input[1]][1:] == [-(-a["K"] // 128), 128] for n, a in zip(nodes, attrs))


def test_last_logits_bundle_returns_one_position(bundles, tokens, reference):
    driver = BundleDriver(bundles["cpu-last"])
    logits, _ = driver.step(tokens, 0, driver.empty_cache())
    assert logits.shape == (1, reference.shape[-1])
    assert max_diff(logits[0], reference[-1]) <= 1e-3


def test_the_two_moe_forms_agree(bundles):
    """One token per call takes the per-token form (k pairs <= E), a whole prompt the per-expert one: same logits up
    to the order of the fp32 sums."""
    from gptoss.runtime import Model

    prompt = list(range(1000, 1043))
    one_by_one = Model.load(bundles["portable-hf"], prefill_chunk=1).logits(prompt)
    at_once = Model.load(bundles["portable-hf"], prefill_chunk=64).logits(prompt)
    np.testing.assert_allclose(at_once, one_by_one, rtol=0, atol=1e-5 * np.abs(one_by_one).max())


def test_portable_graph_passes_the_full_checker(bundles):
    model = onnx.load(str(bundles["portable-hf"] / "model.onnx"), load_external_data=False)
    assert dict((p.key, p.value) for p in model.metadata_props) == {"max_positions": "4096"}
    assert {f.name for f in model.functions} == {"MoE", "Attention"}
    assert {n.op_type for n in model.graph.node if n.domain == "gptoss"} == {"MoE", "Attention"}
    onnx.checker.check_model(str(bundles["portable-hf"] / "model.onnx"), full_check=True)


def test_expert_selection_is_sparse_in_every_form(bundles):
    """The portable MoE body has two sparse forms under one If (N*k > E): per token, the top-k experts' packed rows
    gathered by TopK's indices; per expert, each expert's rows gathered once, by its own index, and run over only the
    rows NonZero picks. The CPU form is QMoE with uint8 weights."""
    portable = onnx.load(str(bundles["portable-hf"] / "model.onnx"), load_external_data=False)
    moe = next(f for f in portable.functions if f.name == "MoE")
    topk = next(n for n in moe.node if n.op_type == "TopK")
    branch = next(n for n in moe.node if n.op_type == "If")
    forms = {a.name: a.g for a in branch.attribute}
    per_token, per_expert = forms["else_branch"].node, forms["then_branch"].node
    gathers = [n for n in per_token if n.op_type == "Gather" and n.input[1] == topk.output[1]]
    assert {n.input[0] for n in gathers} >= {"gate_up_blocks", "gate_up_scales", "down_blocks", "down_scales"}
    experts = preset("tiny").num_experts
    by_expert = [n for n in per_expert if n.op_type == "Gather" and n.input[0] == "gate_up_blocks"]
    assert len(by_expert) == experts and len({n.input[1] for n in by_expert}) == experts
    assert sum(n.op_type == "NonZero" for n in per_expert) == experts
    lowered = onnx.load(str(bundles["cpu-int8"] / "model.onnx"), load_external_data=False)
    qmoe = [n for n in lowered.graph.node if n.op_type == "QMoE"]
    assert len(qmoe) == preset("tiny").num_hidden_layers
    weights = {i.name: i for i in lowered.graph.initializer}
    assert all(weights[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in qmoe)
    assert all(weights[n.input[3]].data_type == onnx.TensorProto.FLOAT8E8M0 for n in qmoe)
    assert not any(n.domain == "gptoss" for n in lowered.graph.node)


def test_manifest_is_the_contract(bundles):
    bundle = bundles["cpu-int8"]
    manifest = load_manifest(bundle)
    assert manifest.format_version == 2 and manifest.target.name == "cpu"
    assert manifest.quant == {"experts": "mxfp4", "attention": "int8", "router": "fp32",
                              "embedding": "int8", "unembedding": "int8"}
    cfg = preset("tiny")
    assert list(manifest.kv.window) == cfg.windows and manifest.kv.mode == "shared"
    assert list(manifest.kv.keep) == [w - 1 if w else None for w in cfg.windows]
    assert list(manifest.kv.capacity) == [2 * w if w else None for w in cfg.windows]
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest.files) == files
    for name, entry in manifest.files.items():
        data = (bundle / name).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest.tokenizer.n_vocab == cfg.vocab_size
    assert sum(manifest.parts.values()) <= (bundle / "model.weights").stat().st_size
    assert load_manifest(bundles["portable-hf"]).kv.mode == "concat"     # what the passes produced, not a row option


def test_weights_are_external_and_aligned(bundles):
    model = onnx.load(str(bundles["cpu-int8"] / "model.onnx"), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) > 20
    offsets = [int(next(e.value for e in t.external_data if e.key == "offset")) for t in external]
    assert all(o % 4096 == 0 for o in offsets)
    assert (bundles["cpu-int8"] / "model.onnx").stat().st_size < 1 << 20


def test_bundle_without_room_for_the_vocabulary_speaks_token_ids(tmp_path):
    from gptoss.export.synth import write_synthetic

    ckpt = write_synthetic(tmp_path / "small-vocab", preset("tiny").replace(vocab_size=512), layout="hf")
    bundle = export_bundle(ckpt, tmp_path / "bundle", target="cpu")
    assert load_manifest(bundle).tokenizer is None


# ------------------------------------------------------------------------------------------ bad input
def test_unknown_target_lists_the_known_ones(tiny_hf, tmp_path):
    known = "known targets: coreml, cpu, cuda, dml, openvino, portable, qnn, trt-rtx, webgpu"
    with pytest.raises(TargetError, match=known):
        export_bundle(tiny_hf, tmp_path / "b", target="tpu")
    assert not (tmp_path / "b").exists()


def test_aot_for_a_target_without_an_aot_step_is_refused_before_anything_is_written(tiny_hf, tmp_path):
    with pytest.raises(ExportError, match="target cpu has no ahead-of-time step; drop --aot"):
        export_bundle(tiny_hf, tmp_path / "b", target="cpu", aot=True)
    assert not (tmp_path / "b").exists()


def test_unknown_scheme_or_part_is_rejected(tiny_hf, tmp_path):
    with pytest.raises(TargetError, match="it can: fp32, int8, int8_b128, int4"):
        export_bundle(tiny_hf, tmp_path / "b", quant={"attention": "int3"})
    with pytest.raises(TargetError, match="known parts: experts, attention"):
        export_bundle(tiny_hf, tmp_path / "b", quant={"mlp": "int8"})
    assert not (tmp_path / "b").exists()


def test_invalid_checkpoint_stops_before_any_output(tiny_hf, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_hf, broken)
    config = json.loads((broken / "config.json").read_text())
    config["hidden_size"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        export_bundle(broken, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".b.tmp-*"))


def test_nan_in_a_tensor_to_quantize_is_refused_naming_file_and_tensor(tiny_hf, tmp_path):
    """The weights stream out while they are packed; a NaN is caught as the checkpoint hands the tensor over (before
    the quantizer, whose own NonFiniteWeightError tests/quant covers), naming the file and the file's key."""
    import shutil

    import ml_dtypes

    from gptoss.export.safetensors_io import SafetensorsFile
    from helpers import rewrite_safetensors

    broken = tmp_path / "nan"
    shutil.copytree(tiny_hf, broken)
    key = "model.layers.0.self_attn.q_proj.weight"
    w = np.array(SafetensorsFile(broken / "model.safetensors").get(key)).astype(np.float32)
    w[3, 5] = np.nan
    rewrite_safetensors(broken / "model.safetensors", put={key: w.astype(ml_dtypes.bfloat16)})
    with pytest.raises(CheckpointError, match=rf"nan/model.safetensors: tensor '{key}' holds NaN at index \[3, 5\]"):
        export_bundle(broken, tmp_path / "b", target="cpu")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_existing_output_needs_force(tiny_hf, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="--force"):
        export_bundle(tiny_hf, out, target="portable")
    with pytest.raises(ExportError, match="does not hold a bundle; --force replaces only an empty folder or a prev"):
        export_bundle(tiny_hf, out, target="portable", force=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    export_bundle(tiny_hf, out, target="portable")                  # an empty folder takes a bundle
    (out / "keep.txt").write_text("mine")
    export_bundle(tiny_hf, out, target="portable", force=True)      # a previous bundle is replaced whole
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()


def test_interrupted_export_leaves_nothing(tiny_hf, tmp_path, monkeypatch):
    import gptoss.ir.onnx_io as onnx_io

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_io, "write_onnx", explode)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tiny_hf, tmp_path / "b", target="portable")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_export_and_inspect(tiny_hf, tmp_path):
    runner = CliRunner()
    out = tmp_path / "bundle"
    result = runner.invoke(main, ["export", str(tiny_hf), "-o", str(out), "--quant", "attention=int4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "com.microsoft.QMoE" in result.output and "attention=int4" in result.output
    result = runner.invoke(main, ["inspect", str(tiny_hf), "--json"])
    assert json.loads(result.output)["layout"] == "hf"


def test_cli_lists_the_targets():
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0
    header, *lines = result.output.splitlines()
    assert header.split() == ["target", "execution", "provider", "package", "shapes", "kv", "cache", "default",
                              "schemes"]
    rows = [line.split()[:5] for line in lines if not line.startswith(" ")]
    descriptions = [line.strip() for line in lines if line.startswith(" ")]
    from gptoss.targets.registry import TARGETS

    assert rows == [[t.name, t.provider.name, t.provider.package, t.shapes.kind, t.kv_dtype]
                    for t in TARGETS.values()] and len(rows) >= 7
    assert descriptions == [t.description for t in TARGETS.values()]
    column = header.index("execution provider")
    assert all(line[column:].startswith(t.provider.name) for line, t in zip(lines[::2], TARGETS.values()))


def test_cli_errors_are_one_line(tiny_hf, tmp_path):
    result = CliRunner().invoke(main, ["export", str(tiny_hf), "-o", str(tmp_path / "b"), "--target", "tpu"])
    assert result.exit_code == 2
    assert "Error: unknown target 'tpu'" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["export", str(tmp_path / "missing"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "Traceback" not in result.output


# ------------------------------------------------------------------------------------ the target shapes the graph
def test_a_float16_cache_is_what_the_graph_takes(tiny_bundle, tokens, reference):
    """The builder reads the KV dtype from the target: a float16 target's graph takes and returns float16 caches
    (attention computes in float16), and the manifest says so."""
    from gptoss.runtime import Model
    from helpers import make_target

    bundle = tiny_bundle(make_target("portable", "test-fp16-kv", kv_dtype="float16"))
    assert load_manifest(bundle).kv.dtype == "float16"
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    assert types["past_key.0"] == types["present_value.3"] == onnx.TensorProto.FLOAT16
    assert types["logits"] == onnx.TensorProto.FLOAT
    got = Model.load(bundle).logits(tokens.tolist())
    # float16 keeps 11 significant bits (unit roundoff 2^-11): attention's roundings moved the logits by 0.07% of
    # their scale here; an fp32 path would be ~1e-6, a wrong cast or mask far more
    assert np.abs(got - reference).max() <= 5e-3 * np.abs(reference).max()
    assert (got.argmax(-1) == reference.argmax(-1)).mean() >= 0.95
