"""The safe reader of ``.npy`` and ``.npz`` files: every header field checked before anything is
mapped, nothing ever unpickled (``np.load`` is never called). The array is built from what was
checked: memory-mapped for ``.npy``; an ``.npz`` member above :data:`NPZ_IN_MEMORY` is unpacked in
chunks to a temporary file and mapped.
"""

from __future__ import annotations

import ast
import math
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError

ARRAY_SUFFIXES = (".npy", ".npz")
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
PICKLE_PROTO = b"\x80"
NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
HEADER_KEYS = {"descr", "fortran_order", "shape"}
MAX_HEADER_BYTES = 10_000  # numpy's own limit; a numeric array's header is < 200 bytes
MAX_DIMS = 32
CHUNK_BYTES = 16 << 20
NPZ_IN_MEMORY = (
    256 << 20
)  # .npz members larger than this are unpacked to a temporary file and mapped


def read_array(path: str | Path, key: str = "data") -> np.ndarray:
    """Read one array from .npy (memory-mapped) or .npz without ever unpickling.

    The header is parsed and every field checked (:func:`read_header`) before any data is read or
    mapped; the array is then built from exactly what was checked. A large ``.npz`` member is
    unpacked in chunks to an unlinked temporary file and memory-mapped, so memory stays bounded.
    """
    path = Path(path)
    if path.suffix not in ARRAY_SUFFIXES:
        if path.name.lower().endswith(
            (".nii", ".nii.gz", ".dcm")
        ):  # a scan, not trials: say how to get trials
            raise InputError(
                path,
                "an image, not trials: cut its trials first with fmri-edge extract (e.g. "
                "`fmri-edge extract BOLD.nii.gz --atlas ATLAS.nii.gz --events EVENTS.tsv --out "
                "trials.npz`, or a BIDS folder), then predict the trials",
            )
        raise InputError(
            path,
            f"not a .npy or .npz file (got {path.suffix or 'no suffix'!r}); "
            "save trials with numpy.save or numpy.savez(..., data=trials)",
        )
    if not path.is_file():
        raise InputError(path, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, "empty file (0 bytes); copy or export it again")
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        return _read_npz(path, key, head) if path.suffix == ".npz" else _read_npy(path, head, size)
    except InputError:
        raise
    except zipfile.BadZipFile as e:
        raise InputError(
            path, f"truncated or corrupt zip archive ({_short(e)}); copy or export it again"
        ) from None
    except (NotImplementedError, RuntimeError) as e:  # zipfile: encrypted or unsupported entries
        raise InputError(
            path,
            f"unreadable zip archive ({_short(e)}); save the trials with "
            "numpy.savez(file, data=trials)",
        ) from None
    except MemoryError:
        raise InputError(
            path, "too large to load into memory; save it as .npy, which is streamed"
        ) from None
    except (OSError, EOFError, ValueError, zlib.error, KeyError) as e:
        raise InputError(
            path, f"corrupt or truncated ({_short(e)}); copy or export it again"
        ) from None


@dataclass(frozen=True)
class Header:
    """A checked ``.npy`` header: numeric dtype, non-negative shape, where the data start."""

    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    offset: int  # bytes before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_header(path: Path, f, where: str = "") -> Header:
    """Parse and check a ``.npy`` header from a stream positioned at its magic string, field by
    field (magic and version, header length, the literal — parsed by ``ast.literal_eval``, never
    evaluated —, its keys, ``descr``, ``fortran_order``, ``shape``); reads nothing after it.
    ``where`` names the .npz member in messages."""

    def bad(problem: str) -> InputError:
        return InputError(
            path, f"{where}corrupt or truncated .npy header: {problem}; copy or export it again"
        )

    magic = f.read(8)
    if len(magic) < 8 or not magic.startswith(NPY_MAGIC):
        raise bad(f"it starts with {magic[:8]!r}, not the .npy magic string")
    version = (magic[6], magic[7])
    if version not in NPY_VERSIONS:
        raise InputError(
            path,
            f"{where}unsupported .npy format version {version[0]}.{version[1]} (numpy writes 1.0, "
            "2.0 or 3.0); save the array again with numpy.save",
        )
    width = 2 if version == (1, 0) else 4
    raw_len = f.read(width)
    if len(raw_len) < width:
        raise bad("its length field is cut off")
    length = int.from_bytes(raw_len, "little")
    if length > MAX_HEADER_BYTES:
        raise bad(
            f"header length {length:,} bytes, more than any numeric array needs (≤ {MAX_HEADER_BYTES:,})"
        )
    text = f.read(length)
    if len(text) < length:
        raise bad(f"{len(text):,} of its {length:,} bytes")
    try:
        literal = ast.literal_eval(text.decode("utf-8" if version == (3, 0) else "latin1"))
    except (
        ValueError,
        SyntaxError,
        TypeError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
    ) as e:
        raise bad(f"not a Python literal ({_short(e)[:60]})") from None
    if not isinstance(literal, dict):
        raise bad(f"a {type(literal).__name__}, expected a dict")
    if set(literal) != HEADER_KEYS:
        raise bad(f"keys {sorted(map(str, literal))}, expected {sorted(HEADER_KEYS)}")
    fortran, shape, descr = literal["fortran_order"], literal["shape"], literal["descr"]
    if not isinstance(fortran, bool):
        raise bad(f"fortran_order {fortran!r}, expected True or False")
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_DIMS
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise bad(
            f"shape {_clip(shape)}, expected a tuple of at most {MAX_DIMS} non-negative whole numbers"
        )
    if not isinstance(descr, str):
        raise InputError(
            path,
            f"{where}not numeric: expected BOLD signal as floats or integers, got a structured "
            f"dtype ({_clip(descr)}); save a plain numeric array",
        )
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError, OverflowError, MemoryError) as e:
        raise bad(f"descr {_clip(descr)} is not a dtype ({_short(e)[:60]})") from None
    _refuse_objects(path, dtype)
    if dtype.shape or dtype.names:
        raise InputError(
            path,
            f"{where}not numeric: expected BOLD signal as floats or integers, got a sub-array or "
            f"structured dtype {_clip(descr)}; save a plain numeric array",
        )
    _check_dtype(dtype, path)
    header = Header(shape, dtype, fortran, 8 + width + length)
    if header.nbytes >= 2**63:
        raise InputError(
            path,
            f"{where}its header describes an impossible array: shape {_clip(shape)} of {dtype} "
            f"would need {header.nbytes:.3g} bytes; copy or export it again",
        )
    return header


def _read_npy(path: Path, head: bytes, size: int) -> np.ndarray:
    if not head.startswith(NPY_MAGIC):
        raise InputError(path, _not_a("a .npy file", head, ".npy"))
    with open(path, "rb") as f:
        h = read_header(path, f)
    _check_size(path, h, size)
    if h.nbytes == 0:  # nothing to map
        return np.zeros(h.shape, h.dtype)
    return np.memmap(path, h.dtype, "r", h.offset, h.shape, "F" if h.fortran_order else "C")


def _read_npz(path: Path, key: str, head: bytes) -> np.ndarray:
    if not head.startswith(ZIP_MAGICS):
        raise InputError(path, _not_a("an .npz (zip) archive", head, ".npz"))
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        member = key if key in names else f"{key}.npy"
        if member not in names:
            found = [n[:-4] if n.endswith(".npy") else n for n in names]
            raise InputError(
                path,
                f"no array named {key!r} in .npz (found: {', '.join(found) or 'none'}); "
                f"save it with numpy.savez(file, {key}=array)",
            )
        size = z.getinfo(member).file_size
        with z.open(member) as m:
            h = read_header(path, m, f"member {member!r}: ")
            _check_size(path, h, size, member)
            if h.nbytes > NPZ_IN_MEMORY:
                return _spilled(m, h)
            buf = np.empty(h.nbytes, np.uint8)
            _read_into(m, memoryview(buf), path, member)
    return buf.view(h.dtype).reshape(h.shape, order="F" if h.fortran_order else "C")


def _check_size(path: Path, h: Header, size: int, member: str | None = None) -> None:
    """The file (or .npz member) holds exactly the bytes its header describes."""
    need = h.offset + h.nbytes
    if size < need:
        raise InputError(
            path,
            f"truncated: {f'member {member!r}' if member else 'its header'} promises shape "
            f"{h.shape} {h.dtype} ({need:,} bytes), "
            + (f"holds {size:,}" if member else f"the file has {size:,} bytes")
            + "; copy it again",
        )
    if size > need:
        raise InputError(
            path,
            (f"member {member!r} holds " if member else "") + f"{size - need:,} bytes more than "
            f"its header describes (shape {h.shape} {h.dtype}, {need:,} bytes): several arrays "
            "appended to one file, or a corrupt copy; save one array per file with numpy.save",
        )


def _read_into(stream, view: memoryview, path: Path, member: str) -> None:
    pos = 0
    while pos < len(view):
        n = stream.readinto(view[pos : pos + CHUNK_BYTES])
        if not n:
            raise InputError(
                path,
                f"truncated: member {member!r} ends after {pos:,} of its {len(view):,} data "
                "bytes; copy it again",
            )
        pos += n


def _spilled(stream, h: Header) -> np.ndarray:
    """A large .npz member, unpacked chunk by chunk to an unlinked temporary file, memory-mapped."""
    with tempfile.TemporaryFile(prefix="fmri-edge-") as tmp:
        left = h.nbytes
        while left:
            block = stream.read(min(CHUNK_BYTES, left))
            if not block:
                raise EOFError("member ends early")
            tmp.write(block)
            left -= len(block)
        tmp.flush()
        return np.memmap(tmp, h.dtype, "r", 0, h.shape, "F" if h.fortran_order else "C")


def _clip(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse_objects(path: Path, dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise InputError(
            path,
            f"holds Python objects (dtype {dtype}), which only unpickling could read; refused "
            "without loading (data files are never unpickled); save a numeric array",
        )


def _not_a(expected: str, head: bytes, suffix: str) -> str:
    """What a file with the wrong magic bytes actually is, and what to do about it."""
    save = "numpy.save(file, trials)" if suffix == ".npy" else "numpy.savez(file, data=trials)"
    if head.startswith(PICKLE_PROTO):
        return (
            f"not {expected} but a Python pickle; refused without loading (data files are never "
            f"unpickled); save the trials with {save}"
        )
    if head.startswith(NPY_MAGIC):
        return f"not {expected} but a .npy file; rename it to .npy"
    if head.startswith(ZIP_MAGICS):
        return f"not {expected} but a zip archive (.npz); rename it to .npz"
    return f"not {expected} (it starts with {head!r}); save the trials with {save}"


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def _check_dtype(dtype: np.dtype, path) -> None:
    if dtype.hasobject:
        raise InputError(
            path, f"holds Python objects (dtype {dtype}); refused (data files are never unpickled)"
        )
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(
            path,
            f"complex values (dtype {dtype}); expected real BOLD signal, e.g. numpy.abs or .real",
        )
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise InputError(
            path, f"not numeric: expected BOLD signal as floats or integers, got dtype {dtype}"
        )
