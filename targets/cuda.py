"""`cuda`: ONNX Runtime's CUDA provider (the onnxruntime-gpu flavour), float16 activations and cache.

Experts stay exact: QMoE fp4 over the checkpoint's MXFP4 codes in CUDA's N-packed layout (native on SM120, decoded
once to fp16 below it), or, as an option, the exact int8 re-encoding (QMoE int8, W8A16); int4 is a lossy option.
Attention is GroupQueryAttention with sinks and CUDA's window cache (exactly `window` rows), KV buffers on the GPU.
Checked here (op lists, graphs, the device-binding path on ORT's CPU device), run only by bench/gpu_check.py, which
also compares a CUDA-graph-captured decode (`Model.load(graph_capture=True)`) with the uncaptured one."""

from .base import ExecutionProvider, Target, frozen
from .passes.attention import AttentionToGQA
from .passes.dense import DenseToMatMulNBits
from .passes.embedding import EmbeddingToGatherQuantized
from .passes.moe import MoeToQMoE

TARGET = Target(
    name="cuda",
    description="ONNX Runtime CUDA (onnxruntime-gpu), fp16: QMoE fp4 (exact MXFP4), GroupQueryAttention with sinks "
                "and window, MatMulNBits, GatherBlockQuantized; KV cache on the GPU.",
    provider=ExecutionProvider("CUDAExecutionProvider", package="onnxruntime-gpu"),
    passes=(
        MoeToQMoE(fp4_layout="n_packed"),
        AttentionToGQA(window_cache=True, window_factor=1),     # CUDA wants exactly `window` rows
        DenseToMatMulNBits(accuracy_level=0),
        EmbeddingToGatherQuantized(),
    ),
    quant=frozen(experts="mxfp4", attention="int8", router="fp16", embedding="int8", unembedding="int8"),
    allowed=frozen(experts=("mxfp4", "int8", "int4"), attention=("fp16", "int8", "int4"), router=("fp16",),
                   embedding=("fp16", "int8", "int4"), unembedding=("fp16", "int8", "int4")),
    ops=("com.microsoft.QMoE", "com.microsoft.GroupQueryAttention"),
    kernels=("cuda",),
    activations="float16",
    kv_dtype="float16",
    kv_device=True,
    session_options=frozen(graph_optimization_level="ORT_ENABLE_ALL"),
    graph_capture="enable_cuda_graph",
)
