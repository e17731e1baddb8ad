"""A corpus of damaged and hostile NIfTI images and atlases, made on the fly from one good run (nothing
binary is committed). Each case knows the file name it takes and the words fmri-edge must answer with.

- :data:`BAD_IMAGES`: BOLD images `extract` must refuse with one line naming the file (and, among
  good runs of a BIDS study, report while every good run still comes out);
- :data:`TOLERATED_IMAGES`: odd but intact images that must extract like the good one;
- :data:`BAD_ATLASES` / :data:`TOLERATED_ATLASES`: the same for the atlas (tolerated ones with a note).

Every maker is ``make(path, good)``: ``good`` holds the good run's uncompressed .nii bytes (``nii``)
and the good atlas's label array and affine.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Good:
    nii: bytes  # the good 4-D run, uncompressed NIfTI-1
    labels: np.ndarray  # the good atlas (int16)
    affine: np.ndarray


@dataclass(frozen=True)
class Case:
    suffix: str  # ".nii" or ".nii.gz"
    make: Callable[[Path, Good], None]
    message: str = ""  # words the one-line error (bad) or a note (tolerated) must contain


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=1, mtime=0)


def patched(raw: bytes, **fields) -> bytes:
    """The NIfTI-1 bytes with header fields replaced (nibabel's header class does the packing)."""
    import nibabel as nib

    hdr = nib.Nifti1Header(raw[:348], check=False)
    for name, value in fields.items():
        hdr[name] = value
    return hdr.binaryblock + raw[348:]


def dims(raw: bytes) -> list[int]:
    import nibabel as nib

    return [int(d) for d in nib.Nifti1Header(raw[:348], check=False)["dim"]]


def _bytes(fn: Callable[[Good], bytes], compress: bool = False) -> Callable[[Path, Good], None]:
    return lambda p, g: p.write_bytes(gz(fn(g)) if compress else fn(g))


def _dim(**where) -> Callable[[Good], bytes]:
    """dim with entries replaced, e.g. _dim(i4=..., i0=...)."""

    def make(g: Good) -> bytes:
        d = dims(g.nii)
        for k, v in where.items():
            d[int(k[1:])] = v
        return patched(g.nii, dim=d)

    return make


def _flip(raw: bytes, at: float) -> bytes:
    i = int(len(raw) * at)
    return raw[:i] + bytes(b ^ 0x5A for b in raw[i : i + 64]) + raw[i + 64 :]


def _symlink(p: Path, g: Good) -> None:
    p.symlink_to(p.parent / "gone.nii.gz")


def _fifo(p: Path, g: Good) -> None:
    os.mkfifo(p)


def _gz_bomb_header(g: Good) -> bytes:
    return patched(g.nii, dim=[4, 2000, 2000, 2000, 500, 1, 1, 1])


BAD_IMAGES: dict[str, Case] = {
    # damaged: cut short, corrupt
    "gzip cut short": Case(
        ".nii.gz",
        lambda p, g: p.write_bytes(gz(g.nii)[: len(gz(g.nii)) * 6 // 10]),
        "its gzip data end early",
    ),
    "gzip cut inside the header": Case(
        ".nii.gz", lambda p, g: p.write_bytes(gz(g.nii)[:40]), "its gzip data end early"
    ),
    "gzip corrupt in the middle": Case(
        ".nii.gz", lambda p, g: p.write_bytes(_flip(gz(g.nii), 0.5)), "corrupt gzip data"
    ),
    "gzip checksum wrong": Case(
        ".nii.gz",
        lambda p, g: p.write_bytes(gz(g.nii)[:-8] + b"\0\0\0\0" + gz(g.nii)[-4:]),
        "checksum at its end does not match",
    ),
    "nii cut short": Case(
        ".nii", lambda p, g: p.write_bytes(g.nii[: len(g.nii) * 7 // 10]), "cut short"
    ),
    "nii header only": Case(
        ".nii", lambda p, g: p.write_bytes(g.nii[:352]), "but the file holds 352 bytes"
    ),
    "nii cut inside the header": Case(
        ".nii", lambda p, g: p.write_bytes(g.nii[:200]), "cut short inside its NIfTI-1 header"
    ),
    "empty .nii.gz": Case(".nii.gz", lambda p, g: p.write_bytes(b""), "empty file (0 bytes)"),
    "empty .nii": Case(".nii", lambda p, g: p.write_bytes(b""), "empty file (0 bytes)"),
    "text named .nii.gz": Case(
        ".nii.gz", lambda p, g: p.write_bytes(b"not an image\n" * 40), "is not a NIfTI image"
    ),
    "gzip of text": Case(
        ".nii.gz", lambda p, g: p.write_bytes(gz(b"not an image\n" * 40)), "is not a NIfTI image"
    ),
    "html error page": Case(
        ".nii.gz",
        lambda p, g: p.write_bytes(b"<html><body>404 Not Found</body></html>" * 10),
        "an error page saved as the file?",
    ),
    "bzip2 instead of gzip": Case(
        ".nii.gz", lambda p, g: p.write_bytes(__import__("bz2").compress(g.nii)), "bzip2-compressed"
    ),
    "a zip archive": Case(
        ".nii.gz", lambda p, g: p.write_bytes(b"PK\x03\x04" + g.nii[:2000]), "a zip archive"
    ),
    "a DICOM file": Case(
        ".nii", lambda p, g: p.write_bytes(b"\0" * 128 + b"DICM" + g.nii[:2000]), "a DICOM file"
    ),
    # lying headers
    "more volumes declared (.nii)": Case(
        ".nii", _bytes(lambda g: _dim(i4=2 * dims(g.nii)[4])(g)), "whole volume(s) of"
    ),
    "enormous image declared (.nii.gz)": Case(
        ".nii.gz", _bytes(_gz_bomb_header, compress=True), "more than a gzip file of"
    ),
    "enormous image declared (.nii)": Case(".nii", _bytes(_gz_bomb_header), "but the file holds"),
    "more volumes declared (.nii.gz)": Case(
        ".nii.gz", _bytes(lambda g: _dim(i4=2 * dims(g.nii)[4])(g), True), "its gzip data end early"
    ),
    "negative dimension": Case(".nii.gz", _bytes(_dim(i2=-14), True), "dimension 2 of size -14"),
    "zero dimension": Case(".nii.gz", _bytes(_dim(i3=0), True), "dimension 3 of size 0"),
    "dim[0] zero": Case(".nii.gz", _bytes(_dim(i0=0), True), "dim[0] = 0"),
    "dim[0] too large": Case(".nii.gz", _bytes(_dim(i0=9), True), "dim[0] = 9"),
    "5-D image": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, dim=[5, 14, 14, 7, dims(g.nii)[4] // 2, 2, 1, 1]), True),
        "a 5-D image",
    ),
    "zero voxel size, no affine": Case(
        ".nii.gz",
        _bytes(
            lambda g: patched(g.nii, pixdim=[1, 0, 0, 0, 2, 1, 1, 1], qform_code=0, sform_code=0),
            True,
        ),
        "no usable voxel-to-world affine",
    ),
    "NaN voxel size in the qform": Case(
        ".nii.gz",
        _bytes(
            lambda g: patched(
                g.nii, pixdim=[1, np.nan, 3, 3, 2, 1, 1, 1], qform_code=1, sform_code=0
            ),
            True,
        ),
        "no usable voxel-to-world affine",
    ),
    "infinite sform": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, sform_code=2, srow_x=[np.inf, 0, 0, 0]), True),
        "no usable voxel-to-world affine",
    ),
    "infinite scl_inter": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, scl_slope=2.0, scl_inter=np.inf), True),
        "its scaling is invalid",
    ),
    "vox_offset inside the header": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, vox_offset=100), True),
        "data offset (vox_offset 100)",
    ),
    "vox_offset fractional": Case(
        ".nii", _bytes(lambda g: patched(g.nii, vox_offset=352.5)), "data offset (vox_offset 352.5)"
    ),
    "vox_offset past the end (.nii)": Case(
        ".nii", _bytes(lambda g: patched(g.nii, vox_offset=10**8)), "but the file holds"
    ),
    "vox_offset past the end (.nii.gz)": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, vox_offset=2 * 10**6), True),
        "its gzip data end early",
    ),
    "unknown datatype": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, datatype=9999), True),
        "unknown NIfTI datatype code 9999",
    ),
    "complex data": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, datatype=32, bitpix=64), True),
        "is not a number per voxel",
    ),
    "RGB data": Case(
        ".nii.gz",
        _bytes(lambda g: patched(g.nii, datatype=128, bitpix=24), True),
        "is not a number per voxel",
    ),
    "header of a .hdr/.img pair": Case(
        ".nii.gz", _bytes(lambda g: patched(g.nii, magic=b"ni1"), True), "separate .img data file"
    ),
    "wrong magic": Case(".nii.gz", _bytes(lambda g: patched(g.nii, magic=b"abc"), True), "magic"),
    "wrong sizeof_hdr": Case(
        ".nii.gz", _bytes(lambda g: patched(g.nii, sizeof_hdr=1234), True), "is not a NIfTI image"
    ),
    # not a file
    "a folder named like an image": Case(
        ".nii.gz", lambda p, g: p.mkdir(), "is a folder, not a NIfTI file"
    ),
    "a broken symbolic link": Case(".nii.gz", _symlink, "broken symbolic link"),
    "a named pipe": Case(".nii.gz", _fifo, "not a regular file"),
}

TOLERATED_IMAGES: dict[str, Case] = {
    "plain .nii named .nii.gz": Case(".nii.gz", lambda p, g: p.write_bytes(g.nii)),
    "gzip named .nii": Case(".nii", lambda p, g: p.write_bytes(gz(g.nii))),
    "NaN scl_slope (nibabel's 'no scaling')": Case(
        ".nii.gz", _bytes(lambda g: patched(g.nii, scl_slope=np.nan), True)
    ),
    "trailing bytes after the gzip member": Case(
        ".nii.gz", lambda p, g: p.write_bytes(gz(g.nii) + b"padding")
    ),
    "extra singleton dimensions": Case(
        ".nii.gz", _bytes(lambda g: patched(g.nii, dim=[7] + dims(g.nii)[1:5] + [1, 1, 1]), True)
    ),
}


# ---- atlases -----------------------------------------------------------------------------------------


def _atlas(fn: Callable[[Good], tuple[np.ndarray, np.ndarray]]) -> Callable[[Path, Good], None]:
    def make(p: Path, g: Good) -> None:
        import nibabel as nib

        data, affine = fn(g)
        nib.save(nib.Nifti1Image(data, affine), str(p))

    return make


def _nan_background(g: Good):
    data = g.labels.astype(np.float32)
    data[data == 0] = np.nan
    return data, g.affine


def _shifted(by: float):
    def make(g: Good):
        affine = g.affine.copy()
        affine[:3, 3] += by
        return g.labels, affine

    return make


def _good_atlas_bytes(g: Good) -> bytes:
    import nibabel as nib

    return nib.Nifti1Image(g.labels, g.affine).to_bytes()


BAD_ATLASES: dict[str, Case] = {
    "atlas cut short": Case(
        ".nii.gz",
        lambda p, g: p.write_bytes(gz(_good_atlas_bytes(g))[:300]),
        "atlas: its gzip data end early",
    ),
    "empty atlas": Case(".nii.gz", lambda p, g: p.write_bytes(b""), "atlas is an empty file"),
    "atlas folder": Case(".nii.gz", lambda p, g: p.mkdir(), "atlas is a folder"),
    "atlas declaring an enormous image": Case(
        ".nii.gz",
        lambda p, g: p.write_bytes(
            gz(patched(_good_atlas_bytes(g), dim=[3, 3000, 3000, 3000, 1, 1, 1, 1]))
        ),
        "more than a gzip file of",
    ),
    "atlas on another grid with no overlap": Case(
        ".nii.gz", _atlas(_shifted(5000.0)), "do not overlap in space"
    ),
    "atlas on another grid with no overlap, below": Case(
        ".nii.gz", _atlas(_shifted(-5000.0)), "do not overlap in space"
    ),
    "atlas with infinite values": Case(
        ".nii.gz",
        _atlas(lambda g: (np.where(g.labels == 0, np.inf, g.labels).astype(np.float32), g.affine)),
        "infinite values",
    ),
    "atlas of NaN only": Case(
        ".nii.gz",
        _atlas(lambda g: (np.full(g.labels.shape, np.nan, np.float32), g.affine)),
        "only NaN values",
    ),
    "atlas with negative labels": Case(
        ".nii.gz",
        _atlas(lambda g: (np.where(g.labels == 5, -5, g.labels).astype(np.int16), g.affine)),
        "unexpected labels: -5",
    ),
    "atlas with enormous values": Case(
        ".nii.gz",
        _atlas(lambda g: (np.where(g.labels == 5, 1e12, g.labels).astype(np.float32), g.affine)),
        "are not region labels",
    ),
    "5-D atlas": Case(
        ".nii.gz",
        _atlas(lambda g: (g.labels[..., None, None].repeat(2, axis=4), g.affine)),
        "a 5-D image",
    ),
}

TOLERATED_ATLASES: dict[str, Case] = {
    "NaN background": Case(".nii.gz", _atlas(_nan_background), "NaN voxels taken as background"),
    "float labels": Case(
        ".nii.gz",
        _atlas(lambda g: (g.labels.astype(np.float64), g.affine)),
        "read as whole-number labels",
    ),
    "a 4-D atlas of one volume": Case(
        ".nii.gz", _atlas(lambda g: (g.labels[..., None], g.affine)), ""
    ),
    "uncompressed": Case(".nii", _atlas(lambda g: (g.labels, g.affine)), ""),
}
