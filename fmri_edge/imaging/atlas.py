"""A checked label atlas (3-D image of region labels 1 … n_regions), put once per grid on the grids
of the images it is used with (nearest neighbour, nilearn).

Shared by extraction, the live stream and brain maps. nibabel and nilearn are imported when used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_edge.data.io import KNOWN_ATLASES
from fmri_edge.errors import InputError


def label_ranges(values) -> str:
    """[1, 2, 3, 7, 9, 10] → '1-3, 7, 9-10' (at most 12 pieces)."""
    values = sorted(int(v) for v in values)
    pieces, start = [], None
    for a, b in zip(values, values[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            pieces.append(f"{start}" if start == a else f"{start}-{a}")
            start = None
    return ", ".join(pieces[:12]) + (
        f", … ({len(pieces) - 12} more ranges)" if len(pieces) > 12 else ""
    )


class Atlas:
    """A checked label atlas, put (once per grid) on the grids of the images it is used with.

    Accepted as distributed, each with a note: NaN background (taken as 0), float labels (whole
    numbers), a 4-D file of one volume, any grid (1 mm, 2 mm, SPM 181×217×181 or FSL 182×218×182):
    resampled to the image's grid by nearest neighbour (nilearn) when it differs."""

    def __init__(self, path: str | Path, n_regions: int, region_names=None):
        from fmri_edge.imaging import space, volumes

        self.path, self.n_regions, self.region_names = Path(path), n_regions, region_names
        self.notes: list[str] = []
        h = volumes.read_header(self.path, "atlas")
        if h.n_volumes > 1:
            raise InputError(
                self.path,
                f"atlas must be a 3-D image of region labels, got shape {h.shape} (a 4-D "
                "probabilistic atlas? use the maximum-probability label image)",
            )
        data = volumes.read_image(h, "atlas", native=True)
        if data.dtype.kind == "f":
            data = self._whole_numbers(data)
        if data.size and (
            data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max
        ):
            raise InputError(
                self.path, f"atlas values {data.min():g} … {data.max():g} are not region labels"
            )
        self.labels = np.asarray(data, dtype=np.int32)
        self.affine, self.grid = h.affine, volumes.describe_grid(h.shape, h.affine)
        self._check_labels(np.unique(self.labels), "")
        space.check_hemispheres(
            self.labels, self.affine, self.path, n_regions, region_names
        )  # a flipped atlas: once
        self._on_grid: dict[tuple, tuple[np.ndarray, str | None]] = {}

    def _whole_numbers(self, data: np.ndarray) -> np.ndarray:
        name = self.path.name
        if np.isinf(data).any():
            raise InputError(
                self.path, "atlas holds infinite values; expected whole-number region labels"
            )
        nan = np.isnan(data)
        if nan.all():
            raise InputError(
                self.path, "atlas holds only NaN values; expected whole-number region labels"
            )
        if nan.any():
            self.notes.append(
                f"atlas {name}: {int(nan.sum())} NaN voxels taken as background (0), as in public "
                "copies of the Brainnetome atlas"
            )
            data = np.where(nan, 0, data)
        whole = np.round(data)
        if not np.allclose(data, whole, atol=1e-3, rtol=0):
            raise InputError(
                self.path,
                "atlas values are not whole-number labels (a probability or intensity "
                "image?); use the label image (e.g. BN_Atlas_246_2mm.nii.gz)",
            )
        self.notes.append(
            f"atlas {name}: labels stored as {data.dtype} numbers, read as whole-number labels"
        )
        return whole

    def _check_labels(self, labels: np.ndarray, after: str) -> None:
        labels = labels[labels != 0]
        want = np.arange(1, self.n_regions + 1)
        missing, extra = np.setdiff1d(want, labels), np.setdiff1d(labels, want)
        if missing.size or extra.size:
            known = (
                f" (the {KNOWN_ATLASES[labels.size]} atlas?)"
                if labels.size in KNOWN_ATLASES and not after
                else ""
            )
            parts = [
                f"atlas has {labels.size} region labels{after}{known}, the model needs labels 1 … "
                f"{self.n_regions} (Brainnetome; 0 = background)"
            ]
            if missing.size:
                parts.append(f"missing labels: {label_ranges(missing)}")
            if extra.size:
                parts.append(f"unexpected labels: {label_ranges(extra)}")
            raise InputError(self.path, "; ".join(parts))

    def labels_on_grid(
        self,
        shape: tuple[int, int, int],
        affine: np.ndarray,
        notes: list[str],
        source: str | Path | None = None,
    ) -> np.ndarray:
        """(X, Y, Z) int32 labels on the grid ``shape``/``affine``: the atlas itself when the grids
        agree, else resampled once per grid (nilearn, nearest neighbour), with a note."""
        from fmri_edge.imaging.volumes import describe_grid

        affine = np.asarray(affine, dtype=np.float64)
        name = Path(source).name if source else "the image"
        key = (tuple(shape), affine.round(6).tobytes())
        if key not in self._on_grid:
            if self.labels.shape == tuple(shape) and np.allclose(self.affine, affine, atol=1e-4):
                self._on_grid[key] = (self.labels, None)
            else:
                grid = describe_grid(shape, affine)
                data = self._resampled(shape, affine, name, grid)
                present = np.unique(data)
                if not (present != 0).any():
                    raise InputError(
                        self.path,
                        f"atlas {self.grid} and {name} {grid} do not overlap in space: no "
                        "atlas label falls inside the image; both must be in the same space "
                        "(e.g. MNI152)",
                    )
                self._check_labels(
                    present,
                    f" left after resampling to the grid of {name} {shape} (nearest neighbour)",
                )
                self._on_grid[key] = (
                    data,
                    f"atlas {self.path.name} {self.grid} differs from the grid of {name} "
                    f"{grid}: resampled the atlas to the BOLD grid (nilearn, nearest neighbour); "
                    "check that both are in the same space (e.g. MNI152)",
                )
        labels, note = self._on_grid[key]
        notes.extend(self.notes)
        if note:
            notes.append(note)
        return labels

    def _resampled(self, shape, affine, name: str, grid: str) -> np.ndarray:
        """The labels on the grid by nearest neighbour (nilearn); all 0 where the grids do not meet."""
        import warnings

        import nibabel as nib
        from nilearn.image import resample_img
        from nilearn.image.resampling import BoundingBoxError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = resample_img(
                    nib.Nifti1Image(self.labels, self.affine),
                    target_affine=affine,
                    target_shape=tuple(shape),
                    interpolation="nearest",
                    force_resample=True,
                    copy_header=True,
                )
        except BoundingBoxError:  # nilearn: the grids do not meet at all
            return np.zeros(tuple(shape), dtype=np.int32)
        except (ValueError, np.linalg.LinAlgError, MemoryError) as e:
            raise InputError(
                self.path,
                f"atlas {self.grid} cannot be resampled to the grid of {name} {grid} "
                f"({str(e)[:100]})",
            ) from None
        return np.asarray(img.dataobj).astype(np.int32)
