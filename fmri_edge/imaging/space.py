"""Is the atlas in the image's space? Checks made wherever an atlas meets a BOLD image.

``extract``, ``stream`` and ``explain``'s brain maps put a label atlas (MNI space, or brought into
the participant's functional space by ``fmri-edge register``) on images. Resampling never
registers: an atlas in another space, flipped left–right or shifted, gives wrong region means in
silence. These checks refuse the gross cases with one :class:`~fmri_edge.errors.InputError` line
and say the doubtful ones in notes:

- **hemispheres** (:func:`check_hemispheres`, the atlas alone, in its own world space): each
  Brainnetome region named ``…_L`` must lie at a smaller RAS x (further left) than its ``…_R``
  partner (labels 2k − 1 and 2k). A left–right flipped atlas (a radiological-convention file, a
  lost sign in the affine) has (nearly) every pair the wrong way round and is refused; an atlas
  with shuffled or random labels is not judged (about half of the pairs each way).
- **on the brain** (:func:`check_on_brain`, the atlas on the image's grid): the fraction of atlas
  voxels on the image's bright tissue (above 10 % of the image's 99th percentile), compared with the
  same atlas moved by ±10 and ±20 mm along each axis. A correct atlas sits where the fraction is
  highest (moving it off the brain only loses voxels); a shifted one gains by moving back, and is
  refused when the gain is at least :data:`SHIFT_GAIN` (or when fewer than half of its voxels lie on
  bright tissue at all). Images with no contrast to judge (constant, or with negative values: already
  standardized) are not judged.
- **declared spaces** (:func:`space_note`): the BIDS ``space-`` entity of the BOLD against the
  atlas's own (``space-``/``tpl-`` in its name, else a template grid it is on), a note naming both
  when they differ or cannot be compared.
- **field of view** (:func:`check_field_of_view`): regions whose voxels fall outside the image are
  named; a region with no voxel left is refused.

:func:`check_atlas` runs them all on an image (a path, a nibabel image or an array + affine) and is
what a caller uses before a scan (``stream --reference``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError

BRAINNETOME_REGIONS = 246
FLIPPED_FRACTION = 0.75  # this share of L/R pairs the wrong way round: a flipped atlas
BRIGHT_FRACTION = 0.10  # bright tissue: above this fraction of the image's 99th percentile
SHIFT_GAIN = (
    0.06  # refused when a move of ≤ 20 mm puts this much more of the atlas on bright tissue
)
MIN_ON_BRAIN = 0.5  # refused when less than this share of the atlas lies on bright tissue
SHIFTS_MM = (10.0, 20.0)
PARTLY_OUTSIDE = 0.5  # a region with less than this share of its voxels inside the image is named

# the declared spaces of template grids (volumes.KNOWN_GRIDS); the SPM grid declares no flavour of MNI152
GRID_SPACES = {
    (193, 229, 193): "MNI152NLin2009cAsym",
    (97, 115, 97): "MNI152NLin2009cAsym",
    (182, 218, 182): "MNI152NLin6Asym",
    (91, 109, 91): "MNI152NLin6Asym",
}
NATIVE_SPACES = (
    "T1w",
    "T2w",
    "func",
    "boldref",
    "scanner",
    "orig",
    "anat",
    "native",
    "fsnative",
    "individual",
)


# ---- region names --------------------------------------------------------------------------------------


def lr_pairs(n_regions: int, region_names=None) -> list[tuple[int, int]]:
    """(left label, right label) pairs, labels 1-based: from ``region_names`` (``X_L`` and ``X_R``),
    else Brainnetome's order (label 2k − 1 = ``…_L``, 2k = ``…_R``) for a 246-region atlas, else none."""
    if region_names is not None and len(region_names) == n_regions:
        index = {n: i + 1 for i, n in enumerate(region_names)}
        return [
            (i, index[n[:-2] + "_R"])
            for n, i in index.items()
            if n.endswith("_L") and n[:-2] + "_R" in index
        ]
    if n_regions == BRAINNETOME_REGIONS:
        return [(2 * k - 1, 2 * k) for k in range(1, n_regions // 2 + 1)]
    return []


def region_name(label: int, region_names=None) -> str:
    """'A8m_L' for label 1 when names are known, else 'label 1'."""
    if region_names is not None and 0 < label <= len(region_names):
        return str(region_names[label - 1])
    return f"label {label}"


def _names(labels, region_names, most: int = 8) -> str:
    labels = [int(v) for v in labels]
    shown = ", ".join(region_name(v, region_names) for v in labels[:most])
    return shown + (f" … ({len(labels) - most} more)" if len(labels) > most else "")


# ---- hemispheres ------------------------------------------------------------------------------------------


def centroids(
    labels: np.ndarray, affine: np.ndarray, n_regions: int
) -> tuple[np.ndarray, np.ndarray]:
    """World (RAS mm) centroid of each label 1 … n_regions → ((n_regions, 3) float64, voxel counts);
    NaN rows for labels with no voxel."""
    flat = np.asarray(labels).ravel()
    idx = np.flatnonzero((flat > 0) & (flat <= n_regions))
    lab = flat[idx].astype(np.intp)
    ijk = np.unravel_index(idx, np.asarray(labels).shape)
    counts = np.bincount(lab, minlength=n_regions + 1)[1:].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        vox = (
            np.stack(
                [np.bincount(lab, weights=c, minlength=n_regions + 1)[1:] for c in ijk], axis=1
            )
            / counts[:, None]
        )
    world = (
        vox @ np.asarray(affine, dtype=np.float64)[:3, :3].T
        + np.asarray(affine, dtype=np.float64)[:3, 3]
    )
    return world, counts


def check_hemispheres(
    labels: np.ndarray, affine: np.ndarray, path: str | Path, n_regions: int, region_names=None
) -> None:
    """Refuse a left–right flipped atlas: most ``_L`` regions at a larger RAS x than their ``_R``
    partner (see the module docstring). Raises :class:`InputError` (one line)."""
    pairs = lr_pairs(n_regions, region_names)
    if not pairs:
        return
    world, _ = centroids(labels, affine, n_regions)
    left = np.array([p[0] for p in pairs]) - 1
    right = np.array([p[1] for p in pairs]) - 1
    dx = world[left, 0] - world[right, 0]
    valid = np.isfinite(dx)
    wrong = valid & (dx > 0)
    if valid.sum() and wrong.sum() >= FLIPPED_FRACTION * valid.sum():
        k = int(np.flatnonzero(wrong)[0])
        raise InputError(
            path,
            f"atlas is flipped left–right: {int(wrong.sum())} of {int(valid.sum())} left-hemisphere "
            f"regions lie right of their partner (e.g. {region_name(pairs[k][0], region_names)} "
            f"at RAS x = {world[left[k], 0]:+.0f} mm, {region_name(pairs[k][1], region_names)} at "
            f"{world[right[k], 0]:+.0f} mm); its data or its affine have left and right reversed (a radiological-"
            "convention file?): use the label image as distributed",
        )


# ---- on the brain ---------------------------------------------------------------------------------------


@dataclass
class OnBrain:
    fraction: float  # share of the atlas's voxels (on the image grid) on bright tissue
    best_shift_mm: (
        tuple | None
    )  # the move that puts the most of it on bright tissue (None: none does better)
    best_fraction: float
    threshold: float
    judged: bool = True


def on_brain(labels: np.ndarray, volume: np.ndarray, affine: np.ndarray) -> OnBrain:
    """The on-brain measure of an atlas already on the image grid (``labels`` and ``volume`` of the
    same shape; ``affine`` the grid's)."""
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # a damaged image's absurd values: not judged
        volume = np.asarray(volume, dtype=np.float32)
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return OnBrain(float("nan"), None, float("nan"), float("nan"), judged=False)
    lo, hi = np.percentile(finite, [1, 99])
    if hi <= 0 or lo < 0 or hi <= lo:
        return OnBrain(float("nan"), None, float("nan"), float("nan"), judged=False)
    threshold = BRIGHT_FRACTION * float(hi)
    bright = np.nan_to_num(volume, nan=0.0) > threshold
    ijk = np.argwhere(np.asarray(labels) > 0)
    if not len(ijk):
        return OnBrain(float("nan"), None, float("nan"), threshold, judged=False)
    shape = np.array(bright.shape)

    def fraction(shift: np.ndarray) -> float:
        moved = ijk + shift
        inside = ((moved >= 0) & (moved < shape)).all(axis=1)
        if inside.sum() < 0.25 * len(ijk):
            return float("nan")
        m = moved[inside]
        return float(bright[m[:, 0], m[:, 1], m[:, 2]].mean())

    here = fraction(np.zeros(3, dtype=np.intp))
    to_voxels = np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3])
    best, best_shift = here, None
    for mm in SHIFTS_MM:
        for axis in range(3):
            for sign in (-1, 1):
                d = np.zeros(3)
                d[axis] = sign * mm
                f = fraction(np.rint(to_voxels @ d).astype(np.intp))
                if np.isfinite(f) and f > best:
                    best, best_shift = f, tuple(d)
    return OnBrain(here, best_shift, best, threshold)


def _direction(shift) -> str:
    axis = int(np.flatnonzero(np.asarray(shift))[0])
    v = shift[axis]
    word = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))[axis][
        int(v > 0)
    ]
    return f"{abs(v):g} mm {word}"


def check_on_brain(
    labels: np.ndarray,
    volume: np.ndarray,
    affine: np.ndarray,
    atlas_path: str | Path,
    source: str | Path,
) -> OnBrain:
    """Refuse an atlas that lies off the brain of ``volume`` (see the module docstring)."""
    m = on_brain(labels, volume, affine)
    if not m.judged:
        return m
    name = Path(source).name
    if m.fraction < MIN_ON_BRAIN:
        raise InputError(
            atlas_path,
            f"atlas lies off the brain of {name}: only {m.fraction:.0%} of its voxels fall on "
            "bright tissue; the atlas and the image are not in the same space (register "
            "the atlas to the image: fmri-edge register)",
        )
    if m.best_shift_mm is not None and m.best_fraction - m.fraction >= SHIFT_GAIN:
        raise InputError(
            atlas_path,
            f"atlas is shifted off the brain of {name}: {m.fraction:.0%} of its voxels fall "
            f"on bright tissue, {m.best_fraction:.0%} if it were moved "
            f"{_direction(m.best_shift_mm)}; the atlas and the image are not in the same "
            "space (register the atlas to the image: fmri-edge register)",
        )
    return m


# ---- declared spaces ---------------------------------------------------------------------------------------


def declared_space(path: str | Path | None) -> str | None:
    """The BIDS ``space-`` (or TemplateFlow ``tpl-``) entity of a file name, else None."""
    if path is None:
        return None
    m = re.search(r"(?:^|_)(?:space|tpl)-([A-Za-z0-9]+)", Path(path).name)
    return m.group(1) if m else None


def atlas_space(path: str | Path, shape) -> tuple[str | None, str]:
    """(space, how it is known) of an atlas: its name's entity, else the template grid it is on."""
    from fmri_edge.imaging.volumes import KNOWN_GRIDS

    named = declared_space(path)
    if named:
        return named, "its name"
    grid = tuple(int(s) for s in shape[:3])
    if grid in GRID_SPACES:
        return GRID_SPACES[grid], f"its grid, {KNOWN_GRIDS[grid]}"
    if grid in KNOWN_GRIDS:
        return None, f"its grid, {KNOWN_GRIDS[grid]}, which does not say which MNI152 template"
    return None, "nothing declares it"


def space_note(atlas_path: str | Path, atlas_shape, bold: str | Path | None) -> str | None:
    """A note when the BOLD's declared space (BIDS ``space-``) and the atlas's differ or cannot be
    compared; None when they agree or the BOLD declares none."""
    bold_space = declared_space(bold)
    if bold_space is None:
        return None
    space, how = atlas_space(atlas_path, atlas_shape)
    if space is not None and space.lower() == bold_space.lower():
        return None
    bold_name, atlas_name = Path(bold).name, Path(atlas_path).name
    if space is None:
        return (
            f"{bold_name} is in space {bold_space} (its name); the space of atlas {atlas_name} is not known "
            f"({how}): check that the atlas is in {bold_space} (MNI152 templates differ by several mm)"
        )
    native = bold_space in NATIVE_SPACES or space in NATIVE_SPACES
    return (
        f"{bold_name} is in space {bold_space} (its name), atlas {atlas_name} in {space} ({how}): "
        + (
            "one is the participant's own space and the other a template's: register the atlas to the BOLD "
            "(fmri-edge register)"
            if native
            else f"resampling does not move one template onto the other; use an atlas in {bold_space} or BOLD in {space}"
        )
    )


# ---- field of view ---------------------------------------------------------------------------------------

_FOV_CACHE: dict[tuple, tuple] = {}  # (labels, grids) → counts: a study's runs share one grid


def _inside_counts(labels, affine, n_regions, shape, image_affine) -> tuple[np.ndarray, np.ndarray]:
    """(voxels per region, those inside the image grid), labels 1 … n_regions; cached per grid (the
    cache holds the labels array, so its id stays its own)."""
    labels = np.asarray(labels)
    key = (
        id(labels),
        np.asarray(affine, dtype=np.float64).round(6).tobytes(),
        tuple(int(x) for x in shape[:3]),
        np.asarray(image_affine, dtype=np.float64).round(6).tobytes(),
        n_regions,
    )
    if key in _FOV_CACHE:
        return _FOV_CACHE[key][1]
    flat = labels.ravel()
    idx = np.flatnonzero((flat > 0) & (flat <= n_regions))
    lab = flat[idx].astype(np.intp)
    ijk = np.unravel_index(idx, labels.shape)
    to_image = np.linalg.inv(np.asarray(image_affine, dtype=np.float64)) @ np.asarray(
        affine, dtype=np.float64
    )
    inside = np.ones(idx.size, dtype=bool)
    for ax in range(3):  # one axis at a time: no (N, 3) temporaries
        v = (
            to_image[ax, 0] * ijk[0]
            + to_image[ax, 1] * ijk[1]
            + to_image[ax, 2] * ijk[2]
            + to_image[ax, 3]
        )
        inside &= (v > -0.5) & (v < shape[ax] - 0.5)
    counts = (
        np.bincount(lab, minlength=n_regions + 1)[1:],
        np.bincount(lab[inside], minlength=n_regions + 1)[1:],
    )
    if len(_FOV_CACHE) >= 8:
        _FOV_CACHE.pop(next(iter(_FOV_CACHE)))
    _FOV_CACHE[key] = (labels, counts)
    return counts


def check_field_of_view(
    labels: np.ndarray,
    affine: np.ndarray,
    atlas_path: str | Path,
    n_regions: int,
    shape,
    image_affine: np.ndarray,
    source: str | Path,
    region_names=None,
) -> list[str]:
    """Regions of the atlas (its own grid) outside the field of view of the image grid ``shape`` /
    ``image_affine``: refused (one line naming them) when a region has no voxel inside, a note
    naming those with less than half of their voxels inside."""
    total, kept = _inside_counts(labels, affine, n_regions, shape, image_affine)
    present = total > 0
    if not kept.any():  # no overlap at all: Atlas.labels_on_grid says so
        return []
    lost = np.flatnonzero(present & (kept == 0)) + 1
    name = Path(source).name
    if lost.size:
        raise InputError(
            atlas_path,
            f"{lost.size} region(s) of the atlas lie outside the field of view of {name}: "
            f"{_names(lost, region_names)}; the image does not cover them (or is not in "
            "the atlas's space)",
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        share = kept / np.maximum(total, 1)
    partly = np.flatnonzero(present & (share < PARTLY_OUTSIDE)) + 1
    if partly.size:
        shown = ", ".join(
            f"{region_name(v, region_names)} ({share[v - 1]:.0%})" for v in partly[:8]
        )
        return [
            f"atlas {Path(atlas_path).name}: {partly.size} region(s) mostly outside the field of view of {name} "
            f"(share of their voxels inside): {shown}{' …' if partly.size > 8 else ''}; their means come from "
            "the part inside"
        ]
    return []


# ---- all of it -------------------------------------------------------------------------------------------


@dataclass
class SpaceCheck:
    """What :func:`check_atlas` found (it raised for anything refused)."""

    on_brain: OnBrain | None
    voxels: np.ndarray  # (n_regions,) voxels per region on the image grid
    notes: list[str] = field(default_factory=list)


def _image(image, affine):
    """(3-D float32 volume, 4×4 affine, name) from a path, a nibabel image or an array + affine."""
    from fmri_edge.imaging import volumes

    if isinstance(image, (str, Path)) and str(image).lower().endswith(".dcm"):
        from fmri_edge.imaging import dicom

        data, dicom_affine, _ = dicom.read_volume(image)
        return (
            np.asarray(data, dtype=np.float32),
            np.asarray(dicom_affine, dtype=np.float64),
            Path(image),
        )
    if isinstance(image, (str, Path)):
        h = volumes.read_header(image, "image")
        block = next(volumes.iter_blocks(h, 1, "image"))
        return block[..., 0], h.affine, Path(image)
    if hasattr(image, "affine") and hasattr(image, "dataobj"):
        data = np.asarray(image.dataobj, dtype=np.float32)
        return (
            (data[..., 0] if data.ndim == 4 else data),
            np.asarray(image.affine, dtype=np.float64),
            Path(getattr(image, "get_filename", lambda: None)() or "the image"),
        )
    if affine is None:
        raise ValueError("an array image needs its affine")
    data = np.asarray(image, dtype=np.float32)
    return (
        (data[..., 0] if data.ndim == 4 else data),
        np.asarray(affine, dtype=np.float64),
        Path("the image"),
    )


def check_atlas(
    atlas,
    image,
    affine: np.ndarray | None = None,
    *,
    source: str | Path | None = None,
    region_names=None,
    notes: list[str] | None = None,
) -> SpaceCheck:
    """Check an atlas against one image of the participant before it is used with it: hemispheres,
    field of view, declared spaces, on the brain (see the module docstring).

    ``atlas``: an :class:`fmri_edge.imaging.extract.Atlas` (read, so its labels and hemispheres are checked);
    ``image``: a path (a 3-D NIfTI volume, the first volume of a 4-D run, or a DICOM volume ``.dcm``
    as ``stream`` reads it), a nibabel image, or an
    (X, Y, Z[, T]) array with its ``affine``; ``source`` names the image in messages (default: its
    path). Raises :class:`InputError` (one line naming the atlas and the problem) for a flipped
    atlas, one off the brain, or one with a region outside the field of view; notes go to ``notes``
    and the result."""
    if not hasattr(atlas, "labels_on_grid"):
        raise TypeError(
            "check_atlas takes an fmri_edge.imaging.extract.Atlas (read the file with Atlas(path, n_regions))"
        )
    region_names = (
        region_names if region_names is not None else getattr(atlas, "region_names", None)
    )
    volume, grid_affine, name = _image(image, affine)
    source = source or name
    out: list[str] = []
    out.extend(
        check_field_of_view(
            atlas.labels,
            atlas.affine,
            atlas.path,
            atlas.n_regions,
            volume.shape,
            grid_affine,
            source,
            region_names,
        )
    )
    note = space_note(atlas.path, atlas.labels.shape, source)
    if note:
        out.append(note)
    labels = atlas.labels_on_grid(
        volume.shape[:3], grid_affine, [], source
    )  # its grid note is the caller's
    measure = check_on_brain(labels, volume, grid_affine, atlas.path, source)
    voxels = np.bincount(labels.ravel()[labels.ravel() > 0], minlength=atlas.n_regions + 1)[1:]
    if notes is not None:
        notes.extend(out)
    return SpaceCheck(measure, voxels, out)
