"""Extend an ONNX model without the ``onnx`` package: a minimal protobuf wire-format reader and
writer for the few messages an edit touches (numpy only).

An ONNX file is one ``ModelProto``. What is read and written here (field numbers from onnx.proto):

- ModelProto: 7 ``graph`` (GraphProto), 14 ``metadata_props`` (StringStringEntryProto: key 1, value 2);
- GraphProto: 1 ``node`` (NodeProto), 5 ``initializer`` (TensorProto), 11 ``input``, 12 ``output``,
  13 ``value_info`` (ValueInfoProto: name 1);
- NodeProto: 1 ``input``, 2 ``output`` (tensor names), 3 ``name``, 4 ``op_type``;
- TensorProto: 1 ``dims``, 2 ``data_type`` (1 = float), 8 ``name``, 9 ``raw_data`` (little endian).

Every other field is copied byte for byte, so an edit changes only what it says it changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmri_edge.files import replace_atomically

LENGTH_DELIMITED = 2
MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE = 1, 2, 3, 4
FLOAT = 1


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError(f"bad varint at byte {pos}")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if b < 0x80:
            return value, pos


def varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    raw: memoryview | bytes       # the whole field: tag, length and payload (empty: re-encode payload)
    payload: memoryview | bytes   # length-delimited: the bytes inside; otherwise the value's bytes


def fields(buf) -> Iterator[Field]:
    """The top-level fields of a protobuf message, in stored order. Views into ``buf``, no copies:
    a 70 MB model is walked without copying its weights."""
    buf = buf if isinstance(buf, memoryview) else memoryview(buf)
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {start}")
        if wire == 0:
            _, end = read_varint(buf, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos)
            end = pos + length
        elif wire == 5:
            end = pos + 4
        else:  # 3/4: groups, never written by ONNX
            raise WireError(f"unsupported wire type {wire} at byte {start}")
        if end > n:
            raise WireError(f"field {number} at byte {start} runs past the end ({end:,} > {n:,} bytes)")
        yield Field(number, wire, buf[start:end], buf[pos:end])
        pos = end


def delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LENGTH_DELIMITED) + varint(len(payload)) + payload


def string(number: int, text: str) -> bytes:
    return delimited(number, text.encode())


def strings_of(buf, number: int) -> list[str]:
    return [bytes(f.payload).decode("utf-8", errors="replace") for f in fields(buf)
            if f.number == number and f.wire == LENGTH_DELIMITED]


# ---- messages --------------------------------------------------------------------------------------

def node(op_type: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    """A NodeProto of the default domain without attributes (MatMul, Add, Mul, Div, Exp, Log, Max)."""
    return (b"".join(string(NODE_INPUT, i) for i in inputs) + b"".join(string(NODE_OUTPUT, o) for o in outputs)
            + string(NODE_NAME, name) + string(NODE_OP_TYPE, op_type))


def tensor(name: str, value: np.ndarray) -> bytes:
    """A float32 TensorProto holding ``value`` (raw little-endian data)."""
    value = np.asarray(value, dtype="<f4")
    return (b"".join(varint(1 << 3) + varint(int(d)) for d in value.shape) + varint(2 << 3) + varint(FLOAT)
            + string(8, name) + delimited(9, value.tobytes()))


def read_tensor(buf: bytes) -> tuple[str, np.ndarray | None]:
    """(name, value) of a TensorProto; value None unless it is float32 with ``raw_data``."""
    dims, dtype, name, raw = [], None, "", None
    for f in fields(buf):
        if f.number == 1 and f.wire == 0:
            dims.append(read_varint(f.payload, 0)[0])
        elif f.number == 1 and f.wire == LENGTH_DELIMITED:  # packed dims
            pos = 0
            while pos < len(f.payload):
                d, pos = read_varint(f.payload, pos)
                dims.append(d)
        elif f.number == 2 and f.wire == 0:
            dtype = read_varint(f.payload, 0)[0]
        elif f.number == 8:
            name = bytes(f.payload).decode("utf-8", errors="replace")
        elif f.number == 9:
            raw = f.payload
    if dtype != FLOAT or raw is None:
        return name, None
    return name, np.frombuffer(raw, dtype="<f4").reshape(dims).astype(np.float32)


def tensor_name(buf: bytes) -> str:
    """A TensorProto's name, without decoding its data."""
    names = strings_of(buf, 8)
    return names[0] if names else ""


def metadata_entry(key: str, value: str) -> bytes:
    return delimited(MODEL_METADATA, string(1, key) + string(2, value))


def read_entry(buf: bytes) -> tuple[str, str]:
    got = {1: "", 2: ""}
    for f in fields(buf):
        if f.number in got and f.wire == LENGTH_DELIMITED:
            got[f.number] = bytes(f.payload).decode("utf-8", errors="replace")
    return got[1], got[2]


# ---- a model ---------------------------------------------------------------------------------------

class Model:
    """An ONNX ModelProto as its top-level fields, with the edits an adaptation needs:
    rename tensors in the main graph, append nodes and initializers, set metadata entries."""

    def __init__(self, data: bytes):
        self.fields = list(fields(memoryview(data)))
        graphs = [f for f in self.fields if f.number == MODEL_GRAPH and f.wire == LENGTH_DELIMITED]
        if len(graphs) != 1:
            raise WireError(f"{len(graphs)} graphs in the model, expected 1")
        self.graph = list(fields(graphs[0].payload))

    @classmethod
    def load(cls, path: str | Path) -> "Model":
        return cls(Path(path).read_bytes())

    # -- reading
    def metadata(self) -> dict[str, str]:
        return dict(read_entry(f.payload) for f in self.fields if f.number == MODEL_METADATA)

    def graph_names(self, number: int) -> list[str]:
        """Names of the graph's inputs (11), outputs (12) or value infos (13)."""
        return [strings_of(f.payload, 1)[0] for f in self.graph if f.number == number]

    def initializers(self) -> dict[str, np.ndarray | None]:
        return dict(read_tensor(f.payload) for f in self.graph if f.number == GRAPH_INITIALIZER)

    def mentions(self, text: str) -> bool:
        """Whether any node or initializer name of the main graph contains ``text`` (a byte search
        over node messages, and over initializer names only)."""
        needle = text.encode()
        return any(needle in bytes(f.payload) for f in self.graph if f.number == GRAPH_NODE) or \
            any(text in tensor_name(f.payload) for f in self.graph if f.number == GRAPH_INITIALIZER)

    def producer(self, tensor: str) -> tuple[str, list[str]] | None:
        """(op_type, inputs) of the main-graph node that outputs ``tensor``; None if none does."""
        needle = tensor.encode()
        for f in self.graph:
            if f.number == GRAPH_NODE and needle in bytes(f.payload) and tensor in strings_of(f.payload, NODE_OUTPUT):
                op = strings_of(f.payload, NODE_OP_TYPE)
                return (op[0] if op else ""), strings_of(f.payload, NODE_INPUT)
        return None

    def initializer(self, name: str) -> np.ndarray | None:
        for f in self.graph:
            if f.number == GRAPH_INITIALIZER and tensor_name(f.payload) == name:
                return read_tensor(f.payload)[1]
        return None

    # -- editing
    def rename(self, old: str, new: str) -> int:
        """Rename a tensor wherever the main graph's nodes and value infos mention it (not the graph
        outputs: a new node is expected to produce ``old`` again); returns how many places changed."""
        changed, graph, needle = 0, [], old.encode()
        for f in self.graph:
            if f.number == GRAPH_NODE and needle in bytes(f.payload):  # cheap filter, then parse
                parts = []
                for g in fields(f.payload):
                    if g.number in (NODE_INPUT, NODE_OUTPUT) and g.payload == old.encode():
                        parts.append(string(g.number, new))
                        changed += 1
                    else:
                        parts.append(g.raw)
                f = Field(f.number, f.wire, b"", b"".join(parts))
            elif f.number == GRAPH_VALUE_INFO and strings_of(f.payload, 1) == [old]:
                f = Field(f.number, f.wire, b"", b"".join(
                    string(1, new) if g.number == 1 else g.raw for g in fields(f.payload)))
                changed += 1
            graph.append(f)
        self.graph = graph
        return changed

    def add_node(self, op_type: str, inputs: list[str], outputs: list[str], name: str) -> None:
        self.graph.append(Field(GRAPH_NODE, LENGTH_DELIMITED, b"", node(op_type, inputs, outputs, name)))

    def add_initializer(self, name: str, value: np.ndarray) -> None:
        self.graph.append(Field(GRAPH_INITIALIZER, LENGTH_DELIMITED, b"", tensor(name, value)))

    def replace_initializer(self, name: str, value: np.ndarray) -> None:
        """Give an existing initializer (e.g. a graph input's default) a new float32 value."""
        old = [f for f in self.graph if f.number == GRAPH_INITIALIZER and tensor_name(f.payload) == name]
        if len(old) != 1:
            raise WireError(f"{len(old)} initializers named {name!r}, expected 1")
        shape = read_tensor(old[0].payload)[1].shape
        if tuple(np.shape(value)) != shape:
            raise WireError(f"initializer {name!r} has shape {shape}, got {np.shape(value)}")
        self.graph = [f for f in self.graph if f is not old[0]]
        self.add_initializer(name, value)

    def set_metadata(self, key: str, value: str | None) -> None:
        """Replace (or, with None, remove) a metadata entry."""
        kept = [f for f in self.fields if not (f.number == MODEL_METADATA and read_entry(f.payload)[0] == key)]
        if value is not None:
            kept.append(next(fields(metadata_entry(key, value))))
        self.fields = kept

    # -- writing
    def to_bytes(self) -> bytes:
        """The model; nodes are kept in stored order (new ones last: ONNX wants them topologically
        sorted, and every new node only reads tensors produced before it)."""
        graph = b"".join(f.raw if f.raw else delimited(f.number, f.payload) for f in self.graph)
        return b"".join(delimited(MODEL_GRAPH, graph) if f.number == MODEL_GRAPH else f.raw for f in self.fields)

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file beside ``path``, renamed when complete)."""
        with replace_atomically(path, binary=True) as f:
            f.write(self.to_bytes())
