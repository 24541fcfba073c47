"""`coreml`: Apple's CoreML provider (macOS / iOS builds of onnxruntime), float16. CoreML has none of the LLM
contrib ops and no TopK, BitwiseAnd or RMSNormalization kernel: the graph is the portable one (sparse MoE and
attention in standard ops), CoreML takes the dense matmuls it can and ONNX Runtime runs the rest on its CPU
provider; the kernel check counts both. Checked here, not run (no Apple machine)."""

from .base import ExecutionProvider, Target, frozen

TARGET = Target(
    name="coreml",
    description="CoreML (macOS/iOS), fp16: the portable graph; CoreML takes the dense fragments, the CPU the rest.",
    provider=ExecutionProvider("CoreMLExecutionProvider"),
    passes=(),
    keeps=frozenset({"MoE", "Attention"}),
    quant=frozen(experts="mxfp4", attention="fp16", router="fp16", embedding="fp16", unembedding="fp16"),
    allowed=frozen(experts=("mxfp4",), attention=("fp16",), router=("fp16",), embedding=("fp16",),
                   unembedding=("fp16",)),
    kernels=("coreml", "cpu"),
    activations="float16",
    kv_dtype="float16",
)
