"""Graph -> `model.onnx` + `model.weights`, streaming one initializer at a time.

Every initializer's bytes go to one external-data file at a 4 KiB-aligned offset, so ONNX Runtime can
memory-map them; the protobuf itself holds only the graph and small constants (never a 2 GB protobuf).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from .onnx_builder import Graph, LazyTensor

ALIGN = 4096


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


def write_onnx(graph: Graph, out_dir: Path, onnx_name: str = "model.onnx", weights_name: str = "model.weights",
               on_tensor: Callable[[LazyTensor], None] | None = None) -> dict[str, int]:
    """Write the graph and its weights into `out_dir`. Returns packed bytes per part."""
    out_dir = Path(out_dir)
    graph.drop_unused()
    protos, sizes = [], defaultdict(int)
    with open(out_dir / weights_name, "wb") as f:
        for name in _initializer_order(graph):
            t = graph.initializers[name]
            array = np.ascontiguousarray(t.produce())
            if tuple(array.shape) != tuple(t.shape) or array.dtype != np.dtype(t.dtype):
                raise ValueError(f"initializer {name}: produced {array.dtype}{list(array.shape)}, "
                                 f"declared {np.dtype(t.dtype)}{list(t.shape)}")
            offset = -(-f.tell() // ALIGN) * ALIGN
            f.seek(offset)
            f.write(array.tobytes() if array.nbytes < (1 << 26) else memoryview(array.reshape(-1).view(np.uint8)))
            protos.append(_external_tensor(t, weights_name, offset, array.nbytes))
            sizes[t.part] += array.nbytes
            del array
            if on_tensor:
                on_tensor(t)
        f.truncate()
    model = make_model(graph, protos)
    onnx.save(model, str(out_dir / onnx_name))
    return dict(sizes)


def make_model(graph: Graph, initializers: list[TensorProto]) -> onnx.ModelProto:
    g = helper.make_graph(graph.nodes, graph.name, graph.inputs, graph.outputs,
                          initializer=list(graph.constants.values()) + initializers)
    opsets = [helper.make_opsetid(domain, version) for domain, version in graph.opsets.items()]
    model = helper.make_model(g, opset_imports=opsets, functions=list(graph.functions.values()),
                              producer_name="gptoss-export")
    model.ir_version = 10
    return model
