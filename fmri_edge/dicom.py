"""One DICOM file per volume, as scanners export them in real time (the ``realtime`` extra: pydicom).

Reading (:func:`read_volume`) is nibabel's DICOM wrappers over pydicom
(``nibabel.nicom.dicomwrappers.wrapper_from_file``): a Siemens **mosaic** (VB/VE ideacmdtool
online export, the slices tiled in one image, unpacked by the wrapper) or a Siemens XA **enhanced
multi-frame** file (one frame per slice). The affine is turned from DICOM's LPS patient space to
NIfTI's RAS, as ``nibabel.nicom.dicomreaders.mosaic_to_nii`` does.

A DICOM still being written parses its header; only its pixel data fail ("number of bytes of pixel
data is less than expected"): every failure raises one :class:`~fmri_edge.errors.InputError`, and
the stream retries until the file decodes or its timeout passes.

Writing (:class:`Encoder`, for ``fmri-edge simulate --scanner --format dicom``) makes XA-like
enhanced multi-frame MR files: uint16 pixels with a rescale slope and intercept, one frame per slice.
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
            warnings.simplefilter("ignore")   # "The DICOM readers are highly experimental"
            from nibabel.nicom import dicomwrappers  # noqa: F401
    except ImportError:
        raise UsageError(f"reading DICOM needs pydicom and nibabel (not installed): {INSTALL_HINT}") from None


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray, str | None]:
    """One volume → (float32 (X, Y, Z) data, 4×4 RAS affine, SeriesInstanceUID)."""
    _require()
    from nibabel.nicom import dicomwrappers

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "nicom is experimental", pydicom's VR notes
            w = dicomwrappers.wrapper_from_file(str(path))
            data = w.get_data()
            affine = LPS_TO_RAS @ np.asarray(w.affine, dtype=np.float64)
    except InputError:
        raise
    except Exception as e:  # pydicom and nibabel raise many types for damaged or partial files
        text = str(e).splitlines()[0][:140] if str(e) else type(e).__name__
        raise InputError(path, f"not a readable DICOM volume ({text})") from None
    if data.ndim != 3:
        raise InputError(path, f"DICOM holds a {data.ndim}-D image (shape {data.shape}); stream needs one 3-D "
                               "volume per file (Siemens mosaic, or XA enhanced export with one file per volume)")
    series = w.get("SeriesInstanceUID")
    return np.asarray(data, dtype=np.float32), affine, str(series) if series else None


class Encoder:
    """Volumes of one series (float (X, Y, Z) on ``affine``, RAS) → bytes of enhanced MR DICOM files."""

    def __init__(self, affine: np.ndarray, shape, series: int = 1):
        _require()
        from pydicom.uid import generate_uid

        self.affine = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)    # RAS → LPS, DICOM's space
        self.shape = tuple(int(s) for s in shape[:3])
        self.series = series
        self.study_uid, self.series_uid = generate_uid(), generate_uid()

    def __call__(self, volume: np.ndarray, number: int) -> bytes:
        import io

        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        vol = np.asarray(volume, dtype=np.float64)
        lo, hi = float(vol.min()), float(vol.max())
        slope = (hi - lo) / 65535 if hi > lo else 1.0
        pixels = np.round((vol - lo) / slope).clip(0, 65535).astype(np.uint16)   # (X, Y, Z)
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
        ds.Rows, ds.Columns, ds.NumberOfFrames = nx, ny, nz        # rows: i (X), columns: j (Y)
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
        scale.RescaleSlope, scale.RescaleIntercept, scale.RescaleType = f"{slope:.10g}", f"{lo:.10g}", "US"
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
            pos.ImagePositionPatient = [f"{v:.6f}" for v in self.affine[:3, :3] @ [0, 0, k] + self.affine[:3, 3]]
            f.PlanePositionSequence = Sequence([pos])
            frames.append(f)
        ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
        ds.PixelData = np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes()   # frames of (rows, columns)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
