"""`portable`: standard ONNX ops only. The two custom ops stay as `gptoss`-domain nodes whose model-local
function bodies any ONNX Runtime runs; fp32 dense weights, the checkpoint's MXFP4 experts."""

from .base import ExecutionProvider, Target, frozen

TARGET = Target(
    name="portable",
    description="Standard ONNX ops only (custom ops as model-local functions); any ONNX Runtime, fp32.",
    provider=ExecutionProvider("CPUExecutionProvider"),
    passes=(),
    keeps=frozenset({"MoE", "Attention", "MaskedAttention"}),
    kernels=("cpu",),
    quant=frozen(experts="mxfp4", attention="fp32", router="fp32", embedding="fp32", unembedding="fp32"),
    allowed=frozen(experts=("mxfp4",), attention=("fp32",), router=("fp32",), embedding=("fp32",),
                   unembedding=("fp32",)),
)
