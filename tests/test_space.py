"""Is the atlas in the image's space: a flipped atlas and a shifted one are refused (one line, exit 2)
by extract and by stream; declared spaces that differ are said; regions out of the field of view are
named. Brain-shaped images from nilearn's MNI maps (tests/mni_corpus.py) run everywhere; the real
Brainnetome atlas is used where ../shared/data/icbhi2024 holds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

import mni_corpus  # noqa: E402
from tests.conftest import ICBHI  # noqa: E402

from fmri_edge.imaging import extract, space  # noqa: E402
from fmri_edge.simulation import nifti_sim
from fmri_edge.errors import InputError  # noqa: E402

BN_ATLAS = ICBHI / "BN_Atlas_246_1mm.nii.gz"
TR = 2.0


def invoke(*args):
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("note:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def brain(tmp_path_factory):
    """An EPI-like BOLD run (MNI 3 mm grid, 24 volumes, .nii: replayed volume by volume), a generated hemisphere-correct 246-label
    atlas on it, its flipped and 20-mm-shifted copies, and one event."""
    root = tmp_path_factory.mktemp("brain")
    epi, _, gm, affine = mni_corpus.tissue(3)
    labels = mni_corpus.parcellation(gm, affine)
    rng = np.random.default_rng(0)
    n_vol = 24  # the event at 20 s needs volumes up to 39 s
    bold = epi[..., None] * (1 + 0.01 * rng.standard_normal((1, 1, 1, n_vol))) + rng.normal(
        0, 5, epi.shape + (n_vol,)
    )
    img = nib.Nifti1Image(np.abs(bold).astype(np.float32), affine)
    img.header.set_zooms((3.0, 3.0, 3.0, TR))
    img.header.set_xyzt_units("mm", "sec")
    paths = {
        "bold": root / "bold.nii",
        "atlas": root / "atlas.nii.gz",
        "flipped": root / "flipped.nii.gz",
        "shifted": root / "shifted.nii.gz",
        "events": root / "events.tsv",
        "root": root,
    }
    nib.save(img, str(paths["bold"]))
    nib.save(nib.Nifti1Image(labels, affine), str(paths["atlas"]))
    nib.save(
        nib.Nifti1Image(labels[::-1].copy(), affine), str(paths["flipped"])
    )  # the same affine: L ↔ R
    shifted = affine.copy()
    shifted[2, 3] += 20.0  # 20 mm superior
    nib.save(nib.Nifti1Image(labels, shifted), str(paths["shifted"]))
    nifti_sim.write_events(
        paths["events"], {"onset": ["20.0"], "duration": ["15"], "trial_type": ["positive"]}
    )
    return paths


def test_the_correct_atlas_passes_and_lies_on_the_brain(brain):
    c = space.check_atlas(extract.Atlas(brain["atlas"], 246), brain["bold"])
    assert c.on_brain.judged and c.on_brain.fraction > 0.95 and c.on_brain.best_shift_mm is None
    assert (c.voxels > 0).all() and c.notes == []


def test_a_flipped_atlas_is_refused_once_when_read(brain):
    with pytest.raises(InputError, match="flipped left–right: 123 of 123"):
        extract.Atlas(brain["flipped"], 246)


def test_a_shifted_atlas_is_refused_naming_the_move_back(brain):
    with pytest.raises(
        InputError, match=r"shifted off the brain of bold.nii: .* moved 20 mm inferior"
    ):
        space.check_atlas(extract.Atlas(brain["shifted"], 246), brain["bold"])


@pytest.mark.parametrize(
    "which, words",
    [("flipped", ["flipped left–right"]), ("shifted", ["shifted off the brain", "20 mm inferior"])],
)
def test_extract_refuses_a_flipped_or_shifted_atlas_in_one_line(brain, tmp_path, which, words):
    res = invoke(
        "extract",
        brain["bold"],
        "--atlas",
        brain[which],
        "--events",
        brain["events"],
        "--out",
        tmp_path / "t.npz",
    )
    line = one_line_error(res, *words)
    assert line.startswith(f"error: {brain[which]}") and not (tmp_path / "t.npz").exists()


def test_extract_with_the_correct_atlas(brain, tmp_path):
    res = invoke(
        "extract",
        brain["bold"],
        "--atlas",
        brain["atlas"],
        "--events",
        brain["events"],
        "--out",
        tmp_path / "t.npz",
    )
    assert res.exit_code == 0, res.stderr
    assert np.load(tmp_path / "t.npz")["data"].shape == (1, 246, 25)


def test_a_study_with_a_shifted_atlas_is_refused_once_not_per_run(brain, tmp_path):
    import shutil

    root = tmp_path / "study"
    for sub in ("01", "02"):
        func = root / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
        func.mkdir(parents=True)
        shutil.copy(
            brain["bold"],
            func / f"sub-{sub}_task-x_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz",
        )
        shutil.copy(brain["events"], func / f"sub-{sub}_task-x_events.tsv")
    res = invoke("extract", root, "--atlas", brain["shifted"], "--out", tmp_path / "out")
    one_line_error(res, "shifted off the brain")
    assert not list((tmp_path / "out").rglob("*.npz")) if (tmp_path / "out").exists() else True


def _replayed(brain, tmp_path):
    from fmri_edge.simulation.replay import replay

    folder = tmp_path / "watch"
    folder.mkdir()
    replay(brain["bold"], folder, TR, speed=1e6, split_every=0)
    return folder


@pytest.mark.parametrize(
    "which, words", [("flipped", ["flipped left–right"]), ("shifted", ["shifted off the brain"])]
)
def test_stream_refuses_a_flipped_or_shifted_atlas_in_one_line(brain, tmp_path, which, words):
    folder = _replayed(brain, tmp_path)
    res = invoke(
        "stream",
        folder,
        "--atlas",
        brain[which],
        "--events",
        brain["events"],
        "--tr",
        TR,
        "--include-existing",
        "--volume-timeout",
        "1",
        "--no-align",
    )
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert (
        all(w in lines[0] for w in words) and res.stdout == ""
    )  # no answer given with a wrong atlas


def test_stream_with_the_correct_atlas_answers(brain, tmp_path):
    folder = _replayed(brain, tmp_path)
    res = invoke(
        "stream",
        folder,
        "--atlas",
        brain["atlas"],
        "--events",
        brain["events"],
        "--tr",
        TR,
        "--include-existing",
        "--volume-timeout",
        "1",
        "--no-align",
    )
    assert res.exit_code == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 1


def test_check_atlas_takes_an_array_and_affine(brain):
    img = nib.load(str(brain["bold"]))
    volume = np.asarray(img.dataobj)[..., 0]
    atlas = extract.Atlas(brain["shifted"], 246)
    with pytest.raises(InputError, match="shifted off the brain of scanner-reference"):
        space.check_atlas(atlas, volume, img.affine, source="scanner-reference")
    assert (
        space.check_atlas(extract.Atlas(brain["atlas"], 246), volume, img.affine).on_brain.fraction
        > 0.95
    )


def test_random_labels_are_not_taken_for_a_flipped_atlas():
    labels = (
        np.random.default_rng(1)
        .permutation(np.resize(np.arange(1, 247), 14**3))
        .reshape(14, 14, 14)
    )
    space.check_hemispheres(labels, np.diag([3.0, 3, 3, 1]), "x.nii.gz", 246)  # no exception


def test_the_synthetic_atlas_is_hemisphere_correct():
    labels = nifti_sim.atlas_array(246)
    world, counts = space.centroids(labels, nifti_sim._affine(nifti_sim.VOXEL_MM), 246)
    assert (counts > 0).all() and (world[0::2, 0] < world[1::2, 0]).all()
    with pytest.raises(InputError, match="flipped"):
        space.check_hemispheres(
            labels[::-1], nifti_sim._affine(nifti_sim.VOXEL_MM), "a.nii.gz", 246
        )


def test_declared_spaces_that_differ_are_named():
    bold = "sub-01_task-x_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    note = space.space_note("BN_Atlas_246_1mm.nii.gz", (181, 217, 181), bold)
    assert "MNI152NLin6Asym" in note and "SPM MNI152 1 mm grid" in note and "not known" in note
    note = space.space_note("atlas.nii.gz", (97, 115, 97), bold)
    assert "MNI152NLin6Asym" in note and "MNI152NLin2009cAsym" in note
    assert (
        space.space_note("atlas.nii.gz", (97, 115, 97), bold.replace("NLin6Asym", "NLin2009cAsym"))
        is None
    )
    assert "register" in space.space_note(
        "tpl-MNI152NLin2009cAsym_atlas-BN.nii.gz", (1, 1, 1), bold.replace("MNI152NLin6Asym", "T1w")
    )
    assert (
        space.space_note("atlas.nii.gz", (97, 115, 97), "bold.nii.gz") is None
    )  # the BOLD declares none


def test_extract_notes_the_two_spaces(brain, tmp_path):
    import shutil

    bold = tmp_path / "sub-01_task-x_space-MNI152NLin6Asym_desc-preproc_bold.nii.gz"
    shutil.copy(brain["bold"], bold)
    atlas = tmp_path / "tpl-MNI152NLin2009cAsym_atlas-gen.nii.gz"
    shutil.copy(brain["atlas"], atlas)
    res = invoke(
        "extract", bold, "--atlas", atlas, "--events", brain["events"], "--out", tmp_path / "t.npz"
    )
    assert res.exit_code == 0, res.stderr
    assert (
        "in space MNI152NLin6Asym (its name), atlas tpl-MNI152NLin2009cAsym_atlas-gen.nii.gz in "
        "MNI152NLin2009cAsym (its name)" in " ".join(res.stderr.split())
    )


def test_regions_outside_the_field_of_view_are_named(brain, tmp_path):
    img = nib.load(str(brain["bold"]))
    atlas = extract.Atlas(
        brain["atlas"], 246, region_names=[f"R{i}_{'L' if i % 2 else 'R'}" for i in range(1, 247)]
    )
    labels = np.asarray(nib.load(str(brain["atlas"])).dataobj)
    top = int(np.argwhere(labels > 0)[:, 2].max())
    cut = np.asarray(img.dataobj)[
        :, :, : top - 8, :2
    ]  # a field of view that misses the top 8 slices
    with pytest.raises(
        InputError, match=r"region\(s\) of the atlas lie outside the field of view of cut: R\d+_"
    ):
        space.check_atlas(atlas, cut, img.affine, source="cut")
    notes = space.check_field_of_view(
        atlas.labels,
        atlas.affine,
        atlas.path,
        246,
        (67, 79, top - 1),
        img.affine,
        "cut",
        atlas.region_names,
    )
    assert notes == [] or "mostly outside the field of view of cut" in notes[0]


@pytest.mark.skipif(
    not BN_ATLAS.exists(), reason=f"the real Brainnetome atlas is not at {BN_ATLAS}"
)
def test_the_real_brainnetome_atlas_flipped_and_shifted(brain, tmp_path):
    img = nib.load(str(BN_ATLAS))
    labels = np.asarray(img.dataobj)
    bold = nib.load(str(brain["bold"]))
    volume = np.asarray(bold.dataobj)[..., 0]
    good = space.check_atlas(extract.Atlas(BN_ATLAS, 246), volume, bold.affine, source="bold")
    assert good.on_brain.fraction > 0.95
    nib.save(nib.Nifti1Image(labels[::-1].copy(), img.affine), str(tmp_path / "flipped.nii.gz"))
    with pytest.raises(InputError, match="flipped left–right"):
        extract.Atlas(tmp_path / "flipped.nii.gz", 246)
    for axis in range(3):
        a = img.affine.copy()
        a[axis, 3] += 20.0
        nib.save(nib.Nifti1Image(labels, a), str(tmp_path / f"shifted{axis}.nii.gz"))
        with pytest.raises(InputError, match="shifted off the brain"):
            space.check_atlas(
                extract.Atlas(tmp_path / f"shifted{axis}.nii.gz", 246),
                volume,
                bold.affine,
                source="bold",
            )


def test_explain_brain_maps_refuse_a_flipped_atlas(brain):
    from fmri_edge.explanation import brainmap

    with pytest.raises(InputError, match="flipped left–right"):
        brainmap.load_label_image(brain["flipped"], 246)
    assert brainmap.load_label_image(brain["atlas"], 246).labels.max() == 246


SKYRA = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "rtcloud-sample"
    / "001_000013_000000.dcm"
)


@pytest.mark.skipif(
    not (SKYRA.exists() and BN_ATLAS.exists()),
    reason="the real Skyra series or Brainnetome atlas is absent",
)
def test_check_atlas_reads_a_real_dicom_reference_and_names_regions_cut_by_its_field_of_view():
    """The real 27-slice Skyra EPI covers the brain only in part: the MNI atlas in its scanner
    coordinates has regions mostly outside, named (labels here: no region names given)."""
    pytest.importorskip("pydicom")
    c = space.check_atlas(extract.Atlas(BN_ATLAS, 246), SKYRA)
    assert any("mostly outside the field of view of 001_000013_000000.dcm" in n for n in c.notes), (
        c.notes
    )
