"""fmri_edge.imaging.volumes: the safe NIfTI reader and the region-means kernel, against nibabel and nilearn.

The kernel's values are nilearn's NiftiLabelsMasker(strategy="mean") on the same data (≤ 1e-5
relative); the reader's are nibabel's get_fdata on the same file, whatever the encoding."""

import numpy as np
import pytest

pytest.importorskip("nilearn", reason="needs the nifti extra: pip install 'fmri-edge[nifti]'")
nib = pytest.importorskip("nibabel", reason="needs the nifti extra: pip install 'fmri-edge[nifti]'")

from fmri_edge.imaging import extract as ex  # noqa: E402
from fmri_edge.simulation import nifti_sim  # noqa: E402
from fmri_edge.imaging import volumes

SHAPE = (13, 11, 9)
N_REGIONS = 30


def labels_and_data(n_volumes=7, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_REGIONS + 1, SHAPE).astype(np.int16)
    labels.flat[:N_REGIONS] = np.arange(1, N_REGIONS + 1)  # every region has a voxel
    level = rng.uniform(400, 14000, N_REGIONS + 1).astype(np.float32)
    data = level[labels][..., None] * (1 + 0.02 * rng.standard_normal(SHAPE + (n_volumes,))).astype(
        np.float32
    )
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    affine[:3, 3] = [-20, -18, -15]
    return labels, data, affine


def masker_means(labels, data, affine):
    import warnings

    from nilearn.maskers import NiftiLabelsMasker

    masker = NiftiLabelsMasker(
        labels_img=nib.Nifti1Image(labels, affine),
        background_label=0,
        strategy="mean",
        standardize=None,
        resampling_target=None,
        keep_masked_labels=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masker.fit_transform(nib.Nifti1Image(data, affine))


def test_region_means_match_nilearns_labels_masker():
    labels, data, affine = labels_and_data()
    index = volumes.RegionIndex(labels, N_REGIONS)
    expected = masker_means(labels, data, affine)
    got = index.means(data)
    assert got.shape == (7, N_REGIONS) and got.dtype == np.float64
    assert np.abs(got / expected - 1).max() <= 1e-5
    for k in (0, 6):  # one volume at a time
        assert np.abs(index.means(data[..., k]) / expected[k] - 1).max() <= 1e-5
    # any memory order gives the same values (NIfTI blocks are Fortran-ordered, a user's array may not be)
    np.testing.assert_allclose(index.means(np.ascontiguousarray(data)), got, rtol=1e-12)


def test_region_index_on_the_grid_of_an_atlas_file(tmp_path):
    atlas = ex.Atlas(nifti_sim.write_atlas(tmp_path / "a.nii.gz"), 246)
    img = nib.load(str(nifti_sim.write_atlas(tmp_path / "fine.nii.gz", upsample=2)))
    notes = []
    index = volumes.RegionIndex.on_grid(
        atlas, img.shape, img.affine, notes, tmp_path / "bold.nii.gz"
    )
    assert index.n_regions == 246 and index.shape == img.shape
    assert any("resampled the atlas to the BOLD grid" in n for n in notes)
    data = np.random.default_rng(1).uniform(100, 200, img.shape + (3,)).astype(np.float32)
    labels = atlas.labels_on_grid(img.shape, img.affine, [], None)
    assert np.abs(index.means(data) / masker_means(labels, data, img.affine) - 1).max() <= 1e-5


ENCODINGS = {
    "float32 .nii.gz": (np.float32, ".nii.gz", None, "<"),
    "int16 scaled .nii": (np.int16, ".nii", (0.5, 100.0), "<"),
    "big-endian float64 .nii": (np.float64, ".nii", None, ">"),
    "uint8 scaled .nii.gz": (np.uint8, ".nii.gz", (2.0, -3.0), "<"),
}


def write(path, data, affine, dtype=np.float32, scaling=None, endian="<", nifti2=False, tr=2.0):
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(data.astype(dtype), affine)
    if endian == ">":
        img = cls(
            data.astype(np.dtype(dtype).newbyteorder(">")), affine, img.header.as_byteswapped(">")
        )
    img.header.set_data_dtype(dtype)
    if scaling:
        img.header.set_slope_inter(*scaling)
    if data.ndim == 4:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("name", sorted(ENCODINGS))
@pytest.mark.parametrize("block_volumes", [1, 3, 100])
def test_blocks_are_nibabels_values(tmp_path, name, block_volumes):
    dtype, suffix, scaling, endian = ENCODINGS[name]
    _, data, affine = labels_and_data(n_volumes=5)
    if np.dtype(dtype).kind in "iu":
        data = np.clip(data / 100, 0, 120)
    path = write(tmp_path / f"run{suffix}", data, affine, dtype, scaling, endian)
    expected = nib.load(str(path)).get_fdata()
    blocks = list(volumes.iter_blocks(path, block_volumes))
    assert [b.shape[3] for b in blocks] == [
        min(block_volumes, 5 - k) for k in range(0, 5, block_volumes)
    ]
    got = np.concatenate(blocks, axis=3)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(volumes.read_image(path), expected, rtol=1e-6)
    h = volumes.read_header(path)
    assert (
        h.shape == expected.shape
        and np.allclose(h.affine, affine)
        and h.gzipped == suffix.endswith(".gz")
    )


def test_read_volume_and_nifti2(tmp_path):
    _, data, affine = labels_and_data(n_volumes=1)
    for path, kwargs in ((tmp_path / "v.nii.gz", {}), (tmp_path / "v2.nii", {"nifti2": True})):
        write(path, data, affine, **kwargs)  # a 4-D image of one volume
        vol, aff = volumes.read_volume(path)
        assert vol.shape == SHAPE and vol.dtype == np.float32 and np.allclose(aff, affine)
        np.testing.assert_array_equal(vol, data[..., 0])
    write(tmp_path / "three.nii", data[..., 0], affine)
    assert volumes.read_volume(tmp_path / "three.nii")[0].shape == SHAPE


def test_extract_kernel_and_nilearn_paths_agree(tmp_path):
    """The kernel (default) and the nilearn masker (taken when confounds/detrend/filtering are
    asked) give the same region signals on the same run."""
    run = nifti_sim.write_run(tmp_path / "bold.nii.gz", tmp_path / "events.tsv", tr=2.0, n_events=3)
    atlas = ex.Atlas(nifti_sim.write_atlas(tmp_path / "atlas.nii.gz"), 246)
    h = volumes.read_header(run.bold)
    opts = ex.ExtractOptions()
    kernel = ex.region_signals(h, atlas, 2.0, opts, None, [], block_volumes=4)
    labels = atlas.labels_on_grid(h.volume_shape, h.affine, [])
    reference = ex._masker_signals(volumes.read_image(h), h.affine, labels, atlas, 2.0, opts, None)
    assert kernel.shape == (run.n_volumes, 246)
    assert np.abs(kernel / reference - 1).max() <= 1e-5


def test_concatenated_gzip_members_are_one_stream(tmp_path):
    """pigz/bgzip-style files: several gzip members one after the other decompress as one stream."""
    import gzip

    _, data, affine = labels_and_data(n_volumes=4)
    plain = write(tmp_path / "run.nii", data, affine).read_bytes()
    cut = [0, 1000, 1001, len(plain) // 2, len(plain)]
    (tmp_path / "members.nii.gz").write_bytes(
        b"".join(gzip.compress(plain[a:b]) for a, b in zip(cut, cut[1:]))
    )
    np.testing.assert_array_equal(
        volumes.read_image(tmp_path / "members.nii.gz"), volumes.read_image(tmp_path / "run.nii")
    )
