"""A digest of an ONNX model's computation, written at export and checked when a model is opened.

``weights_sha256`` (an entry of the ONNX metadata, beside ``fmri_edge``) is the sha256 over every
top-level field of the ``ModelProto`` except its metadata: the graph (initializers, i.e. the
weights, and nodes), opset imports, model-local functions, producer and IR version. So metadata
can be updated without invalidating it, and any altered weight byte is caught.

It is computed from the file itself with the protobuf wire-format walk of
:mod:`fmri_edge.model.onnx_edit` (no ``onnx`` package): the exporter and the runtime run the same code on the same bytes.
Fields are hashed in the order stored; ``onnx.save`` writes them in field-number order, so
loading and saving a model with onnx keeps its digest. It detects corruption and accidental or
naive edits; it is not a signature (whoever can edit the file can recompute it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fmri_edge.files import replace_atomically
from fmri_edge.errors import InputError
from fmri_edge.model.onnx_edit import (
    LENGTH_DELIMITED,
    MODEL_METADATA,
    WireError,
    fields,
    metadata_entry,
    read_entry,
)

DIGEST_KEY = "weights_sha256"
METADATA_FIELD = MODEL_METADATA  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}

VERIFIED, UNVERIFIABLE, NOT_CHECKED = "verified", "not verifiable", "not checked"


def inspect(buf) -> tuple[str, list[str]]:
    """(digest of everything but the metadata, the values stored under :data:`DIGEST_KEY`)."""
    h = hashlib.sha256()
    stored = []
    for f in fields(buf):
        if f.number == METADATA_FIELD and f.wire == LENGTH_DELIMITED:
            key, value = read_entry(f.payload)
            if key == DIGEST_KEY:
                stored.append(value)
        else:
            h.update(f.raw)
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
    for f in fields(data):
        if not (
            f.number == METADATA_FIELD
            and f.wire == LENGTH_DELIMITED
            and read_entry(f.payload)[0] == DIGEST_KEY
        ):
            kept += f.raw
    kept += metadata_entry(DIGEST_KEY, digest)
    with replace_atomically(path, binary=True) as f:
        f.write(kept)
    return digest


def check(path: str | Path, verify: bool = True) -> str:
    """Check an ONNX file against its stored digest: :data:`VERIFIED`, :data:`UNVERIFIABLE` (no
    digest stored: exported before digests were written) or :data:`NOT_CHECKED` (``verify=False``);
    raises :class:`~fmri_edge.data.InputError` when the file was altered."""
    if not verify:
        return NOT_CHECKED
    path = Path(path)
    try:
        got, stored = inspect(_read(path))
    except WireError as e:
        raise InputError(
            path, f"not a well-formed ONNX file ({e}); download or export it again"
        ) from None
    if not stored:
        return UNVERIFIABLE
    if len(set(stored)) > 1:
        raise InputError(
            path,
            f"{len(stored)} different {DIGEST_KEY} entries in its metadata; the file was "
            "edited; export it again (or pass --no-verify if you edited it on purpose)",
        )
    if got != stored[0].strip().lower():
        raise InputError(
            path,
            f"weights digest {got[:16]}… disagrees with the {DIGEST_KEY} written at export "
            f"({stored[0][:16]}…): the weights or graph were altered after export (a bad copy, "
            "a flipped block of bytes or a deliberate edit); download or export it again, or "
            "pass --no-verify if you edited the model on purpose",
        )
    return VERIFIED
