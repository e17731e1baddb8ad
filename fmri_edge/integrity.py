"""A digest of an ONNX model's computation, written at export and checked when a model is opened.

``weights_sha256`` (an entry of the ONNX metadata, beside ``fmri_edge``) is the sha256 over every
top-level field of the ``ModelProto`` except its metadata: the graph (initializers, i.e. the
weights, and nodes), opset imports, model-local functions, producer and IR version. So metadata
can be updated without invalidating it, and any altered weight byte is caught.

It is computed from the file itself with a minimal protobuf wire-format walk (a few dozen
lines, no ``onnx`` package): the exporter and the runtime run the same code on the same bytes.
Fields are hashed in the order stored; ``onnx.save`` writes them in field-number order, so
loading and saving a model with onnx keeps its digest. It detects corruption and accidental or
naive edits; it is not a signature (whoever can edit the file can recompute it).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from fmri_edge.io import InputError

DIGEST_KEY = "weights_sha256"
METADATA_FIELD = 14          # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}
LENGTH_DELIMITED = 2

VERIFIED, UNVERIFIABLE, NOT_CHECKED = "verified", "not verifiable", "not checked"


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError(f"bad varint at byte {pos}")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if b < 0x80:
            return value, pos


def fields(buf) -> Iterator[tuple[int, int, int, int, int]]:
    """Top-level fields of a protobuf message: (field number, wire type, start of the field's
    bytes, start of its payload, end)."""
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {start}")
        if wire == 0:
            _, end = _varint(buf, pos)
        elif wire == 1:
            end = pos + 8
        elif wire == LENGTH_DELIMITED:
            length, pos = _varint(buf, pos)
            end = pos + length
        elif wire == 5:
            end = pos + 4
        else:  # 3/4: groups, never written by ONNX
            raise WireError(f"unsupported wire type {wire} at byte {start}")
        if end > n:
            raise WireError(f"field {number} at byte {start} runs past the end ({end:,} > {n:,} bytes)")
        yield number, wire, start, pos, end
        pos = end


def _string_entry(buf) -> tuple[str, str]:
    """A StringStringEntryProto → (key, value)."""
    got = {1: "", 2: ""}
    for number, wire, _, payload, end in fields(buf):
        if number in got and wire == LENGTH_DELIMITED:
            got[number] = bytes(buf[payload:end]).decode("utf-8", errors="replace")
    return got[1], got[2]


def inspect(buf) -> tuple[str, list[str]]:
    """(digest of everything but the metadata, the values stored under :data:`DIGEST_KEY`)."""
    h = hashlib.sha256()
    stored = []
    for number, wire, start, payload, end in fields(buf):
        if number == METADATA_FIELD and wire == LENGTH_DELIMITED:
            key, value = _string_entry(buf[payload:end])
            if key == DIGEST_KEY:
                stored.append(value)
        else:
            h.update(buf[start:end])
    return h.hexdigest(), stored


def _read(path: Path) -> bytes:
    """The file's bytes (not a memory map: a map cannot be closed while slices of it are alive in
    a traceback, a BufferError on malformed files; models are a few MB)."""
    data = path.read_bytes()
    if not data:
        raise WireError("empty file")
    return data


def weights_digest(path: str | Path) -> str:
    """The digest of an ONNX file as :func:`stamp` writes it."""
    return inspect(_read(Path(path)))[0]


def stamp(path: str | Path) -> str:
    """Write the digest into the ONNX file's metadata (replacing an earlier one), atomically;
    returns it. Only appends a metadata entry: nothing that the digest covers is rewritten."""
    path = Path(path)
    data = path.read_bytes()
    digest, _ = inspect(data)
    kept = bytearray()
    for number, wire, start, payload, end in fields(data):
        if not (number == METADATA_FIELD and wire == LENGTH_DELIMITED
                and _string_entry(data[payload:end])[0] == DIGEST_KEY):
            kept += data[start:end]
    kept += _entry(DIGEST_KEY, digest)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    with os.fdopen(fd, "wb") as f:
        f.write(kept)
    os.replace(tmp, path)
    return digest


def _entry(key: str, value: str) -> bytes:
    def delimited(number: int, payload: bytes) -> bytes:
        return _encode_varint(number << 3 | LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload
    return delimited(METADATA_FIELD, delimited(1, key.encode()) + delimited(2, value.encode()))


def _encode_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def check(path: str | Path, verify: bool = True) -> str:
    """Check an ONNX file against its stored digest: :data:`VERIFIED`, :data:`UNVERIFIABLE` (no
    digest stored: exported before digests were written) or :data:`NOT_CHECKED` (``verify=False``);
    raises :class:`~fmri_edge.io.InputError` when the file was altered."""
    if not verify:
        return NOT_CHECKED
    path = Path(path)
    try:
        got, stored = inspect(_read(path))
    except WireError as e:
        raise InputError(path, f"not a well-formed ONNX file ({e}); download or export it again") from None
    if not stored:
        return UNVERIFIABLE
    if len(set(stored)) > 1:
        raise InputError(path, f"{len(stored)} different {DIGEST_KEY} entries in its metadata; the file was "
                               "edited; export it again (or pass --no-verify if you edited it on purpose)")
    if got != stored[0].strip().lower():
        raise InputError(path, f"weights digest {got[:16]}… disagrees with the {DIGEST_KEY} written at export "
                               f"({stored[0][:16]}…): the weights or graph were altered after export (a bad copy, "
                               "a flipped block of bytes or a deliberate edit); download or export it again, or "
                               "pass --no-verify if you edited the model on purpose")
    return VERIFIED
