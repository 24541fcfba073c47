"""Cut one graph into parts run in order, chained through one value (the hidden state).

    split_graph(g, cuts=[c0, c1], ...)   ->   part 0: inputs ... -> c0 (as hidden_out)
                                              part 1: c0 (as hidden_in), inputs ... -> c1 (as hidden_out)
                                              part 2: c1 (as hidden_in), inputs ... -> the rest of g's outputs

Each part holds the nodes its outputs need, found backwards from them and stopping at the previous cut; nodes
before the first cut that several parts need (position tables, say) are repeated in each, and each part keeps only
the initializers and graph inputs it uses. A graph output goes to the part whose stretch of the (topologically
ordered) node list produces it.
"""

from __future__ import annotations

import copy
from typing import Sequence

from onnx import TensorProto, helper

from .graph import Graph


def _producers(graph: Graph) -> dict[str, int]:
    return {out: i for i, node in enumerate(graph.nodes) for out in node.output}


def _closure(graph: Graph, wanted: list[str], stop: str | None, producers: dict[str, int]) -> list[int]:
    """Indices of the nodes `wanted` needs, not looking past `stop`, in graph order."""
    seen, todo = set(), list(wanted)
    while todo:
        value = todo.pop()
        if value == stop or value not in producers or producers[value] in seen:
            continue
        seen.add(producers[value])
        todo.extend(i for i in graph.nodes[producers[value]].input if i)
    return sorted(seen)


def _renamed(node, mapping: dict[str, str]):
    if not any(n in mapping for n in (*node.input, *node.output)):
        return node
    node = copy.deepcopy(node)
    node.input[:] = [mapping.get(n, n) for n in node.input]
    node.output[:] = [mapping.get(n, n) for n in node.output]
    return node


def split_graph(graph: Graph, cuts: Sequence[str], hidden_shape: list, hidden_in: str = "hidden_in",
                hidden_out: str = "hidden_out") -> list[Graph]:
    """`graph` cut after each value of `cuts` (in order); the cut values become `hidden_out` / `hidden_in`
    [hidden_shape] float32 between consecutive parts."""
    producers = _producers(graph)
    bounds = [producers[c] for c in cuts] + [len(graph.nodes) - 1]
    if bounds != sorted(bounds):
        raise ValueError(f"cuts must follow the graph's order: {list(cuts)}")
    parts, start = [], -1
    for k, end in enumerate(bounds):
        outputs = [o for o in graph.outputs if start < producers[o.name] <= end]
        wanted = [o.name for o in outputs] + ([cuts[k]] if k < len(cuts) else [])
        stop = cuts[k - 1] if k else None
        nodes = [graph.nodes[i] for i in _closure(graph, wanted, stop, producers)]
        mapping = {**({cuts[k]: hidden_out} if k < len(cuts) else {}), **({stop: hidden_in} if stop else {})}
        parts.append(_part(graph, k, [_renamed(n, mapping) for n in nodes], outputs, hidden_shape,
                           first=k == 0, last=k == len(cuts), names=(hidden_in, hidden_out)))
        start = end
    return parts


def _part(graph: Graph, k: int, nodes: list, outputs: list, hidden_shape: list, first: bool, last: bool,
          names: tuple[str, str]) -> Graph:
    used = {i for n in nodes for i in n.input}
    part = Graph(name=f"{graph.name}_part{k}", nodes=nodes, source=graph.source, meta=dict(graph.meta),
                 opsets=dict(graph.opsets), functions=dict(graph.functions))
    part.initializers = {name: t for name, t in graph.initializers.items() if name in used}
    part.constants = {name: t for name, t in graph.constants.items() if name in used}
    part.inputs = [v for v in graph.inputs if v.name in used]
    if not first:
        part.inputs.insert(0, helper.make_tensor_value_info(names[0], TensorProto.FLOAT, hidden_shape))
    part.outputs = list(outputs)
    if not last:
        part.outputs.append(helper.make_tensor_value_info(names[1], TensorProto.FLOAT, hidden_shape))
    part.drop_unused()
    return part
