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
        raise ImportError(
            "brain maps need nibabel and nilearn: pip install 'fmri-edge[nifti,plot]'"
        ) from None
    return nibabel


@dataclass
class LabelImage:
    """An atlas as the model's regions: ``labels`` (3-D int32; v = region v − 1, 0 = outside)."""

    path: Path
    labels: np.ndarray
    affine: np.ndarray
    grid: str  # shape, voxel size, known template (volumes.describe_grid)
    notes: list = field(default_factory=list)  # what was accepted, in words

    @property
    def voxel_mm(self) -> tuple:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def note(self) -> str:
        """One line for the user: the grid and whatever was read in a particular way."""
        own = f"atlas {self.path.name}: "
        return f"atlas {self.path.name} {self.grid}" + "".join(
            f"; {n.removeprefix(own)}" for n in self.notes
        )


def load_label_image(path: str | Path, n_regions: int) -> LabelImage:
    """Read an atlas label image for a model of ``n_regions`` regions (see the module docstring)."""
    from fmri_edge.imaging.atlas import Atlas

    _nibabel()
    atlas = Atlas(path, n_regions)
    return LabelImage(
        atlas.path,
        atlas.labels,
        np.asarray(atlas.affine, dtype=np.float64),
        atlas.grid,
        list(atlas.notes),
    )


def paint(atlas: LabelImage, values: np.ndarray) -> np.ndarray:
    """(n_regions,) values → a float32 volume on the atlas grid: region v − 1's value in every
    voxel labelled v, 0 outside every region (NaN values, e.g. a class never answered, are 0)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    table = np.concatenate([[0.0], values]).astype(np.float32)
    return table[atlas.labels]


def write_map(
    path: str | Path, atlas: LabelImage, volume: np.ndarray, description: str = ""
) -> Path:
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


def plot_map(
    atlas: LabelImage,
    volume: np.ndarray,
    out: str | Path,
    title: str,
    units: str,
    signed: bool,
    view: str = "glass",
    dpi: int = 100,
    region_names=None,
    values=None,
    top: int = 5,
) -> Path:
    """Draw ``volume`` (on the atlas grid) as a glass brain (``view="glass"``, every region seen
    through the brain; signed values keep their sign) or orthogonal slices through its peak
    (``"slices"``, on nilearn's MNI152 template, shipped with it), with a colour bar labelled
    ``units`` and ``title`` above; writes a PNG. The colour scale comes from the data
    (:func:`colour_scale`: a sequential map where every value has one sign, else a diverging one
    with 0 white and each side as long as the data reach); with ``region_names`` and ``values``
    the ``top`` regions (largest |value|) are numbered on the map and named beside it."""
    nib = _nibabel()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from nilearn import plotting
    except ImportError:
        raise ImportError(
            "brain maps need nilearn and matplotlib: pip install 'fmri-edge[nifti,plot]'"
        ) from None
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), atlas.affine)
    inside = volume[atlas.labels > 0]
    vmin, vmax, cmap, threshold, plot_abs = colour_scale(inside, signed)
    fig = plt.figure(figsize=(11, 4.2), dpi=dpi)
    # the brain leaves room on the right for the colour bar's label, and on top for the title
    common = dict(
        figure=fig,
        axes=(0.0, 0.0, 0.78 if region_names is not None else 0.955, 0.9),
        colorbar=True,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        title=None,
        annotate=True,
    )
    if view == "glass":
        display = plotting.plot_glass_brain(
            img,
            display_mode="lzry",
            plot_abs=plot_abs,
            threshold=threshold,
            black_bg=False,
            **common,
        )
    elif view == "slices":  # the MNI152 template underneath (nilearn's default background, offline)
        display = plotting.plot_stat_map(
            img,
            display_mode="ortho",
            threshold=threshold,
            black_bg=False,
            symmetric_cbar=False,
            draw_cross=False,
            **common,
        )
    else:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    cbar = getattr(display, "_cbar", None)
    if cbar is not None:
        cbar.set_label(units, fontsize=9, labelpad=6)
    if region_names is not None and values is not None:
        _label_top(fig, display, atlas, region_names, np.asarray(values, dtype=np.float64), top)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    display.close()
    plt.close(fig)
    return out


def colour_scale(inside: np.ndarray, signed: bool):
    """``(vmin, vmax, cmap, threshold, plot_abs)`` for the regions' values ``inside``, from the data.

    One sign (all ≥ 0 or all ≤ 0, e.g. attention, or contributions that all push the answer up):
    a sequential map from 0 (clear) to the extreme. Both signs: a diverging map with 0 white whose
    two sides reach as far as the data do (not ±max|v|, which leaves one side's colours unused)."""
    from matplotlib.colors import ListedColormap
    import matplotlib

    inside = np.asarray(inside, dtype=np.float64)
    inside = inside[np.isfinite(inside)]
    lo = float(inside.min()) if inside.size else 0.0
    hi = float(inside.max()) if inside.size else 1.0
    if not signed:  # all positive (attention): colours span the regions' range, not 0 … max; outside stays clear
        return lo, max(hi, lo + 1e-6), "viridis", (0.999 * lo if lo > 0 else None), True
    peak = max(abs(lo), abs(hi)) or 1.0
    tiny = 1e-6 * peak  # 0 (outside, or a region exactly 0) is clear: the brain shows through
    if lo >= 0:
        return 0.0, peak, "Reds", tiny, False
    if hi <= 0:
        return -peak, 0.0, "Blues_r", tiny, False
    base = matplotlib.colormaps["RdBu_r"]
    # the part of RdBu_r between the data's two extremes, 0 (its middle, white) where the data's 0 is
    a, b = 0.5 - 0.5 * abs(lo) / peak, 0.5 + 0.5 * hi / peak
    return lo, hi, ListedColormap(base(np.linspace(a, b, 256)), name="RdBu_r_data"), tiny, False


def region_centres(atlas: LabelImage, regions) -> np.ndarray:
    """World (mm) centre of each region's voxels: (len(regions), 3)."""
    out = []
    for r in regions:
        ijk = np.argwhere(atlas.labels == int(r) + 1)
        c = ijk.mean(axis=0) if len(ijk) else np.zeros(3)
        out.append(atlas.affine[:3, :3] @ c + atlas.affine[:3, 3])
    return np.asarray(out)


def _label_top(fig, display, atlas: LabelImage, region_names, values: np.ndarray, top: int) -> None:
    """Number the ``top`` regions (largest |value|) at their centres on the x/y/z views and name
    them in a list beside the map."""
    finite = np.nan_to_num(values, nan=0.0)
    order = [int(i) for i in np.argsort(-np.abs(finite), kind="stable")[:top] if finite[i] != 0]
    centres = region_centres(atlas, order)
    plane = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}
    for key, axes in getattr(display, "axes", {}).items():
        if key not in plane:
            continue
        u, v = plane[key]
        for n, c in enumerate(centres, start=1):
            axes.ax.text(
                c[u],
                c[v],
                str(n),
                fontsize=7,
                ha="center",
                va="center",
                color="black",
                weight="bold",
                bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec="black", lw=0.5, alpha=0.8),
            )
    lines = [f"{n}  {region_names[i]}  {values[i]:+.3g}" for n, i in enumerate(order, start=1)]
    fig.text(
        0.80,
        0.85,
        "largest |value|\n" + "\n".join(lines),
        fontsize=8,
        va="top",
        ha="left",
        family="monospace",
    )
