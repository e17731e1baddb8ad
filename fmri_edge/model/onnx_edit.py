"""Read an ONNX model and replace its initializers and metadata without the ``onnx`` package: a
minimal protobuf wire-format walk (numpy only), for the weights digest (:mod:`fmri_edge.model.integrity`)
and ``fmri-edge adapt`` (new defaults of graph inputs, new metadata). No node is ever built or changed.

An ONNX file is one ``ModelProto``. What is read and written here (field numbers from onnx.proto):

- ModelProto: 7 ``graph`` (GraphProto), 14 ``metadata_props`` (StringStringEntryProto: key 1, value 2);
- GraphProto: 5 ``initializer`` (TensorProto), 11 ``input``, 12 ``output`` (ValueInfoProto: name 1);
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
GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 5, 11, 12
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
    raw: memoryview | bytes  # the whole field: tag, length and payload (empty: re-encode payload)
    payload: memoryview | bytes  # length-delimited: the bytes inside; otherwise the value's bytes


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
            raise WireError(
                f"field {number} at byte {start} runs past the end ({end:,} > {n:,} bytes)"
            )
        yield Field(number, wire, buf[start:end], buf[pos:end])
        pos = end


def delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LENGTH_DELIMITED) + varint(len(payload)) + payload


def string(number: int, text: str) -> bytes:
    return delimited(number, text.encode())


def strings_of(buf, number: int) -> list[str]:
    return [
        bytes(f.payload).decode("utf-8", errors="replace")
        for f in fields(buf)
        if f.number == number and f.wire == LENGTH_DELIMITED
    ]


# ---- messages --------------------------------------------------------------------------------------


def tensor(name: str, value: np.ndarray) -> bytes:
    """A float32 TensorProto holding ``value`` (raw little-endian data)."""
    value = np.asarray(value, dtype="<f4")
    return (
        b"".join(varint(1 << 3) + varint(int(d)) for d in value.shape)
        + varint(2 << 3)
        + varint(FLOAT)
        + string(8, name)
        + delimited(9, value.tobytes())
    )


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


class ModelProto:
    """An ONNX ModelProto as its top-level fields, with the edits an adaptation needs: replace
    initializers (the defaults of graph inputs), set metadata entries."""

    def __init__(self, data: bytes):
        self.fields = list(fields(memoryview(data)))
        graphs = [f for f in self.fields if f.number == MODEL_GRAPH and f.wire == LENGTH_DELIMITED]
        if len(graphs) != 1:
            raise WireError(f"{len(graphs)} graphs in the model, expected 1")
        self.graph = list(fields(graphs[0].payload))

    @classmethod
    def load(cls, path: str | Path) -> "ModelProto":
        return cls(Path(path).read_bytes())

    # -- reading
    def metadata(self) -> dict[str, str]:
        return dict(read_entry(f.payload) for f in self.fields if f.number == MODEL_METADATA)

    def graph_names(self, number: int) -> list[str]:
        """Names of the graph's inputs (11), outputs (12) or value infos (13)."""
        return [strings_of(f.payload, 1)[0] for f in self.graph if f.number == number]

    def initializer(self, name: str) -> np.ndarray | None:
        for f in self.graph:
            if f.number == GRAPH_INITIALIZER and tensor_name(f.payload) == name:
                return read_tensor(f.payload)[1]
        return None

    # -- editing
    def replace_initializer(self, name: str, value: np.ndarray) -> None:
        """Give an existing initializer (e.g. a graph input's default) a new float32 value."""
        old = [
            f
            for f in self.graph
            if f.number == GRAPH_INITIALIZER and tensor_name(f.payload) == name
        ]
        if len(old) != 1:
            raise WireError(f"{len(old)} initializers named {name!r}, expected 1")
        shape = read_tensor(old[0].payload)[1].shape
        if tuple(np.shape(value)) != shape:
            raise WireError(f"initializer {name!r} has shape {shape}, got {np.shape(value)}")
        new = Field(GRAPH_INITIALIZER, LENGTH_DELIMITED, b"", tensor(name, value))
        self.graph = [new if f is old[0] else f for f in self.graph]

    def set_metadata(self, key: str, value: str | None) -> None:
        """Replace (or, with None, remove) a metadata entry."""
        kept = [
            f
            for f in self.fields
            if not (f.number == MODEL_METADATA and read_entry(f.payload)[0] == key)
        ]
        if value is not None:
            kept.append(next(fields(metadata_entry(key, value))))
        self.fields = kept

    # -- writing
    def to_bytes(self) -> bytes:
        """The model, every field in stored order."""
        graph = b"".join(f.raw if f.raw else delimited(f.number, f.payload) for f in self.graph)
        return b"".join(
            delimited(MODEL_GRAPH, graph) if f.number == MODEL_GRAPH else f.raw for f in self.fields
        )

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file beside ``path``, renamed when complete)."""
        with replace_atomically(path, binary=True) as f:
            f.write(self.to_bytes())
