"""The GPU family (cuda, trt-rtx, webgpu, dml, coreml): every target exports the tiny model, its lowered graph holds
only ops its execution provider has kernels for (targets/kernels/), and the graphs that can run on the CPU provider
(in float32: the CPU has no fp16 MatMul) match the reference. No GPU runs here: bench/gpu_check.py does that."""

import numpy as np
import onnx
import pytest
import torch

from gptoss.bundle import load_manifest
from gptoss.compile.pipeline import export_bundle
from gptoss.runtime import Model
from gptoss.targets.base import TargetError
from gptoss.targets.kernels import kernels
from gptoss.targets.registry import TARGETS
from helpers import SOURCE_OF, make_target

GPU = ("cuda", "trt-rtx", "webgpu", "dml", "coreml")
PROMPT = list(range(1000, 1043))          # 43 tokens: five windows


@pytest.fixture(scope="module")
def reference(tiny_hf, tiny_wide_hf):
    from gptoss.export import load_model

    return {source: load_model(ckpt)(torch.tensor(PROMPT)).numpy() for source, ckpt in (("hf", tiny_hf),
                                                                                       ("wide", tiny_wide_hf))}


@pytest.mark.parametrize("name", GPU)
def test_gpu_target_exports_a_graph_its_provider_runs(name, tiny_bundle):
    target, bundle = TARGETS[name], tiny_bundle(name, source=SOURCE_OF.get(name, "hf"))
    manifest = load_manifest(bundle)
    assert manifest.target.execution_provider == target.provider.name
    assert manifest.kv.dtype == "float16" and manifest.kv.device == ("device" if target.kv_device else "host")
    graph = onnx.load(str(manifest.graph_paths("main")[0]), load_external_data=False)
    ops = {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in graph.graph.node}
    ops |= {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for f in graph.functions for n in f.node}
    ops = {o for o in ops if not o.startswith("gptoss.")} - {"CastLike", "Constant"}     # resolved by ORT at load
    assert ops <= frozenset().union(*(kernels(k) for k in target.kernels)) | {"Cast"}
    assert set(target.ops) <= ops


def test_an_op_without_a_kernel_stops_the_export(tiny_hf, tmp_path):
    """The portable MoE unpacks nibbles with BitwiseAnd / BitShift, which WebGPU has no kernel for."""
    target = make_target("portable", "test-webgpu-kernels", kernels=("webgpu",))
    with pytest.raises(TargetError, match=r"WebGpu|CPUExecutionProvider\) has no kernel for \[.*'BitShift', "
                                          r"'BitwiseAnd'.*targets/kernels/webgpu.txt"):
        export_bundle(tiny_hf, tmp_path / "b", target=target)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name, max_rel, min_top1", [("dml", 1e-5, 1.0), ("webgpu", 0.3, 0.6), ("trt-rtx", 0.5, 0.15)])
def test_gpu_graphs_in_float32_run_on_the_cpu_provider(name, max_rel, min_top1, tiny_bundle, reference):
    """The target's graph with float32 activations and dense parts, its experts as the target has them: dml's
    sparse standard-op MoE (exact), webgpu's int4 blocks of 32 (lossy; measured rel 0.19, top-1 0.72) with
    full-length sliding buffers, trt-rtx's int4 in blocks of 128 (lossy)."""
    dense_fp32 = {part: "fp32" for part in TARGETS[name].quant if part != "experts"}
    fp32 = make_target(name, f"test-{name}-fp32", activations="float32", kv_dtype="float32", kv_device=False,
                       quant={**TARGETS[name].quant, **dense_fp32},
                       allowed={p: (*a, "fp32") for p, a in TARGETS[name].allowed.items()})
    source = SOURCE_OF.get(name, "hf")
    got = Model.load(tiny_bundle(fp32, source=source), provider="cpu").logits(PROMPT)
    reference = reference[source]
    rel = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    top1 = (got.argmax(-1) == reference.argmax(-1)).mean()
    assert rel <= max_rel and top1 >= min_top1, (rel, top1)


def test_the_sparse_moe_never_builds_a_dense_expert_tensor(tiny_bundle):
    """Shape inference over the dml graph's MoE body: no float tensor holds all experts' weights."""
    model = onnx.load(str(tiny_bundle("dml") / "model.onnx"), load_external_data=False)
    moe = next(f for f in model.functions if f.name == "MoE")
    gathered = [n for n in moe.node if n.op_type == "Gather" and n.input[0] in ("gate_up_blocks", "down_blocks")]
    assert gathered and all(n.input[1] != "" for n in gathered)          # weights are only ever gathered by index
    decoded = [n for n in moe.node if n.op_type in ("MatMul", "Mul") and any("blocks" in i for i in n.input)]
    assert decoded == []                                                 # nothing multiplies the whole stacked table
