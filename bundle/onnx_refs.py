"""The files an ONNX graph file makes ONNX Runtime read besides itself, found without onnx or protobuf.

Two kinds of reference, both paths relative to the graph file's folder:

    external data   a TensorProto with `external_data` {"location": ...}: initializers, sparse initializers, and
                    tensors inside attributes (Constant nodes), in the main graph, subgraphs and functions
    EP context      an `EPContext` node with `embed_mode` 0: its `ep_cache_context` attribute names the binary the
                    provider compiled ahead of time (`*_qnn.bin`, an OpenVINO blob); with embed_mode 1 (the op's
                    default) the attribute holds the binary itself

The graph is read as protobuf wire format (onnx.proto3's field numbers, below) over a memory map: only the messages
that can hold a reference are descended into, every other field (raw tensor bytes included) is skipped unread.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError

# onnx.proto3 field numbers of the messages on the way to a reference.
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)                                   # TrainingInfoProto.initialization, .algorithm
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_OP_TYPE, _NODE_ATTRIBUTE = 4, 5
_ATTR_NAME, _ATTR_I, _ATTR_S, _ATTR_T, _ATTR_G = 1, 3, 4, 5, 6
_ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA = 8, 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_MAX_DEPTH = 100                                            # protobuf's own recursion limit

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class Reference:
    location: str       # as written in the graph: relative to the graph file's folder
    what: str           # who names it: "initializer 'x'", "EPContext node"


class _Malformed(Exception):
    pass


def referenced_files(graph_file: Path) -> list[Reference]:
    """The external files `graph_file` names (see the module docstring); BundleError when it is not a readable
    ONNX model."""
    graph_file = Path(graph_file)
    try:
        with open(graph_file, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise BundleError(f"{graph_file}: empty file, not an ONNX graph")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                problem, refs = _scan(mm)
    except OSError as e:
        raise BundleError(f"{graph_file}: cannot read it ({e.strerror or e})") from None
    if problem is not None:
        raise BundleError(f"{graph_file}: not a readable ONNX graph ({problem})")
    return refs


def _scan(mm: mmap.mmap) -> tuple[str | None, list[Reference]]:
    """(None, references) or (what is malformed, []). Returns rather than raises, so that no traceback keeps a view
    of the memory map alive when it closes."""
    refs: list[Reference] = []
    try:
        _model(memoryview(mm), refs)
    except _Malformed as e:
        return str(e), []
    return None, refs


# ---------------------------------------------------------------------------------------------- wire format

def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    for j in range(i, min(i + 10, len(buf))):
        byte = buf[j]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, j + 1
        shift += 7
    raise _Malformed(f"a varint at byte {i} is cut off or too long")


def _fields(buf: memoryview):
    """(field number, wire type, value) of each field of one message: an int for varints, a memoryview for
    length-delimited fields, None for fixed-size ones."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {i}")
        if wire == _VARINT:
            value, i = _varint(buf, i)
        elif wire == _BYTES:
            length, i = _varint(buf, i)
            if i + length > n:
                raise _Malformed(f"field {number} runs {i + length - n} bytes past its message")
            value, i = buf[i:i + length], i + length
        elif wire in (_FIXED64, _FIXED32):
            value, i = None, i + (8 if wire == _FIXED64 else 4)
            if i > n:
                raise _Malformed(f"field {number} is cut off")
        else:
            raise _Malformed(f"wire type {wire} (field {number}) is not used by ONNX")
        yield number, wire, value


def _messages(buf: memoryview, number: int):
    for n, wire, value in _fields(buf):
        if n == number and wire == _BYTES:
            yield value


def _text(value: memoryview) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a string field is not UTF-8") from None


# ------------------------------------------------------------------------------------------------- messages

def _model(buf: memoryview, refs: list[Reference]) -> None:
    for n, wire, value in _fields(buf):
        if wire != _BYTES:
            continue
        if n == _MODEL_GRAPH:
            _graph(value, refs, 1)
        elif n == _MODEL_FUNCTIONS:
            for node in _messages(value, _FUNCTION_NODE):
                _node(node, refs, 1)
        elif n == _MODEL_TRAINING:
            for number in _TRAINING_GRAPHS:
                for g in _messages(value, number):
                    _graph(g, refs, 1)


def _graph(buf: memoryview, refs: list[Reference], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Malformed(f"subgraphs nested more than {_MAX_DEPTH} deep")
    for n, wire, value in _fields(buf):
        if wire != _BYTES:
            continue
        if n == _GRAPH_NODE:
            _node(value, refs, depth)
        elif n == _GRAPH_INITIALIZER:
            _tensor(value, refs, "initializer")
        elif n == _GRAPH_SPARSE:
            _sparse(value, refs, "sparse initializer")


def _node(buf: memoryview, refs: list[Reference], depth: int) -> None:
    op_type, attributes = "", []
    for n, wire, value in _fields(buf):
        if wire == _BYTES and n == _NODE_OP_TYPE:
            op_type = _text(value)
        elif wire == _BYTES and n == _NODE_ATTRIBUTE:
            attributes.append(value)
    context = {"embed_mode": 1}                             # the EPContext op's default: the binary is embedded
    for attribute in attributes:
        _attribute(attribute, refs, depth, op_type, context)
    if op_type == "EPContext" and context["embed_mode"] == 0 and "ep_cache_context" in context:
        refs.append(Reference(_text(context["ep_cache_context"]), "EPContext node's ep_cache_context"))


def _attribute(buf: memoryview, refs: list[Reference], depth: int, op_type: str, context: dict) -> None:
    name, number, string = "", None, None
    for n, wire, value in _fields(buf):
        if wire == _BYTES:
            if n == _ATTR_NAME:
                name = _text(value)
            elif n == _ATTR_S:
                string = value
            elif n in (_ATTR_T, _ATTR_TENSORS):
                _tensor(value, refs, "a node attribute's tensor")
            elif n in (_ATTR_G, _ATTR_GRAPHS):
                _graph(value, refs, depth + 1)
            elif n in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(value, refs, "a node attribute's sparse tensor")
        elif wire == _VARINT and n == _ATTR_I:
            number = value
    if op_type == "EPContext":
        if name == "embed_mode" and number is not None:
            context["embed_mode"] = number
        elif name == "ep_cache_context" and string is not None:
            context["ep_cache_context"] = string


def _tensor(buf: memoryview, refs: list[Reference], what: str) -> None:
    name, location = "", None
    for n, wire, value in _fields(buf):
        if wire != _BYTES:
            continue
        if n == _TENSOR_NAME:
            name = _text(value)
        elif n == _TENSOR_EXTERNAL_DATA:
            entry = dict(_entry(value))
            if "location" in entry:
                location = _text(entry["location"])
    if location is not None:
        refs.append(Reference(location, f"{what} {name!r}"))


def _entry(buf: memoryview):
    key = value = None
    for n, wire, v in _fields(buf):
        if wire == _BYTES and n == _ENTRY_KEY:
            key = v
        elif wire == _BYTES and n == _ENTRY_VALUE:
            value = v
    if key is not None and value is not None:
        yield _text(key), value


def _sparse(buf: memoryview, refs: list[Reference], what: str) -> None:
    for n, wire, value in _fields(buf):
        if wire == _BYTES and n in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(value, refs, what)
