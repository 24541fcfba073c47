"""The neutral graph IR: an ONNX graph under construction, with lazy, streamed initializers.

Nodes are emitted with hierarchical names (`/model/layers.3/attn/qkv`). Initializers are `LazyTensor`s: a
shape, a dtype and a function that produces the array when the bundle is written. Lowering passes can
therefore swap an initializer's packing (fp32 -> int8 blocks, MXFP4 -> QMoE layout) without touching
data, and the writer reads the checkpoint one tensor at a time.

This package imports nothing else of the project: the exporter builds graphs with it, the targets' passes
rewrite them, the pipeline writes them (ir.onnx_io).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from onnx import AttributeProto, FunctionProto, NodeProto, TensorProto, ValueInfoProto, helper, numpy_helper

OPSET = 23
GPTOSS_DOMAIN = "gptoss"
GPTOSS_OPSET = 1
MS_DOMAIN = "com.microsoft"

# Conventions of the portable graph (written by gptoss.export.graph) that lowering passes read back:
ROTARY_INV_FREQ = "/model/rotary/inv_freq"            # constant [head_dim / 2] float32: YaRN inverse frequencies
ROTARY_CONCENTRATION = "/model/rotary/concentration"  # constant [] float32: YaRN's scale of cos and sin
MAX_POSITIONS = "max_positions"                       # Graph.meta key: positions the rotary tables must cover
EMBEDDING_OUTPUT = "/model/embedding/output_0"        # the hidden state after the embedding [B,T,hidden]


def layer_output(layer: int) -> str:
    """The hidden state after layer `layer` (its MoE residual) [B,T,hidden]: where a split model may be cut."""
    return f"/model/layers.{layer}/mlp/residual/output_0"


@dataclass
class LazyTensor:
    """An initializer whose data is produced on demand (at bundle-write time)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    produce: Callable[[], np.ndarray]
    part: str = "other"          # experts | attention | router | embedding | unembedding | other
    onnx_type: int | None = None  # override (e.g. FLOAT8E8M0 stored as uint8 bytes)
    # A view: these bytes are bytes [view_offset, view_offset + nbytes) of tensor `view_of`, which the weights file
    # stores once (two graph forms over one copy of the experts); `produce` is then unused.
    view_of: "LazyTensor | None" = None
    view_offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def view(self, name: str, shape: tuple[int, ...], offset_elements: int) -> "LazyTensor":
        """A tensor of `shape` over this one's elements [offset, offset + prod(shape)) (row-major, no copy)."""
        count = int(np.prod(shape, dtype=np.int64))
        total = int(np.prod(self.shape, dtype=np.int64))
        if offset_elements < 0 or offset_elements + count > total:
            raise ValueError(f"view {name}: elements [{offset_elements}, {offset_elements + count}) outside {self.name}")
        base = self.view_of or self
        return LazyTensor(name, tuple(shape), self.dtype, lambda: None, self.part, self.onnx_type, view_of=base,
                          view_offset=self.view_offset + offset_elements * np.dtype(self.dtype).itemsize)

    def elem_type(self) -> int:
        return self.onnx_type if self.onnx_type is not None else helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))


@dataclass
class Graph:
    """A mutable graph under construction: nodes, lazy initializers, small constants, I/O, functions."""

    name: str = "gptoss"
    nodes: list[NodeProto] = field(default_factory=list)
    initializers: dict[str, LazyTensor] = field(default_factory=dict)
    constants: dict[str, TensorProto] = field(default_factory=dict)   # small, stored inline
    inputs: list[ValueInfoProto] = field(default_factory=list)
    outputs: list[ValueInfoProto] = field(default_factory=list)
    functions: dict[str, FunctionProto] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=lambda: {"": OPSET})
    # canonical checkpoint name -> array: lowering passes repack weights from it (lazily)
    source: Callable[[str], np.ndarray] | None = None
    # Plain facts about the model that the graph computes and that passes need but cannot read off the nodes
    # (e.g. "max_positions"); written into the ONNX file's metadata_props.
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ emit
    def node(self, op_type: str, inputs: Sequence[str], name: str, outputs: int | Sequence[str] = 1,
             domain: str = "", **attrs) -> list[str]:
        """Append a node named `name`; outputs default to `name/output_k`. Returns the output names."""
        if isinstance(outputs, int):
            outputs = [f"{name}/output_{k}" for k in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, domain=domain or None,
                                           **attrs))
        return list(outputs)

    def op(self, op_type: str, inputs: Sequence[str], name: str, domain: str = "", **attrs) -> str:
        """A single-output node; returns its output name."""
        return self.node(op_type, inputs, name, 1, domain, **attrs)[0]

    def const(self, value, dtype=np.int64) -> str:
        """A small deduplicated constant initializer (shape vectors, scalars)."""
        arr = np.asarray(value, dtype=dtype)
        key = f"/const/{arr.dtype.name}_{'x'.join(map(str, arr.shape)) or 's'}_" + "_".join(
            str(v) for v in arr.reshape(-1).tolist())
        key = key.replace("-", "m").replace(".", "p")
        if key not in self.constants:
            self.constants[key] = numpy_helper.from_array(arr, key)
        return key

    def named_const(self, name: str, value, dtype=np.float32) -> str:
        """A small constant with a fixed name, for values a later pass reads back (`constant_value`)."""
        if name in self.constants:
            raise ValueError(f"duplicate constant {name}")
        self.constants[name] = numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
        return name

    def constant_value(self, name: str) -> np.ndarray:
        """The value of constant `name` (a KeyError names it when the graph has none)."""
        if name not in self.constants:
            raise KeyError(f"graph {self.name!r} has no constant {name!r}")
        return numpy_helper.to_array(self.constants[name])

    def weight(self, tensor: LazyTensor) -> str:
        if tensor.name in self.initializers:
            raise ValueError(f"duplicate initializer {tensor.name}")
        self.initializers[tensor.name] = tensor
        return tensor.name

    def add_input(self, name: str, elem_type: int, shape: Sequence) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, elem_type: int, shape: Sequence) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def use_function(self, fn: FunctionProto) -> None:
        self.functions.setdefault(f"{fn.domain}::{fn.name}", fn)
        self.opsets.setdefault(fn.domain, GPTOSS_OPSET)

    # ------------------------------------------------------------- inspect
    def replace_node(self, old: NodeProto, new_nodes: Sequence[NodeProto]) -> None:
        """Put `new_nodes` where `old` stands (keeps the topological order)."""
        i = self.nodes.index(old)
        self.nodes[i:i + 1] = list(new_nodes)

    def input_names(self) -> list[str]:
        return [v.name for v in self.inputs]

    def ops(self) -> set[str]:
        """Every op of the graph as `domain.Op` (`Op` for the default domain)."""
        return {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in self.nodes}

    def nodes_of(self, op_type: str, domain: str = "") -> list[NodeProto]:
        return [n for n in self.nodes if n.op_type == op_type and (n.domain or "") == domain]

    def producer(self, output: str) -> NodeProto | None:
        return next((n for n in self.nodes if output in n.output), None)

    def unused_initializers(self) -> list[str]:
        used = consumed(self.nodes)
        return [name for name in self.initializers if name not in used]

    def drop_dead_nodes(self) -> None:
        """Remove nodes none of whose outputs is consumed or a graph output (left over by lowering)."""
        outputs = {o.name for o in self.outputs}
        while True:
            used = consumed(self.nodes) | outputs
            alive = [n for n in self.nodes if any(o in used for o in n.output)]
            if len(alive) == len(self.nodes):
                return
            self.nodes = alive

    def drop_unused(self) -> None:
        self.drop_dead_nodes()
        for name in self.unused_initializers():
            del self.initializers[name]
        used = consumed(self.nodes)
        self.constants = {k: v for k, v in self.constants.items() if k in used}
        used_domains = {n.domain or "" for n in walk(self.nodes)}
        self.functions = {k: f for k, f in self.functions.items()
                          if any(n.op_type == f.name and n.domain == f.domain for n in self.nodes)}
        self.opsets = {d: v for d, v in self.opsets.items() if d == "" or d in used_domains}


def walk(nodes: Sequence[NodeProto]):
    """Every node, and every node of their subgraphs (an If's branches), depth first."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)):
                yield from walk(sub.node)


def consumed(nodes: Sequence[NodeProto]) -> set[str]:
    """Names the nodes read, their subgraphs' outer-scope reads included."""
    return {i for n in walk(nodes) for i in n.input if i}


def attr_ref(name: str, attr_type: int, ref: str | None = None) -> AttributeProto:
    """An attribute of a function-body node that takes its value from the function's attribute `ref`."""
    return helper.make_attribute_ref(name, attr_type, ref_attr_name=ref or name)


INT, FLOAT = AttributeProto.INT, AttributeProto.FLOAT


def node_attributes(node: NodeProto) -> dict[str, Any]:
    """A node's attributes as plain Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
