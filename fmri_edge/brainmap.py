"""Per-region scores on the brain: an atlas label image in, a NIfTI map and a figure out.

The optional ``[nifti]`` extra (nibabel, nilearn) reads and writes the images; the figure is drawn
by nilearn's plotting (``[plot]``: matplotlib). Both are imported only when used.

- :func:`load_label_image` — the ONE place where an atlas file becomes a label image: label v is
  the model's region v − 1 (Brainnetome: ``BN_atlas.txt`` order), 0 is outside every region.
  Atlas files as distributed vary, and every variant below is accepted, with a note saying what
  was read: NaN or 0 background, float or integer labels (float labels must be whole numbers),
  any voxel size (1 mm, 2 mm, …) and grid (SPM 181×217×181, FSL 182×218×182, …), a 4-D file
  holding a single volume. Refused with one line naming the file: a 4-D (several volumes) or
  probabilistic atlas (fractional values), negative labels, and labels that do not match the
  model's regions (which are missing, which are extra);
- :func:`paint` — region values → a volume on the atlas grid (each region's value in each of its
  voxels, 0 outside), written by :func:`write_map` for the user's own viewer;
- :func:`plot_map` — a glass brain or orthogonal slices, with a colour bar in the scores' units.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError

WHOLE = 1e-3          # float labels within this of a whole number are that label (e.g. 12.0000005)
KNOWN_GRIDS = {       # MNI152 grids met in the wild, for the note
    (181, 217, 181): "MNI152 1 mm, SPM grid",
    (182, 218, 182): "MNI152 1 mm, FSL grid",
    (91, 109, 91): "MNI152 2 mm, FSL grid",
    (79, 95, 79): "MNI152 2 mm, SPM grid",
}


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImportError("brain maps need nibabel and nilearn: pip install 'fmri-edge[nifti,plot]'") from None
    return nibabel


@dataclass
class LabelImage:
    """An atlas as the model's regions: ``labels`` (3-D int32; v = region v − 1, 0 = outside)."""

    path: Path
    labels: np.ndarray
    affine: np.ndarray
    voxel_mm: tuple
    notes: list = field(default_factory=list)    # what was accepted, in words

    @property
    def grid(self) -> str:
        shape = tuple(self.labels.shape)
        size = "×".join(f"{v:g}" for v in self.voxel_mm)
        return f"{'×'.join(map(str, shape))} voxels of {size} mm" + (
            f" ({KNOWN_GRIDS[shape]})" if shape in KNOWN_GRIDS else "")

    def note(self) -> str:
        """One line for the user: the grid and whatever was read in a particular way."""
        return f"atlas {self.path.name}: {self.grid}" + "".join(f"; {n}" for n in self.notes)


def _ranges(values) -> str:
    """[1, 2, 3, 7, 9, 10] → '1–3, 7, 9–10' (at most 8 runs shown)."""
    runs, values = [], sorted(int(v) for v in values)
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs[:8])
    return text + (f", … ({len(values)} labels)" if len(runs) > 8 else "")


def load_label_image(path: str | Path, n_regions: int, region_names=None) -> LabelImage:
    """Read an atlas label image for a model of ``n_regions`` regions (see the module docstring)."""
    nib = _nibabel()
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "atlas file not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises several types for files that are not images
        raise InputError(path, f"not a readable NIfTI label image ({type(e).__name__}: {str(e)[:100]})") from None
    notes = []
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
        notes.append("its single volume read as 3-D")
    if data.ndim == 4:
        raise InputError(path, f"a 4-D image of {data.shape[3]} volumes (a probabilistic or 4-D atlas): give a 3-D "
                               "label image, one whole-number region label per voxel (e.g. the maximum-probability map)")
    if data.ndim != 3:
        raise InputError(path, f"a {data.ndim}-D image of shape {data.shape}: give a 3-D label image")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise InputError(path, f"voxel type {data.dtype} is not a number type")
    if np.issubdtype(data.dtype, np.floating):
        nan = np.isnan(data)
        if np.isinf(data).any():
            raise InputError(path, "holds infinite values: not a label image")
        if nan.any():
            data = np.where(nan, 0, data)
            notes.append(f"NaN background ({int(nan.sum())} voxels) read as 0")
        rounded = np.round(data)
        off = np.abs(data - rounded) > WHOLE
        if off.any():
            i = tuple(int(v) for v in np.argwhere(off)[0])
            raise InputError(path, f"values are not whole-number labels (e.g. {float(data[i]):.4g} at voxel {i}): a "
                                   "probabilistic atlas? give a label image, one region label per voxel")
        notes.append(f"{data.dtype} labels read as whole numbers")
        data = rounded
    if data.size and data.min() < 0:
        raise InputError(path, f"negative label {data.min():g}: labels are 0 (outside) and 1 … {n_regions}")
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise InputError(path, f"label {data.max():g} is far beyond the model's {n_regions} regions")
    labels = data.astype(np.int32)
    present = np.unique(labels)
    present = present[present > 0]
    missing = np.setdiff1d(np.arange(1, n_regions + 1), present)
    extra = present[present > n_regions]
    if missing.size or extra.size:
        named = ""
        if missing.size and region_names is not None and missing.size <= 5:
            named = " (" + ", ".join(region_names[v - 1] for v in missing) + ")"
        parts = ([f"missing label(s) {_ranges(missing)}{named}"] if missing.size else []) + \
                ([f"extra label(s) {_ranges(extra)}"] if extra.size else [])
        raise InputError(path, f"its labels do not match the model's {n_regions} regions (labels 1 … {n_regions} "
                               f"in atlas order): {'; '.join(parts)}; give the model's atlas")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return LabelImage(path, labels, np.asarray(img.affine, dtype=np.float64), zooms, notes)


def paint(atlas: LabelImage, values: np.ndarray) -> np.ndarray:
    """(n_regions,) values → a float32 volume on the atlas grid: region v − 1's value in every
    voxel labelled v, 0 outside every region (NaN values, e.g. a class never answered, are 0)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    table = np.concatenate([[0.0], values]).astype(np.float32)
    return table[atlas.labels]


def write_map(path: str | Path, atlas: LabelImage, volume: np.ndarray, description: str = "") -> Path:
    """Write ``volume`` as a NIfTI on the atlas grid (``.nii`` or ``.nii.gz``, atomically; the
    header's description field holds ``description``, cut to its 80 bytes)."""
    nib = _nibabel()
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), atlas.affine)
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    img.header.set_xyzt_units("mm")
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


VIEWS = ("glass", "slices")


def plot_map(atlas: LabelImage, volume: np.ndarray, out: str | Path, title: str, units: str, signed: bool,
             view: str = "glass", dpi: int = 100) -> Path:
    """Draw ``volume`` (on the atlas grid) as a glass brain (``view="glass"``, every region seen
    through the brain; signed values keep their sign) or orthogonal slices through its peak
    (``"slices"``), with a colour bar labelled ``units`` and ``title`` above; writes a PNG."""
    nib = _nibabel()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from nilearn import plotting
    except ImportError:
        raise ImportError("brain maps need nilearn and matplotlib: pip install 'fmri-edge[nifti,plot]'") from None
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), atlas.affine)
    inside = volume[atlas.labels > 0]
    peak = float(np.max(np.abs(inside))) if inside.size else 0.0
    peak = peak or 1.0
    threshold = None
    if signed:
        vmin, vmax, cmap = -peak, peak, "RdBu_r"
    else:  # all positive (attention): colours span the regions' range, not 0 … max; outside (0) stays clear
        lo = float(inside.min()) if inside.size else 0.0
        vmin, vmax, cmap = lo, max(float(inside.max()), lo + 1e-6), "viridis"
        threshold = 0.999 * lo if lo > 0 else None
    fig = plt.figure(figsize=(11, 4.2), dpi=dpi)
    # the brain leaves room on the right for the colour bar's label, and on top for the title
    common = dict(figure=fig, axes=(0.0, 0.0, 0.955, 0.9), colorbar=True, cmap=cmap, vmin=vmin, vmax=vmax,
                  title=None, annotate=True)
    if view == "glass":
        display = plotting.plot_glass_brain(img, display_mode="lzry", plot_abs=not signed, threshold=threshold,
                                            black_bg=False, **common)
    elif view == "slices":
        display = plotting.plot_stat_map(img, display_mode="ortho", threshold=threshold, black_bg=False,
                                         symmetric_cbar=signed, bg_img=None, **common)
    else:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    cbar = getattr(display, "_cbar", None)
    if cbar is not None:
        cbar.set_label(units, fontsize=9, labelpad=6)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    display.close()
    plt.close(fig)
    return out
