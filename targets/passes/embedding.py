"""Gather(embedding fp32) -> com.microsoft.GatherBlockQuantized (int8 | int4 blocks along hidden), or an fp16
table gathered then cast to float32, per the embedding's scheme.

    int:  data uint8 [V, H*bits/8] (LSB first), scales float32 [V, H/block]
          (gptoss.quant.blockwise.pack_gather_block_quantized)
    fp16: table float16 [V, H]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import MS_DOMAIN, Graph, LazyTensor
from gptoss.quant.blockwise import pack_gather_block_quantized
from gptoss.quant.schemes import get_scheme

from ..base import LoweringContext
from .common import integer_bits, memo_quantize

TABLE = "model.embedding"


@dataclass(frozen=True)
class EmbeddingToGatherQuantized:
    name = "embedding_to_gather_quantized"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        scheme = ctx.schemes.get("embedding", "fp32")
        node = next((n for n in graph.nodes if n.op_type == "Gather" and n.input[0] == TABLE), None)
        if node is None or scheme == "fp32":
            return contract
        table = graph.initializers[TABLE]
        V, H = table.shape
        dtype = np.dtype(table.dtype)                # the activations' dtype
        if scheme == "fp16" and dtype == np.float16:
            return contract
        if scheme == "fp16":
            graph.replace_node(node, _fp16_gather(graph, node, V, H))
        else:
            bits, block = integer_bits(scheme), get_scheme(scheme).block_size
            take = memo_quantize(graph.source, "embedding", bits, block, pack_gather_block_quantized)
            data = graph.weight(LazyTensor(f"{TABLE}.q{bits}", (V, H * bits // 8), np.uint8, take(0), "embedding"))
            scales = graph.weight(LazyTensor(f"{TABLE}.scales", (V, H // block), dtype,
                                             lambda: take(1)().astype(dtype, copy=False), "embedding"))
            graph.replace_node(node, [helper.make_node(
                "GatherBlockQuantized", [data, node.input[1], scales], list(node.output), name=node.name,
                domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=block, bits=bits)])
        graph.drop_unused()
        graph.opsets.setdefault(MS_DOMAIN, 1)
        return contract


def _fp16_gather(graph: Graph, node, V: int, H: int) -> list:
    read = graph.source
    data = graph.weight(LazyTensor(f"{TABLE}.fp16", (V, H), np.float16,
                                   lambda: np.asarray(read("embedding"), np.float16), "embedding"))
    gathered = f"{node.name}/fp16"
    return [helper.make_node("Gather", [data, node.input[1]], [gathered], name=gathered, axis=0),
            helper.make_node("Cast", [gathered], list(node.output), name=node.name, to=TensorProto.FLOAT)]
