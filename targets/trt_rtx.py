"""`trt-rtx`: NVIDIA TensorRT-RTX through its plugin EP (onnxruntime-ep-nv-tensorrt-rtx), float16.

TensorRT-RTX's QMoE takes int4 experts in blocks of 128 only: the one target whose experts cannot stay exact (the
error is measured in docs/quality.md). Its GroupQueryAttention needs rotary inside the op with sinks and manages
sliding windows itself: the cache is full length, the window a mask. MatMulNBits wants fp16 activations and scales;
there is no GatherBlockQuantized, so the embedding is an fp16 table. Checked here, not run (no RTX GPU)."""

from .base import ExecutionProvider, Target, frozen
from .passes.attention import AttentionToGQA
from .passes.dense import DenseToMatMulNBits
from .passes.moe import MoeToQMoE

TARGET = Target(
    name="trt-rtx",
    description="TensorRT-RTX plugin EP, fp16: QMoE int4 (block 128, lossy), GroupQueryAttention with sinks, "
                "MatMulNBits; KV cache on the GPU.",
    provider=ExecutionProvider("NvTensorRTRTXExecutionProvider", package="onnxruntime-ep-nv-tensorrt-rtx", plugin=True),
    passes=(
        MoeToQMoE(int_block=128),
        AttentionToGQA(window_cache=False),
        DenseToMatMulNBits(accuracy_level=0),
    ),
    quant=frozen(experts="int4", attention="int8", router="fp16", embedding="fp16", unembedding="int8"),
    allowed=frozen(experts=("int4",), attention=("fp16", "int8", "int4"), router=("fp16",), embedding=("fp16",),
                   unembedding=("fp16", "int8", "int4")),
    ops=("com.microsoft.QMoE", "com.microsoft.GroupQueryAttention"),
    kernels=("trt-rtx",),
    activations="float16",
    kv_dtype="float16",
    kv_device=True,
)
