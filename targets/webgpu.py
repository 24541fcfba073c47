"""`webgpu`: ONNX Runtime's WebGPU plugin EP (onnxruntime-ep-webgpu; Dawn over Vulkan, Metal or D3D12), float16.

WebGPU's QMoE has no fp4, but takes 8-bit block-32 experts: the exact int8 re-encoding of MXFP4. Its
GroupQueryAttention has sinks and the local window but no window cache, so sliding layers keep full-length buffers
with the window as a mask. MatMulNBits, GatherBlockQuantized and RMSNormalization have kernels."""

from .base import ExecutionProvider, Target, frozen
from .passes.attention import AttentionToGQA
from .passes.dense import DenseToMatMulNBits
from .passes.embedding import EmbeddingToGatherQuantized
from .passes.moe import MoeToQMoE

TARGET = Target(
    name="webgpu",
    description="WebGPU plugin EP, fp16: QMoE int8 (exact re-encoding of MXFP4), GroupQueryAttention with sinks "
                "and window, MatMulNBits, GatherBlockQuantized; KV cache on the GPU.",
    provider=ExecutionProvider("WebGpuExecutionProvider", package="onnxruntime-ep-webgpu", plugin=True),
    passes=(
        MoeToQMoE(),
        AttentionToGQA(window_cache=False),
        DenseToMatMulNBits(accuracy_level=4),
        EmbeddingToGatherQuantized(),
    ),
    quant=frozen(experts="int8", attention="int8", router="fp16", embedding="int8", unembedding="int8"),
    allowed=frozen(experts=("int8", "int4"), attention=("fp16", "int8", "int4"), router=("fp16",),
                   embedding=("fp16", "int8", "int4"), unembedding=("fp16", "int8", "int4")),
    ops=("com.microsoft.QMoE", "com.microsoft.GroupQueryAttention"),
    kernels=("webgpu",),
    activations="float16",
    kv_dtype="float16",
    kv_device=True,
)
