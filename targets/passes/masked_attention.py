"""gptoss.MaskedAttention (static graphs) -> plain ONNX ops with every shape a constant, for NPUs.

A static graph knows T (tokens per call), C (a layer's cache rows), H / KV heads and head_dim, so the attention is
written out with constant shapes only (no Shape, Range or dynamic Slice: NPU compilers want none):

    q [1,T,H*hd] ─Reshape [1,T,H,hd]─ RoPE ─Transpose─► [1,H,T,hd] ─Reshape─► [1,KV,G*T,hd]   (G = H / KV)
    k [1,T,KV*hd] ─Reshape─ RoPE ─Transpose─► new_key [1,KV,T,hd]  ─┐
    keys = Concat(past_key [1,KV,C,hd], new_key) [1,KV,C+T,hd]     ◄┘        (values the same, without RoPE)
    scores = q·keysᵀ / sqrt(hd) [1,KV,G*T,C+T] ─Reshape─► [1,H,T,C+T] + bias [1,1,T,C+T]
    probs  = Softmax(Concat(scores, sink column [1,H,T,1])) [:, :, :, :C+T]
    out    = probs ─Reshape [1,KV,G*T,C+T]─ · values ─Reshape [1,H,T,hd]─Transpose─Reshape─► [1,T,H*hd]

Grouped heads share their kv head through the reshape, never through a copy of the cache (no Expand).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import GPTOSS_DOMAIN, Graph, node_attributes

from ..base import LoweringContext, TargetError


def _dims(graph: Graph, name: str) -> list[int]:
    value = next((v for v in graph.inputs if v.name == name), None)
    if value is None:
        raise TargetError(f"masked attention lowering: {name!r} is not a graph input")
    dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
    if not all(d > 0 for d in dims):
        raise TargetError(f"masked attention lowering needs static shapes; {name!r} is {dims}")
    return dims


@dataclass(frozen=True)
class MaskedAttentionToOps:
    name = "masked_attention_to_ops"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        if contract.kv.mode != "static":
            raise TargetError(f"{self.name} lowers static-shape attention, not a {contract.kv.mode!r} cache")
        for node in graph.nodes_of("MaskedAttention", GPTOSS_DOMAIN):
            at, end = graph.nodes.index(node), len(graph.nodes)
            _Emitter(graph, node, np.dtype(contract.kv.dtype)).emit()      # appends its nodes at the end
            emitted = graph.nodes[end:]
            del graph.nodes[end:]
            graph.nodes[at:at + 1] = emitted                                # ... moved to where the node was
        graph.functions.pop(f"{GPTOSS_DOMAIN}::MaskedAttention", None)
        return contract


class _Emitter:
    """Writes one layer's attention as plain nodes, named under the node's own name."""

    def __init__(self, graph: Graph, node, dtype: np.dtype):
        self.g, self.node, self.p, self.dtype = graph, node, node.name, dtype
        q, k, v, past_k, past_v, cos, sin, sinks, bias = node.input
        self.inputs = dict(q=q, k=k, v=v, past_k=past_k, past_v=past_v, cos=cos, sin=sin, sinks=sinks, bias=bias)
        attrs = node_attributes(node)
        self.H, self.KV = attrs["num_heads"], attrs["kv_num_heads"]
        _, _, self.C, self.hd = _dims(graph, past_k)
        self.T = _dims(graph, bias)[2]

    def op(self, op_type: str, inputs: list[str], tag: str, **attrs) -> str:
        return self.g.op(op_type, inputs, f"{self.p}/{tag}", **attrs)

    def shape(self, *dims: int) -> str:
        return self.g.const(list(dims))

    def rope(self, x: str, heads: int, tag: str) -> str:
        """Half-split RoPE of x [1,T,heads*hd] -> [1,T,heads,hd]."""
        T, hd, half = self.T, self.hd, self.hd // 2
        x = self.op("Reshape", [x, self.shape(1, T, heads, hd)], f"{tag}/heads")
        x1 = self.op("Slice", [x, self.g.const([0]), self.g.const([half]), self.g.const([3])], f"{tag}/x1")
        x2 = self.op("Slice", [x, self.g.const([half]), self.g.const([hd]), self.g.const([3])], f"{tag}/x2")
        c = self.op("Unsqueeze", [self.inputs["cos"], self.g.const([2])], f"{tag}/cos")
        s = self.op("Unsqueeze", [self.inputs["sin"], self.g.const([2])], f"{tag}/sin")
        o1 = self.op("Sub", [self.op("Mul", [x1, c], f"{tag}/x1c"), self.op("Mul", [x2, s], f"{tag}/x2s")], f"{tag}/o1")
        o2 = self.op("Add", [self.op("Mul", [x2, c], f"{tag}/x2c"), self.op("Mul", [x1, s], f"{tag}/x1s")], f"{tag}/o2")
        return self.op("Concat", [o1, o2], f"{tag}/rotated", axis=-1)

    def emit(self) -> None:
        H, KV, T, C, hd = self.H, self.KV, self.T, self.C, self.hd
        G, S = H // KV, C + T
        new_key_name, new_value_name = self.node.output[1], self.node.output[2]
        q = self.op("Transpose", [self.rope(self.inputs["q"], H, "q")], "q/bnsh", perm=[0, 2, 1, 3])
        q = self.op("Mul", [q, self.g.const(1.0 / np.sqrt(hd), self.dtype)], "q/scaled")
        q = self.op("Reshape", [q, self.shape(1, KV, G * T, hd)], "q/grouped")
        self.g.node("Transpose", [self.rope(self.inputs["k"], KV, "k")], f"{self.p}/k/bnsh", [new_key_name],
                    perm=[0, 2, 1, 3])
        v = self.op("Reshape", [self.inputs["v"], self.shape(1, T, KV, hd)], "v/heads")
        self.g.node("Transpose", [v], f"{self.p}/v/bnsh", [new_value_name], perm=[0, 2, 1, 3])
        keys = self.op("Concat", [self.inputs["past_k"], new_key_name], "keys", axis=2)
        values = self.op("Concat", [self.inputs["past_v"], new_value_name], "values", axis=2)
        keys_t = self.op("Transpose", [keys], "keys_t", perm=[0, 1, 3, 2])
        scores = self.op("Reshape", [self.op("MatMul", [q, keys_t], "scores"), self.shape(1, H, T, S)], "scores/heads")
        scores = self.op("Add", [scores, self.inputs["bias"]], "scores/masked")
        sinks = self.op("Reshape", [self.inputs["sinks"], self.shape(1, H, 1, 1)], "sinks")
        sink_column = self.op("Expand", [sinks, self.shape(1, H, T, 1)], "sink_column")
        probs = self.op("Softmax", [self.op("Concat", [scores, sink_column], "with_sinks", axis=-1)], "softmax", axis=-1)
        probs = self.op("Slice", [probs, self.g.const([0]), self.g.const([S]), self.g.const([3])], "probs")
        probs = self.op("Reshape", [probs, self.shape(1, KV, G * T, S)], "probs/grouped")
        out = self.op("Reshape", [self.op("MatMul", [probs, values], "context"), self.shape(1, H, T, hd)], "context/heads")
        out = self.op("Transpose", [out], "context/bsnd", perm=[0, 2, 1, 3])
        self.g.node("Reshape", [out, self.shape(1, T, H * hd)], f"{self.p}/out", [self.node.output[0]])
