"""`dml`: DirectML (onnxruntime-directml, Windows), float16. DirectML has no MoE kernel: the experts run as the
portable graph's sparse MoE in standard ops (a decode step gathers only its top-k experts' packed MXFP4 rows; a
prefill chunk runs each expert once over the tokens that chose it; rows are unpacked with BitwiseAnd / BitShift and
a lookup; no expert is ever densified). Attention stays in
standard ops too (sinks as an extra softmax column); RMSNormalization becomes SimplifiedLayerNormalization, which
DirectML has. The same graph in float32 runs on the CPU provider in CI."""

from .base import ExecutionProvider, Target, frozen
from .passes.dense import DenseToMatMulNBits
from .passes.norm import RMSNormToSimplified

TARGET = Target(
    name="dml",
    description="DirectML (Windows), fp16: sparse MoE and attention in standard ops, MatMulNBits dense weights, "
                "SimplifiedLayerNormalization.",
    provider=ExecutionProvider("DmlExecutionProvider", package="onnxruntime-directml"),
    passes=(RMSNormToSimplified(), DenseToMatMulNBits(accuracy_level=0)),
    keeps=frozenset({"MoE", "Attention"}),
    quant=frozen(experts="mxfp4", attention="int8", router="fp16", embedding="fp16", unembedding="int8"),
    allowed=frozen(experts=("mxfp4",), attention=("fp16", "int8", "int4"), router=("fp16",), embedding=("fp16",),
                   unembedding=("fp16", "int8", "int4")),
    kernels=("dml",),
    activations="float16",
    kv_dtype="float16",
)
