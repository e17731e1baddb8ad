"""The atlas into the participant's functional space, once per session: ``fmri-edge register``.

At session start, the MNI152 2009 template that nilearn ships (``mni_icbm152_*_tal_nlin_sym_09a``,
offline; by default an EPI-like contrast made from its tissue maps, or its T1) is registered to a
reference functional volume of the participant (the first volume of a
short reference scan with the run's slice prescription) by a 12-parameter affine registration with
normalized mutual information (picsl-greedy, the ``register`` extra). With an anatomical image
(``anat``), the template goes to the T1 (affine) and the T1 to the reference (rigid, 6 parameters),
the two composed. The atlas (MNI space) is then carried onto the reference's grid with nearest
neighbour, and a report says how many voxels each region keeps, which regions are lost or too
small (named), and whether the result passes :func:`fmri_edge.imaging.space.check_atlas`; an overlay PNG
shows the atlas's outline on the reference for the operator to check by eye.

Greedy's matrices map points of the fixed image to the moving image in RAS world coordinates (mm);
the composition and the nearest-neighbour gather are done here in numpy.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError, UsageError

MIN_REGION_VOXELS = 5  # fewer voxels than this on the functional grid: "too small"
TEMPLATE_RESOLUTION_MM = 2  # the template is registered at 2 mm (the reference is 2–4 mm)
ITERATIONS = "100x50x10"  # greedy's iterations per level (coarse to fine)
STARTS = (
    "centres",
    "identity",
)  # a registration that fails the space check starts again from the next
STARTS_SAID = {
    "centres": "the image centres",
    "identity": "the scanner's coordinates (MNI origin at the isocentre)",
}
AFFINE_SCALES = (
    0.8,
    1.25,
)  # the affine stage may stretch the 7-parameter result this much per axis


def require_register(command: str = "register") -> None:
    """One-line :class:`UsageError` when picsl-greedy (the ``register`` extra) is missing."""
    try:
        import picsl_greedy  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{command} needs picsl-greedy (not installed): pip install 'fmri-edge[register]'"
        ) from None


@dataclass
class Registration:
    """What :func:`register` did."""

    reference: Path
    atlas: Path
    out: Path | None
    matrix: np.ndarray  # 4×4: reference RAS (mm) → MNI RAS (mm)
    labels: np.ndarray  # the atlas on the reference grid (int16)
    affine: np.ndarray  # the reference grid's
    voxels: np.ndarray  # (n_regions,) voxels per region on the reference grid
    lost: list[str]  # regions with no voxel
    small: list[tuple[str, int]]  # regions with fewer than MIN_REGION_VOXELS
    seconds: float
    check: str | None = (
        None  # None: passed fmri_edge.imaging.space.check_atlas; else its one-line problem
    )
    notes: list[str] = field(default_factory=list)
    overlay: Path | None = None

    def as_dict(self) -> dict:
        return {
            "reference": str(self.reference),
            "atlas": str(self.atlas),
            "out": str(self.out) if self.out else None,
            "seconds": round(self.seconds, 2),
            "matrix_ref_to_mni": np.round(self.matrix, 5).tolist(),
            "regions": int((self.voxels > 0).sum()),
            "voxels_min": int(self.voxels.min()),
            "voxels_median": float(np.median(self.voxels)),
            "voxels_per_region": self.voxels.tolist(),
            "lost": self.lost,
            "too_small": [{"region": n, "voxels": v} for n, v in self.small],
            "check": self.check or "passed",
            "notes": self.notes,
            "overlay": str(self.overlay) if self.overlay else None,
        }


# ---- images --------------------------------------------------------------------------------------------


def read_reference(path: str | Path, what: str = "reference") -> tuple[np.ndarray, np.ndarray]:
    """A 3-D volume (or the first volume of a 4-D run) → (float32 data, affine), read safely; a
    DICOM volume (``.dcm``: Siemens mosaic, XA enhanced; needs the realtime extra's pydicom) too."""
    from fmri_edge.imaging import volumes

    if str(path).lower().endswith(".dcm"):
        from fmri_edge.imaging import dicom

        data, affine, _ = dicom.read_volume(path)
        data, shape = np.asarray(data, dtype=np.float32), data.shape
    else:
        h = volumes.read_header(path, what)
        data, affine, shape = next(volumes.iter_blocks(h, 1, what))[..., 0], h.affine, h.shape
    if data.ndim != 3 or min(data.shape) < 4:
        raise InputError(path, f"{what} of shape {shape} is not a 3-D brain volume")
    finite = np.isfinite(data)
    if not finite.any() or np.ptp(data[finite]) == 0:
        raise InputError(path, f"{what} holds no image (constant or NaN)")
    return np.where(finite, data, 0).astype(np.float32), np.asarray(affine, dtype=np.float64)


TEMPLATES = ("epi", "t1")
EPI_WEIGHTS = {
    "gm": 800.0,
    "wm": 550.0,
    "csf": 1000.0,
}  # T2*-weighted EPI: CSF brightest, grey above white


def template_image(
    kind: str = "epi", resolution_mm: int = TEMPLATE_RESOLUTION_MM
) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 2009 template nilearn ships, as (float32 data, affine): ``t1`` its T1 image;
    ``epi`` an EPI-like contrast made from its grey and white matter maps (CSF = inside the brain
    and neither), weighted as a T2*-weighted EPI (:data:`EPI_WEIGHTS`)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution_mm)
    data = np.asarray(t1.dataobj, dtype=np.float32)
    if kind == "epi":
        gm = np.asarray(
            datasets.load_mni152_gm_template(resolution=resolution_mm).dataobj, dtype=np.float32
        )
        wm = np.asarray(
            datasets.load_mni152_wm_template(resolution=resolution_mm).dataobj, dtype=np.float32
        )
        csf = np.clip((data > 0) - gm - wm, 0, 1)
        data = EPI_WEIGHTS["gm"] * gm + EPI_WEIGHTS["wm"] * wm + EPI_WEIGHTS["csf"] * csf
    elif kind != "t1":
        raise UsageError(f"--template {kind}: choose from {', '.join(TEMPLATES)}")
    return data.astype(np.float32), np.asarray(t1.affine, dtype=np.float64)


def template_path(kind: str = "epi", resolution_mm: int = TEMPLATE_RESOLUTION_MM) -> Path:
    """:func:`template_image` as a NIfTI file in the user's cache folder (made once), for greedy to read."""
    import nibabel as nib

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fmri-edge"
    path = cache / f"mni152_2009_{kind}_{resolution_mm}mm.nii.gz"
    if not path.exists():
        data, affine = template_image(kind, resolution_mm)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.nii.gz")
        nib.save(nib.Nifti1Image(data, affine), str(tmp))
        os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _quiet_stdout():
    """Greedy's optimizer prints to the C-level stdout: keep it off fmri-edge's stdout (results)."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def greedy_affine(
    fixed: Path,
    moving: Path,
    dof: int = 12,
    iterations: str = ITERATIONS,
    threads: int | None = None,
    init: str | np.ndarray = "centres",
) -> np.ndarray:
    """Greedy's registration with NMI, ``dof`` 6 (rigid), 7 (rigid + one scale) or 12 (affine) →
    4×4 matrix: fixed RAS (mm) → moving RAS (mm). ``init``: ``"centres"`` (match the image centres),
    ``"identity"`` (two images of one session: the scanner's coordinates already agree up to head
    motion) or a matrix of the same kind (an earlier stage)."""
    from picsl_greedy import Greedy3D

    with tempfile.TemporaryDirectory(prefix="fmri-edge-register-") as tmp:
        out = Path(tmp) / "affine.mat"
        if isinstance(init, np.ndarray):
            np.savetxt(Path(tmp) / "init.mat", init)
            start = f"-ia {Path(tmp) / 'init.mat'}"
        else:
            start = {"centres": "-ia-image-centers", "identity": "-ia-identity"}[init]
        cmd = f"-d 3 -a -dof {dof} -m NMI -n {iterations} {start} -i {fixed} {moving} -o {out}" + (
            f" -threads {threads}" if threads else ""
        )
        with _quiet_stdout():
            Greedy3D().execute(cmd, out=io.StringIO(), err=io.StringIO())
        matrix = np.loadtxt(out)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise InputError(fixed, "registration failed (greedy returned no usable matrix)")
    return matrix


def staged_affine(
    fixed: Path,
    moving: Path,
    iterations: str = ITERATIONS,
    threads: int | None = None,
    notes: list[str] | None = None,
    init: str = "centres",
) -> np.ndarray:
    """Rigid (6) → rigid + scale (7) → affine (12), each stage started from the one before. The
    affine is kept only when it scales, shears and stretches plausibly relative to the 7-parameter
    result (every singular value of the difference within :data:`AFFINE_SCALES`); otherwise (a field
    of view that covers part of the brain lets the affine shrink the atlas into it: a real 27-slice
    EPI did) the 7-parameter result is kept, with a note."""
    rigid = greedy_affine(fixed, moving, 6, iterations, threads, init)
    similar = greedy_affine(fixed, moving, 7, iterations, threads, rigid)
    affine = greedy_affine(fixed, moving, 12, iterations, threads, similar)
    scales = np.linalg.svd(affine[:3, :3] @ np.linalg.inv(similar[:3, :3]), compute_uv=False)
    if AFFINE_SCALES[0] <= scales.min() and scales.max() <= AFFINE_SCALES[1]:
        return affine
    if notes is not None:
        notes.append(
            f"the 12-parameter affine stretched the template implausibly (by {', '.join(f'{v:.2f}' for v in scales)}"
            f" against rigid + scale): kept the 7-parameter result (rigid, one scale {np.cbrt(abs(np.linalg.det(similar[:3, :3]))):.3f})"
        )
    return similar


def labels_through(
    labels: np.ndarray, labels_affine: np.ndarray, shape, affine: np.ndarray, matrix: np.ndarray
) -> np.ndarray:
    """Labels (their grid ``labels_affine``, MNI) on the grid ``shape``/``affine`` whose world points
    ``matrix`` maps into MNI: nearest neighbour, 0 outside the atlas."""
    ijk = np.indices(tuple(shape[:3])).reshape(3, -1).astype(np.float64)
    to_atlas = np.linalg.inv(labels_affine) @ matrix @ affine
    v = np.rint(to_atlas[:3, :3] @ ijk + to_atlas[:3, 3:4]).astype(np.intp)
    inside = ((v >= 0) & (v < np.asarray(labels.shape)[:, None])).all(axis=0)
    out = np.zeros(ijk.shape[1], dtype=np.int16)
    out[inside] = labels[v[0, inside], v[1, inside], v[2, inside]]
    return out.reshape(tuple(shape[:3]))


# ---- the command's work ------------------------------------------------------------------------------------


def register(
    reference: str | Path,
    atlas: str | Path,
    out: str | Path | None = None,
    *,
    anat: str | Path | None = None,
    check: str | Path | None = None,
    n_regions: int = 246,
    region_names=None,
    force: bool = False,
    iterations: str = ITERATIONS,
    template: str = "epi",
    threads: int | None = None,
    on_start=None,
) -> Registration:
    """Bring ``atlas`` (MNI space) onto the grid of ``reference`` (see the module docstring); write
    it to ``out`` (NIfTI, int16, atomically) when it passes the space check, and the overlay PNG to
    ``check``. ``template``: the MNI image registered to the reference, ``epi`` (EPI-like, made from
    the template's tissue maps) or ``t1`` (its T1 image), or a NIfTI path; with ``anat``, the T1
    template goes to the T1 whatever is chosen. ``on_start()`` is called once every input has been
    read and checked, before the registration starts."""
    import nibabel as nib

    from fmri_edge.imaging import space
    from fmri_edge.imaging.atlas import Atlas
    from fmri_edge.files import check_new, replace_atomically

    reference, atlas_path = Path(reference), Path(atlas)
    if out is not None:
        out = Path(out)
        if not out.name.endswith((".nii", ".nii.gz")):
            raise UsageError(f"--out {out}: give a NIfTI file name (native_atlas.nii.gz)")
        check_new(out, force)
    if check is not None and not str(check).endswith(".png"):
        raise UsageError(f"--check {check}: give a .png file name")
    if check is not None:
        check_new(Path(check), force)
    atl = Atlas(atlas_path, n_regions, region_names=region_names)  # checked: labels, hemispheres
    ref_data, ref_affine = read_reference(reference)
    names = region_names
    notes: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmri-edge-register-") as tmp:
        fixed = Path(tmp) / "reference.nii.gz"
        nib.save(
            nib.Nifti1Image(ref_data, ref_affine), str(fixed)
        )  # sform = qform: one affine for ITK
        if anat is not None:
            anat_data, anat_affine = read_reference(anat, "anatomical image")
            anat_file = Path(tmp) / "anat.nii.gz"
            nib.save(nib.Nifti1Image(anat_data, anat_affine), str(anat_file))
        if on_start is not None:
            on_start()
        for attempt, init in enumerate(STARTS):
            if anat is None:
                moving = template_path(template) if template in TEMPLATES else Path(template)
                matrix = staged_affine(fixed, moving, iterations, threads, notes, init)
            else:
                to_anat = greedy_affine(
                    fixed, anat_file, 6, iterations, threads, "identity"
                )  # reference → T1 (rigid)
                to_mni = staged_affine(
                    anat_file, template_path("t1"), iterations, threads, notes, init
                )  # T1 → MNI
                matrix = to_mni @ to_anat
            labels = labels_through(atl.labels, atl.affine, ref_data.shape, ref_affine, matrix)
            problem = _problem(
                labels, ref_data, ref_affine, out or atlas_path, reference, n_regions, names
            )
            if problem is None or attempt == len(STARTS) - 1:
                break
            notes.append(
                f"registration started from {STARTS_SAID[init]} failed the space check ({problem[:120]}); "
                f"started again from {STARTS_SAID[STARTS[attempt + 1]]}"
            )
    seconds = time.perf_counter() - t0
    voxels = np.bincount(labels.ravel()[labels.ravel() > 0], minlength=n_regions + 1)[
        1 : n_regions + 1
    ]
    lost = [space.region_name(v + 1, names) for v in np.flatnonzero(voxels == 0)]
    small = [
        (space.region_name(v + 1, names), int(voxels[v]))
        for v in np.flatnonzero((voxels > 0) & (voxels < MIN_REGION_VOXELS))
    ]
    result = Registration(
        reference,
        atlas_path,
        None,
        matrix,
        labels,
        ref_affine,
        voxels,
        lost,
        small,
        seconds,
        notes=notes,
    )
    if check is not None:
        result.overlay = write_overlay(
            Path(check),
            ref_data,
            ref_affine,
            labels,
            f"{atlas_path.name} on {reference.name} (fmri-edge register)",
        )
    result.check = problem
    if problem is None and out is not None:
        img = nib.Nifti1Image(labels, ref_affine)
        img.header.set_xyzt_units("mm")
        with replace_atomically(out, binary=True) as f:
            f.write(img.to_bytes() if not out.name.endswith(".gz") else _gz(img.to_bytes()))
        result.out = out
    return result


def _problem(labels, ref_data, ref_affine, path, reference, n_regions, names) -> str | None:
    """Why a registered atlas is not usable (a region lost, flipped, off the brain), or None."""
    from fmri_edge.imaging import space

    voxels = np.bincount(labels.ravel()[labels.ravel() > 0], minlength=n_regions + 1)[
        1 : n_regions + 1
    ]
    lost = [space.region_name(v + 1, names) for v in np.flatnonzero(voxels == 0)]
    if lost:
        return (
            f"{len(lost)} region(s) have no voxel on the reference grid: {', '.join(lost[:8])}"
            + (" …" if len(lost) > 8 else "")
        )
    try:
        space.check_hemispheres(labels, ref_affine, path, n_regions, names)
        space.check_on_brain(labels, ref_data, ref_affine, path, reference)
    except InputError as e:
        return e.problem
    return None


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=6, mtime=0)


# ---- the overlay ---------------------------------------------------------------------------------------------


def _outline(labels: np.ndarray) -> np.ndarray:
    """Voxels of a 2-D label slice on a region's border (a neighbour with another label)."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        d = np.diff(labels, axis=axis) != 0
        sl_a = [slice(None)] * 2
        sl_b = [slice(None)] * 2
        sl_a[axis], sl_b[axis] = slice(1, None), slice(None, -1)
        edge[tuple(sl_a)] |= d
        edge[tuple(sl_b)] |= d
    return edge & ((labels > 0) | edge)


def write_overlay(
    path: Path, volume: np.ndarray, affine: np.ndarray, labels: np.ndarray, title: str
) -> Path:
    """The atlas's region outlines on the reference: 3 axial, 2 coronal and 2 sagittal slices,
    reoriented to RAS for display (left on the left, as in radiology software's neurological view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from matplotlib.colors import ListedColormap

    from fmri_edge.files import replace_atomically

    ornt = nib.orientations.io_orientation(affine)
    vol = nib.orientations.apply_orientation(volume, ornt)
    lab = nib.orientations.apply_orientation(labels, ornt)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[np.argsort(ornt[:, 0])]
    inside = np.argwhere(lab > 0)
    lo, hi = (
        (inside.min(axis=0), inside.max(axis=0))
        if len(inside)
        else (np.zeros(3, int), np.array(lab.shape) - 1)
    )
    vmax = np.percentile(vol, 99.5)
    rng = np.random.default_rng(0)
    colors = ListedColormap(rng.uniform(0.3, 1.0, size=(int(lab.max()) + 1, 3)))
    views = (
        [(2, f) for f in (0.3, 0.5, 0.7)]
        + [(1, f) for f in (0.4, 0.65)]
        + [(0, f) for f in (0.3, 0.7)]
    )
    fig, axes = plt.subplots(1, len(views), figsize=(2.4 * len(views), 3.0), facecolor="black")
    for ax, (axis, frac) in zip(axes, views):
        k = int(round(lo[axis] + frac * (hi[axis] - lo[axis])))
        img = np.take(vol, k, axis=axis).T
        sl = np.take(lab, k, axis=axis).T
        rest = [a for a in range(3) if a != axis]
        aspect = zooms[rest[1]] / zooms[rest[0]]
        ax.imshow(
            img,
            cmap="gray",
            origin="lower",
            vmin=0,
            vmax=vmax,
            aspect=aspect,
            interpolation="nearest",
        )
        edge = _outline(sl)
        ax.imshow(
            np.ma.masked_where(~edge, sl),
            cmap=colors,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
            vmin=0,
            vmax=max(1, int(lab.max())),
        )
        ax.set_title(f"{('sagittal', 'coronal', 'axial')[axis]} {k}", color="white", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, color="white", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, facecolor="black")
    plt.close(fig)
    with replace_atomically(path, binary=True) as f:
        f.write(buf.getvalue())
    return path
