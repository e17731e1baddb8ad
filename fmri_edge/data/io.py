"""Find and load trials and labels safely: data files are data, nothing is ever unpickled.

Accepted inputs
- ``.npy`` of shape (N, n_regions, n_times) or (n_regions, n_times);
- ``.npz`` holding such an array under the key ``data``;
- the ICBHI layout: a subject folder holding ``fMRI_data.npz`` (and maybe ``labels.npz``),
  or a folder of such subject folders.

Any real numeric dtype, byte order and memory layout is accepted and converted to native,
C-ordered float32. Headers are read and checked before any data: object (pickled) arrays are
refused without being loaded, truncated files are named as such.

Every problem raises :class:`InputError` with a one-line message naming the file (and the trial,
where one trial is at fault): what was expected, what was found, and what to do.
"""

from __future__ import annotations

import ast
import math
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmri_edge.errors import InputError

DATA_FILE = "fMRI_data.npz"
LABEL_FILE = "labels.npz"
ARRAY_SUFFIXES = (".npy", ".npz")
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
PICKLE_PROTO = b"\x80"
NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))
HEADER_KEYS = {"descr", "fortran_order", "shape"}
MAX_HEADER_BYTES = 10_000  # numpy's own limit; a numeric array's header is < 200 bytes
MAX_DIMS = 32
NPZ_IN_MEMORY = (
    256 << 20
)  # .npz members larger than this are unpacked to a temporary file and mapped
CHUNK_BYTES = 16 << 20
NAN_POLICIES = ("skip", "error", "interpolate")
IGNORED = "ignored"  # the outcome of a note about something deliberately not read
MAX_DEPTH = 32
MAX_INTERPOLATED = 0.5  # --nan interpolate fills at most this fraction of a region's seconds
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Region counts of common atlases, to say where a wrong-sized file probably comes from.
KNOWN_ATLASES = {
    90: "AAL-90",
    100: "Schaefer-100",
    116: "AAL-116",
    160: "Dosenbach-160",
    200: "Schaefer-200 or Craddock-200",
    264: "Power-264",
    268: "Shen-268",
    333: "Gordon-333",
    360: "Glasser-360 (HCP-MMP)",
    400: "Schaefer-400",
}


@dataclass(frozen=True)
class Source:
    """One unit of input: a participant (subject folder or file stem) and its data file."""

    participant: str
    path: Path


def iter_sources(paths) -> Iterator[Source | InputError]:
    """Every trial file under ``paths``, path by path (:func:`walk`): a path that cannot be
    expanded is yielded as its :class:`InputError` and the others go on; a folder deliberately
    not entered is yielded as an ``ignored`` note."""
    for p in paths:
        yield from walk(Path(p))


def discover(paths: list[Path]) -> list[Source]:
    """:func:`walk` as a list; raises the first path that cannot be expanded (notes are dropped)."""
    sources: list[Source] = []
    for p in map(Path, paths):
        for item in walk(p):
            if isinstance(item, Source):
                sources.append(item)
            elif item.outcome != IGNORED:
                raise item
    return sources


def walk(p: Path) -> Iterator[Source | InputError]:
    """Expand a file or a study tree of any depth: ICBHI subject folders (holding ``fMRI_data.npz``)
    wherever they are, and ``.npy``/``.npz`` files in any folder that is not a subject folder. Hidden
    files and folders (``.name``) are skipped; a folder reached again (a symlink loop), a folder
    deeper than :data:`MAX_DEPTH`, and array files or folders inside a subject folder are not
    entered and named in an ``ignored`` note."""
    if p.is_file():
        yield Source(p.parent.name if p.name == DATA_FILE else p.stem, p)
        return
    if not p.is_dir():
        yield InputError(p, "no such file or folder")
        return
    found = 0
    for item in _walk_folder(p, set(), 0):
        found += isinstance(item, Source)
        yield item
    if not found:
        images = next((f for f in p.rglob("*.nii*") if f.name.endswith((".nii", ".nii.gz"))), None)
        yield InputError(
            p,
            f"folder holds no {DATA_FILE}, no subject folders and no .npy/.npz files (at any "
            "depth); point at trial files or ICBHI subject folders"
            + (
                f"; it holds NIfTI images ({images.name}; a BIDS study?): run `fmri-edge extract "
                f"{p} --atlas ATLAS.nii.gz --out TRIALS` first, then predict TRIALS"
                if images
                else ""
            ),
        )


def _walk_folder(d: Path, visited: set, depth: int) -> Iterator[Source | InputError]:
    try:
        real = d.resolve()
        entries = sorted(e for e in d.iterdir() if not e.name.startswith("."))
    except OSError as e:
        yield InputError(
            d, f"folder not entered: cannot be listed ({e.strerror or e})", outcome=IGNORED
        )
        return
    if real in visited:
        yield InputError(
            d,
            f"folder not entered: it is {real}, already searched (a symlink loop or a second "
            "link to it)",
            outcome=IGNORED,
        )
        return
    if depth > MAX_DEPTH:
        yield InputError(
            d,
            f"folder not entered: more than {MAX_DEPTH} levels below the path given; "
            "point at it directly",
            outcome=IGNORED,
        )
        return
    visited.add(real)
    if (d / DATA_FILE).is_file():
        yield Source(d.name, d / DATA_FILE)
        others = [
            e.name
            for e in entries
            if e.name not in (DATA_FILE, LABEL_FILE) and (e.is_dir() or e.suffix in ARRAY_SUFFIXES)
        ]
        if others:
            yield InputError(
                d,
                f"{', '.join(others[:5])}{' …' if len(others) > 5 else ''} not read: a subject "
                f"folder's trials are its {DATA_FILE}; move other trial files out of it",
                outcome=IGNORED,
            )
        return
    for e in entries:
        if e.is_file() and e.suffix in ARRAY_SUFFIXES:
            yield Source(e.stem, e)
    for e in entries:
        if e.is_dir():
            yield from _walk_folder(e, visited, depth + 1)


@dataclass(frozen=True)
class Survey:
    """What a set of inputs holds, from the file headers alone (for the summary line)."""

    files: int
    participants: int
    trials: int  # declared by the headers of the files not refused


def survey(paths, refused=()) -> Survey:
    """Count the distinct trial files under ``paths``, their participants and the trials their
    headers declare; reads nothing but headers. The trials of ``refused`` files (and of files
    whose header cannot be read) are not counted: their headers are not to be trusted."""
    seen, participants, trials = set(), set(), 0
    refused = {Path(p).resolve() for p in refused}
    for src in iter_sources(paths):
        if not isinstance(src, Source) or src.path.resolve() in seen:
            continue
        seen.add(src.path.resolve())
        participants.add(src.participant)
        shape = None if src.path.resolve() in refused else declared_shape(src.path)
        trials += (
            (shape[0] if len(shape) == 3 else 1 if len(shape) == 2 else 0)
            if shape is not None
            else 0
        )
    return Survey(len(seen), len(participants), trials)


def declared_shape(path: Path, key: str = "data") -> tuple | None:
    """The shape a .npy file's (or an .npz member's) header declares; None where it cannot be read."""
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                return read_header(path, f).shape
        with zipfile.ZipFile(path) as z, z.open(key if key in z.namelist() else f"{key}.npy") as m:
            return read_header(path, m).shape
    except (
        InputError,
        OSError,
        EOFError,
        KeyError,
        ValueError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ):
        return None


# ---- reading arrays -------------------------------------------------------------------------------


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


# ---- checking trials ----------------------------------------------------------------------------------


def check_trials(
    arr: np.ndarray,
    path: str | Path,
    n_regions: int,
    n_times: int | None,
    crop: bool = False,
    pad: bool = False,
) -> np.ndarray:
    """Check dtype and shape without reading values; return a (N, n_regions, T) view.

    With ``crop``, trials longer than ``n_times`` keep their first ``n_times`` seconds; with
    ``pad``, shorter trials are accepted (extend them with :func:`pad_times`). Otherwise a
    different T is refused: nothing is ever reshaped silently.
    """
    _check_dtype(arr.dtype, path)
    shape = arr.shape  # as stored, for the messages
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(
            path,
            f"wrong number of dimensions: expected (N, {n_regions}, {n_times or 'T'}) or "
            f"({n_regions}, {n_times or 'T'}), got {arr.ndim}-D shape {arr.shape}"
            + ("; drop the extra axes (e.g. numpy.squeeze)" if arr.ndim > 3 else ""),
        )
    _, r, t = arr.shape
    if r != n_regions:
        if t == n_regions and (n_times is None or r == n_times):
            raise InputError(
                path,
                f"regions and time axes look swapped: expected (N, {n_regions}, "
                f"{n_times or 'T'}), got {shape}; transpose with arr.swapaxes(-1, -2)",
            )
        atlas = f", the size of the {KNOWN_ATLASES[r]} atlas" if r in KNOWN_ATLASES else ""
        raise InputError(
            path,
            f"expected {n_regions} regions (Brainnetome atlas) on axis 1, got {r}{atlas} "
            f"(shape {shape}); extract the region time series with the Brainnetome "
            f"{n_regions}-region atlas",
        )
    if arr.shape[0] == 0:
        raise InputError(path, f"holds no trials (shape {shape})")
    if t == 0:
        raise InputError(path, f"its trials have no time points (shape {shape})")
    if n_times is not None and t != n_times:
        if t > n_times and crop:
            return arr[:, :, :n_times]
        if t < n_times and pad:
            return arr
        fix = (
            f"pass --crop to keep the first {n_times} s of each trial"
            if t > n_times
            else f"pass --pad to repeat each trial's last second up to {n_times} s"
        )
        raise InputError(
            path,
            f"expected {n_times} time points (seconds) per trial, got {t} "
            f"(shape {shape}); {fix}, or use a model trained for {t} s",
        )
    return arr


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


def to_float32(arr: np.ndarray) -> np.ndarray:
    """Any numeric dtype, byte order or memory layout → C-contiguous native float32.
    Values beyond the float32 range become ±Inf (and are then reported as non-finite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=np.float32)


def pad_times(trials: np.ndarray, n_times: int) -> np.ndarray:
    """(N, R, T ≤ n_times) → (N, R, n_times), repeating each region's last second (``--pad``)."""
    missing = n_times - trials.shape[2]
    if missing <= 0:
        return trials
    return np.pad(trials, ((0, 0), (0, 0), (0, missing)), mode="edge")


# ---- checking values, trial by trial ----------------------------------------------------------------


def nonfinite_trials(trials: np.ndarray) -> np.ndarray:
    """Indices of trials holding NaN or Inf."""
    return np.flatnonzero(~np.isfinite(trials).all(axis=(1, 2)))


def describe_nonfinite(raw: np.ndarray, converted: np.ndarray) -> str:
    """What is wrong with one trial: counts of NaN, ±Inf and values beyond float32, and where first.
    ``raw`` is the trial as stored, ``converted`` the same trial as float32."""
    bad = ~np.isfinite(converted)
    region, second = np.argwhere(bad)[0]
    raw = np.asarray(raw)
    n_nan = int(np.isnan(raw).sum()) if raw.dtype.kind == "f" else 0
    n_inf = int(np.isinf(raw).sum()) if raw.dtype.kind == "f" else 0
    n_big = int(bad.sum()) - n_nan - n_inf
    found = (
        [
            f"{' and '.join(f'{n} {kind}' for n, kind in ((n_nan, 'NaN'), (n_inf, 'Inf')) if n)} value(s)"
        ]
        if n_nan or n_inf
        else []
    )
    if n_big:
        found.append(f"{n_big} value(s) beyond the float32 range ±{FLOAT32_MAX:.1e}")
    return f"{' and '.join(found)}, first at region {region}, second {second} (0-based)"


def interpolate_nonfinite(trial: np.ndarray) -> np.ndarray | None:
    """(R, T) float32 trial → copy with NaN/Inf filled linearly over time from each region's finite
    seconds (held constant past the ends), or None where a region lacks enough finite seconds."""
    bad = ~np.isfinite(trial)
    if (bad.sum(axis=1) > MAX_INTERPOLATED * trial.shape[1]).any():
        return None
    out = trial.copy()
    t = np.arange(trial.shape[1])
    for r in np.flatnonzero(bad.any(axis=1)):
        gap = bad[r]
        out[r, gap] = np.interp(t[gap], t[~gap], trial[r, ~gap])
    return out


def constant_trials(trials: np.ndarray) -> np.ndarray:
    """Indices of finite trials whose every value is the same (e.g. a zero-filled gap)."""
    return np.flatnonzero(trials.min(axis=(1, 2)) == trials.max(axis=(1, 2)))


def load_trials(path: str | Path, n_regions: int = 246, n_times: int | None = None) -> np.ndarray:
    """Load and validate a whole trials file, safely (nothing is unpickled; NaN/Inf refused).

    Parameters
    ----------
    path : str or Path
        A ``.npy`` of shape (N, n_regions, n_times) or (n_regions, n_times), or an ``.npz`` with a
        ``data`` array (ICBHI's ``fMRI_data.npz``).
    n_regions, n_times : int
        The shape the trials must have (``n_times=None``: any length).

    Returns
    -------
    (N, n_regions, n_times) float32 array
        Raises :class:`~fmri_edge.errors.InputError` naming the file and the problem.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "trials.npy"
    >>> np.save(path, np.ones((2, 246, 25), dtype=np.float64))
    >>> load_trials(path).shape, load_trials(path).dtype
    ((2, 246, 25), dtype('float32'))
    >>> np.save(path, np.ones((2, 200, 25)))
    >>> load_trials(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    fmri_edge.errors.InputError: ...trials.npy: expected 246 regions (Brainnetome atlas) on axis 1, got 200, ...
    """
    raw = check_trials(read_array(path), path, n_regions, n_times)
    trials = to_float32(raw)
    bad = nonfinite_trials(trials)
    if bad.size:
        raise InputError(
            path,
            f"{describe_nonfinite(raw[bad[0]], trials[bad[0]])} "
            f"({bad.size} such trial(s)); fix or drop these trials",
            trial=int(bad[0]) + 1,
        )
    return trials


# ---- labels ------------------------------------------------------------------------------------------


def load_labels(path: str | Path, n_trials: int | None = None) -> np.ndarray:
    """ICBHI labels.npz → int (N, 2) array of [CLASS, LEVEL], checked against the label sets."""
    arr = read_array(path)
    if arr.dtype.hasobject or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(
            path,
            f"labels are not numeric (dtype {arr.dtype}); expected (N, 2) [CLASS, LEVEL] numbers",
        )
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(path, f"expected labels of shape (N, 2) = [CLASS, LEVEL], got {arr.shape}")
    if len(arr) == 0:
        raise InputError(path, "holds no label rows")
    arr = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr).all(axis=1) | (arr != np.round(arr)).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(path, f"row {i + 1}: labels must be whole numbers, got {arr[i].tolist()}")
    labels = arr.astype(np.int64)
    for col, name, ok, allowed in (
        (0, "CLASS", np.isin(labels[:, 0], (-1, 0, 1)), "{-1, 0, 1}"),
        (1, "LEVEL", np.abs(labels[:, 1]) <= 4, "{-4 … 4}"),
    ):
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise InputError(
                path,
                f"row {i + 1}: {name} {labels[i, col]} outside {allowed} "
                f"({int((~ok).sum())} such row(s))",
            )
    if n_trials is not None and len(labels) != n_trials:
        raise InputError(
            path,
            f"{len(labels)} label rows for {n_trials} trials; labels and {DATA_FILE} must "
            "have one row per trial, in the same order",
        )
    return labels


def load_icbhi(
    root: str | Path, n_times: int | None = None, n_regions: int = 246
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Labeled ICBHI folder (e.g. ``Train``, or extract's labeled output) → {participant: (trials
    (N, n_regions, T), labels (N, 2))}."""
    out, where = {}, {}
    for src in discover([Path(root)]):
        if (
            src.participant in where
        ):  # siteA/sub-01 and siteB/sub-01: never one participant silently
            raise InputError(
                root,
                f"two participant folders are both named {src.participant}: "
                f"{where[src.participant].parent} and {src.path.parent}; within one study every "
                "participant needs its own name (rename one, or give each site as a study of "
                "its own)",
            )
        where[src.participant] = src.path
        trials = load_trials(src.path, n_regions=n_regions, n_times=n_times)
        label_path = src.path.parent / LABEL_FILE
        if not label_path.is_file():
            raise InputError(
                label_path,
                "missing (needed for training and scoring); trials extracted without "
                "labels: rerun fmri-edge extract with --class-column COLUMN --class-map "
                "VALUE=CLASS,… (docs/own-study.md)",
            )
        out[src.participant] = (trials, load_labels(label_path, len(trials)))
    return out


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__
