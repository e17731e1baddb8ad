"""Brain maps: atlas label images as distributed (every variant accepted, bad ones refused in one
line), region values painted on the atlas grid, the NIfTI and PNG that `explain` writes.

The variants are made here by modifying a small synthetic atlas (and the real Brainnetome label
image where ../shared/data/icbhi2024 is present)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

nib = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

from fmri_edge.explanation import brainmap  # noqa: E402
from fmri_edge.cli import app  # noqa: E402
from fmri_edge.errors import InputError  # noqa: E402

runner = CliRunner()
N = 246
PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_labels(shape=(14, 16, 14)) -> np.ndarray:
    """246 regions filling an ellipsoid 'brain' in order, 0 outside."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    inside = (grid**2).sum(0) <= 1.0
    labels = np.zeros(shape, np.int16)
    idx = np.flatnonzero(inside)
    labels.flat[idx] = np.arange(len(idx)) * N // len(idx) + 1
    return labels


def affine(voxel_mm: float, shape) -> np.ndarray:
    a = np.diag([voxel_mm] * 3 + [1.0])
    a[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    return a


def save(path, data, voxel_mm=2.0):
    nib.save(nib.Nifti1Image(data, affine(voxel_mm, data.shape[:3])), str(path))
    return path


LABELS = synthetic_labels()
OUTSIDE = LABELS == 0


def variant(name: str) -> tuple[np.ndarray, float]:
    """(image data, voxel size) of one way atlas files are distributed."""
    if name == "int16, 0 outside, 2 mm":
        return LABELS, 2.0
    if name == "uint8, 1 mm":
        return LABELS.astype(np.uint8), 1.0
    if name == "float32, NaN outside":
        return np.where(OUTSIDE, np.nan, LABELS).astype(np.float32), 2.0
    if name == "float64 labels off by 1e-6":
        return LABELS + np.random.default_rng(0).uniform(-1e-6, 1e-6, LABELS.shape), 2.0
    if name == "4-D, one volume":
        return LABELS[..., None], 2.0
    raise KeyError(name)


VARIANTS = (
    "int16, 0 outside, 2 mm",
    "uint8, 1 mm",
    "float32, NaN outside",
    "float64 labels off by 1e-6",
    "4-D, one volume",
)


def assert_painted(
    volume: np.ndarray, labels: np.ndarray, values: np.ndarray, rtol: float = 0
) -> None:
    """The map is each region's value in each of its voxels (constant within each label), 0
    outside, and not the same everywhere; ``rtol`` for values rounded in JSON."""
    labels = np.asarray(labels, dtype=np.int64)
    inside = labels > 0
    assert volume.shape == labels.shape and volume.dtype == np.float32
    assert np.all(volume[~inside] == 0)
    _, first = np.unique(labels[inside], return_index=True)  # one voxel of each label 1 … N
    per_region = volume[inside][first]
    np.testing.assert_array_equal(
        volume[inside], per_region[labels[inside] - 1]
    )  # constant within each label
    np.testing.assert_allclose(
        per_region, np.asarray(values, dtype=np.float32), rtol=rtol, atol=1e-5 if rtol else 0
    )
    assert np.ptp(per_region) > 0


@pytest.mark.parametrize("name", VARIANTS)
def test_atlas_variants_are_read_as_the_same_regions(name, tmp_path):
    data, voxel = variant(name)
    atlas = brainmap.load_label_image(save(tmp_path / "atlas.nii.gz", data, voxel), N)
    np.testing.assert_array_equal(atlas.labels, LABELS)
    assert atlas.voxel_mm == (voxel,) * 3 and atlas.note().startswith(
        "atlas atlas.nii.gz (14×16×14, "
    )
    if "NaN" in name:
        assert any("NaN voxels taken as background" in n for n in atlas.notes)
    values = np.linspace(-1, 1, N)
    volume = brainmap.paint(atlas, values)
    assert_painted(volume, LABELS, values)
    out = brainmap.write_map(tmp_path / "map.nii.gz", atlas, volume, "test map")
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), volume)
    np.testing.assert_allclose(back.affine, affine(voxel, LABELS.shape))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def _bad(name: str) -> np.ndarray:
    if name == "4-D":
        return np.stack([LABELS] * 3, axis=3)
    if name == "probabilistic":
        return (LABELS > 0) * 0.37 * np.ones(LABELS.shape, np.float32)
    if name == "missing":
        return np.where(LABELS == 5, 0, LABELS).astype(np.int16)
    if name == "extra":
        out = LABELS.copy()
        out[0, 0, 0] = 300
        return out
    if name == "negative":
        out = LABELS.copy()
        out[0, 0, 0] = -1
        return out
    raise KeyError(name)


@pytest.mark.parametrize(
    "name,message",
    [
        ("4-D", "(a 4-D probabilistic atlas? use the maximum-probability label image)"),
        ("probabilistic", "atlas values are not whole-number labels"),
        ("missing", "missing labels: 5"),
        ("extra", "unexpected labels: 300"),
        ("negative", "unexpected labels: -1"),
    ],
)
def test_bad_atlases_are_refused_in_one_line(name, message, tmp_path):
    path = save(tmp_path / "bad.nii.gz", _bad(name))
    with pytest.raises(InputError, match=None) as e:
        brainmap.load_label_image(path, N)
    text = str(e.value)
    assert message in text and "bad.nii.gz" in text and "\n" not in text, text


def test_not_an_image_is_refused(tmp_path):
    (tmp_path / "atlas.nii.gz").write_text("index\tname\n")
    with pytest.raises(InputError, match="atlas is not a NIfTI image"):
        brainmap.load_label_image(tmp_path / "atlas.nii.gz", N)


@pytest.fixture(scope="module")
def trials(sim_data, tmp_path_factory):
    x, _, subj = sim_data
    root = tmp_path_factory.mktemp("trials")
    np.save(root / "S5.npy", x[subj == 5])
    return root / "S5.npy"


@pytest.fixture(scope="module")
def atlas_file(tmp_path_factory):
    data, voxel = variant("float32, NaN outside")
    return save(tmp_path_factory.mktemp("atlas") / "atlas.nii.gz", data, voxel)


@pytest.mark.parametrize(
    "model_fixture,kind", [("aligned_model", "contribution"), ("sim_model", "attention")]
)
def test_explain_writes_the_brain_map_and_its_nifti(
    model_fixture, kind, trials, atlas_file, tmp_path, request
):
    model = request.getfixturevalue(model_fixture)
    png, nii = tmp_path / "map.png", tmp_path / "map.nii.gz"
    args = [
        "explain",
        str(model),
        str(trials),
        "--atlas",
        str(atlas_file),
        "--brain-map",
        str(png),
        "--map-nifti",
        str(nii),
        "--json",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["kind"] == kind and doc["brain_map"]["units"]
    assert "NaN voxels taken as background" in r.stderr and png.read_bytes()[:8] == PNG
    by_index = np.zeros(N)
    for region in doc["summary"]["regions"]:
        by_index[region["index"]] = region["mean"]
    volume = np.asanyarray(nib.load(str(nii)).dataobj)
    assert_painted(volume, LABELS, by_index, rtol=1e-4)
    if kind == "attention":
        assert np.all((volume[LABELS > 0] > 0) & (volume[LABELS > 0] < 1))

    # one class: the mean over the trials answered as that class
    answered = [c["class"] for c in doc["summary"]["classes"] if c["n_trials"]][0]
    r = runner.invoke(app, [*args, "--class", str(answered), "--view", "slices", "--force"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["brain_map"]["class"] == answered
    by_class = np.array(
        [
            g["by_class"][str(answered)]
            for g in sorted(doc["summary"]["regions"], key=lambda g: g["index"])
        ]
    )
    assert_painted(np.asanyarray(nib.load(str(nii)).dataobj), LABELS, by_class, rtol=1e-4)

    # existing outputs are not overwritten without --force, and nothing runs
    before = nii.read_bytes()
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "exists; use --force" in r.stderr and nii.read_bytes() == before


def test_a_mismatched_atlas_stops_explain_before_any_work(aligned_model, trials, tmp_path):
    atlas = save(tmp_path / "other.nii.gz", np.where(LABELS > 200, 0, LABELS).astype(np.int16))
    r = runner.invoke(
        app,
        [
            "explain",
            str(aligned_model),
            str(trials),
            "--atlas",
            str(atlas),
            "--map-nifti",
            str(tmp_path / "m.nii.gz"),
        ],
    )
    assert (
        r.exit_code == 2 and "missing labels: 201-246" in r.stderr and "Traceback" not in r.output
    )
    assert not (tmp_path / "m.nii.gz").exists()


# ---- the real Brainnetome label image -------------------------------------------------------------


@pytest.fixture(scope="module")
def real_atlas(icbhi):
    path = icbhi / "BN_Atlas_246_1mm.nii.gz"
    if not path.is_file():
        pytest.skip(f"no label image at {path}")
    return path


def test_real_atlas_variants(real_atlas, tmp_path):
    """As distributed (NaN background, float labels), on the FSL grid (182×218×182) and at 2 mm."""
    from nilearn import image

    img = nib.load(str(real_atlas))
    labels = np.asanyarray(img.dataobj).astype(np.int32)
    values = np.arange(1, N + 1, dtype=np.float32) / 10
    made = {
        "nan_float.nii": nib.Nifti1Image(
            np.where(labels == 0, np.nan, labels).astype(np.float32), img.affine
        ),
        "fsl_grid.nii": nib.Nifti1Image(
            np.pad(labels.astype(np.int16), ((0, 1), (0, 1), (0, 1))), img.affine
        ),
        "two_mm.nii.gz": image.resample_img(
            img,
            target_affine=np.diag([2.0, 2.0, 2.0]),
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        ),
    }
    grids = {
        "nan_float.nii": "the SPM MNI152 1 mm grid",
        "fsl_grid.nii": "the FSL MNI152 1 mm grid",
        "two_mm.nii.gz": "2×2×2 mm",
    }
    for name, variant_img in made.items():
        nib.save(variant_img, str(tmp_path / name))
        atlas = brainmap.load_label_image(tmp_path / name, N)
        assert grids[name] in atlas.note(), atlas.note()
        assert_painted(brainmap.paint(atlas, values), atlas.labels, values)


def test_shipped_models_map_real_trials_on_the_real_atlas(real_atlas, icbhi, tmp_path):
    from fmri_edge.model.runtime import default_model_path

    for model, kind in (
        (default_model_path(), "contribution"),
        (default_model_path().with_name("fmri-edge-se.onnx"), "attention"),
    ):
        png, nii = tmp_path / f"{kind}.png", tmp_path / f"{kind}.nii.gz"
        r = runner.invoke(
            app,
            [
                "explain",
                str(model),
                str(icbhi / "Test" / "P17"),
                "--atlas",
                str(real_atlas),
                "--brain-map",
                str(png),
                "--map-nifti",
                str(nii),
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["summary"]["kind"] == kind and png.read_bytes()[:8] == PNG
        volume = np.asanyarray(nib.load(str(nii)).dataobj)
        labels = np.asanyarray(nib.load(str(real_atlas)).dataobj)
        means = np.zeros(N)
        for region in doc["summary"]["regions"]:
            means[region["index"]] = region["mean"]
        assert_painted(volume, labels, means, rtol=1e-4)
