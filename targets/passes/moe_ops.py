"""gptoss.MoE -> a sparse mixture of experts in plain ONNX ops over block-quantized experts, for NPUs (QNN HTP).

One copy of each expert tensor, in the layout of MatMulNBits (quant.blockwise.pack_qmoe_int), gate and linear rows
de-interleaved (rows [0, I) gate, [I, 2I) linear: a permutation, exact):

    codes   uint8 [E, N, K*bits/8]   int8: code = q + 128; int4: two codes per byte, low nibble first, code = q + 8
    scales  float32 [E, N, K/32]     (int8 from MXFP4: 2^(e-128), exact; int4: the decoded weights re-quantized)
    bias    float32 [E, N]

and two ways to use it, chosen per graph by its tokens per call:

  gather (decode, one token): TopK -> each token gathers only its k experts' codes and scales (Gather on a
          per-tensor-dequantized table: the NPU reads the selected rows of the quantized bytes), unpacks them with
          arithmetic only (Floor; no bitwise op), scales them per block and multiplies -> [N, k, ...]. Exact decode.
  branches (prefill, a chunk of tokens): every expert as its own static MatMulNBits over its slice of the same bytes
          (views: no second copy), weighted by the routing matrix ScatterElements(0, top-k ids, softmax) and summed:
          the chunk's tokens share each expert's weights, which a per-token gather cannot (a 64-token chunk would
          gather 256 expert matrices).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import GPTOSS_DOMAIN, MS_DOMAIN, Graph, LazyTensor, node_attributes
from gptoss.quant import blockwise
from gptoss.quant.mxfp4 import BLOCK, decode_mxfp4, requantize_mxfp4_to_int8
from gptoss.quant.schemes import get_scheme

from ..base import LoweringContext, TargetError
from .common import canonical

FORMS = ("gather", "branches")


@dataclass(frozen=True)
class MoeToSparseOps:
    """prefill: the form of graphs that take more than one token per call ("branches" or "gather"); a one-token
    graph always gathers."""

    prefill: str = "branches"
    name = "moe_to_sparse_ops"

    def __post_init__(self):
        if self.prefill not in FORMS:
            raise TargetError(f"{self.name}: prefill form {self.prefill!r}; known: {list(FORMS)}")

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        scheme = ctx.schemes["experts"]
        if scheme not in ("int8", "int4"):
            raise TargetError(f"{self.name} stores experts as int8 or int4 blocks, not {scheme!r}")
        bits = get_scheme(scheme).bits
        tokens = _tokens(graph)
        form = "gather" if tokens == 1 else self.prefill
        for node in graph.nodes_of("MoE", GPTOSS_DOMAIN):
            at, end = graph.nodes.index(node), len(graph.nodes)
            experts = _Experts(graph, node, bits)
            (_gather if form == "gather" else _branches)(graph, node, experts, tokens)
            emitted = graph.nodes[end:]
            del graph.nodes[end:]
            graph.nodes[at:at + 1] = emitted
        graph.functions.pop(f"{GPTOSS_DOMAIN}::MoE", None)
        graph.opsets.setdefault(MS_DOMAIN, 1)
        return contract


def _tokens(graph: Graph) -> int:
    ids = next(v for v in graph.inputs if v.name == "input_ids")
    dims = [d.dim_value for d in ids.type.tensor_type.shape.dim]
    if not all(d > 0 for d in dims):
        raise TargetError("moe_to_sparse_ops needs static shapes")
    return dims[0] * dims[1]


class _Experts:
    """One layer's stored experts (codes, scales, biases of both projections) and their facts."""

    def __init__(self, graph: Graph, node, bits: int):
        self.g, self.node, self.bits = graph, node, bits
        _, _, gu_blocks, gu_scales, gu_bias, d_blocks, d_scales, d_bias = node.input
        attrs = node_attributes(node)
        self.top_k, self.limit, self.alpha = attrs["top_k"], attrs["swiglu_limit"], attrs["swiglu_alpha"]
        self.E, two_i, groups, _ = graph.initializers[gu_blocks].shape
        self.I, self.H = two_i // 2, groups * BLOCK
        gate_first = np.concatenate([np.arange(0, two_i, 2), np.arange(1, two_i, 2)])
        self.fc1 = self._store(gu_blocks, gu_scales, gu_bias, gate_first)
        self.fc2 = self._store(d_blocks, d_scales, d_bias, None)

    def _store(self, blocks_name: str, scales_name: str, bias_name: str, rows) -> tuple[LazyTensor, ...]:
        g, bits = self.g, self.bits
        e, n, groups, _ = g.initializers[blocks_name].shape
        k = groups * BLOCK
        read, key_b, key_s = g.source, canonical(blocks_name), canonical(scales_name)
        memo: dict = {}

        def packed(i: int) -> np.ndarray:
            if "p" not in memo:
                memo["p"] = quantize_experts(np.asarray(read(key_b)), np.asarray(read(key_s)), bits, rows, key_b)
            out = memo["p"].data if i == 0 else memo["p"].scales.astype(np.float32)
            if i == 1:
                memo.clear()
            return out

        base = blocks_name.removesuffix(".blocks")
        codes = LazyTensor(f"{base}.q{bits}", (e, n, k * bits // 8), np.uint8, lambda: packed(0), "experts")
        scales = LazyTensor(f"{base}.q{bits}.scales", (e, n, k // BLOCK), np.float32, lambda: packed(1), "experts")
        bias_src = g.initializers[bias_name]
        bias = LazyTensor(f"{base}.bias.sparse", (e, n), np.float32,
                          lambda: np.asarray(bias_src.produce(), np.float32)[:, rows if rows is not None else slice(None)],
                          "experts")
        return codes, scales, bias


def quantize_experts(blocks: np.ndarray, scales: np.ndarray, bits: int, rows, name: str) -> blockwise.PackedBlockwise:
    """MXFP4 experts [E, N, K/32, 16] + [E, N, K/32] -> QMoE int layout (pack_qmoe_int), rows permuted by `rows`,
    one expert at a time (a whole 20b expert tensor decoded to float32 at once would take 2 GB and its quantizer
    temporaries several more): int8 re-encodes MXFP4 exactly, int4 re-quantizes the decoded weights."""
    data, block_scales = [], []
    for e in range(blocks.shape[0]):
        b, s = (blocks[e], scales[e]) if rows is None else (blocks[e][rows], scales[e][rows])
        q = requantize_mxfp4_to_int8(b[None], s[None], name) if bits == 8 else blockwise.quantize_blockwise(
            decode_mxfp4(b[None], s[None], name), bits=bits, block_size=BLOCK, name=name)
        p = blockwise.pack_qmoe_int(q, name=name)
        data.append(p.data)
        block_scales.append(p.scales)
    return blockwise.PackedBlockwise(np.concatenate(data), np.concatenate(block_scales), None, bits, BLOCK,
                                     blocks.shape[2] * BLOCK)


def _swiglu(g: Graph, h: str, I: int, limit: float, alpha: float, p: str, axis: int) -> str:
    """h [..., 2I] with gate rows first -> clamp, glu * sigmoid(alpha * glu) * (lin + 1) -> [..., I]."""
    glu = g.op("Slice", [h, g.const([0]), g.const([I]), g.const([axis])], f"{p}/glu")
    lin = g.op("Slice", [h, g.const([I]), g.const([2 * I]), g.const([axis])], f"{p}/lin")
    glu = g.op("Min", [glu, g.const(limit, np.float32)], f"{p}/glu_clamped")
    lin = g.op("Clip", [lin, g.const(-limit, np.float32), g.const(limit, np.float32)], f"{p}/lin_clamped")
    gate = g.op("Mul", [glu, g.op("Sigmoid", [g.op("Mul", [glu, g.const(alpha, np.float32)], f"{p}/alpha_glu")],
                                    f"{p}/sigmoid")], f"{p}/gate")
    return g.op("Mul", [gate, g.op("Add", [lin, g.const(1.0, np.float32)], f"{p}/lin_plus_1")], f"{p}/act")


def _route(g: Graph, logits: str, k: int, p: str) -> tuple[str, str]:
    """Top-k of the router logits, softmax over those k -> (weights [N, k], expert ids [N, k])."""
    values, ids = g.node("TopK", [logits, g.const([k])], f"{p}/topk", 2, axis=-1, largest=1, sorted=1)
    return g.op("Softmax", [values], f"{p}/routing", axis=-1), ids


def _gathered_weights(g: Graph, store: tuple[LazyTensor, ...], ids: str, bits: int, N: int, k: int, p: str):
    """The selected experts' weights [N*k, rows, cols] (float, exact) and biases [N, k, rows]."""
    codes, scales, bias = (g.weight(t) if t.name not in g.initializers else t.name for t in store)
    e, rows, packed_cols = store[0].shape
    cols = packed_cols * 8 // bits
    table = g.op("DequantizeLinear", [codes, g.const(1.0, np.float32), g.const(128 if bits == 8 else 0, np.uint8)],
                 f"{p}/codes")                                                      # per-tensor: the bytes as floats
    picked = g.op("Gather", [table, ids], f"{p}/picked", axis=0)                    # [N, k, rows, packed]
    if bits == 4:                                                                   # two codes per byte, low first
        high = g.op("Floor", [g.op("Mul", [picked, g.const(1 / 16, np.float32)], f"{p}/div16")], f"{p}/high")
        low = g.op("Sub", [picked, g.op("Mul", [high, g.const(16.0, np.float32)], f"{p}/high16")], f"{p}/low")
        both = g.op("Concat", [g.op("Unsqueeze", [low, g.const([-1])], f"{p}/low_col"),
                               g.op("Unsqueeze", [high, g.const([-1])], f"{p}/high_col")], f"{p}/nibbles", axis=-1)
        picked = g.op("Sub", [both, g.const(8.0, np.float32)], f"{p}/signed")
    blocks = g.op("Reshape", [picked, g.const([N * k * rows, cols // BLOCK, BLOCK])], f"{p}/blocks")
    block_scales = g.op("Reshape", [g.op("Gather", [scales, ids], f"{p}/picked_scales", axis=0),
                                    g.const([N * k * rows, cols // BLOCK, 1])], f"{p}/block_scales")
    weights = g.op("Reshape", [g.op("Mul", [blocks, block_scales], f"{p}/scaled"), g.const([N * k, rows, cols])],
                   f"{p}/weights")
    return weights, g.op("Gather", [bias, ids], f"{p}/picked_bias", axis=0)


def _gather(g: Graph, node, ex: _Experts, N: int) -> None:
    x, logits = node.input[0], node.input[1]
    p, k = node.name, ex.top_k
    routing, ids = _route(g, logits, k, p)
    w1, b1 = _gathered_weights(g, ex.fc1, ids, ex.bits, N, k, f"{p}/fc1")
    x_col = g.op("Reshape", [g.op("Expand", [g.op("Unsqueeze", [x, g.const([1])], f"{p}/x_k"),
                                             g.const([N, k, ex.H])], f"{p}/x_per_expert"),
                             g.const([N * k, ex.H, 1])], f"{p}/x_col")
    h = g.op("Add", [g.op("Reshape", [g.op("MatMul", [w1, x_col], f"{p}/fc1/matmul"), g.const([N, k, 2 * ex.I])],
                          f"{p}/fc1/rows"), b1], f"{p}/fc1/out")                    # [N, k, 2I]
    act = _swiglu(g, h, ex.I, ex.limit, ex.alpha, f"{p}/swiglu", axis=2)           # [N, k, I]
    w2, b2 = _gathered_weights(g, ex.fc2, ids, ex.bits, N, k, f"{p}/fc2")
    y = g.op("Reshape", [g.op("MatMul", [w2, g.op("Reshape", [act, g.const([N * k, ex.I, 1])], f"{p}/act_col")],
                              f"{p}/fc2/matmul"), g.const([N, k, ex.H])], f"{p}/fc2/rows")
    y = g.op("Mul", [g.op("Add", [y, b2], f"{p}/fc2/out"), g.op("Unsqueeze", [routing, g.const([-1])], f"{p}/w")],
             f"{p}/weighted")
    g.node("ReduceSum", [y, g.const([1])], f"{p}/sum", [node.output[0]], keepdims=0)


def _expert_matmul(g: Graph, x3: str, store: tuple[LazyTensor, ...], e: int, bits: int, p: str) -> str:
    """x3 [1, N, K] through expert e's slice of the stored codes (MatMulNBits over a view) plus its bias."""
    codes, scales, bias = store
    _, rows, packed_cols = codes.shape
    cols, nb = packed_cols * 8 // bits, packed_cols * 8 // bits // BLOCK
    view_codes = g.weight(codes.view(f"{codes.name}.{e}", (rows, nb, BLOCK * bits // 8), e * rows * packed_cols))
    view_scales = g.weight(scales.view(f"{scales.name}.{e}", (rows * nb,), e * rows * nb))
    y = g.op("MatMulNBits", [x3, view_codes, view_scales], f"{p}/matmul", domain=MS_DOMAIN, K=cols, N=rows,
             bits=bits, block_size=BLOCK)
    view_bias = g.weight(bias.view(f"{bias.name}.{e}", (rows,), e * rows))
    return g.op("Add", [y, view_bias], f"{p}/out")


def _branches(g: Graph, node, ex: _Experts, N: int) -> None:
    x, logits = node.input[0], node.input[1]
    p = node.name
    routing, ids = _route(g, logits, ex.top_k, p)
    zeros = g.op("Expand", [g.const(0.0, np.float32), g.const([N, ex.E])], f"{p}/zeros")
    dense = g.op("ScatterElements", [zeros, ids, routing], f"{p}/routing_matrix", axis=1)   # [N, E], 0 if not routed
    x3 = g.op("Reshape", [x, g.const([1, N, ex.H])], f"{p}/x3")
    total = None
    for e in range(ex.E):
        q = f"{p}/expert{e}"
        h = _expert_matmul(g, x3, ex.fc1, e, ex.bits, f"{q}/fc1")
        y = _expert_matmul(g, _swiglu(g, h, ex.I, ex.limit, ex.alpha, f"{q}/swiglu", axis=2), ex.fc2, e, ex.bits,
                           f"{q}/fc2")
        weight = g.op("Slice", [dense, g.const([e]), g.const([e + 1]), g.const([1])], f"{q}/weight")   # [N, 1]
        y = g.op("Mul", [g.op("Reshape", [y, g.const([N, ex.H])], f"{q}/rows"), weight], f"{q}/weighted")
        total = y if total is None else g.op("Add", [total, y], f"{q}/sum")
    g.node("Identity", [total], f"{p}/out", [node.output[0]])
