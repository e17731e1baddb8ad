"""Per-region scores on the brain: an atlas label image in, a NIfTI map and a figure out.

The optional ``[nifti]`` extra (nibabel, nilearn) reads and writes the images; the figure is drawn
by nilearn's plotting (``[plot]``: matplotlib). Both are imported only when used.

- :func:`load_label_image` — an atlas file as the model's regions: label v is the model's region
  v − 1 (Brainnetome: ``BN_atlas.txt`` order), 0 is outside every region. It is read by extract's
  :class:`~fmri_edge.imaging.extract.Atlas` (the safe reader of :mod:`fmri_edge.imaging.volumes`: nothing allocated
  beyond what the file holds), so every variant extract accepts is accepted here, with the same
  notes: NaN or 0 background, float or integer labels, any voxel size and grid, a 4-D file holding a
  single volume; and the same refusals in one line naming the file: a 4-D or probabilistic atlas,
  labels that do not match the model's regions (which are missing, which are extra);
- :func:`paint` — region values → a volume on the atlas grid (each region's value in each of its
  voxels, 0 outside), written by :func:`write_map` for the user's own viewer;
- :func:`plot_map` — a glass brain or orthogonal slices, with a colour bar in the scores' units.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np



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
    grid: str                                    # shape, voxel size, known template (volumes.describe_grid)
    notes: list = field(default_factory=list)    # what was accepted, in words

    @property
    def voxel_mm(self) -> tuple:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def note(self) -> str:
        """One line for the user: the grid and whatever was read in a particular way."""
        own = f"atlas {self.path.name}: "
        return f"atlas {self.path.name} {self.grid}" + "".join(f"; {n.removeprefix(own)}" for n in self.notes)


def load_label_image(path: str | Path, n_regions: int) -> LabelImage:
    """Read an atlas label image for a model of ``n_regions`` regions (see the module docstring)."""
    from fmri_edge.imaging.atlas import Atlas

    _nibabel()
    atlas = Atlas(path, n_regions)
    return LabelImage(atlas.path, atlas.labels, np.asarray(atlas.affine, dtype=np.float64), atlas.grid,
                      list(atlas.notes))


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
    from fmri_edge.files import replace_atomically

    data = img.to_bytes()
    with replace_atomically(path, binary=True) as f:
        f.write(gzip.compress(data, compresslevel=6) if path.name.endswith(".gz") else data)
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
