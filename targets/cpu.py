"""`cpu`: ONNX Runtime's CPU provider with its contrib ops. Experts stay exact MXFP4 (QMoE fp4); attention keeps
in-place ("shared") KV buffers: sliding layers GroupQueryAttention with sinks and its window cache, full layers
plain matrix products over the buffer when decoding (float32 cache; a prompt chunk and the int8 cache keep
GroupQueryAttention); dense weights MatMulNBits int8, the embedding GatherBlockQuantized int8."""

from .base import ExecutionProvider, Target, frozen
from .passes.attention import AttentionToGQA
from .passes.dense import DenseToMatMulNBits
from .passes.embedding import EmbeddingToGatherQuantized
from .passes.full_attention import FullAttentionToMatMul
from .passes.moe import MoeToQMoE

TARGET = Target(
    name="cpu",
    description="ONNX Runtime CPU with contrib ops: QMoE (exact MXFP4), GroupQueryAttention with sinks, "
                "MatMulNBits, GatherBlockQuantized.",
    provider=ExecutionProvider("CPUExecutionProvider"),
    passes=(
        MoeToQMoE(),
        AttentionToGQA(),
        # full layers decode in plain matrix products: GQA's CPU kernel with a sink reads a long cache at a fraction
        # of the bandwidth (docs/performance.md); sliding layers keep GQA's window cache
        FullAttentionToMatMul(),
        # int8 activations: at accuracy level 0 (fp32 activations) the 20b unembedding alone took 5+ s per decode
        # step on 2 cores; level 4 runs it at memory speed (docs/benchmarks.md).
        DenseToMatMulNBits(accuracy_level=4),
        EmbeddingToGatherQuantized(),
    ),
    quant=frozen(experts="mxfp4", attention="int8", router="fp32", embedding="int8", unembedding="int8"),
    # int8_b128: a quarter of int8's scale bytes for the dense weights read every step (docs/quantization.md)
    allowed=frozen(experts=("mxfp4",), attention=("fp32", "int8", "int8_b128", "int4"), router=("fp32",),
                   embedding=("fp32", "fp16", "int8", "int4"), unembedding=("fp32", "int8", "int8_b128", "int4")),
    ops=("com.microsoft.QMoE", "com.microsoft.GroupQueryAttention"),
    kernels=("cpu",),
    # --kv-cache int8: ORT's quantized cache (per-channel scales calibrated at export): 2.8x faster attention
    # reads at 32k context, at a measured fidelity cost (docs/quantization.md). An option, not the default.
    kv_dtypes=("int8",),
    session_options=frozen(graph_optimization_level="ORT_ENABLE_ALL"),
)
