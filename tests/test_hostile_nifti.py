"""Damaged and hostile NIfTI images, atlases, events, outputs and study trees (tests/nifti_corpus.py):
`extract` answers each with one line naming the file and what is wrong, exit code 2, no traceback,
never a bare "Aborted!"; nothing is allocated beyond what a file can hold; a BIDS study with bad
runs extracts every good run and reports each bad one."""

import gzip
import json
import os
import resource

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "nilearn", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'"
)
nib = pytest.importorskip(
    "nibabel", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'"
)

from fmri_edge.imaging import extract as ex  # noqa: E402
from fmri_edge.simulation import nifti_sim  # noqa: E402
from fmri_edge.imaging import volumes
from fmri_edge.cli import app  # noqa: E402
from fmri_edge.errors import InputError  # noqa: E402
from tests import nifti_corpus as corpus  # noqa: E402

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    run = nifti_sim.write_run(
        d / "bold.nii.gz", d / "events.tsv", n_events=2, first_onset=9.3, spacing=25.3
    )
    atlas = nifti_sim.write_atlas(d / "atlas.nii.gz")
    img = nib.load(str(atlas))
    g = corpus.Good(gzip.decompress(run.bold.read_bytes()), np.asarray(img.dataobj), img.affine)
    return {"dir": d, "run": run, "atlas": atlas, "good": g}


def with_case(case, role, good, tmp_path):
    """Write the case's file as the BOLD image or the atlas and run extract on it with the good rest."""
    path = tmp_path / f"{role}{case.suffix}"
    case.make(path, good["good"])
    files = {"bold": good["run"].bold, "atlas": good["atlas"], role: path}
    return path, invoke(
        "extract",
        files["bold"],
        "--atlas",
        files["atlas"],
        "--events",
        good["run"].events,
        "--out",
        tmp_path / "t.npz",
    )


def good_trials(good, bold=None, atlas=None):
    return ex.extract_run(
        bold or good["run"].bold,
        ex.Atlas(atlas or good["atlas"], 246),
        good["run"].events,
        ex.Window(246, 25, 5.0),
    ).trials


def assert_one_line(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "Aborted" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    flat = " ".join(res.stderr.split())
    for n in needles:
        assert n in flat, (n, flat)


# ---- images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.BAD_IMAGES))
def test_bad_image_gets_one_line(name, good, tmp_path):
    case = corpus.BAD_IMAGES[name]
    bold, res = with_case(case, "bold", good, tmp_path)
    assert_one_line(res, str(bold), case.message)
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize(
    "name", ["gzip cut short", "nii cut short", "enormous image declared (.nii.gz)"]
)
def test_bad_image_on_the_nilearn_path_gets_the_same_line(name, good, tmp_path):
    """--detrend (nilearn's masker on the whole run) reads the run through the same safe reader."""
    case = corpus.BAD_IMAGES[name]
    bold = tmp_path / f"bold{case.suffix}"
    case.make(bold, good["good"])
    res = invoke(
        "extract",
        bold,
        "--atlas",
        good["atlas"],
        "--events",
        good["run"].events,
        "--out",
        tmp_path / "t.npz",
        "--detrend",
    )
    assert_one_line(res, str(bold), case.message)


@pytest.mark.parametrize("name", sorted(corpus.TOLERATED_IMAGES))
def test_odd_but_intact_image_extracts_like_the_good_one(name, good, tmp_path):
    case = corpus.TOLERATED_IMAGES[name]
    bold = tmp_path / f"bold{case.suffix}"
    case.make(bold, good["good"])
    np.testing.assert_array_equal(good_trials(good, bold=bold), good_trials(good))


def test_an_enormous_declared_image_is_refused_before_any_allocation(good, tmp_path):
    """2000×2000×2000×500 float32 (29.8 GiB) declared in a small file: refused from the header, with
    the address space limited far below what allocating it would take."""
    for suffix, make in (
        ("nii.gz", lambda g: corpus.gz(corpus._gz_bomb_header(g))),
        ("nii", corpus._gz_bomb_header),
    ):
        bold = tmp_path / f"big.{suffix}"
        bold.write_bytes(make(good["good"]))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with pytest.raises(InputError, match="can hold|the file holds"):
            resource.setrlimit(
                resource.RLIMIT_AS, (8 << 30, hard)
            )  # 8 GiB of address space: < 29.8 GiB
            try:
                volumes.read_header(bold)
                list(volumes.iter_blocks(bold))
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_lying_gzip_is_read_with_memory_that_follows_its_data(good, tmp_path):
    """A .nii.gz whose header declares more volumes than its stream holds (within what deflate could
    expand): the blocks that are there come out, then one line; no block beyond them is made."""
    g = good["good"]
    raw = corpus._dim(i4=40 * corpus.dims(g.nii)[4])(g)
    bold = tmp_path / "lying.nii.gz"
    bold.write_bytes(corpus.gz(raw))
    seen = []
    with pytest.raises(InputError, match=f"after {corpus.dims(g.nii)[4]} of"):
        for block in volumes.iter_blocks(bold, block_volumes=4):
            seen.append(block.shape[3])
    assert sum(seen) <= corpus.dims(g.nii)[4]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_image(good, tmp_path):
    bold = tmp_path / "bold.nii.gz"
    bold.write_bytes(good["run"].bold.read_bytes())
    bold.chmod(0)
    res = invoke(
        "extract",
        bold,
        "--atlas",
        good["atlas"],
        "--events",
        good["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    assert_one_line(res, str(bold), "permission denied")


def test_interrupted_extract_says_so(good, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(volumes.RegionIndex, "means", interrupted)
    res = invoke(
        "extract",
        good["run"].bold,
        "--atlas",
        good["atlas"],
        "--events",
        good["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    assert res.exit_code == 130 and "interrupted" in res.stderr and "Aborted" not in res.output
    assert not (tmp_path / "t.npz").exists()


def test_an_eof_from_anywhere_is_one_line(good, tmp_path, monkeypatch):
    def eof(*args, **kwargs):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(volumes, "_read_exactly", eof)
    res = invoke(
        "extract",
        good["run"].bold,
        "--atlas",
        good["atlas"],
        "--events",
        good["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    assert_one_line(res, "end early")


# ---- atlases -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.BAD_ATLASES))
def test_bad_atlas_gets_one_line(name, good, tmp_path):
    case = corpus.BAD_ATLASES[name]
    atlas, res = with_case(case, "atlas", good, tmp_path)
    assert_one_line(res, str(atlas), case.message)
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("name", sorted(corpus.TOLERATED_ATLASES))
def test_atlas_variants_work_with_a_note(name, good, tmp_path):
    case = corpus.TOLERATED_ATLASES[name]
    _, res = with_case(case, "atlas", good, tmp_path)
    assert res.exit_code == 0, res.output
    assert case.message in " ".join(res.stderr.split())
    np.testing.assert_array_equal(np.load(tmp_path / "t.npz")["data"], good_trials(good))


def test_the_real_brainnetome_atlas_on_spm_fsl_and_2mm_grids(icbhi, tmp_path):
    """The 1 mm label image as shipped (SPM grid 181×217×181), a NaN-background float copy of it, and
    the same labels padded onto the FSL grid (182×218×182): all put on a 2 mm BOLD grid, every label
    kept, a note naming the grids."""
    path = icbhi / "BN_Atlas_246_1mm.nii.gz"
    img = nib.load(str(path))
    labels, affine = np.asarray(img.dataobj), img.affine
    nan_copy = np.where(labels == 0, np.nan, labels).astype(np.float32)
    nib.save(nib.Nifti1Image(nan_copy, affine), str(tmp_path / "nan.nii.gz"))
    fsl = np.zeros((182, 218, 182), dtype=labels.dtype)
    fsl[:181, :217, :181] = labels  # same world positions: the affine is unchanged
    nib.save(nib.Nifti1Image(fsl, affine), str(tmp_path / "fsl.nii.gz"))
    bold_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    bold_affine[:3, 3] = affine[:3, 3]
    reference = None
    for atlas_path, grid in (
        (path, "SPM MNI152 1 mm"),
        (tmp_path / "nan.nii.gz", "SPM MNI152 1 mm"),
        (tmp_path / "fsl.nii.gz", "FSL MNI152 1 mm"),
    ):
        notes = []
        on_grid = ex.Atlas(atlas_path, 246).labels_on_grid(
            (91, 109, 91), bold_affine, notes, "bold.nii.gz"
        )
        assert set(np.unique(on_grid)) == set(range(247))
        assert any(grid in n and "MNI152 2 mm grid" in n for n in notes), notes
        reference = on_grid if reference is None else reference
        np.testing.assert_array_equal(on_grid, reference)


# ---- events and outputs --------------------------------------------------------------------------------

EVENTS = {
    "empty": (lambda p: p.write_bytes(b""), "empty events file"),
    "binary": (lambda p: p.write_bytes(bytes(range(256)) * 4), "unreadable events file"),
    "NUL bytes": (lambda p: p.write_bytes(b"onset\tduration\n1\x00\t2\n"), "malformed events file"),
    "NaN onset": (
        lambda p: p.write_text("onset\tduration\n12\t15\nnan\t15\n"),
        "row 2 onset 'nan' is not finite",
    ),
    "infinite onset": (
        lambda p: p.write_text("onset\tduration\n12\t15\ninf\t15\n"),
        "is not finite",
    ),
    "a folder": (lambda p: p.mkdir(), "events file"),
}


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_bad_events_get_one_line(name, good, tmp_path):
    make, message = EVENTS[name]
    events = tmp_path / "events.tsv"
    make(events)
    res = invoke(
        "extract",
        good["run"].bold,
        "--atlas",
        good["atlas"],
        "--events",
        events,
        "--out",
        tmp_path / "t.npz",
    )
    assert_one_line(res, str(events), message)


def test_events_before_the_scan_are_skipped_and_reported(good, tmp_path):
    events = tmp_path / "events.tsv"
    events.write_text("onset\tduration\ttrial_type\n-30\t15\ta\n12.3\t15\tb\n")
    res = invoke(
        "extract",
        good["run"].bold,
        "--atlas",
        good["atlas"],
        "--events",
        events,
        "--out",
        tmp_path / "t.npz",
    )
    assert res.exit_code == 0, res.output
    assert "skipped:" in res.stderr and "before the first volume" in " ".join(res.stderr.split())
    assert np.load(tmp_path / "t.npz")["data"].shape == (1, 246, 25)


OUTPUTS = {
    "a file as the parent folder": (
        lambda d: (d / "file").write_text("x") or d / "file" / "t.npz",
        "file",
    ),
    "a missing parent folder": (lambda d: d / "missing" / "t.npz", "missing"),
    "a folder named like the output": (lambda d: (d / "t.npz").mkdir() or d / "t.npz", "t.npz"),
}


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("force", [False, True])
def test_bad_output_gets_one_line(name, force, good, tmp_path):
    make, message = OUTPUTS[name]
    out = make(tmp_path)
    res = invoke(
        "extract",
        good["run"].bold,
        "--atlas",
        good["atlas"],
        "--events",
        good["run"].events,
        "--out",
        out,
        *(["--force"] if force else []),
    )
    assert_one_line(res, message)


def test_bids_output_folder_that_is_a_file(good, tmp_path):
    study = tmp_path / "study"
    nifti_sim.write_bids(study, 1, 1, n_events=2)
    (tmp_path / "out").write_text("a file")
    res = invoke("extract", study, "--atlas", good["atlas"], "--out", tmp_path / "out")
    assert_one_line(res, "give a folder")


# ---- study trees -------------------------------------------------------------------------------------


def test_a_study_with_bad_runs_extracts_every_good_run_and_reports_each_bad_one(good, tmp_path):
    """Two good participants; a third with one good run and every bad image of the corpus as its
    other runs; a fourth whose only run is bad. Each bad run is reported naming its file; every
    good run is extracted; the exit code is 0 (something was written)."""
    study = tmp_path / "study"
    runs = nifti_sim.write_bids(study, n_subjects=3, n_runs=1, n_events=2)
    func = study / "derivatives" / "fmriprep" / "sub-03" / "func"
    bad = {}
    for k, (name, case) in enumerate(sorted(corpus.BAD_IMAGES.items()), start=2):
        stem = f"sub-03_task-{nifti_sim.TASK}_run-{k}"
        bold = func / f"{stem}_space-{nifti_sim.SPACE}_desc-preproc_bold{case.suffix}"
        case.make(bold, good["good"])
        (study / "sub-03" / "func" / f"{stem}_events.tsv").write_text(
            good["run"].events.read_text()
        )
        bad[name] = bold
    lone = study / "derivatives" / "fmriprep" / "sub-04" / "func"
    lone.mkdir(parents=True)
    lone_bold = (
        lone
        / f"sub-04_task-{nifti_sim.TASK}_run-1_space-{nifti_sim.SPACE}_desc-preproc_bold.nii.gz"
    )
    lone_bold.write_bytes(corpus.gz(good["good"].nii)[:5000])
    (study / "sub-04" / "func").mkdir(parents=True)
    (study / "sub-04" / "func" / f"sub-04_task-{nifti_sim.TASK}_run-1_events.tsv").write_text(
        good["run"].events.read_text()
    )

    res = invoke(
        "extract",
        study,
        "--atlas",
        good["atlas"],
        "--out",
        tmp_path / "out",
        "--json",
        "--errors",
        tmp_path / "errors.json",
    )
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "Aborted" not in res.output
    doc = json.loads(res.stdout)
    by = {p["participant"]: p for p in doc["participants"]}
    assert [len(by[s]["runs"]) for s in ("sub-01", "sub-02", "sub-03", "sub-04")] == [1, 1, 1, 0]
    assert by["sub-04"]["out"] is None
    for s in ("sub-01", "sub-02", "sub-03"):
        data = np.load(tmp_path / "out" / s / "fMRI_data.npz")["data"]
        expected = ex.extract_run(
            runs[s][0].bold,
            ex.Atlas(good["atlas"], 246),
            runs[s][0].events,
            ex.Window(246, 25, 5.0),
        ).trials
        np.testing.assert_array_equal(data, expected)
    refused = {
        e["file"]: e["problem"]
        for e in json.loads((tmp_path / "errors.json").read_text())
        if e["outcome"] == "refused"
    }
    flat = " ".join(res.stderr.split())
    for name, bold in bad.items():
        assert str(bold) in refused and corpus.BAD_IMAGES[name].message in refused[str(bold)], name
        assert f"refused: {bold}" in flat, name
    assert str(lone_bold) in refused and not (tmp_path / "out" / "sub-04").exists()


def test_a_study_of_only_bad_runs_is_one_line_after_the_reports(good, tmp_path):
    study = tmp_path / "study"
    nifti_sim.write_bids(study, n_subjects=1, n_runs=1, n_events=2)
    bold = next((study / "derivatives").rglob("*_bold.nii.gz"))
    bold.write_bytes(bold.read_bytes()[:3000])
    res = invoke("extract", study, "--atlas", good["atlas"], "--out", tmp_path / "out")
    assert_one_line(res, "nothing written")
    assert f"refused: {bold}" in " ".join(res.stderr.split())


def test_an_os_error_while_writing_is_one_line(good, tmp_path, monkeypatch):
    """A full disk (or any OS error) while the output is written: one line, nothing half-written."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    res = invoke(
        "extract",
        good["run"].bold,
        "--atlas",
        good["atlas"],
        "--events",
        good["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    assert_one_line(res, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_participant_whose_output_cannot_be_written_does_not_stop_the_others(good, tmp_path):
    study = tmp_path / "study"
    nifti_sim.write_bids(study, n_subjects=2, n_runs=1, n_events=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub-01").write_text("a file where the participant's folder goes")
    res = invoke("extract", study, "--atlas", good["atlas"], "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "refused:" in res.stderr and "sub-01" in res.stderr and "cannot be written" in res.stderr
    assert (tmp_path / "out" / "sub-02" / "fMRI_data.npz").is_file()


def test_a_run_present_as_nii_and_nii_gz_is_read_once(good, tmp_path):
    study = tmp_path / "study"
    nifti_sim.write_bids(study, n_subjects=1, n_runs=1, n_events=2)
    gz_bold = next((study / "derivatives").rglob("*_bold.nii.gz"))
    gz_bold.with_name(gz_bold.name[:-3]).write_bytes(gzip.decompress(gz_bold.read_bytes()))
    res = invoke("extract", study, "--atlas", good["atlas"], "--out", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["participants"][0]["trials"] == 2
    assert [e["outcome"] for e in doc["errors"]] == ["ignored"] and "which is read" in doc[
        "errors"
    ][0]["problem"]
    assert "ignored:" in res.stderr


# ---- fuzzing: any damage is an InputError, never another exception --------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    """A tiny 4-D run (6×5×4 voxels, 3 volumes, TR 1 s), an atlas of 3 labels on its grid, one event."""
    d = tmp_path_factory.mktemp("fuzz")
    data = np.arange(6 * 5 * 4 * 3, dtype=np.float32).reshape(6, 5, 4, 3) + 100
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.header.set_zooms((2.0, 2.0, 2.0, 1.0))
    labels = np.zeros((6, 5, 4), dtype=np.int16)
    labels[:3, 0, 0] = [1, 2, 3]
    nib.save(nib.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0])), str(d / "atlas.nii"))
    (d / "events.tsv").write_text("onset\n0.5\n")
    return d, img.to_bytes()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 348 + 6 * 5 * 4 * 3 * 4 - 1), st.integers(0, 255)), max_size=6
    ),
    cut=st.one_of(st.none(), st.integers(0, 348 + 6 * 5 * 4 * 3 * 4)),
    compress=st.booleans(),
    gz_edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
)
def test_any_damaged_file_is_an_input_error_or_read(fuzz_target, edits, cut, compress, gz_edits):
    """Random bytes changed in the header or data, the file cut anywhere, gzip bytes changed: the
    reader either reads it (shape as declared) or raises InputError, and never makes a block larger
    than the file could hold."""
    folder, good = fuzz_target
    raw = bytearray(good)
    for at, value in edits:
        raw[at] = value
    raw = bytes(raw[:cut] if cut is not None else raw)
    if compress:
        raw = bytearray(corpus.gz(raw))
        for at, value in gz_edits:
            raw[at % len(raw)] = value
        raw = bytes(raw)
    path = folder / ("f.nii.gz" if compress else "f.nii")
    path.write_bytes(raw)
    try:
        h = volumes.read_header(path)
        for block in volumes.iter_blocks(h, 2):
            assert block.nbytes <= max(len(raw), 1) * volumes.DEFLATE_MAX_RATIO * 4
            assert block.shape[:3] == h.volume_shape
    except InputError:
        pass
    try:  # and the whole run through extract (TR from the header, atlas put on its grid, trials cut)
        ex.extract_run(
            path, ex.Atlas(folder / "atlas.nii", 3), folder / "events.tsv", ex.Window(3, 2, 0.0)
        )
    except InputError:
        pass


@pytest.fixture(scope="module")
def fuzz_atlas(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_atlas")
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels.flat[:10] = np.arange(1, 11)
    return d, nib.Nifti1Image(labels, np.diag([3.0, 3.0, 3.0, 1.0])).to_bytes()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 348 + 6**3 * 2 - 1), st.integers(0, 255)), min_size=1, max_size=4
    )
)
def test_any_damaged_atlas_is_an_input_error_or_checked(fuzz_atlas, edits):
    """The atlas through the same reader, its labels checked and put on another grid: it works or
    raises InputError, nothing else."""
    folder, good = fuzz_atlas
    raw = bytearray(good)
    for at, value in edits:
        raw[at] = value
    path = folder / "a.nii"
    path.write_bytes(bytes(raw))
    try:
        atlas = ex.Atlas(path, 10)
        labels = atlas.labels_on_grid((4, 4, 4), np.diag([4.5, 4.5, 4.5, 1.0]), [], "bold.nii")
        assert labels.shape == (4, 4, 4)
    except InputError:
        pass


def test_a_run_with_damaged_events_is_reported_and_the_others_come_out(good, tmp_path):
    study = tmp_path / "study"
    nifti_sim.write_bids(study, n_subjects=1, n_runs=2, n_events=2)
    events = next(study.glob("sub-01/func/*run-2_events.tsv"))
    events.write_bytes(bytes(range(256)) * 3)
    res = invoke("extract", study, "--atlas", good["atlas"], "--out", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["participants"][0]["trials"] == 2 and len(doc["participants"][0]["runs"]) == 1
    assert [e["file"] for e in doc["errors"]] == [str(events)]
