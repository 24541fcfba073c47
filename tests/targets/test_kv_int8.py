"""The `cpu` target's int8 KV cache (`gptoss-export export --kv-cache int8`): GroupQueryAttention quantizes the rows
it writes with per-(KV head, channel) scales that the export measures on a calibration prompt (compile/calibrate.py).

Tolerance: with fp32 dense weights, the int8 cache alone costs rel 3.1e-2 and top-1 97.7% on the tiny random model
over the 43-token prompt (docs/quantization.md has the table); we ask rel <= 0.06 and top-1 >= 0.9."""

import numpy as np
import onnx
import pytest
import torch

from gptoss.bundle import load_manifest
from gptoss.compile.pipeline import export_bundle
from gptoss.runtime import Model
from gptoss.targets.base import TargetError
from gptoss.targets.passes.attention import cache_scale_names

PROMPT = list(range(1000, 1043))          # 43 tokens: five sliding windows of 8
FP32_DENSE = {"attention": "fp32", "embedding": "fp32", "unembedding": "fp32"}


@pytest.fixture(scope="module")
def int8_bundle(tiny_hf, tmp_path_factory):
    return export_bundle(tiny_hf, tmp_path_factory.mktemp("kv") / "int8", target="cpu", quant=FP32_DENSE,
                         kv_cache="int8")


@pytest.fixture(scope="module")
def reference(tiny_hf):
    from gptoss.export import load_model

    return load_model(tiny_hf)(torch.tensor(PROMPT)).numpy()


def test_the_manifest_and_graph_say_int8(int8_bundle):
    manifest = load_manifest(int8_bundle)
    assert manifest.kv.dtype == "int8" and manifest.kv.mode == "shared"
    model = onnx.load(str(int8_bundle / "model.onnx"), load_external_data=False)
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(gqa) == manifest.num_layers
    for i, node in enumerate(gqa):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["kv_cache_bit_width"] == 8 and attrs["k_quant_type"] == b"PER_CHANNEL"
        assert list(node.input[12:14]) == list(cache_scale_names(i))
    cache_types = {v.name: v.type.tensor_type.elem_type for v in model.graph.input if v.name.startswith("past_")}
    assert set(cache_types.values()) == {onnx.TensorProto.INT8}


def test_the_scales_are_calibrated(int8_bundle):
    """Written as ones, overwritten in the weights file by the calibration: positive, finite, varied per channel,
    and the two rotary halves of a key share their pair's scale."""
    from onnx.external_data_helper import load_external_data_for_model

    model = onnx.load(str(int8_bundle / "model.onnx"), load_external_data=False)
    load_external_data_for_model(model, str(int8_bundle))
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    kv = load_manifest(int8_bundle).kv
    for i in range(kv.num_layers):
        k_scale, v_scale = (values[n] for n in cache_scale_names(i))
        for scale in (k_scale, v_scale):
            assert np.isfinite(scale).all() and (scale > 0).all() and not np.allclose(scale, 1.0)
            assert np.unique(scale).size > kv.head_dim // 2
        half = kv.head_dim // 2
        per_head = k_scale.reshape(kv.num_kv_heads, kv.head_dim)
        np.testing.assert_array_equal(per_head[:, :half], per_head[:, half:])


def test_logits_track_the_reference(int8_bundle, reference):
    got = Model.load(int8_bundle).logits(PROMPT)
    rel = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    assert rel <= 0.06 and (got.argmax(-1) == reference.argmax(-1)).mean() >= 0.9, rel


def test_generation_and_prefix_reuse_run_on_the_int8_cache(int8_bundle):
    model = Model.load(int8_bundle)
    first = [e.token_id for e in model.generate(PROMPT, max_new_tokens=16, temperature=0, stop_tokens=())]
    again = [e.token_id for e in model.generate(PROMPT, max_new_tokens=16, temperature=0, stop_tokens=())]
    assert len(first) == 16 and first == again


def test_a_cache_dtype_the_target_cannot_keep_is_refused_before_writing(tiny_hf, tmp_path):
    with pytest.raises(TargetError, match="target 'portable' keeps its KV cache as float32; not 'int8'"):
        export_bundle(tiny_hf, tmp_path / "b", target="portable", kv_cache="int8")
    assert not (tmp_path / "b").exists()


def test_the_cli_takes_kv_cache(tiny_hf, tmp_path):
    from click.testing import CliRunner

    from gptoss.compile.cli import main

    result = CliRunner().invoke(main, ["export", str(tiny_hf), "-o", str(tmp_path / "b"), "--kv-cache", "int8"])
    assert result.exit_code == 0, result.output
    assert load_manifest(tmp_path / "b").kv.dtype == "int8"
