"""What the static-shape NPU targets (`qnn`, `openvino`) share: one graph family, each target's file adds its
provider, its split and what its device needs on top (openvino: RMSNorm in plain ops).

Fixed chunks over a fixed-capacity cache with explicit masks, attention with sinks and the MoE in plain ops (decode
gathers its top-k experts; prefill runs each expert once per chunk), dense weights as MatMulNBits, an fp16
embedding table; the session forbids CPU fallback, so a graph runs wholly on the NPU path or does not load."""

from gptoss.bundle.shapes import Static

from .base import frozen
from .passes.dense import DenseToMatMulNBits
from .passes.embedding import EmbeddingToGatherQuantized
from .passes.masked_attention import MaskedAttentionToOps
from .passes.moe_ops import MoeToSparseOps

PASSES = (MaskedAttentionToOps(), MoeToSparseOps(prefill="branches"), DenseToMatMulNBits(accuracy_level=0),
          EmbeddingToGatherQuantized())
QUANT = frozen(experts="int4", attention="int8", router="fp32", embedding="fp16", unembedding="int8")
ALLOWED = frozen(experts=("int4", "int8"), attention=("int8", "int4"), router=("fp32",), embedding=("fp16",),
                 unembedding=("int8", "int4"))
SHAPES = Static(chunk=64, context=4096)
NO_CPU_FALLBACK = frozen(**{"session.disable_cpu_ep_fallback": "1"})
