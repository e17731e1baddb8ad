"""Reliability round four (issue 30): labeled extraction, train, export, output suffixes, info, stream,
and the newcomer's rough edges. Every case is one line naming the file and the problem, exit 2, no
traceback, nothing clobbered, and the good work of the same batch kept."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "nilearn", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'"
)

from fmri_edge.cli import app  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402
from tests.test_stream import decoder, replayed, run  # noqa: E402,F401  (fixtures of the stream tests)

runner = CliRunner()
CLASS_MAP = "img_neg=negative,img_neu=0,img_pos=+1"
LABELS = [
    "--class-column",
    "trial_type",
    "--class-map",
    CLASS_MAP,
    "--level-column",
    "rating",
    "--level-scale",
    "1:9",
]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def events_of(study, sub):
    return next(study.rglob(f"{sub}_task-affect_run-1_events.tsv"))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("r4")
    res = invoke(
        "simulate",
        d / "sim",
        "--study",
        "--subjects",
        4,
        "--runs",
        1,
        "--trials",
        9,
        "--effect",
        0.03,
    )
    assert res.exit_code == 0, res.output
    return d / "sim"


@pytest.fixture
def study(sim, tmp_path):
    """A fresh copy of the simulated labeled study (the tests damage it)."""
    shutil.copytree(sim, tmp_path / "sim")
    return tmp_path / "sim" / "study", tmp_path / "sim" / "atlas.nii.gz"


# ---- labeled extraction: one bad events file refuses that run only --------------------------------------


@pytest.mark.parametrize("labeled", [True, False])
@pytest.mark.parametrize(
    "damage, needle",
    [
        ("onset\tduration\ttrial_type\trating\tresponse_time\n", "header but no event rows"),
        ("", "empty events file"),
    ],
)
def test_one_bad_events_file_refuses_only_its_run(study, tmp_path, labeled, damage, needle):
    root, atlas = study
    events_of(root, "sub-02").write_text(damage)
    out = tmp_path / "trials"
    res = invoke("extract", root, "--atlas", atlas, "--out", out, *(LABELS if labeled else []))
    assert "Traceback" not in res.output
    assert res.exit_code in (0, 3), res.output  # the batch is partial, not refused
    assert needle in " ".join(res.stderr.split()) and "sub-02" in res.stderr
    for sub in ("sub-01", "sub-03", "sub-04"):  # the good runs come out, labeled or not
        assert (out / sub / "fMRI_data.npz").is_file()
        assert (out / sub / "labels.npz").is_file() == labeled
    assert not (out / "sub-02").exists()


def test_labeled_extract_with_no_events_says_where_it_looked(study, tmp_path):
    root, atlas = study
    for f in root.rglob("*_events.tsv"):
        f.unlink()
    res = invoke("extract", root, "--atlas", atlas, "--out", tmp_path / "o", *LABELS)
    one_line_error(
        res, "no events file sub-01_task-affect_run-1_events.tsv found for any run", "looked in"
    )


def test_decimal_comma_rating_says_so_once(study, tmp_path):
    root, atlas = study
    f = events_of(root, "sub-01")
    lines = f.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[3] = "5,5"
    lines[1] = "\t".join(cells)
    f.write_text("\n".join(lines) + "\n")
    res = invoke("extract", root, "--atlas", atlas, "--out", tmp_path / "o", *LABELS)
    flat = " ".join(res.stderr.split())
    assert "Traceback" not in res.output and res.exit_code == 2, res.output
    assert "rating '5,5' is not a number (a decimal comma? write 5.5" in flat, flat
    assert "rating rating" not in flat and "np.str_" not in flat


def test_participant_whose_events_the_class_map_all_drops_is_named_as_such(study, tmp_path):
    root, atlas = study
    f = events_of(root, "sub-03")
    lines = f.read_text().splitlines()
    rows = [ln.split("\t") for ln in lines[1:]]
    for r in rows:
        r[2] = "catch"
    f.write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    out = tmp_path / "o"
    res = invoke("extract", root, "--atlas", atlas, "--out", out, *LABELS)
    flat = " ".join(res.stderr.split())
    assert "Traceback" not in res.output, res.output
    assert (
        "every event of its runs was dropped before cutting" in flat
        and "not in the class map" in flat
    ), flat
    assert "fits inside its scan" not in flat
    assert (out / "sub-01" / "labels.npz").is_file() and not (out / "sub-03").exists()


# ---- export trusts nothing in its run folder; refuses to overwrite without --force -----------------------


@pytest.fixture
def run_dir(tmp_path):
    pytest.importorskip("torch")
    from fmri_edge.training.checkpoints import random_run

    run = random_run(tmp_path / "run", widths=(8, 8, 8), dense=(16, 8))
    (run / "results.json").write_text(json.dumps({"protocols": {}, "git_commit": None}))
    return run


def _cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_export_cut_checkpoint_is_one_line(run_dir, tmp_path):
    _cut(run_dir / "model.pt")
    one_line_error(
        invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
        "model.pt: cut short or damaged",
        "retrain it",
    )
    assert not (tmp_path / "m.onnx").exists()


def test_export_cut_results_json_is_one_line(run_dir, tmp_path):
    _cut(run_dir / "results.json", 0.6)
    one_line_error(
        invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
        "results.json: not valid JSON",
        "cut short?",
    )


def test_export_checkpoint_of_another_version_names_the_key_and_the_version(run_dir, tmp_path):
    import torch

    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    ckpt["model_config"]["frobnicate"] = 3
    ckpt["fmri_edge_version"] = "9.9.9"
    torch.save(ckpt, run_dir / "model.pt")
    one_line_error(
        invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
        "model.pt: written by fmri-edge 9.9.9",
        "'frobnicate'",
        "does not know",
    )
    del ckpt["fmri_edge_version"]
    torch.save(ckpt, run_dir / "model.pt")
    one_line_error(
        invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
        "written by an older fmri-edge (the checkpoint does not record which version)",
    )


@pytest.mark.parametrize("existing", ["m.onnx", "m.md"])
def test_export_refuses_to_overwrite_the_model_or_its_card_without_force(
    run_dir, tmp_path, existing
):
    (tmp_path / existing).write_text("tracked")
    one_line_error(
        invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx"),
        f"{existing}: exists; use --force to overwrite",
    )
    assert (tmp_path / existing).read_text() == "tracked"


def test_bare_export_looks_where_bare_train_writes(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from fmri_edge.training.recipe import load_recipe, shipped_recipe

    monkeypatch.chdir(tmp_path)
    one_line_error(
        invoke("export"),
        f"runs/{load_recipe(shipped_recipe()).name}: no such run folder",
        "run `fmri-edge train` first",
    )


# ---- train: a run folder is whole; --out, participant names, participants.tsv --------------------------


def _labeled(root, n=4, n_trials=12, seed=3):
    from fmri_edge.simulation.simulate import simulate
    from tests.conftest import write_icbhi

    x, y, subj = simulate(n_trials, n_subjects=n, effect=0.03, seed=seed)
    for s in range(n):
        write_icbhi(root, x[subj == s], y[subj == s], f"sub-{s + 1:02d}")
    return root


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_interrupted_permutations_leave_the_earlier_run_whole(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from fmri_edge.training import evaluation

    data, run = _labeled(tmp_path / "d"), tmp_path / "run"
    res = invoke("train", "--data", data, "--out", run, "--no-final", "--threads", 1)
    assert res.exit_code == 0, res.output
    before = _files(run)
    other = _labeled(tmp_path / "d2", seed=11)  # another study: every output would differ

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "permutation_null", interrupt)
    res = invoke("train", "--data", other, "--out", run, "--permutations", 5, "--threads", 1)
    assert res.exit_code == 130 and "Traceback" not in res.output, res.output
    assert _files(run) == before  # cv_predictions.csv and all: the earlier run, whole
    assert [
        p.name for p in tmp_path.iterdir() if p.name.startswith(".")
    ] == []  # no temporary folder left
    monkeypatch.undo()
    res = invoke("train", "--data", other, "--out", run, "--no-final", "--threads", 1)
    assert res.exit_code == 0, res.output
    assert (
        _files(run).keys() == before.keys() and _files(run) != before
    )  # replaced whole by the new run


def test_train_out_that_cannot_be_written_is_one_line_before_any_work(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    data = _labeled(tmp_path / "d")
    (tmp_path / "file").write_text("x")
    one_line_error(invoke("train", "--data", data, "--out", tmp_path / "file"), "file: is a file")
    one_line_error(
        invoke("train", "--data", data, "--out", tmp_path / "file" / "run"), "cannot be created"
    )
    one_line_error(
        invoke("train", "--data", data, "--out", data), "is not a run folder of fmri-edge train"
    )
    ro = _read_only(tmp_path / "ro", monkeypatch)
    one_line_error(
        invoke("train", "--data", data, "--out", ro / "run"), "cannot be written", "is not writable"
    )


def _read_only(folder, monkeypatch):
    """A folder that cannot be written: chmod 0500, and (root writes anywhere) os.access says so too."""
    import os

    folder.mkdir()
    folder.chmod(0o500)
    real = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, *a, **k: (
            False
            if os.path.abspath(p) == str(folder) and mode & os.W_OK
            else real(p, mode, *a, **k)
        ),
    )
    return folder


def test_same_participant_name_under_two_sites_is_an_error(tmp_path):
    pytest.importorskip("torch")
    study = tmp_path / "study"
    _labeled(study / "siteA", n=3)
    _labeled(study / "siteB", n=3, seed=5)
    one_line_error(
        invoke("train", "--data", study, "--out", tmp_path / "run"),
        "two participant folders are both named sub-01",
        "siteA/sub-01",
        "siteB/sub-01",
    )
    assert not (tmp_path / "run").exists()


def test_latin1_participants_tsv_is_one_line(tmp_path):
    pytest.importorskip("torch")
    data = _labeled(tmp_path / "d", n=6)
    (data / "participants.tsv").write_bytes(
        "participant_id\tsite\n".encode()
        + "".join(f"sub-0{i}\t{'Zürich' if i < 3 else 'Genève'}\n" for i in range(1, 7)).encode(
            "latin-1"
        )
    )
    one_line_error(
        invoke("train", "--data", data, "--group-by", "participants:site", "--out", tmp_path / "r"),
        "participants.tsv: not UTF-8 text",
        "iconv",
    )


def test_train_on_unlabeled_trials_says_to_rerun_extract_with_labels(tmp_path):
    pytest.importorskip("torch")
    data = _labeled(tmp_path / "d")
    (data / "sub-02" / "labels.npz").unlink()
    one_line_error(
        invoke("train", "--data", data, "--out", tmp_path / "r"),
        "sub-02/labels.npz: missing",
        "rerun fmri-edge extract with --class-column COLUMN --class-map",
    )


# ---- output names checked before any work; brain maps ----------------------------------------------------


@pytest.mark.parametrize(
    "option, name",
    [
        ("--brain-map", "x.nii.gz"),
        ("--map-nifti", "x.png"),
        ("--plot", "x.pdf"),
        ("--map-nifti", ".nii"),
    ],
)
def test_output_suffixes_are_checked_before_any_work(option, name, tmp_path, monkeypatch):
    from fmri_edge.explanation import regions as lib

    def never(*a, **k):
        raise AssertionError("summarized before the output name was checked")

    monkeypatch.setattr(lib, "summarize", never)
    np.save(tmp_path / "t.npy", np.ones((2, 246, 25), np.float32))
    extra = ["--atlas", tmp_path / "a.nii.gz"] if option != "--plot" else []
    res = invoke("explain", tmp_path / "t.npy", option, tmp_path / name, *extra)
    one_line_error(res, f"{option} {tmp_path / name}: writes", "give a file name ending in")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npy"]


def test_colour_scale_follows_the_data():
    pytest.importorskip("matplotlib")
    from fmri_edge.explanation.brainmap import colour_scale

    vmin, vmax, cmap, thr, _ = colour_scale(np.array([0.1, 0.5, 2.0]), signed=True)
    assert (vmin, vmax, cmap) == (0.0, 2.0, "Reds") and 0 < thr < 0.1  # one sign: sequential
    vmin, vmax, cmap, _, _ = colour_scale(np.array([-3.0, -0.2]), signed=True)
    assert (vmin, vmax, cmap) == (-3.0, 0.0, "Blues_r")
    vmin, vmax, cmap, _, _ = colour_scale(np.array([-0.5, 0.1, 2.0]), signed=True)
    assert (vmin, vmax) == (-0.5, 2.0)  # each side as far as the data
    mid = cmap((0 - vmin) / (vmax - vmin))  # 0 stays white (RdBu_r's middle)
    assert min(mid[:3]) > 0.9
    assert colour_scale(np.array([0.2, 0.4]), signed=False)[2] == "viridis"


@pytest.fixture
def labeled_atlas(tmp_path):
    nib = pytest.importorskip("nibabel")
    from tests.test_brainmap import LABELS, affine

    path = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(LABELS, affine(2.0, LABELS.shape)), str(path))
    return path


def test_brain_map_names_its_top_regions_and_slices_have_an_underlay(
    sim_model, sim_data, labeled_atlas, tmp_path, monkeypatch
):
    pytest.importorskip("matplotlib")
    from fmri_edge.explanation import brainmap

    x, _, subj = sim_data
    np.save(tmp_path / "S5.npy", x[subj == 5])
    drawn = {}
    real = brainmap._label_top

    def spy(fig, display, atlas, names, values, top):
        real(fig, display, atlas, names, values, top)
        drawn["texts"] = [t.get_text() for t in fig.texts]
        drawn["bg"] = (
            getattr(display, "_brain_color", None),
            [type(a).__name__ for a in display.axes.values()],
        )
        drawn["images"] = sum(len(a.ax.images) for a in display.axes.values())

    monkeypatch.setattr(brainmap, "_label_top", spy)
    png = tmp_path / "m.png"
    res = invoke(
        "explain",
        sim_model,
        tmp_path / "S5.npy",
        "--atlas",
        labeled_atlas,
        "--brain-map",
        png,
        "--view",
        "slices",
    )
    assert res.exit_code == 0, res.output
    legend = next(t for t in drawn["texts"] if t.startswith("largest |value|"))
    assert len(legend.splitlines()) == 6 and "R" in legend  # 5 regions named (R<i> in sim_model)
    assert drawn["images"] >= 6  # each of the 3 slices: the MNI152 underlay and the map over it


def test_explain_class_restricts_the_table_to_that_class(sim_model, sim_data, tmp_path):
    x, _, subj = sim_data
    np.save(tmp_path / "S5.npy", x[subj == 5])
    every = invoke("explain", sim_model, tmp_path / "S5.npy", "--json")
    doc = json.loads(every.stdout)["summary"]
    answered = next(c for c in doc["classes"] if c["n_trials"])
    res = invoke("explain", sim_model, tmp_path / "S5.npy", "--class", answered["class"], "--json")
    assert res.exit_code == 0, res.output
    only = json.loads(res.stdout)["summary"]
    assert only["n_trials"] == answered["n_trials"] < doc["n_trials"]
    assert [c["n_trials"] for c in only["classes"] if c["class"] != answered["class"]] == [0, 0]
    table = invoke("explain", sim_model, tmp_path / "S5.npy", "--class", answered["class"])
    assert f"({answered['n_trials']} trials answered {answered['class']:+d})" in table.stdout


# ---- info: a metadata field of an unexpected type -----------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("normalization", "baseline_z"),
        ("training", "all subjects"),
        ("subject_alignment", ["zscore"]),
        ("metrics", {"subject": 0.7}),
        ("study", 3),
    ],
)
def test_info_metadata_field_of_an_unexpected_type_is_one_line(sim_model, tmp_path, field, value):
    from tests.corpus import model_with

    m = model_with(sim_model, tmp_path / "m.onnx", {field: value})
    res = invoke("info", m, "--no-verify")
    one_line_error(res, "m.onnx: metadata field", repr(field), "re-export")
    assert invoke("info", m, "--no-verify", "--json").exit_code == 0  # --json prints it as stored


# ---- stream: --out that cannot be written; skipped volumes are "skipped" ---------------------------------


def test_stream_out_in_an_unwritable_folder_is_exit_2_at_start(tmp_path, monkeypatch):
    from fmri_edge.simulation import nifti_sim

    atlas = nifti_sim.write_atlas(tmp_path / "atlas.nii.gz")
    sim = nifti_sim.write_run(
        tmp_path / "bold.nii.gz", tmp_path / "events.tsv", tr=2.0, n_events=2, seed=3
    )
    (tmp_path / "w").mkdir()
    res = invoke(
        "stream",
        tmp_path / "w",
        "--atlas",
        atlas,
        "--events",
        sim.events,
        "--tr",
        2.0,
        "--out",
        tmp_path / "nope" / "a.csv",
        "--volume-timeout",
        3,
    )
    one_line_error(res, "a.csv: folder", "does not exist")
    ro = _read_only(tmp_path / "ro", monkeypatch)
    res = invoke(
        "stream",
        tmp_path / "w",
        "--atlas",
        atlas,
        "--events",
        sim.events,
        "--tr",
        2.0,
        "--out",
        ro / "a.csv",
        "--volume-timeout",
        3,
    )
    one_line_error(res, "a.csv: cannot be written", "not writable")
    assert not (ro / "a.csv").exists()


def test_stream_skipped_volumes_are_reported_as_skipped(run, decoder, replayed, tmp_path):
    nib = pytest.importorskip("nibabel")
    from fmri_edge.simulation.replay import volume_file
    from tests.test_stream import _stream

    folder = tmp_path / "w"
    shutil.copytree(replayed, folder)
    live, _, problems = _stream(
        folder, run, decoder, include_existing=True, align="none", volume_timeout=0.2
    )
    t0 = live.schedule.trials[0]
    cut = folder / volume_file("nii", 1, t0.hi + 1)
    cut.write_bytes(cut.read_bytes()[:1000])  # never completes
    other = folder / volume_file("nii", 1, live.schedule.trials[2].lo + 2)
    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), str(other)
    )  # another grid
    live.run()
    volumes = [p for p in problems if cut.name in str(p) or other.name in str(p)]
    assert len(volumes) == 2 and {p.outcome for p in volumes} == {"skipped"}, [
        (p.outcome, str(p)) for p in volumes
    ]


# ---- refusals that say what to do next; the predict table; --help ------------------------------------------


def test_predict_on_a_bold_image_or_a_bids_folder_says_run_extract_first(sim):
    bold = next(sim.rglob("*_bold.nii.gz"))
    one_line_error(invoke("predict", bold), "an image, not trials", "fmri-edge extract")
    one_line_error(
        invoke("predict", sim / "study"),
        "it holds NIfTI images",
        "run `fmri-edge extract",
        "first, then predict TRIALS",
    )


def test_a_wrong_atlas_on_a_study_is_refused_once(study, tmp_path):
    nib = pytest.importorskip("nibabel")
    root, atlas = study
    img = nib.load(str(atlas))
    coarse = (
        tmp_path / "coarse.nii.gz"
    )  # the same labels on a grid 2× coarser: most are lost on the runs'
    nib.save(
        nib.Nifti1Image(
            np.asanyarray(img.dataobj).astype(np.int16), img.affine @ np.diag([2, 2, 2, 1])
        ),
        str(coarse),
    )
    errors = tmp_path / "errors.json"
    res = invoke("extract", root, "--atlas", coarse, "--out", tmp_path / "o", "--errors", errors)
    # refused once for the study, before any run is read (the space check of the first run's grid),
    # never once per run
    one_line_error(res, "coarse.nii.gz:", "the image does not cover them")
    assert res.stderr.count("coarse.nii.gz") == 1
    assert "refused:" not in res.stderr


def test_predict_table_says_how_many_rows_it_does_not_show(sim_model, sim_data, tmp_path):
    x, _, subj = sim_data
    np.save(tmp_path / "many.npy", x[:90])
    res = invoke("predict", tmp_path / "many.npy", "--model", sim_model)
    assert res.exit_code == 0, res.output
    assert "(90 trials, the first 60 shown)" in res.stdout and "… 30 more rows" in res.stdout
    assert sum(ln.startswith("many ") for ln in res.stdout.splitlines()) == 60


@pytest.mark.parametrize("command", ["stream", "extract", "explain", "predict"])
def test_help_shows_pip_install_without_a_backslash(command):
    res = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "\\[" not in res.stdout and ("fmri-edge[" in res.stdout or command == "predict"), (
        res.stdout
    )


# ---- atlas provenance: extract → train --data → export → info; predict warns on another atlas ---------------


def test_atlas_provenance_from_extract_to_the_model_and_predict_warns_on_another(sim, tmp_path):
    pytest.importorskip("torch")
    import hashlib

    from fmri_edge.imaging import atlas_provenance

    atlas = sim / "atlas.nii.gz"
    sha = hashlib.sha256(atlas.read_bytes()).hexdigest()
    trials = tmp_path / "trials"
    res = invoke("extract", sim / "study", "--atlas", atlas, "--out", trials, *LABELS)
    assert res.exit_code == 0, res.output
    rec = atlas_provenance.read(trials / "sub-01" / "fMRI_data.npz")
    assert (
        rec["file"] == "atlas.nii.gz"
        and rec["sha256"] == sha
        and len(rec["voxel_mm"]) == 3
        and rec["space"]
    )
    assert json.loads((trials / "labels.json").read_text())["atlas"] == rec
    run = tmp_path / "run"
    res = invoke("train", "--data", trials, "--out", run, "--threads", 1)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "results.json").read_text())["atlas"] == rec
    model = tmp_path / "mine.onnx"
    res = invoke("export", "--run", run, "--out", model)
    assert res.exit_code == 0, res.output
    assert json.loads(invoke("info", model, "--json").stdout)["atlas"] == rec
    assert f"sha256 {sha[:12]}" in " ".join(invoke("info", model).stdout.split())
    assert f"`atlas.nii.gz`, sha256 `{sha}`" in (tmp_path / "mine.md").read_text()
    res = invoke("predict", trials, "--model", model)
    assert res.exit_code == 0 and "were made with atlas" not in res.stderr, res.output
    # the same study extracted with another atlas file (same labels, other bytes): predict warns once
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(atlas))
    other = tmp_path / "other_atlas.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.float32), img.affine), str(other))
    res = invoke("extract", sim / "study", "--atlas", other, "--out", tmp_path / "t2")
    assert res.exit_code == 0, res.output
    res = invoke("predict", tmp_path / "t2", "--model", model)
    assert res.exit_code == 0, res.output
    flat = " ".join(res.stderr.split())
    assert flat.count("its trials were made with atlas other_atlas.nii.gz") == 1, flat
    assert "the model was trained on trials of atlas atlas.nii.gz" in flat


def test_a_study_of_trials_from_two_atlases_is_refused(sim, tmp_path):
    pytest.importorskip("torch")
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(sim / "atlas.nii.gz"))
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.float32), img.affine), str(other))
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        invoke(
            "extract", sim / "study", "--atlas", sim / "atlas.nii.gz", "--out", a, *LABELS
        ).exit_code
        == 0
    )
    assert invoke("extract", sim / "study", "--atlas", other, "--out", b, *LABELS).exit_code == 0
    shutil.rmtree(a / "sub-04")
    shutil.copytree(b / "sub-04", a / "sub-04")
    one_line_error(
        invoke("train", "--data", a, "--out", tmp_path / "run"),
        "were made with atlas",
        "one study's trials need one atlas",
    )


# ---- progress of long work ------------------------------------------------------------------------------


def test_progress_phases_say_fold_k_of_n_and_report_says_recipe_k_of_n():
    from fmri_edge.training.progress import Phases, RecipeClock

    p = Phases(["test P01+P10", "test P02+P11", "test P03"], [0, 1, 2])
    assert p.locate("test P02+P11", 1, 1) == (
        "subject",
        "subject CV: fold 2 of 3 (test P02+P11)",
        2.0,
        3,
    )
    assert p.locate("test P03 · val P01+P10", 5, 10)[1:] == (
        "subject CV: fold 3 of 3 (test P03)",
        2.0,
        3,
    )
    assert p.locate("seed 1", 10, 20)[1:] == ("random split 2 of 3 (seed 1)", 1.5, 3)
    assert p.locate("permutation null (labels shuffled within participants)", 4, 10)[2:] == (
        4.0,
        10,
    )
    assert p.locate("all subjects", 3, 3)[0] == "final"
    t = iter([0.0, 0.0, 90.0, 200.0])
    clock = RecipeClock(3, clock=lambda: next(t))
    assert clock.line("a") == "training a (recipe 1 of 3 to train; 0 s so far) …"
    assert (
        clock.line("b")
        == "training b (recipe 2 of 3 to train; 1 min 30 s so far, about 3 min 00 s left) …"
    )
    assert (
        clock.line("c")
        == "training c (recipe 3 of 3 to train; 3 min 20 s so far, about 1 min 40 s left) …"
    )


def test_train_draws_its_phases_on_a_terminal(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from fmri_edge.cli import build
    from fmri_edge.cli.console import err

    seen = []
    real = build._phase_bars.__call__

    def spy(self, stage, epoch, epochs):
        real(self, stage, epoch, epochs)
        seen.append([self.bar.tasks[i].description for i in self.tasks.values()][-1])

    monkeypatch.setattr(build._phase_bars, "__call__", spy)
    data = _labeled(tmp_path / "d")
    res = invoke("train", "--data", data, "--out", tmp_path / "run", "--threads", 1)
    assert res.exit_code == 0, res.output
    assert (
        "subject CV: fold 1 of 4 (test sub-01)" in seen
        and "subject CV: fold 4 of 4 (test sub-04)" in seen
    )
    assert "final fit on all participants" in seen
    assert err is not None


def test_export_int8_refuses_an_existing_int8_file_before_any_work(run_dir, tmp_path):
    (tmp_path / "m.int8.onnx").write_text("tracked")
    one_line_error(
        invoke("export", "--run", run_dir, "--out", tmp_path / "m.onnx", "--int8"),
        "m.int8.onnx: exists; use --force",
    )
    assert (
        not (tmp_path / "m.onnx").exists() and (tmp_path / "m.int8.onnx").read_text() == "tracked"
    )
