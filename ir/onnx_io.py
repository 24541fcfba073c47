"""Graphs -> ONNX files + one shared weights file, streaming one initializer at a time.

    write_onnx({"model.onnx": g})                       one graph, its weights in model.weights
    write_onnx({"prefill.onnx": p, "decode.onnx": d})   two graphs over the SAME weights: an initializer both
                                                        graphs hold (same name) is written once, and both
                                                        files point at its one copy

Every initializer's bytes go to the weights file at a 4 KiB-aligned offset, so ONNX Runtime can memory-map them;
the protobufs hold only the graph and small constants (never a 2 GB protobuf).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from .graph import Graph, LazyTensor

ALIGN = 4096
IR_VERSION = 10


def _external_tensor(t: LazyTensor, location: str, offset: int, length: int) -> TensorProto:
    proto = TensorProto(name=t.name, data_type=t.elem_type(), dims=list(t.shape))
    proto.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = proto.external_data.add()
        entry.key, entry.value = key, value
    return proto


def _initializer_order(graph: Graph) -> list[str]:
    """Initializers in the order the nodes first use them (layer by layer), then any leftovers."""
    seen: dict[str, None] = {}
    for node in graph.nodes:
        for name in node.input:
            if name in graph.initializers:
                seen.setdefault(name)
    return list(seen) + [n for n in graph.initializers if n not in seen]


def _union(graphs: Mapping[str, Graph]) -> dict[str, LazyTensor]:
    """Every tensor the weights file stores, once, in model order: the graphs' initializers that are not views,
    and the tensors views look into. The same name must mean the same tensor in each graph."""
    union: dict[str, LazyTensor] = {}
    for graph in graphs.values():
        for name in _initializer_order(graph):
            t = graph.initializers[name]
            stored = t.view_of or t
            if stored.name in union and (union[stored.name].shape, np.dtype(union[stored.name].dtype)) != (
                    stored.shape, np.dtype(stored.dtype)):
                raise ValueError(f"initializer {stored.name}: the graphs disagree on its shape or dtype")
            union.setdefault(stored.name, stored)
    return union


def weights_nbytes(graphs: Mapping[str, Graph]) -> int:
    """Bytes of the weights file the graphs will share (before any unused initializer is dropped)."""
    return sum(t.nbytes for t in _union(graphs).values())


def _write_tensor(f, t: LazyTensor) -> tuple[int, int]:
    """Produce `t`, append it at the next aligned offset; return (offset, length)."""
    array = np.ascontiguousarray(t.produce())
    if tuple(array.shape) != tuple(t.shape) or array.dtype != np.dtype(t.dtype):
        raise ValueError(f"initializer {t.name}: produced {array.dtype}{list(array.shape)}, "
                         f"declared {np.dtype(t.dtype)}{list(t.shape)}")
    offset = -(-f.tell() // ALIGN) * ALIGN
    f.seek(offset)
    f.write(array.tobytes() if array.nbytes < (1 << 26) else memoryview(array.reshape(-1).view(np.uint8)))
    return offset, array.nbytes


def write_onnx(graphs: Mapping[str, Graph], out_dir: Path, weights_name: str = "model.weights",
               on_tensor: Callable[[LazyTensor], None] | None = None) -> dict[str, int]:
    """Write each graph (file name -> Graph) and their weights into `out_dir`. Returns packed bytes per part.

    A tensor's `produce()` runs once, in model order; errors it raises (a quantizer refusing a tensor, say)
    propagate unchanged, naming the tensor."""
    out_dir = Path(out_dir)
    for graph in graphs.values():
        graph.drop_unused()
    placed: dict[str, tuple[int, int]] = {}
    sizes: dict[str, int] = defaultdict(int)
    with open(out_dir / weights_name, "wb") as f:
        for name, t in _union(graphs).items():
            placed[name] = _write_tensor(f, t)
            sizes[t.part] += placed[name][1]
            if on_tensor:
                on_tensor(t)
        f.truncate()
    for file_name, graph in graphs.items():
        protos = [_proto(graph.initializers[n], weights_name, placed) for n in _initializer_order(graph)]
        onnx.save(make_model(graph, protos), str(out_dir / file_name))
    return dict(sizes)


def _proto(t: LazyTensor, weights_name: str, placed: dict[str, tuple[int, int]]) -> TensorProto:
    if t.view_of is None:
        return _external_tensor(t, weights_name, *placed[t.name])
    offset, _ = placed[t.view_of.name]
    return _external_tensor(t, weights_name, offset + t.view_offset, t.nbytes)


def make_model(graph: Graph, initializers: list[TensorProto]) -> onnx.ModelProto:
    g = helper.make_graph(graph.nodes, graph.name, graph.inputs, graph.outputs,
                          initializer=list(graph.constants.values()) + initializers)
    opsets = [helper.make_opsetid(domain, version) for domain, version in graph.opsets.items()]
    model = helper.make_model(g, opset_imports=opsets, functions=list(graph.functions.values()),
                              producer_name="gptoss-export")
    helper.set_model_props(model, {k: str(v) for k, v in graph.meta.items()})
    model.ir_version = IR_VERSION
    return model
