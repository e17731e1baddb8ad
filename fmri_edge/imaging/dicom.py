"""One DICOM file per volume, as scanners export them in real time (the ``realtime`` extra: pydicom).

Reading (:func:`read_volume`) is nibabel's DICOM wrappers over pydicom
(``nibabel.nicom.dicomwrappers.wrapper_from_file``): a Siemens **mosaic** (VB/VE ideacmdtool
online export, the slices tiled in one image, unpacked by the wrapper) or a Siemens XA **enhanced
multi-frame** file (one frame per slice). The affine is turned from DICOM's LPS patient space to
NIfTI's RAS, as ``nibabel.nicom.dicomreaders.mosaic_to_nii`` does.

A DICOM still being written parses its header; only its pixel data fail ("number of bytes of pixel
data is less than expected"): every failure raises one :class:`~fmri_edge.errors.InputError`, and
the stream retries until the file decodes or its timeout passes.

:class:`Reader` reads the volumes after the first of an enhanced series straight from their pixel
data when their geometry and scaling are the first one's, byte for byte (nibabel's multi-frame
wrapper parses every frame's functional groups: ~50 ms for 97 frames).

Writing (:class:`Encoder`, for ``fmri-edge simulate --scanner --format dicom``) makes XA-like
enhanced multi-frame MR files: uint16 pixels with one rescale slope for the series, one frame per slice.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError, UsageError

INSTALL_HINT = "pip install 'fmri-edge[realtime]'"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _require():
    try:
        import pydicom  # noqa: F401

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "The DICOM readers are highly experimental"
            from nibabel.nicom import dicomwrappers  # noqa: F401
    except ImportError:
        raise UsageError(
            f"reading DICOM needs pydicom and nibabel (not installed): {INSTALL_HINT}"
        ) from None


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """One volume → (float32 (X, Y, Z) data, 4×4 RAS affine, SeriesInstanceUID), by nibabel's wrappers."""
    return _read_full(Path(path))[:3]


def _read_full(path: Path):
    """:func:`read_volume`, and the :class:`_Template` that lets the next volumes of the series be read fast
    (None where the fast path does not apply)."""
    _require()
    from nibabel.nicom import dicomwrappers

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "nicom is experimental", pydicom's VR notes
            w = dicomwrappers.wrapper_from_file(str(path))
            data = w.get_data()
            affine = LPS_TO_RAS @ np.asarray(w.affine, dtype=np.float64)
            template = _Template.of(path, w, affine)
    except InputError:
        raise
    except Exception as e:  # pydicom and nibabel raise many types for damaged or partial files
        text = str(e).splitlines()[0][:140] if str(e) else type(e).__name__
        raise InputError(path, f"not a readable DICOM volume ({text})") from None
    if data.ndim != 3:
        raise InputError(
            path,
            f"DICOM holds a {data.ndim}-D image (shape {data.shape}); stream needs one 3-D "
            "volume per file (Siemens mosaic, or XA enhanced export with one file per volume)",
        )
    series = w.get("SeriesInstanceUID")
    return np.asarray(data, dtype=np.float32), affine, str(series) if series else None, template


PER_FRAME, SHARED, PIXEL_DATA = 0x52009230, 0x52009229, 0x7FE00010
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit / implicit VR little endian


def _signature(ds) -> tuple:
    """What must not change between two volumes for the fast path: geometry and scaling (the
    functional groups, compared as raw bytes), pixel format, series."""
    raw = [ds.get_item(tag) for tag in (PER_FRAME, SHARED)]
    return (
        str(ds.file_meta.TransferSyntaxUID),
        ds.get("Rows"),
        ds.get("Columns"),
        ds.get("NumberOfFrames"),
        ds.get("BitsAllocated"),
        ds.get("PixelRepresentation"),
        str(ds.get("SeriesInstanceUID")),
        *(r.value if r is not None and isinstance(r.value, bytes) else None for r in raw),
    )


class _Template:
    """The first volume of an enhanced multi-frame series, as nibabel decoded it: its frame order,
    scaling, affine and the raw bytes of its functional groups."""

    def __init__(self, key, frame_order, shape, slope, inter, affine, series, dtype):
        self.key, self.frame_order, self.shape = key, frame_order, shape
        self.slope, self.inter, self.affine, self.series, self.dtype = (
            slope,
            inter,
            affine,
            series,
            dtype,
        )

    @classmethod
    def of(cls, path: Path, w, affine) -> "_Template | None":
        import pydicom

        if not getattr(w, "is_multiframe", False) or w.scale_factors.shape[0] != 1:
            return None
        ds = pydicom.dcmread(str(path), defer_size="64 KB")
        key = _signature(ds)
        if (
            key[0] not in UNCOMPRESSED
            or key[4] != 16
            or None in key
            or len(w.frames) != int(key[3])
        ):
            return None
        shape = tuple(int(n) for n in w.image_shape)
        if len(shape) != 3 or shape[2] != int(key[3]):
            return None
        slope, inter = (float(v) for v in w.scale_factors[0])
        return cls(
            key,
            np.asarray(w.frame_order),
            shape,
            slope,
            inter,
            affine,
            key[6],
            np.dtype("<i2" if key[5] else "<u2"),
        )

    def read(self, path: Path):
        """The volume by the fast path, or None where it differs from the template (read it in full)."""
        import pydicom

        try:
            ds = pydicom.dcmread(str(path), defer_size="64 KB")
            if _signature(ds) != self.key:
                return None
            pixels = ds.get_item(PIXEL_DATA)
        except Exception:
            return None  # the full path names the problem
        rows, cols, frames = self.shape
        want = rows * cols * frames
        got = (
            len(pixels.value) // 2 if pixels is not None and isinstance(pixels.value, bytes) else 0
        )
        if got < want:
            raise InputError(
                path,
                f"not a readable DICOM volume (its pixel data hold {got} of {want} values: "
                "cut short, or still being written)",
            )
        frame = np.frombuffer(pixels.value, dtype=self.dtype, count=want).reshape(
            frames, rows, cols
        )
        out = np.empty(self.shape, dtype=np.float32, order="F")
        scaled = self.slope != 1.0 or self.inter != 0.0
        for k, f in enumerate(
            self.frame_order
        ):  # nibabel's arithmetic (float64), then float32: the same values
            out[:, :, k] = frame[f] * self.slope + self.inter if scaled else frame[f]
        return out, self.affine, self.series


class Reader:
    """:func:`read_volume` for the volumes of one live series: the first volume is decoded by nibabel's
    wrappers; the next ones of an enhanced multi-frame series whose geometry, scaling and pixel format
    are byte for byte the first one's are read straight from their pixel data (about 5 ms instead of
    50 ms for 97 frames of 97×115), with nibabel's frame order and scaling. Anything else (a mosaic, a
    change of geometry, compressed pixels) goes through nibabel every time."""

    def __init__(self):
        self.template: _Template | None = None

    def __call__(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, str | None]:
        path = Path(path)
        if self.template is not None:
            fast = self.template.read(path)
            if fast is not None:
                return fast
        data, affine, series, template = _read_full(path)
        self.template = template or self.template
        return data, affine, series


class Encoder:
    """Volumes of one series (float (X, Y, Z) on ``affine``, RAS) → bytes of enhanced MR DICOM files."""

    def __init__(self, affine: np.ndarray, shape, series: int = 1):
        _require()
        from pydicom.uid import generate_uid

        self.affine = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)  # RAS → LPS, DICOM's space
        self.shape = tuple(int(s) for s in shape[:3])
        self.series = series
        self.study_uid, self.series_uid = generate_uid(), generate_uid()
        self.slope = None

    def __call__(self, volume: np.ndarray, number: int) -> bytes:
        import io

        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        vol = np.asarray(volume, dtype=np.float64)
        if (
            self.slope is None
        ):  # one scaling for the series, as scanners do: from the first volume, 50 % headroom
            self.slope = max(float(vol.max()), 1.0) * 1.5 / 65535
        lo, slope = 0.0, self.slope
        pixels = np.round((vol - lo) / slope).clip(0, 65535).astype(np.uint16)  # (X, Y, Z)
        vox = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        dirs = self.affine[:3, :3] / vox
        nx, ny, nz = self.shape

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ENHANCED_MR
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_MR, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_uid, self.series_uid
        ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = self.series, number, number
        ds.Rows, ds.Columns, ds.NumberOfFrames = nx, ny, nz  # rows: i (X), columns: j (Y)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        shared = Dataset()
        measures = Dataset()
        measures.PixelSpacing = [f"{vox[0]:.6g}", f"{vox[1]:.6g}"]
        measures.SliceThickness = f"{vox[2]:.6g}"
        shared.PixelMeasuresSequence = Sequence([measures])
        orient = Dataset()
        # ImageOrientationPatient: the direction along a row (column index j), then down a column (row index i)
        orient.ImageOrientationPatient = [f"{v:.6f}" for v in (*dirs[:, 1], *dirs[:, 0])]
        shared.PlaneOrientationSequence = Sequence([orient])
        scale = Dataset()
        scale.RescaleSlope, scale.RescaleIntercept, scale.RescaleType = (
            f"{slope:.10g}",
            f"{lo:.10g}",
            "US",
        )
        shared.PixelValueTransformationSequence = Sequence([scale])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        dim = Dataset()
        dim.DimensionIndexPointer = pydicom.datadict.tag_for_keyword("InStackPositionNumber")
        ds.DimensionIndexSequence = Sequence([dim])
        frames = []
        for k in range(nz):
            f = Dataset()
            content = Dataset()
            content.DimensionIndexValues = [k + 1]
            content.InStackPositionNumber = k + 1
            f.FrameContentSequence = Sequence([content])
            pos = Dataset()
            pos.ImagePositionPatient = [
                f"{v:.6f}" for v in self.affine[:3, :3] @ [0, 0, k] + self.affine[:3, 3]
            ]
            f.PlanePositionSequence = Sequence([pos])
            frames.append(f)
        ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
        ds.PixelData = np.ascontiguousarray(
            pixels.transpose(2, 0, 1)
        ).tobytes()  # frames of (rows, columns)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
