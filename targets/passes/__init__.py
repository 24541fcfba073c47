"""Lowering passes, one module per concern; each is a frozen dataclass (its typed parameters) called as
`pass_(graph, contract, ctx) -> contract`, rewriting the graph in place.

    moe.MoeToQMoE                           gptoss.MoE        -> com.microsoft.QMoE fp4 (exact MXFP4)
    attention.AttentionToGQA                gptoss.Attention  -> com.microsoft.GroupQueryAttention ("shared" KV)
    dense.DenseToMatMulNBits                MatMul (fp32 W)   -> com.microsoft.MatMulNBits (int8 | int4)
    embedding.EmbeddingToGatherQuantized    Gather (fp32)     -> com.microsoft.GatherBlockQuantized | fp16 Gather
    checks.check_lowered                    the boundary checks after a target's passes

Weights are re-packed lazily from the checkpoint (graph.source), one tensor at a time, by the pure packers in
gptoss.quant. The contrib-op contracts these rely on are pinned by the targets tests and docs/ort-contrib-ops.md.
"""
