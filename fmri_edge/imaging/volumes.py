"""Reading NIfTI images safely, and reducing them to region means: the kernel of extract and stream.

Reading. A NIfTI-1 or NIfTI-2 file (``.nii``, or gzip-compressed ``.nii.gz``; recognized by its
bytes, not its name) is opened, its header parsed by nibabel's header classes, and every claim of
the header checked against the file before anything is allocated: dimensions, data type, voxel
size and affine, scaling, the data offset, and the declared data size against what the file can
hold (the file size for ``.nii``; for ``.nii.gz`` the most deflate can expand it, 1032:1, and the
data are then read as a stream, a block at a time, so memory follows the data that really come).
Any damage raises one :class:`~fmri_edge.data.InputError` naming the file and the problem: a
truncated file, a header lying about its size, a gzip stream cut short or corrupt, an empty file,
a folder, a broken link, an unreadable file. Nothing is unpickled, nothing is memory-mapped.

``.nii.gz`` is decompressed with ISA-L (the ``isal`` package, part of the ``nifti`` extra:
faster than zlib, docs/speed.md) when installed, else with zlib, as a stream that inflates only what is read.

Reducing. :class:`RegionIndex` puts a label atlas on one image grid once (the label of every voxel,
resampled by nearest neighbour if the grids differ, :meth:`fmri_edge.imaging.extract.Atlas.labels_on_grid`)
and keeps the labelled voxels in file order; :meth:`RegionIndex.means` then reduces a volume or a
block of volumes to the mean of each region in one pass (a gather and a ``bincount``, accumulated
in float64) — the values of nilearn's ``NiftiLabelsMasker(strategy="mean")`` (tests compare them).
"""

from __future__ import annotations

import errno
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from fmri_edge.errors import InputError

try:  # ISA-L's inflate: the same format, about twice zlib's decompression speed
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - the nifti extra installs it
    _zlib = zlib

GZIP_MAGIC = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032  # deflate never expands its input more than this (zlib's technical notes)
HEADER_SIZES = {348: "NIfTI-1", 540: "NIfTI-2"}
DEFAULT_BLOCK_VOLUMES = 16  # 16 volumes of 97×115×97 float32: 69 MB per block
_CHUNK = 1 << 24  # bytes per read call
_GZ_IN, _GZ_OUT = (
    1 << 20,
    1 << 20,
)  # compressed bytes read, decompressed bytes made, per inflate call
_READ_ERRORS = (OSError, EOFError, zlib.error, _zlib.error, ValueError)


@dataclass(frozen=True)
class Header:
    """What a NIfTI header declares, checked against its file."""

    path: Path
    header: object  # nibabel's Nifti1Header / Nifti2Header (get_zooms, get_xyzt_units)
    shape: tuple[int, ...]  # (X, Y, Z) or (X, Y, Z, T); trailing 1-sized dimensions dropped
    dtype: np.dtype  # the on-disk data type, with its byte order
    affine: np.ndarray  # 4×4 float64, voxel → world (mm)
    offset: int  # byte where the data start (in the decompressed stream)
    slope: float | None  # scaling, as nibabel reads it: None = no scaling
    inter: float | None
    gzipped: bool

    @property
    def n_volumes(self) -> int:
        return self.shape[3] if len(self.shape) > 3 else 1

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return self.shape[:3]

    @property
    def volume_bytes(self) -> int:
        return int(np.prod(self.shape[:3], dtype=object)) * self.dtype.itemsize

    def describe(self) -> str:
        return describe_grid(self.shape[:3], self.affine)


def describe_grid(shape, affine: np.ndarray) -> str:
    """'(97×115×97, 2×2×2 mm, the MNI152NLin2009cAsym 2 mm grid)': shape, voxel size, known template."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    name = KNOWN_GRIDS.get(tuple(shape[:3]))
    return (
        f"({'×'.join(map(str, shape[:3]))}, {'×'.join(f'{z:.3g}' for z in zooms)} mm"
        + (f", {name}" if name else "")
        + ")"
    )


KNOWN_GRIDS = {
    (181, 217, 181): "the SPM MNI152 1 mm grid",
    (182, 218, 182): "the FSL MNI152 1 mm grid",
    (91, 109, 91): "the MNI152 2 mm grid",
    (61, 73, 61): "the SPM MNI152 3 mm grid",
    (193, 229, 193): "the MNI152NLin2009cAsym 1 mm grid",
    (97, 115, 97): "the MNI152NLin2009cAsym 2 mm grid",
}


# ---- opening and checking -----------------------------------------------------------------------------


def _stat(path: Path, what: str) -> int:
    """The file's size; a clear error for anything that is not a readable, non-empty file."""
    if path.is_symlink() and not path.exists():
        raise InputError(
            path, f"{what} is a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        )
    if not path.exists():
        raise InputError(path, f"{what} not found")
    if path.is_dir():
        raise InputError(path, f"{what} is a folder, not a NIfTI file")
    if not path.is_file():
        raise InputError(path, f"{what} is not a regular file (a device, pipe or socket?)")
    size = path.stat().st_size
    if size == 0:
        raise InputError(path, f"{what} is an empty file (0 bytes): a copy that failed?")
    if not os.access(path, os.R_OK):
        raise InputError(path, f"{what} cannot be read (permission denied)")
    return size


def _open(path: Path, what: str) -> tuple[IO[bytes], bool]:
    """The file's decompressed byte stream, and whether it is gzip (by its first bytes)."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise InputError(path, f"{what} cannot be opened ({_os_reason(e)})") from None
    try:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
    except OSError as e:
        raw.close()
        raise InputError(path, f"{what} cannot be read ({_os_reason(e)})") from None
    if not gzipped:
        return raw, False
    return _Inflater(raw), True


class _Inflater:
    """A gzip file's decompressed bytes as a stream (``readinto``, ``read``), inflating only as much
    as asked: memory follows the data read. Concatenated gzip members are read on; bytes after the
    last member that are not gzip (padding, garbage) end the data, as for gzip(1). The CRC and length
    at the end of each member are checked by the inflater when the member's end is reached
    (:meth:`finish`)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.inflater = _zlib.decompressobj(31)
        self.ended = False
        self._pending = b""  # input bytes of the next member, already read

    def _input(self) -> bytes:
        tail = self.inflater.unconsumed_tail
        return tail if tail else self.raw.read(_GZ_IN)

    def _next_member(self) -> bool:
        rest = self.inflater.unused_data
        if len(rest) < 2:  # the next member's magic may straddle two reads
            rest += self.raw.read(_GZ_IN)
        if rest[:2] != GZIP_MAGIC:
            self.ended = True
            return False
        self.inflater = _zlib.decompressobj(31)
        self._pending = rest
        return True

    def readinto(self, buf) -> int:
        buf = memoryview(buf).cast("B")
        n = 0
        while n < len(buf) and not self.ended:
            if self.inflater.eof:
                if not self._next_member():
                    break
                continue
            data = self._pending or self._input()
            self._pending = b""
            if not data:
                raise EOFError("gzip data end before the end of the stream")
            out = self.inflater.decompress(
                data, min(len(buf) - n, _GZ_OUT)
            )  # small pieces: no big temporaries
            buf[n : n + len(out)] = out
            n += len(out)
        return n

    def read(self, size: int) -> bytes:
        buf = bytearray(size)
        return bytes(buf[: self.readinto(buf)])

    def finish(self) -> None:
        """Inflate to the end of the current member (the data were all read): its CRC and length
        are checked on the way. A member cut inside its trailer is tolerated (every declared byte
        was read)."""
        while not self.inflater.eof:
            data = self._pending or self._input()
            self._pending = b""
            if not data:
                return
            self.inflater.decompress(data, _GZ_OUT)

    def close(self) -> None:
        self.raw.close()


def _os_reason(e: OSError) -> str:
    return {errno.EACCES: "permission denied", errno.EISDIR: "a folder"}.get(
        e.errno, e.strerror or type(e).__name__
    )


def _read_exactly(f: IO[bytes], buf: memoryview) -> int:
    """Fill ``buf`` from ``f``; the number of bytes read (less only at the end of the data)."""
    done, n = 0, len(buf)
    while done < n:
        got = f.readinto(buf[done : min(n, done + _CHUNK)])
        if not got:
            break
        done += got
    return done


def _damage(path: Path, what: str, e: BaseException, gzipped: bool, where: str) -> InputError:
    """One line for an exception met while reading the (decompressed) bytes."""
    if isinstance(e, EOFError):
        return InputError(
            path,
            f"{what}: its gzip data end early, {where}: the file was cut short (an "
            "interrupted copy or download, a full disk?) or its header declares more than it holds",
        )
    if isinstance(e, MemoryError):
        return InputError(path, f"{what}: not enough memory to read it ({where})")
    if gzipped and ("data check" in str(e) or "length check" in str(e) or "checksum" in str(e)):
        return InputError(
            path,
            f"{what}: corrupt gzip data: the checksum at its end does not match the data "
            f"({where}; a damaged copy?)",
        )
    kind = "corrupt gzip data" if gzipped else "unreadable data"
    text = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
    return InputError(path, f"{what}: {kind}, {where} ({text})")


def read_header(path: str | Path, what: str = "image") -> Header:
    """Parse and check a NIfTI header against its file; nothing of the data is read or allocated."""
    import nibabel as nib

    path = Path(path)
    file_size = _stat(path, what)
    f, gzipped = _open(path, what)
    try:
        block = bytearray(540)
        try:
            n = _read_exactly(f, memoryview(block))
        except _READ_ERRORS as e:
            raise _damage(path, what, e, gzipped, "in its header") from None
    finally:
        f.close()
    block = bytes(block[:n])
    size_le, size_be = (
        int.from_bytes(block[:4], order) if n >= 4 else 0 for order in ("little", "big")
    )
    kind = HEADER_SIZES.get(size_le) or HEADER_SIZES.get(size_be)
    if kind is None:
        looks = " (a gzip file that is not NIfTI inside?)" if gzipped else _looks_like(block)
        raise InputError(
            path,
            f"{what} is not a NIfTI image: its first bytes are no NIfTI-1 or NIfTI-2 header{looks}",
        )
    header_size = 348 if kind == "NIfTI-1" else 540
    if n < header_size:
        raise InputError(
            path,
            f"{what}: cut short inside its {kind} header ({n} of {header_size} bytes"
            f"{' after decompression' if gzipped else ''})",
        )
    cls = nib.Nifti1Header if kind == "NIfTI-1" else nib.Nifti2Header
    endian = "<" if HEADER_SIZES.get(size_le) else ">"
    try:
        hdr = cls(block[:header_size], endianness=endian, check=False)
    except Exception as e:  # nibabel's HeaderDataError and friends: a header it cannot parse at all
        raise InputError(path, f"{what}: unreadable {kind} header ({str(e)[:100]})") from None
    magic = bytes(hdr["magic"]).rstrip(b"\x00")
    if magic in (b"ni1", b"ni2"):
        raise InputError(
            path,
            f"{what}: a NIfTI header for a separate .img data file (a .hdr/.img pair); "
            "give a single-file .nii or .nii.gz",
        )
    if magic not in (b"n+1", b"n+2"):
        raise InputError(path, f"{what}: not a NIfTI image (magic {magic[:8]!r} in its header)")
    shape = _checked_shape(path, what, hdr)
    try:
        dtype = hdr.get_data_dtype()
    except Exception:
        raise InputError(
            path, f"{what}: unknown NIfTI datatype code {int(hdr['datatype'])}"
        ) from None
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(
            path,
            f"{what}: data type {dtype} is not a number per voxel (RGB or complex "
            "data?); expected integers or floats",
        )
    try:
        slope, inter = hdr.get_slope_inter()
    except Exception:
        raise InputError(
            path,
            f"{what}: its scaling is invalid (scl_slope {float(hdr['scl_slope']):g}, "
            f"scl_inter {float(hdr['scl_inter']):g})",
        ) from None
    if slope == 1.0 and inter == 0.0:
        slope = inter = None
    affine = _checked_affine(path, what, hdr)
    offset_raw = float(hdr["vox_offset"])
    if not np.isfinite(offset_raw) or offset_raw != int(offset_raw) or offset_raw < header_size:
        raise InputError(
            path,
            f"{what}: its header's data offset (vox_offset {offset_raw:g}) is not a byte "
            f"position after the {header_size}-byte header",
        )
    offset = int(offset_raw)
    h = Header(
        path, hdr, shape, dtype.newbyteorder(hdr.endianness), affine, offset, slope, inter, gzipped
    )
    _check_size(h, file_size, what)
    return h


def _looks_like(block: bytes) -> str:
    """What a file that is not NIfTI seems to be, from its first bytes ('' when unknown)."""
    for magic, what in (
        (b"BZh", "bzip2-compressed; NIfTI is read plain or gzip-compressed"),
        (b"PK\x03\x04", "a zip archive; unpack it"),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
        (b"\xfd7zXZ", "xz-compressed"),
        (b"<", "text or HTML: an error page saved as the file?"),
    ):
        if block.startswith(magic):
            return f" ({what})"
    if block[128:132] == b"DICM":
        return " (a DICOM file: convert it to NIfTI, e.g. with dcm2niix)"
    return ""


def _checked_shape(path: Path, what: str, hdr) -> tuple[int, ...]:
    dim = [int(d) for d in hdr["dim"]]
    if not 1 <= dim[0] <= 7:
        raise InputError(
            path,
            f"{what}: its header's dim[0] = {dim[0]} (the number of dimensions) is not "
            "in 1 … 7: a damaged header",
        )
    shape = dim[1 : dim[0] + 1]
    bad = [(i + 1, d) for i, d in enumerate(shape) if d < 1]
    if bad:
        raise InputError(
            path,
            f"{what}: its header declares dimension {bad[0][0]} of size {bad[0][1]} "
            f"(shape {tuple(shape)}): a damaged header",
        )
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if len(shape) > 4:
        raise InputError(
            path,
            f"{what}: a {len(shape)}-D image (shape {tuple(shape)}); expected a 3-D volume "
            "or a 4-D time series",
        )
    return tuple(shape) + (1,) * (3 - len(shape))


def _checked_affine(path: Path, what: str, hdr) -> np.ndarray:
    try:
        affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    except Exception:
        affine = np.full((4, 4), np.nan)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        zooms = ", ".join(f"{float(z):g}" for z in hdr["pixdim"][1:4])
        raise InputError(
            path,
            f"{what}: its header gives no usable voxel-to-world affine (voxel sizes "
            f"{zooms} mm; sform/qform zero, infinite or NaN)",
        )
    return affine


def _check_size(h: Header, file_size: int, what: str) -> None:
    """The declared data against what the file can hold, before anything is allocated."""
    n_bytes = h.volume_bytes * h.n_volumes
    declared = (
        f"{'×'.join(map(str, h.shape))} {h.dtype.name}: {_size(n_bytes)} from byte {h.offset}"
    )
    if h.gzipped:
        if h.offset + n_bytes > file_size * DEFLATE_MAX_RATIO:
            raise InputError(
                h.path,
                f"{what}: its header declares {declared}, more than a gzip file of "
                f"{_size(file_size)} can hold: a header lying about the image's size",
            )
        return
    if h.offset + n_bytes > file_size:
        whole = max(0, file_size - h.offset) // h.volume_bytes if h.volume_bytes else 0
        held = f" ({whole} whole volume(s) of {h.n_volumes})" if h.n_volumes > 1 else ""
        raise InputError(
            h.path,
            f"{what}: its header declares {declared}, but the file holds {_size(file_size)}"
            f"{held}: cut short (an interrupted copy?) or a header lying about its size",
        )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# ---- reading ------------------------------------------------------------------------------------------


def _to_float32(raw: np.ndarray, h: Header) -> np.ndarray:
    """On-disk values → float32 with the header's scaling (a view when they already are native float32)."""
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    data = raw if raw.dtype == np.float32 else raw.astype(np.float32)
    if h.slope is not None:
        with np.errstate(
            over="ignore"
        ):  # an absurd slope gives Inf values, refused where they are used
            data = data * np.float32(h.slope) + np.float32(h.inter)
    return data


def _blocks(h: Header, what: str, block_volumes: int, native: bool = False) -> Iterator[np.ndarray]:
    """(X, Y, Z, t) blocks in file order; Fortran-ordered (a NIfTI volume is contiguous, x fastest)."""
    if block_volumes < 1:
        raise ValueError("block_volumes must be ≥ 1")
    f, _ = _open(h.path, what)
    done = 0
    try:
        try:
            _skip(f, h.offset)
            while done < h.n_volumes:
                t = min(block_volumes, h.n_volumes - done)
                raw = np.empty(h.volume_shape + (t,), dtype=h.dtype, order="F")
                got = _read_exactly(f, memoryview(raw.reshape(-1, order="A").view(np.uint8)))
                if got < raw.nbytes:
                    done += got // h.volume_bytes
                    raise EOFError
                done += t
                yield raw if native else _to_float32(raw, h)
            if h.gzipped:
                _check_trailer(f, h, what)
        except InputError:
            raise
        except _READ_ERRORS + (MemoryError,) as e:
            where = f"after {done} of {h.n_volumes} volume(s)" if h.n_volumes > 1 else "in its data"
            if isinstance(e, EOFError) and not h.gzipped:
                raise InputError(h.path, f"{what}: the file ends {where}: cut short") from None
            raise _damage(h.path, what, e, h.gzipped, where) from None
    finally:
        f.close()


def _check_trailer(f: "_Inflater", h: Header, what: str) -> None:
    """After the data: reach the end of the gzip member, whose CRC and length are then checked."""
    try:
        f.finish()
    except _READ_ERRORS as e:
        raise _damage(h.path, what, e, True, "at the end of its data") from None


def _skip(f: IO[bytes], offset: int) -> None:
    """Move to ``offset`` in the (decompressed) stream by reading, as gzip streams cannot seek cheaply."""
    left = offset
    while left:
        got = len(f.read(min(left, _CHUNK)))
        if not got:
            raise EOFError
        left -= got


def read_volume(path: str | Path, what: str = "volume") -> tuple[np.ndarray, np.ndarray]:
    """One 3-D NIfTI volume (.nii / .nii.gz; a 4-D image of one volume too) → (float32 (X, Y, Z)
    data with the header's scaling applied, 4×4 affine). Any damage (truncated, header lying about
    its size, gzip cut short, unreadable) raises :class:`InputError` naming the file and the problem;
    never allocates more than the file can hold."""
    h = read_header(path, what)
    if h.n_volumes != 1:
        raise InputError(
            h.path,
            f"{what}: a 4-D image of {h.n_volumes} volumes (shape {h.shape}); expected "
            "one 3-D volume",
        )
    data = next(_blocks(h, what, 1))
    return data[..., 0], h.affine


def iter_blocks(
    path: str | Path | Header, block_volumes: int = DEFAULT_BLOCK_VOLUMES, what: str = "BOLD image"
) -> Iterator[np.ndarray]:
    """A 4-D run read block by block: float32 (X, Y, Z, t ≤ block_volumes) arrays, Fortran-ordered,
    scaling applied. NIfTI volumes are contiguous; a ``.nii.gz`` is decompressed as a stream, so
    memory holds one block, never the run. Damage raises :class:`InputError` when it is met (the
    blocks before it were good). ``path`` may be a :class:`Header` already read."""
    h = path if isinstance(path, Header) else read_header(path, what)
    return _blocks(h, what, block_volumes)


def read_image(path: str | Path | Header, what: str = "image", native: bool = False) -> np.ndarray:
    """The whole image (X, Y, Z[, T]) in memory, read block by block into one array: memory grows
    with the data the file really holds (pages are only touched as data arrive). ``native`` keeps
    the on-disk data type (no scaling) — for label images."""
    h = path if isinstance(path, Header) else read_header(path, what)
    try:
        out = np.empty(
            h.volume_shape + (h.n_volumes,), dtype=h.dtype if native else np.float32, order="F"
        )
    except MemoryError:
        raise InputError(
            h.path, f"{what}: not enough memory for {'×'.join(map(str, h.shape))}"
        ) from None
    k = 0
    for block in _blocks(h, what, DEFAULT_BLOCK_VOLUMES, native=native):
        out[..., k : k + block.shape[3]] = block
        k += block.shape[3]
    if native and h.slope is not None:
        with np.errstate(over="ignore"):
            out = out * h.slope + h.inter
    return out if len(h.shape) == 4 else out[..., 0]


# ---- the kernel -----------------------------------------------------------------------------------------


class RegionIndex:
    """A label index of the atlas on one image grid, computed once; reduces volumes in one pass."""

    def __init__(self, labels: np.ndarray, n_regions: int):
        """``labels``: (X, Y, Z) whole numbers on the image grid, 0 = background, 1 … n_regions."""
        labels = np.asarray(labels)
        flat = labels.reshape(-1, order="F")
        self.shape = tuple(labels.shape)
        self.n_regions = n_regions
        self.voxels = np.flatnonzero(flat)  # labelled voxels, file order
        self.region = (flat[self.voxels] - 1).astype(np.intp)  # 0-based region of each
        if self.region.size and (self.region.min() < 0 or self.region.max() >= n_regions):
            raise ValueError(f"labels outside 1 … {n_regions}")
        self.n_voxels = np.bincount(self.region, minlength=n_regions)
        if (self.n_voxels == 0).any():
            raise ValueError(
                f"region(s) without a voxel: {np.flatnonzero(self.n_voxels == 0)[:8] + 1}"
            )

    @classmethod
    def on_grid(
        cls,
        atlas,
        shape: tuple[int, int, int],
        affine: np.ndarray,
        notes: list[str],
        source: Path | None = None,
    ) -> "RegionIndex":
        """The atlas (:class:`fmri_edge.imaging.extract.Atlas`) on the grid ``shape`` / ``affine`` (resampled
        by nearest neighbour if it differs, with a note; refused if a label is lost)."""
        return cls(
            atlas.labels_on_grid(tuple(int(s) for s in shape[:3]), affine, notes, source),
            atlas.n_regions,
        )

    def means(self, data: np.ndarray) -> np.ndarray:
        """(X, Y, Z) volume → (n_regions,) float64; (X, Y, Z, t) block → (t, n_regions) float64.
        Values as NiftiLabelsMasker's 'mean' strategy gives (≤ 1e-5 relative)."""
        data = np.asarray(data)
        single = data.ndim == 3
        if single:
            data = data[..., None]
        if data.ndim != 4 or data.shape[:3] != self.shape:
            raise ValueError(f"data of shape {data.shape} on an index of grid {self.shape}")
        t = data.shape[3]
        by_volume = data.reshape((-1, t), order="F").T  # (t, n_voxels): a view for NIfTI blocks
        picked = np.take(by_volume, self.voxels, axis=1)  # (t, labelled voxels), file order
        out = np.empty((t, self.n_regions), dtype=np.float64)
        with np.errstate(
            all="ignore"
        ):  # NaN or Inf voxels give NaN or Inf means, said by the caller
            for k in range(t):
                out[k] = np.bincount(self.region, weights=picked[k], minlength=self.n_regions)
            out /= self.n_voxels
        return out[0] if single else out
