"""`webgpu`: ONNX Runtime's WebGPU plugin EP (onnxruntime-ep-webgpu; Dawn over Vulkan, Metal or D3D12), float16.

WebGPU's QMoE has no fp4, and its 8-bit path gives wrong results (onnxruntime-ep-webgpu 0.4.0 on SwiftShader: the
same QMoE node as on the CPU, off by the output's whole scale; 4-bit matches the CPU to 3e-7), so the experts are
int4 blocks of 32: the one lossy part of this target (docs/quality.md). Its GroupQueryAttention has sinks and the
local window but no window cache, so sliding layers keep full-length buffers with the window as a mask.
MatMulNBits, GatherBlockQuantized and RMSNormalization have kernels. Runs in CI on SwiftShader (float32: the
software adapter has no shader-f16). The decode step can be captured (`Model.load(graph_capture=True)`), but ORT's
WebGPU GroupQueryAttention drops the sliding window under capture (measured: tests/targets/test_webgpu.py), so
nothing turns it on by default."""

from .base import ExecutionProvider, Target, frozen
from .passes.attention import AttentionToGQA
from .passes.dense import DenseToMatMulNBits
from .passes.embedding import EmbeddingToGatherQuantized
from .passes.moe import MoeToQMoE

TARGET = Target(
    name="webgpu",
    description="WebGPU plugin EP, fp16: QMoE int4 (its 8-bit path is wrong), GroupQueryAttention with sinks "
                "and window, MatMulNBits, GatherBlockQuantized; KV cache on the GPU.",
    provider=ExecutionProvider("WebGpuExecutionProvider", package="onnxruntime-ep-webgpu", plugin=True),
    passes=(
        MoeToQMoE(),
        AttentionToGQA(window_cache=False),
        DenseToMatMulNBits(accuracy_level=4),
        EmbeddingToGatherQuantized(),
    ),
    quant=frozen(experts="int4", attention="int8", router="fp16", embedding="int8", unembedding="int8"),
    allowed=frozen(experts=("int4",), attention=("fp16", "int8", "int4"), router=("fp16",),
                   embedding=("fp16", "int8", "int4"), unembedding=("fp16", "int8", "int4")),
    ops=("com.microsoft.QMoE", "com.microsoft.GroupQueryAttention"),
    kernels=("webgpu",),
    activations="float16",
    kv_dtype="float16",
    kv_device=True,
    graph_capture="enableGraphCapture",
)
