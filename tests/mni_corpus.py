"""Brain-shaped test images from what nilearn ships offline (the MNI152 2009 template and its grey
and white matter maps), for the space checks and register: an EPI-like volume, a generated
246-label parcellation of the grey matter that follows Brainnetome's conventions (odd labels left,
label 2k − 1's partner 2k the mirrored parcel on the right), and images moved by a known affine onto
a functional grid. Nothing here is real anatomy beyond the template; it runs everywhere."""

from __future__ import annotations

import numpy as np


def euler(rx: float, ry: float, rz: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def known_affine() -> np.ndarray:
    """A 12-parameter affine, MNI → the participant's scanner space: rotations 6°, −4°, 5°, scales
    1.06, 0.95, 1.03, shears up to 0.03, translation (7, −9, 12) mm."""
    t = np.eye(4)
    shear = np.array([[1, 0.03, 0], [0, 1, -0.02], [0.01, 0, 1]])
    t[:3, :3] = (
        euler(np.radians(6), np.radians(-4), np.radians(5)) @ shear @ np.diag([1.06, 0.95, 1.03])
    )
    t[:3, 3] = [7, -9, 12]
    return t


def tissue(resolution: int = 3, weights=(800, 550, 1000)):
    """(EPI-like volume, T1 template data, grey matter, affine) on nilearn's MNI grid at ``resolution``
    mm; ``weights``: grey matter, white matter, CSF."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = np.asarray(
        datasets.load_mni152_gm_template(resolution=resolution).dataobj, dtype=np.float64
    )
    wm = np.asarray(
        datasets.load_mni152_wm_template(resolution=resolution).dataobj, dtype=np.float64
    )
    t1_data = np.asarray(t1.dataobj, dtype=np.float32)
    csf = np.clip((t1_data > 0) - gm - wm, 0, 1)
    epi = (weights[0] * gm + weights[1] * wm + weights[2] * csf).astype(
        np.float32
    )  # T2*-like: CSF bright
    return epi, t1_data, gm, np.asarray(t1.affine, dtype=np.float64)


def parcellation(
    gm: np.ndarray, affine: np.ndarray, n_regions: int = 246, seed: int = 0
) -> np.ndarray:
    """246 labels on the grey matter (gm > 0.3): k-means of the left hemisphere's voxel positions
    into 123 parcels (labels 1, 3, …), each right voxel given the label + 1 of the parcel nearest to
    its mirror image."""
    from scipy.cluster.vq import kmeans2

    mask = gm > 0.3
    ijk = np.argwhere(mask)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    left = xyz[:, 0] < 0
    k = n_regions // 2
    centres, _ = kmeans2(xyz[left], k, minit="++", seed=seed)
    mirrored = xyz * np.array([-1, 1, 1])
    d_left = ((xyz[:, None, :] - centres[None]) ** 2).sum(-1)
    d_right = ((mirrored[:, None, :] - centres[None]) ** 2).sum(-1)
    labels = np.where(left, 2 * d_left.argmin(1) + 1, 2 * d_right.argmin(1) + 2)
    out = np.zeros(gm.shape, dtype=np.int16)
    out[tuple(ijk.T)] = labels
    present = np.unique(out[out > 0])
    assert len(present) == n_regions, f"{len(present)} parcels"
    return out


def functional_grid(t: np.ndarray, shape=(48, 56, 40), voxel_mm: float = 3.5) -> np.ndarray:
    """An oblique functional grid (10° about x) centred on the moved brain's centre."""
    a = np.eye(4)
    a[:3, :3] = euler(np.radians(10), 0, np.radians(-3)) @ np.diag([voxel_mm] * 3)
    centre = t[:3, :3] @ np.array([0.0, -18.0, 10.0]) + t[:3, 3]
    a[:3, 3] = centre - a[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return a


def moved(
    data: np.ndarray, affine: np.ndarray, t: np.ndarray, shape, grid: np.ndarray, order: int
) -> np.ndarray:
    """``data`` (MNI, on ``affine``) as the participant's image: sampled at T⁻¹(p) for each point p
    of the grid (``order`` 0: nearest neighbour, for labels; 1: linear)."""
    from scipy import ndimage

    ijk = np.indices(tuple(shape)).reshape(3, -1).astype(np.float64)
    to = np.linalg.inv(affine) @ np.linalg.inv(t) @ grid
    q = to[:3, :3] @ ijk + to[:3, 3:4]
    if order == 0:
        v = np.rint(q).astype(np.intp)
        inside = ((v >= 0) & (v < np.asarray(data.shape)[:, None])).all(axis=0)
        out = np.zeros(ijk.shape[1], dtype=data.dtype)
        out[inside] = data[v[0, inside], v[1, inside], v[2, inside]]
        return out.reshape(tuple(shape))
    return (
        ndimage.map_coordinates(data, q, order=1, cval=0.0).reshape(tuple(shape)).astype(np.float32)
    )


def label_agreement(a: np.ndarray, truth: np.ndarray) -> float:
    """Dice over labels: 2 · |voxels with the same non-zero label| / (|labelled in a| + |labelled in truth|)."""
    same = ((a == truth) & (truth > 0)).sum()
    return float(2 * same / ((a > 0).sum() + (truth > 0).sum()))
