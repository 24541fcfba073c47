"""`qnn`: Qualcomm's Hexagon NPU (HTP) through the QNN execution provider (onnxruntime-qnn, a plugin EP), every
node on the NPU: the session forbids CPU fallback (a graph either runs wholly on QNN or does not load).

Static shapes: a 64-token prefill graph and a one-token decode graph over the same weights, a fixed 4096-position
cache with explicit masks ("static" KV contract), attention written out in plain ops (sinks as an extra softmax
column), the MoE as sparse plain ops over block-quantized experts (decode gathers only its top-k experts; prefill
runs each expert once for the whole chunk over views of the same bytes), dense weights as MatMulNBits, the embedding
an fp16 table. The HTP computes in float16. The model is cut into parts (embedding, layers in groups, head), each
compiled into its own context, the way Qualcomm splits LLMs to fit the NPU's address space (docs/targets.md)."""

from . import _static_family as family
from .aot import EpContextAot
from .base import ExecutionProvider, Split, Target, frozen

TARGET = Target(
    name="qnn",
    description="Qualcomm Hexagon NPU (QNN EP, HTP), static shapes, no CPU fallback: plain-op attention with sinks, "
                "sparse MoE over int4/int8 experts, MatMulNBits, fp16 embedding; split into NPU-sized parts.",
    provider=ExecutionProvider("QNNExecutionProvider", package="onnxruntime-qnn", plugin=True),
    passes=family.PASSES,
    quant=family.QUANT,
    allowed=family.ALLOWED,
    shapes=family.SHAPES,
    split=Split(layers_per_part=2),
    provider_options=frozen(soc_model="SM8750", htp_performance_mode="burst"),
    session_options=family.NO_CPU_FALLBACK,
    aot=EpContextAot("QNNExecutionProvider", "onnxruntime_qnn", lambda m: {"backend_path": m.get_qnn_htp_path()}),
)
