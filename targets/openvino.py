"""`openvino`: Intel's OpenVINO through its plugin EP for the stock onnxruntime (onnxruntime-ep-openvino), the same
static graph family as `qnn` (fixed chunks, fixed-capacity cache with explicit masks, attention and sparse MoE in
plain ops, MatMulNBits) with RMSNormalization written out (OpenVINO has no kernel for it). The session forbids CPU
fallback: every node runs on OpenVINO. The device (CPU, GPU or NPU) is the provider option `device_type`; the
default, CPU, is what runs here. `--aot` compiles OpenVINO EP context models."""

from gptoss.bundle.shapes import Static

from .aot import EpContextAot
from .base import ExecutionProvider, Split, Target, frozen
from .passes.dense import DenseToMatMulNBits
from .passes.embedding import EmbeddingToGatherQuantized
from .passes.masked_attention import MaskedAttentionToOps
from .passes.moe_ops import MoeToSparseOps
from .passes.norm import RMSNormToOps

TARGET = Target(
    name="openvino",
    description="OpenVINO plugin EP (Intel CPU / GPU / NPU), static shapes, no CPU fallback: the qnn graph family "
                "with RMSNorm in plain ops.",
    provider=ExecutionProvider("OpenVINOExecutionProvider", package="onnxruntime-ep-openvino", plugin=True),
    passes=(MaskedAttentionToOps(), MoeToSparseOps(prefill="branches"), DenseToMatMulNBits(accuracy_level=0),
            EmbeddingToGatherQuantized(), RMSNormToOps()),
    quant=frozen(experts="int4", attention="int8", router="fp32", embedding="fp16", unembedding="int8"),
    allowed=frozen(experts=("int4", "int8"), attention=("int8", "int4"), router=("fp32",), embedding=("fp16",),
                   unembedding=("int8", "int4")),
    shapes=Static(chunk=64, context=4096),
    split=Split(layers_per_part=4),
    provider_options=frozen(device_type="CPU"),
    session_options=frozen(**{"session.disable_cpu_ep_fallback": "1"}),
    aot=EpContextAot("OpenVINOExecutionProvider", "onnxruntime_ep_openvino"),
)
