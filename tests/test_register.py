"""fmri-edge register: the MNI template onto a reference made from nilearn's MNI tissue maps under a
known 12-parameter affine; the atlas it carries across must agree with the truly moved atlas
(Dice over labels ≥ 0.8), and the overlay PNG is written. The generated parcellation runs
everywhere; the real Brainnetome atlas where ../shared/data/icbhi2024 holds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")
pytest.importorskip("picsl_greedy", reason="the register extra (picsl-greedy) is not installed")

import mni_corpus  # noqa: E402
from tests.conftest import ICBHI  # noqa: E402

from fmri_edge.imaging import register as lib  # noqa: E402

BN_ATLAS = ICBHI / "BN_Atlas_246_1mm.nii.gz"
FAST = "40x20x5"  # fewer iterations than the command's default: tests stay quick
SHAPE = (48, 56, 40)  # 3.5 mm: 168 × 196 × 140 mm


def invoke(*args):
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A reference EPI-like volume in the participant's space (MNI moved by the known affine onto
    an oblique 3.5 mm grid, noise added), the generated atlas in MNI and the truly moved atlas."""
    root = tmp_path_factory.mktemp("session")
    # not the template's contrast (register's EPI template weighs grey, white, CSF 800, 550, 1000)
    epi, t1, gm, affine = mni_corpus.tissue(3, weights=(700, 520, 1300))
    labels = mni_corpus.parcellation(gm, affine)
    t = mni_corpus.known_affine()
    grid = mni_corpus.functional_grid(t, SHAPE)
    from scipy import ndimage

    ref = mni_corpus.moved(ndimage.gaussian_filter(epi, 1.0), affine, t, SHAPE, grid, order=1)
    bias = 1 + 0.3 * (np.indices(SHAPE)[1] / SHAPE[1] - 0.5)  # a receive-coil ramp, ±15 %
    ref = np.abs(ref * bias + np.random.default_rng(0).normal(0, 15, SHAPE)).astype(np.float32)
    nib.save(nib.Nifti1Image(ref, grid), str(root / "ref.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(root / "atlas.nii.gz"))
    truth = mni_corpus.moved(labels, affine, t, SHAPE, grid, order=0)
    anat_shape = (84, 100, 84)  # the participant's T1: its own 2 mm grid, oblique too
    anat_grid = mni_corpus.functional_grid(t, anat_shape, voxel_mm=2.0)
    anat = mni_corpus.moved(t1, affine, t, anat_shape, anat_grid, order=1)
    nib.save(nib.Nifti1Image(anat, anat_grid), str(root / "t1w.nii.gz"))
    return {
        "root": root,
        "ref": root / "ref.nii.gz",
        "atlas": root / "atlas.nii.gz",
        "truth": truth,
        "t": t,
        "grid": grid,
        "t1w": root / "t1w.nii.gz",
    }


def _matrix_error_mm(matrix, session) -> float:
    """Mean distance (mm) between where the estimated and the true transform put the reference's voxels."""
    ijk = np.indices(SHAPE).reshape(3, -1)[:, ::7].astype(np.float64)
    p = session["grid"][:3, :3] @ ijk + session["grid"][:3, 3:4]
    est = matrix[:3, :3] @ p + matrix[:3, 3:4]
    true = np.linalg.inv(session["t"])
    ref = true[:3, :3] @ p + true[:3, 3:4]
    return float(np.linalg.norm(est - ref, axis=0).mean())


def test_register_puts_the_atlas_on_the_right_labels(session, tmp_path):
    r = lib.register(
        session["ref"],
        session["atlas"],
        tmp_path / "native.nii.gz",
        check=tmp_path / "overlay.png",
        iterations=FAST,
        threads=1,
    )
    dice = mni_corpus.label_agreement(r.labels, session["truth"])
    print(
        f"generated atlas: label Dice {dice:.3f}, mean error {_matrix_error_mm(r.matrix, session):.2f} mm, "
        f"{r.seconds:.1f} s"
    )
    assert dice >= 0.8
    assert r.check is None and r.lost == [] and (r.voxels > 0).all()
    out = nib.load(str(tmp_path / "native.nii.gz"))
    assert out.shape == SHAPE and np.allclose(out.affine, session["grid"], atol=1e-4)
    assert np.array_equal(np.asarray(out.dataobj), r.labels)
    assert (tmp_path / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_register_through_the_t1(session, tmp_path):
    r = lib.register(
        session["ref"],
        session["atlas"],
        tmp_path / "native.nii.gz",
        anat=session["t1w"],
        iterations=FAST,
        threads=1,
    )
    dice = mni_corpus.label_agreement(r.labels, session["truth"])
    print(
        f"through the T1: label Dice {dice:.3f}, mean error {_matrix_error_mm(r.matrix, session):.2f} mm"
    )
    assert dice >= 0.8 and r.check is None


def test_without_registration_the_atlas_is_wrong(session):
    """The test can fail: the identity (MNI coordinates taken as the scanner's) is far off."""
    labels = lib.labels_through(
        np.asarray(nib.load(str(session["atlas"])).dataobj),
        nib.load(str(session["atlas"])).affine,
        SHAPE,
        session["grid"],
        np.eye(4),
    )
    assert mni_corpus.label_agreement(labels, session["truth"]) < 0.5


def test_cli_register_reports_and_writes(session, tmp_path):
    res = invoke(
        "register",
        session["ref"],
        "--atlas",
        session["atlas"],
        "--out",
        tmp_path / "native.nii.gz",
        "--check",
        tmp_path / "overlay.png",
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(
        "246 of 246 regions on the grid of ref.nii.gz: voxels per region min "
    )
    assert (tmp_path / "native.nii.gz").exists() and (tmp_path / "overlay.png").exists()
    res = invoke(
        "register", session["ref"], "--atlas", session["atlas"], "--out", tmp_path / "native.nii.gz"
    )
    assert (
        res.exit_code == 2 and "exists; use --force" in res.stderr and "Traceback" not in res.output
    )
    assert len(res.stderr.strip().splitlines()) == 1  # one line: nothing started
    (tmp_path / "bad.nii.gz").write_text("hi")
    res = invoke(
        "register",
        tmp_path / "bad.nii.gz",
        "--atlas",
        session["atlas"],
        "--out",
        tmp_path / "n2.nii.gz",
    )
    assert (
        res.exit_code == 2
        and len(res.stderr.strip().splitlines()) == 1
        and "bad.nii.gz" in res.stderr
    )


def test_cli_register_refuses_a_flipped_atlas_before_registering(session, tmp_path):
    img = nib.load(str(session["atlas"]))
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine),
        str(tmp_path / "flipped.nii.gz"),
    )
    res = invoke(
        "register",
        session["ref"],
        "--atlas",
        tmp_path / "flipped.nii.gz",
        "--out",
        tmp_path / "n.nii.gz",
    )
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "flipped left–right" in errors[0]
    assert not (tmp_path / "n.nii.gz").exists()


@pytest.mark.skipif(
    not BN_ATLAS.exists(), reason=f"the real Brainnetome atlas is not at {BN_ATLAS}"
)
def test_register_the_real_brainnetome_atlas(session, tmp_path):
    """The real atlas (1 mm, MNI) through the same known affine."""
    img = nib.load(str(BN_ATLAS))
    labels = np.asarray(img.dataobj).astype(np.int16)
    truth = mni_corpus.moved(labels, img.affine, session["t"], SHAPE, session["grid"], order=0)
    r = lib.register(session["ref"], BN_ATLAS, None, iterations=FAST, threads=1)
    dice = mni_corpus.label_agreement(r.labels, truth)
    print(f"Brainnetome: label Dice {dice:.3f}, smallest region {int(r.voxels.min())} voxels")
    assert dice >= 0.8 and (r.voxels > 0).all()


SKYRA = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "rtcloud-sample"
    / "001_000013_000000.dcm"
)


@pytest.mark.skipif(not SKYRA.exists(), reason=f"the real Skyra series is not at {SKYRA.parent}")
def test_a_dicom_reference_is_read_as_stream_reads_it():
    pytest.importorskip("pydicom")
    from fmri_edge.imaging import dicom

    data, affine = lib.read_reference(SKYRA)
    want, want_affine, _ = dicom.read_volume(SKYRA)
    assert (
        data.shape == (64, 64, 27)
        and np.array_equal(data, want)
        and np.allclose(affine, want_affine)
    )
