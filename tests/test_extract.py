"""`fmri-edge extract`: NIfTI BOLD + label atlas + BIDS events → the model's trials, with nilearn.

Synthetic images from fmri_edge.simulation.nifti_sim (14×14×14 voxels, 246 labels as 2×2×2 cubes) whose region
means are known functions of time, so the values can be checked exactly. Uses the shipped model
for its window (246 regions, 25 s, baseline 5 s) and for `predict`."""

import csv
import json

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
from fmri_edge.cli import app  # noqa: E402

runner = CliRunner()
WINDOW = ex.Window(246, 25, 5.0)
TR = 2.0


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("nifti")
    atlas = nifti_sim.write_atlas(d / "atlas.nii.gz")
    fine = nifti_sim.write_atlas(d / "atlas_fine.nii.gz", upsample=2)  # another shape: resampled
    run = nifti_sim.write_run(d / "bold.nii.gz", d / "events.tsv", tr=TR, n_events=5)
    return {"dir": d, "atlas": atlas, "fine": fine, "run": run}


def sample_times(onsets):
    return np.asarray(onsets)[:, None] + np.arange(25) - 5.0


def interpolated_volume_means(run, times, slice_time_ref=0.0):
    """The planted means of the volumes (made at k · TR), placed at (k + slice_time_ref) · TR and
    interpolated linearly to ``times``."""
    vm = run.planted(np.arange(run.n_volumes) * run.tr)
    vt = (np.arange(run.n_volumes) + slice_time_ref) * run.tr
    return np.stack(
        [np.stack([np.interp(t, vt, vm[:, r]) for r in range(vm.shape[1])]) for t in times]
    )


def one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.stderr.count("error:") == 1, res.stderr
    flat = " ".join(res.stderr.split())
    for n in needles:
        assert n in flat, (n, flat)


# ---- the values ------------------------------------------------------------------------------------------


def test_planted_region_means_are_recovered_at_1s_sample_times(study):
    run = study["run"]
    assert not np.any(np.isclose(run.onsets % TR, 0))  # onsets between volumes
    r = ex.extract_run(run.bold, ex.Atlas(study["atlas"], 246), run.events, WINDOW)
    assert r.trials.shape == (5, 246, 25) and r.trials.dtype == np.float32 and r.skipped == []
    times = sample_times(r.onset)
    planted = np.stack([run.planted(t).T for t in times])  # the continuous planted function
    assert np.abs(r.trials / planted - 1).max() < 0.01
    # and exactly the linear interpolation between volumes (float32 rounding only)
    assert np.abs(r.trials / interpolated_volume_means(run, times) - 1).max() < 1e-5
    assert r.tr == TR and r.n_volumes == run.n_volumes
    assert r.trial_type.tolist() == [nifti_sim.VALENCE_NAMES[int(v)] for v in run.valence]


def test_volume_time_convention_k_times_tr_or_shifted_by_slice_time_ref(study):
    # a ramp is reproduced exactly by linear interpolation: volume k at (k + ref) · TR
    times = ex.volume_times(50, TR)
    assert times[:3].tolist() == [0.0, 2.0, 4.0]
    ramp = np.repeat(times[:, None], 3, axis=1) * np.array([1.0, 2.0, -1.0])
    ev = ex.Events(
        study["dir"] / "e.tsv", np.array([7.3, 20.9]), np.array(["a", "b"]), np.array([1, 2])
    )
    trials, keep, skipped = ex.cut_trials(times, ramp, ev, WINDOW, "x.nii")
    np.testing.assert_allclose(trials[:, 0], sample_times([7.3, 20.9]), atol=1e-5)
    np.testing.assert_allclose(trials[:, 1], 2 * sample_times([7.3, 20.9]), atol=1e-5)
    shifted = ex.volume_times(50, TR, slice_time_ref=0.5)
    assert shifted[:2].tolist() == [1.0, 3.0]
    run = study["run"]
    r = ex.extract_run(
        run.bold,
        ex.Atlas(study["atlas"], 246),
        run.events,
        WINDOW,
        ex.ExtractOptions(slice_time_ref=0.5),
    )
    assert (
        np.abs(r.trials / interpolated_volume_means(run, sample_times(r.onset), 0.5) - 1).max()
        < 1e-5
    )


def test_atlas_on_another_grid_is_resampled_and_said(study):
    run = study["run"]
    r = ex.extract_run(run.bold, ex.Atlas(study["fine"], 246), run.events, WINDOW)
    assert any("resampled the atlas to the BOLD grid" in n for n in r.notes)
    assert np.abs(r.trials / interpolated_volume_means(run, sample_times(r.onset)) - 1).max() < 1e-5
    res = invoke(
        "extract",
        run.bold,
        "--atlas",
        study["fine"],
        "--events",
        run.events,
        "--out",
        study["dir"] / "fine.npz",
        "--force",
    )
    assert res.exit_code == 0, res.output
    assert "resampled the atlas" in " ".join(res.stderr.split())


def test_confounds_are_regressed_out_keeping_the_level(study, tmp_path):
    run = study["run"]
    conf = nifti_sim.write_confounds(tmp_path / "c.tsv", run.n_volumes)
    atlas = ex.Atlas(study["atlas"], 246)
    raw = ex.extract_run(run.bold, atlas, run.events, WINDOW)
    cleaned = ex.extract_run(run.bold, atlas, run.events, WINDOW, confounds_path=conf)
    assert not np.allclose(raw.trials, cleaned.trials)
    assert np.abs(cleaned.trials.mean(axis=(0, 2)) / raw.trials.mean(axis=(0, 2)) - 1).max() < 0.01
    short = tmp_path / "short.tsv"
    short.write_text("\n".join(conf.read_text().splitlines()[:10]) + "\n")
    with pytest.raises(ex.InputError, match="confound rows for"):
        ex.extract_run(run.bold, atlas, run.events, WINDOW, confounds_path=short)
    with pytest.raises(ex.InputError, match="lacks column"):
        ex.extract_run(
            run.bold, atlas, run.events, WINDOW, ex.ExtractOptions(confound_columns=("csf",)), conf
        )


def test_window_comes_from_the_model_metadata():
    from types import SimpleNamespace

    def info(meta):
        return SimpleNamespace(n_regions=246, n_times=25, meta=meta, path="m.onnx")

    assert ex.Window.from_model(info({"baseline_s": 3})).baseline_s == 3
    assert ex.Window.from_model(info({"normalization": {"baseline_s": 5}})).baseline_s == 5
    w = ex.Window.from_model(info({}))
    assert w.baseline_s == 5 and w.baseline_from.startswith("default")
    with pytest.raises(ex.InputError, match="baseline_s"):
        ex.Window.from_model(info({"baseline_s": "soon"}))
    assert ex.Window(246, 25, 5.0).offsets().tolist() == list(range(-5, 20))


# ---- the CLI, one run -------------------------------------------------------------------------------------


def test_extract_then_predict_one_row_per_event(study, tmp_path):
    run = study["run"]
    out = tmp_path / "trials.npz"
    res = invoke(
        "extract", run.bold, "--atlas", study["atlas"], "--events", run.events, "--out", out
    )
    assert res.exit_code == 0, res.output
    assert "extracted 5 trials" in res.stdout and "wrote 5 trials" in res.stderr
    with np.load(out, allow_pickle=False) as z:  # no object arrays: loads without pickle
        assert set(z.files) == {
            "data",
            "onset",
            "trial_type",
            "run",
            "runs",
            "baseline_s",
            "n_times",
            "atlas",
        }
        assert (
            float(z["baseline_s"]) == 5.0 and int(z["n_times"]) == 25
        )  # the window, for predict's check
        assert z["data"].shape == (5, 246, 25) and z["data"].dtype == np.float32
        assert z["trial_type"].dtype.kind == "U" and z["runs"].dtype.kind == "U"
        np.testing.assert_allclose(z["onset"], run.onsets)
        assert z["run"].tolist() == [1] * 5 and z["runs"].tolist() == ["bold.nii.gz"]
    res = invoke("predict", out, "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["Participant"], int(r["Trial"])) for r in rows] == [
        ("trials", i) for i in range(1, 6)
    ]
    res = invoke(
        "extract", run.bold, "--atlas", study["atlas"], "--events", run.events, "--out", out
    )
    one_line_error(res, "exists; use --force")


def test_trial_type_filter_and_json(study, tmp_path):
    run = study["run"]
    res = invoke(
        "extract",
        run.bold,
        "--atlas",
        study["atlas"],
        "--events",
        run.events,
        "--out",
        tmp_path / "pos.npz",
        "--trial-type",
        "positive",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    n_pos = int((run.valence == 1).sum())
    assert (
        doc["runs"][0]["trials"] == n_pos
        and doc["window"]["n_times"] == 25
        and doc["window"]["baseline_s"] == 5
    )
    with np.load(tmp_path / "pos.npz", allow_pickle=False) as z:
        assert z["trial_type"].tolist() == ["positive"] * n_pos


def test_events_past_the_scan_end_are_skipped_and_reported(study, tmp_path):
    run = study["run"]
    end = (run.n_volumes - 1) * TR
    events = tmp_path / "events.tsv"
    events.write_text(
        "onset\tduration\ttrial_type\n"
        f"3.1\t15\tearly\n21.7\t15\tok\n{end - 10:.1f}\t15\tlate\n{end + 30:.1f}\t15\tafter\n"
    )
    out, errs = tmp_path / "t.npz", tmp_path / "e.json"
    res = invoke(
        "extract",
        run.bold,
        "--atlas",
        study["atlas"],
        "--events",
        events,
        "--out",
        out,
        "--errors",
        errs,
    )
    assert res.exit_code == 0, res.output
    flat = " ".join(res.stderr.split())
    assert (
        flat.count("skipped:") == 3
        and "runs past the end of the scan" in flat
        and "before the first volume" in flat
    )
    assert "row 3" in flat and "row 4" in flat and "row 1" in flat
    with np.load(out, allow_pickle=False) as z:
        assert z["data"].shape == (1, 246, 25) and z["trial_type"].tolist() == ["ok"]
    assert [e["outcome"] for e in json.loads(errs.read_text())] == ["skipped"] * 3
    events.write_text(f"onset\tduration\n{end + 1:.1f}\t15\n")
    res = invoke(
        "extract",
        run.bold,
        "--atlas",
        study["atlas"],
        "--events",
        events,
        "--out",
        tmp_path / "none.npz",
    )
    one_line_error(res, "nothing written")
    assert not (tmp_path / "none.npz").exists()


# ---- bad inputs: one clear line, naming the file ----------------------------------------------------------


def _atlas_with(path, labels):
    data = nifti_sim.atlas_array(246)
    for old, new in labels.items():
        data[data == old] = new
    img = nib.Nifti1Image(data, nib.load(str(nifti_sim.write_atlas(path))).affine)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(
    "make, needles",
    [
        (
            lambda p: _atlas_with(p, {v: 0 for v in range(201, 247)}),
            ["200 region labels", "Schaefer-200", "missing labels: 201-246"],
        ),
        (
            lambda p: _atlas_with(p, {3: 247, 17: 248}),
            ["missing labels: 3, 17", "unexpected labels: 247-248"],
        ),
        (
            lambda p: nib.save(
                nib.Nifti1Image(
                    np.random.default_rng(0).random((14, 14, 14, 3)).astype(np.float32), np.eye(4)
                ),
                str(p),
            ),
            ["3-D image of region labels", "probabilistic"],
        ),
        (
            lambda p: nib.save(
                nib.Nifti1Image(
                    np.random.default_rng(0).random((14, 14, 14)).astype(np.float32), np.eye(4)
                ),
                str(p),
            ),
            ["not whole-number labels"],
        ),
        (lambda p: p.write_bytes(b"not a nifti"), ["atlas is not a NIfTI image"]),
    ],
)
def test_bad_atlas(study, tmp_path, make, needles):
    atlas = tmp_path / "atlas.nii.gz"
    make(atlas)
    res = invoke(
        "extract",
        study["run"].bold,
        "--atlas",
        atlas,
        "--events",
        study["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    one_line_error(res, str(atlas), *needles)
    assert not (tmp_path / "t.npz").exists()


def test_atlas_whose_labels_vanish_when_resampled(study, tmp_path):
    # a label of one voxel on a grid twice as fine falls between the BOLD's voxel centres
    data = nifti_sim.atlas_array(246, upsample=2)
    data[data == 7] = 0
    data[1, 1, 1] = 7
    fine = nib.load(str(study["fine"]))
    nib.save(nib.Nifti1Image(data, fine.affine), str(tmp_path / "a.nii.gz"))
    res = invoke(
        "extract",
        study["run"].bold,
        "--atlas",
        tmp_path / "a.nii.gz",
        "--events",
        study["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    one_line_error(res, "after resampling", "missing labels: 7")


def test_3d_image_is_refused(study, tmp_path):
    img = nib.load(str(study["run"].bold))
    nib.save(
        nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), str(tmp_path / "t1w.nii.gz")
    )
    res = invoke(
        "extract",
        tmp_path / "t1w.nii.gz",
        "--atlas",
        study["atlas"],
        "--events",
        study["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    one_line_error(res, "t1w.nii.gz", "3-D image", "needs a 4-D BOLD")


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ["events file not found"]),
        ("", ["empty events file"]),
        ("onset,duration,trial_type\n1.0,15,a\n", ["no 'onset' column", "comma-separated"]),
        ("time\tduration\n1.0\t15\n", ["no 'onset' column"]),
        ("onset\tduration\nsoon\t15\n", ["row 1 onset 'soon' is not a number"]),
        ("onset\tduration\n1.0\t15\t3\n", ["row 1 has 3 fields"]),
        ("onset\tduration\ttrial_type\n", ["no event rows"]),
        ("onset\tduration\nnan\t15\n", ["row 1 onset 'nan' is not finite"]),
        (
            "onset\tduration\n1.0\t15\n9.0\t-3\n",
            ["row 2 duration '-3' is not a duration in seconds"],
        ),
        ("onset\tduration\n1.0\tlong\n", ["row 1 duration 'long' is not a duration in seconds"]),
        ("folder", ["is a folder, not an events file"]),
    ],
)
def test_missing_or_malformed_events(study, tmp_path, content, needles):
    events = tmp_path / "events.tsv"
    if content == "folder":
        events.mkdir()
    elif content is not None:
        events.write_text(content)
    res = invoke(
        "extract",
        study["run"].bold,
        "--atlas",
        study["atlas"],
        "--events",
        events,
        "--out",
        tmp_path / "t.npz",
    )
    one_line_error(res, str(events), *needles)


def test_tr_from_header_units_and_override(study, tmp_path):
    img = nib.load(str(study["run"].bold))
    data = np.asarray(img.dataobj)
    ms = nib.Nifti1Image(data, img.affine)
    ms.header.set_zooms((3.0, 3.0, 3.0, 2000.0))
    ms.header.set_xyzt_units("mm", "msec")
    nib.save(ms, str(tmp_path / "ms.nii.gz"))
    atlas = ex.Atlas(study["atlas"], 246)
    assert ex.extract_run(tmp_path / "ms.nii.gz", atlas, study["run"].events, WINDOW).tr == 2.0
    none = nib.Nifti1Image(data, img.affine)  # nibabel writes pixdim[4] = 1, unit unknown
    none.header.set_zooms((3.0, 3.0, 3.0, 0.0))
    nib.save(none, str(tmp_path / "none.nii.gz"))
    res = invoke(
        "extract",
        tmp_path / "none.nii.gz",
        "--atlas",
        study["atlas"],
        "--events",
        study["run"].events,
        "--out",
        tmp_path / "t.npz",
    )
    one_line_error(res, "no repetition time", "--tr")
    res = invoke(
        "extract",
        tmp_path / "none.nii.gz",
        "--atlas",
        study["atlas"],
        "--events",
        study["run"].events,
        "--out",
        tmp_path / "t.npz",
        "--tr",
        "2",
    )
    assert res.exit_code == 0, res.output


def test_usage_errors(study, tmp_path):
    run = study["run"]
    one_line_error(
        invoke("extract", run.bold, "--atlas", study["atlas"], "--out", tmp_path / "t.npz"),
        "--events",
    )
    one_line_error(
        invoke(
            "extract",
            run.bold,
            "--atlas",
            study["atlas"],
            "--events",
            run.events,
            "--out",
            tmp_path / "t.csv",
        ),
        ".npz",
    )
    one_line_error(
        invoke(
            "extract",
            tmp_path / "nope.nii.gz",
            "--atlas",
            study["atlas"],
            "--events",
            run.events,
            "--out",
            tmp_path / "t.npz",
        ),
        "BOLD image not found",
    )


# ---- BIDS folders ----------------------------------------------------------------------------------------


def test_bids_two_subjects_two_runs_then_predict_scores_them_all(tmp_path):
    res = invoke(
        "simulate", tmp_path / "sim", "--bids", "--subjects", 2, "--runs", 2, "--trials", 3
    )
    assert res.exit_code == 0, res.output
    study, out = tmp_path / "sim" / "study", tmp_path / "trials"
    res = invoke("extract", study, "--atlas", tmp_path / "sim" / "atlas.nii.gz", "--out", out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["sub-01", "sub-02"]
    for sub in ("sub-01", "sub-02"):
        with np.load(out / sub / "fMRI_data.npz", allow_pickle=False) as z:
            assert z["data"].shape == (6, 246, 25) and z["run"].tolist() == [1, 1, 1, 2, 2, 2]
            assert [r.split("_")[2] for r in z["runs"].tolist()] == ["run-1", "run-2"]
            ev = [
                ex.read_events(study / sub / "func" / f"{sub}_task-emotion_run-{r}_events.tsv")
                for r in (1, 2)
            ]
            np.testing.assert_allclose(z["onset"], np.concatenate([e.onset for e in ev]))
    assert "sub-01" in res.stdout and "2/2" in res.stdout
    res = invoke("predict", out, "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["Participant"], int(r["Trial"])) for r in rows] == [
        (s, t) for s in ("sub-01", "sub-02") for t in range(1, 7)
    ]
    # the derivatives folder alone works too (events found in the raw tree two levels up), with confounds
    res = invoke(
        "extract",
        study / "derivatives" / "fmriprep",
        "--atlas",
        tmp_path / "sim" / "atlas.nii.gz",
        "--out",
        tmp_path / "t2",
        "--confounds",
        "auto",
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert [p["trials"] for p in json.loads(res.stdout)["participants"]] == [6, 6]


def test_bids_bad_run_does_not_stop_the_others(tmp_path):
    nifti_sim.write_atlas(tmp_path / "atlas.nii.gz")
    study = tmp_path / "study"
    nifti_sim.write_bids(study, 2, 2, n_events=2)
    (study / "sub-02" / "func" / "sub-02_task-emotion_run-2_events.tsv").unlink()  # missing events
    bold = next((study / "derivatives").rglob("sub-01_task-emotion_run-1_*bold.nii.gz"))
    img = nib.load(str(bold))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine), str(bold))  # a 3-D image
    res = invoke(
        "extract",
        study,
        "--atlas",
        tmp_path / "atlas.nii.gz",
        "--out",
        tmp_path / "out",
        "--errors",
        tmp_path / "e.json",
    )
    assert res.exit_code == 0, res.output
    flat = " ".join(res.stderr.split())
    assert (
        "no events file sub-02_task-emotion_run-2_events.tsv found" in flat and "3-D image" in flat
    )
    for sub in ("sub-01", "sub-02"):
        with np.load(tmp_path / "out" / sub / "fMRI_data.npz", allow_pickle=False) as z:
            assert len(z["data"]) == 2 and len(z["runs"]) == 1
    assert "1/2" in res.stdout
    assert len(json.loads((tmp_path / "e.json").read_text())) == 2


def test_bids_errors(tmp_path):
    nifti_sim.write_atlas(tmp_path / "atlas.nii.gz")
    (tmp_path / "empty").mkdir()
    one_line_error(
        invoke(
            "extract",
            tmp_path / "empty",
            "--atlas",
            tmp_path / "atlas.nii.gz",
            "--out",
            tmp_path / "o",
        ),
        "no preprocessed BOLD found",
    )
    study = tmp_path / "study"
    nifti_sim.write_bids(study, 1, 1, n_events=2)
    b = next(study.rglob("*_desc-preproc_bold.nii.gz"))
    (b.parent / b.name.replace("MNI152NLin2009cAsym", "T1w")).write_bytes(b.read_bytes())
    one_line_error(
        invoke("extract", study, "--atlas", tmp_path / "atlas.nii.gz", "--out", tmp_path / "o"),
        "several spaces",
        "--space",
    )
    res = invoke(
        "extract",
        study,
        "--atlas",
        tmp_path / "atlas.nii.gz",
        "--out",
        tmp_path / "o",
        "--space",
        "T1w",
        "--task",
        "emotion",
    )
    assert res.exit_code == 0, res.output
    one_line_error(
        invoke(
            "extract",
            study,
            "--atlas",
            tmp_path / "atlas.nii.gz",
            "--out",
            tmp_path / "o2",
            "--task",
            "rest",
            "--space",
            "T1w",
        ),
        "no preprocessed BOLD found",
        "sub-*/(ses-*/)func/",
        "for task 'rest'",
    )


def test_simulate_nifti_refuses_to_overwrite(tmp_path):
    assert invoke("simulate", tmp_path / "s", "--nifti", "--trials", 2).exit_code == 0
    assert {p.name for p in (tmp_path / "s").iterdir()} == {
        "atlas.nii.gz",
        "bold.nii.gz",
        "events.tsv",
    }
    one_line_error(invoke("simulate", tmp_path / "s", "--nifti"), "--force")
