"""A native-space, EPI-like run to replay with head motion (tests, benchmarks, docs/realtime.md).

Needs nibabel, nilearn (the MNI152 2009 template it ships offline) and scipy. The anatomy is
nilearn's MNI152 T1 template put on an **oblique** functional grid (3.5 mm voxels by default,
tilted about x and z as a slice prescription is); the atlas is a label image on that grid (the
real Brainnetome atlas resampled by nearest neighbour when given, else a Voronoi parcellation of
the brain into ``n_regions`` parcels); each region's mean BOLD over time is given (``signals``, e.g.
real ICBHI trials), painted as ``signal_r(t) · anatomy(x) / mean_r(anatomy)`` so that the region
means of the motion-free run are exactly ``signals``. Motion (:func:`fmri_edge.imaging.motion.move_volume`)
is applied afterwards, by the replay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def oblique_affine(
    shape=(64, 64, 36), voxel_mm: float = 3.5, tilt_deg=(15.0, 0.0, 8.0), centre=(0.0, -18.0, 16.0)
) -> np.ndarray:
    """A functional grid's affine: voxels of ``voxel_mm``, rotated by ``tilt_deg`` about x, y, z
    (an oblique prescription), centred on ``centre`` (RAS mm)."""
    from fmri_edge.imaging.motion import spm_matrix

    r = spm_matrix([0, 0, 0, *np.deg2rad(tilt_deg)])[:3, :3]
    a = np.eye(4)
    a[:3, :3] = r @ np.diag([voxel_mm] * 3)
    a[:3, 3] = np.asarray(centre) - a[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return a


def _on_grid(img, shape, affine, order: int) -> np.ndarray:
    from scipy import ndimage

    src = np.asarray(img.dataobj, dtype=np.float32)
    vox = np.linalg.inv(img.affine) @ affine
    return ndimage.affine_transform(
        src,
        vox[:3, :3],
        vox[:3, 3],
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=0.0,
    )


def anatomy(shape, affine, psf_fwhm_mm: float | None = None) -> np.ndarray:
    """nilearn's MNI152 T1 on the grid (float32, 0 outside), background 2 % of the tissue. The 2 mm
    template is first blurred to the EPI's point-spread function (Gaussian, FWHM ``psf_fwhm_mm``,
    default one functional voxel), as an EPI acquisition blurs, rather than point-sampled (aliased)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_template
    from scipy import ndimage

    img = load_mni152_template(resolution=2)
    fwhm = (
        float(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)).mean())
        if psf_fwhm_mm is None
        else psf_fwhm_mm
    )
    vox = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    blurred = ndimage.gaussian_filter(
        np.asarray(img.dataobj, dtype=np.float32), fwhm / np.sqrt(8 * np.log(2)) / vox
    )
    t1 = _on_grid(nib.Nifti1Image(blurred, img.affine), shape, affine, 1)
    return (t1 + 0.02 * np.percentile(t1, 99)).astype(np.float32)


def brain_mask(shape, affine) -> np.ndarray:
    from nilearn.datasets import load_mni152_brain_mask

    return _on_grid(load_mni152_brain_mask(resolution=2), shape, affine, 1) > 0.5


def parcels(
    shape, affine, n_regions: int = 246, atlas: str | Path | None = None, seed: int = 0
) -> np.ndarray:
    """(X, Y, Z) int16 labels on the grid: ``atlas`` resampled (nearest neighbour), or Voronoi parcels
    of the brain mask around ``n_regions`` seeds; every label holds a voxel."""
    if atlas is not None:
        import nibabel as nib

        img = nib.load(str(atlas))
        labels = np.rint(_on_grid(img, shape, affine, 0)).astype(np.int16)
        return labels
    mask = brain_mask(shape, affine)
    ijk = np.argwhere(mask)
    rng = np.random.default_rng(seed)
    seeds = ijk[rng.choice(len(ijk), n_regions, replace=False)].astype(np.float64)
    for _ in range(5):  # a few Lloyd steps: parcels of similar size
        d = ((ijk[:, None, :] - seeds[None]) ** 2).sum(-1)
        near = d.argmin(axis=1)
        seeds = np.stack(
            [
                ijk[near == r].mean(axis=0) if (near == r).any() else seeds[r]
                for r in range(n_regions)
            ]
        )
    near = ((ijk[:, None, :] - seeds[None]) ** 2).sum(-1).argmin(axis=1)
    labels = np.zeros(shape, dtype=np.int16)
    labels[tuple(ijk.T)] = near + 1
    return labels


def paint(
    base: np.ndarray,
    labels: np.ndarray,
    signals: np.ndarray,
    noise: float = 0.0,
    seed: int = 0,
    contrast: str = "signals",
) -> np.ndarray:
    """(X, Y, Z, V) float32 whose region means at volume k are ``signals[k]`` (V, R) — exactly without
    ``noise`` (a fraction of each voxel's value, zero-mean per region). ``contrast="anatomy"``: the
    image keeps the anatomy's contrast between regions and each region's signal relative to its
    run mean (region means ``∝ mean_r(anatomy) · signals[k, r] / mean_k signals[:, r]``), as in a
    real run, where neighbouring regions differ by their tissue, not by arbitrary levels."""
    rng = np.random.default_rng(seed)
    n_vol, n_regions = signals.shape
    inside = labels > 0
    region = labels[inside].astype(np.intp) - 1
    b = base[inside].astype(np.float64)
    counts = np.bincount(region, minlength=n_regions)
    anat_mean = np.bincount(region, weights=b, minlength=n_regions) / np.maximum(counts, 1)
    rel = b / anat_mean[region]
    scale = np.median(signals) / np.percentile(base[inside], 50)
    if contrast == "anatomy":
        signals = signals / signals.mean(axis=0) * (anat_mean * scale)[None]
    out = np.repeat(base[..., None], n_vol, axis=3).astype(np.float32)
    out *= scale  # the background on the signals' scale
    for k in range(n_vol):
        v = signals[k, region] * rel
        if noise:
            e = rng.normal(scale=noise, size=v.size)
            e -= (
                np.bincount(region, weights=e * v, minlength=n_regions)
                / np.bincount(region, weights=v, minlength=n_regions)
            )[region]
            v = v * (1 + e)
        out[..., k][inside] = v
    return out


def write_run(
    folder: str | Path,
    signals: np.ndarray,
    tr: float,
    shape=(64, 64, 36),
    voxel_mm: float = 3.5,
    atlas: str | Path | None = None,
    noise: float = 0.005,
    seed: int = 0,
    contrast: str = "anatomy",
) -> dict:
    """``folder/bold.nii`` (4-D, native oblique grid) and ``folder/atlas_native.nii.gz``; returns their
    paths and the grid."""
    import nibabel as nib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = oblique_affine(shape, voxel_mm)
    base = anatomy(shape, affine)
    labels = parcels(shape, affine, signals.shape[1], atlas, seed)
    data = paint(base, labels, signals, noise, seed, contrast)
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((voxel_mm,) * 3 + (float(tr),))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(folder / "bold.nii"))
    nib.save(nib.Nifti1Image(labels, affine), str(folder / "atlas_native.nii.gz"))
    return {
        "bold": folder / "bold.nii",
        "atlas": folder / "atlas_native.nii.gz",
        "affine": affine,
        "shape": shape,
    }
