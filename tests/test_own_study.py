"""A lab's own labeled study → its own validated, exported decoder, with the CLI alone (issue 21).

A synthetic labeled BIDS study (fmri_edge.simulation.nifti_sim.write_labeled_study: TR 1.5 s, onsets between
volumes, subject-specific baselines and gains, ratings 1–9, condition codes in trial_type, events
files in sub-X/func and at the study root) goes through extract --class-column … → train --data →
export --out → info → predict. The planted signal must be found and a null study (same design, no
signal) must stay at chance: that second check is what shows that nothing leaks."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "nilearn", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'"
)
pytest.importorskip("torch")

from fmri_edge.imaging import events as ev_lib  # noqa: E402
from fmri_edge.imaging import extract as ex  # noqa: E402
from fmri_edge.imaging import study as study_lib  # noqa: E402
from fmri_edge.simulation import nifti_sim  # noqa: E402
from fmri_edge.cli import app  # noqa: E402
from fmri_edge.simulation.simulate import simulate  # noqa: E402
from tests.conftest import write_icbhi  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402  (one line on stderr, exit 2, no traceback)

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


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """4 participants × 1 run × 9 labeled events (+1 catch event each), extracted with labels."""
    d = tmp_path_factory.mktemp("own")
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
    res = invoke(
        "extract",
        d / "sim" / "study",
        "--atlas",
        d / "sim" / "atlas.nii.gz",
        "--out",
        d / "trials",
        *LABELS,
    )
    assert res.exit_code == 0, res.output
    return {
        "dir": d,
        "study": d / "sim" / "study",
        "atlas": d / "sim" / "atlas.nii.gz",
        "out": d / "trials",
        "extract": res,
    }


# ---- extract: labels from the events ---------------------------------------------------------------------


def test_extract_writes_labels_beside_the_trials_and_says_what_it_did(small):
    out, res = small["out"], small["extract"]
    truth = {}
    for sub in ("sub-01", "sub-02", "sub-03", "sub-04"):
        with (
            np.load(out / sub / "fMRI_data.npz", allow_pickle=False) as z,
            np.load(out / sub / "labels.npz", allow_pickle=False) as lab,
        ):
            assert z["data"].shape == (9, 246, 25) and lab["data"].shape == (
                9,
                2,
            )  # one label row per trial
            assert set(z["trial_type"].tolist()) <= {
                "img_neg",
                "img_neu",
                "img_pos",
            }  # the catch rows are dropped
            codes = {"img_neg": -1, "img_neu": 0, "img_pos": 1}
            assert lab["data"][:, 0].tolist() == [codes[t] for t in z["trial_type"].tolist()]
            truth[sub] = (lab["data"], lab["level_rated"].astype(bool))
    summary = json.loads((out / "labels.json").read_text())
    assert summary["class_map"] == {"img_neg": -1, "img_neu": 0, "img_pos": 1}
    assert summary["level"]["column"] == "rating" and summary["level"]["scale"] == [1.0, 9.0]
    assert summary["dropped"] == {"trial_type 'catch' not in the class map": 4}
    assert (
        summary["participants"]["sub-01"]["CLASS -1"] == 3
        and summary["participants"]["sub-02"]["trials"] == 9
    )
    # events found by BIDS inheritance: odd participants in sub-X/func, even ones at the study root
    used = {p: v["runs"][0]["events"] for p, v in summary["participants"].items()}
    assert "/func/" in used["sub-01"] and used["sub-02"] == str(
        small["study"] / "sub-02_task-affect_run-1_events.tsv"
    )
    assert (out / "participants.tsv").is_file()
    # ratings 1 … 9 mapped linearly onto −4 … 4: the simulator's rating of a rated trial, back
    sim_rating = np.genfromtxt(
        small["study"] / "sub-01" / "func" / "sub-01_task-affect_run-1_events.tsv",
        delimiter="\t",
        names=True,
        dtype=None,
        encoding="utf-8",
        missing_values="n/a",
    )
    rated = sim_rating[sim_rating["trial_type"] != "catch"]["rating"]
    labels, is_rated = truth["sub-01"]
    np.testing.assert_array_equal(labels[is_rated, 1], rated[is_rated] - 5)
    assert (
        "labels: CLASS from 'trial_type'" in res.stdout and "dropped: 4 event row(s)" in res.stderr
    )


def test_inheritance_lowest_level_wins_and_root_run_files_apply(tmp_path):
    bold = (
        tmp_path
        / "derivatives"
        / "fmriprep"
        / "sub-01"
        / "func"
        / "sub-01_task-a_run-2_desc-preproc_bold.nii.gz"
    )
    bold.parent.mkdir(parents=True)
    root_task = tmp_path / "task-a_events.tsv"
    root_run = tmp_path / "sub-01_task-a_run-2_events.tsv"
    other_run = tmp_path / "sub-01_task-a_run-1_events.tsv"
    for f in (root_task, root_run, other_run):
        f.write_text("onset\tduration\n1\t1\n")
    assert (
        ev_lib.find_events(bold, tmp_path / "derivatives" / "fmriprep")[0] == root_run
    )  # more entities wins
    (tmp_path / "sub-01" / "func").mkdir(parents=True)
    low = tmp_path / "sub-01" / "func" / "task-a_events.tsv"
    low.write_text("onset\tduration\n1\t1\n")
    assert ev_lib.find_events(bold, tmp_path)[0] == low  # the lowest level wins
    root_run.unlink(), low.unlink(), other_run.unlink()
    assert ev_lib.find_events(bold, tmp_path)[0] == root_task


def test_class_map_ratings_min_gap_and_overlaps(tmp_path):
    f = tmp_path / "e.tsv"
    f.write_text(
        "onset\tduration\tcond\tval\n0\t1\tLook_Neg\t1\n12\t1\tLook_Neu\tn/a\n40\t1\tLook_Pos\t5\n"
        "70\t1\tFix\t0\n72\t1\tLook_Pos\t0\n"
    )
    spec = ev_lib.LabelSpec(
        "cond",
        ev_lib.parse_class_map("Look_Neg=-1,Look_Neu=neutral,Look_Pos=positive"),
        "val",
        (1, 5),
        ("n/a", "0"),
    )
    lab = ev_lib.label_events(ev_lib.read_events(f), spec, (-5.0, 19.0))
    assert lab.valence_class.tolist() == [-1, 0, 1, 1]
    assert lab.valence_level.tolist() == [-4, 0, 4, 2]  # unrated (n/a, 0): the class-only rule
    assert lab.level_rated.tolist() == [True, False, True, False]
    assert lab.dropped == {"cond 'Fix' not in the class map": 1}
    assert lab.overlapping.tolist() == [
        True,
        False,
        False,
        False,
    ]  # 12 s later: inside the 0 s event's window
    gap = ev_lib.label_events(
        ev_lib.read_events(f), ev_lib.LabelSpec("cond", spec.class_map, min_gap=15), (-5.0, 19.0)
    )
    assert gap.valence_class.tolist() == [1, 1] and sum(gap.dropped.values()) == 3
    with pytest.raises(ex.UsageError, match="VALUE=CLASS"):
        ev_lib.parse_class_map("neg=-2")
    with pytest.raises(ex.InputError, match="outside the scale 1 … 5"):
        ev_lib.label_events(
            ev_lib.read_events(f), ev_lib.LabelSpec("cond", spec.class_map, "val", (1, 5)), (-5, 19)
        )


@pytest.mark.parametrize(
    "args, needles",
    [
        (
            ["--class-column", "trial_type", "--class-map", "img_neg=-1,img_sad=-1"],
            ["--class-map value(s) 'img_sad' never occur in column 'trial_type'", "'img_neu'"],
        ),
        (
            ["--class-column", "valence", "--class-map", "neg=-1"],
            [
                "no column 'valence'",
                "the columns there are: onset, duration, trial_type, rating, response_time",
            ],
        ),
        (
            [
                "--class-column",
                "trial_type",
                "--class-map",
                CLASS_MAP,
                "--level-column",
                "rating",
                "--level-scale",
                "1:7",
            ],
            ["outside the scale 1 … 7"],
        ),
        (
            ["--class-column", "trial_type", "--class-map", CLASS_MAP, "--level-column", "rating"],
            ["outside the scale -4 … 4", "--level-scale"],
        ),
        (["--level-column", "rating"], ["--class-column"]),
        (["--class-column", "trial_type"], ["--class-map"]),
    ],
)
def test_extract_bad_label_options_one_line_nothing_written(small, tmp_path, args, needles):
    res = invoke(
        "extract", small["study"], "--atlas", small["atlas"], "--out", tmp_path / "o", *args
    )
    one_line_error(res, *needles)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---- train --data, export, info, predict: the chain on the small study (CI) --------------------------------


def test_chain_train_export_info_predict_on_a_small_study(small, tmp_path):
    run = tmp_path / "run"
    res = invoke(
        "train",
        "--data",
        small["out"],
        "--out",
        run,
        "--protocol",
        "subject",
        "--permutations",
        2,
        "--threads",
        1,
    )
    assert res.exit_code == 0, res.output
    assert "cross-validation folds (4; groups: leave-one-participant-out)" in res.stderr
    assert "95% interval" in res.stdout and "new participants of this study" in res.stdout
    results = json.loads((run / "results.json").read_text())
    ev = results["evaluation"]
    assert ev["n_trials"] == 36 and ev["n_folds"] == 4 and ev["permutation"]["n"] == 2
    assert ev["interval_95"][0] <= ev["estimate"] <= ev["interval_95"][1]
    assert (
        ev["permutation"]["p"] in (1 / 3, 2 / 3, 1.0)
        or abs(ev["permutation"]["p"] * 3 - round(ev["permutation"]["p"] * 3)) < 1e-3
    )
    rows = list(csv.DictReader(open(run / "cv_predictions.csv")))
    assert [(r["Participant"], int(r["Trial"])) for r in rows] == [
        (f"sub-0{s}", t) for s in range(1, 5) for t in range(1, 10)
    ]
    assert len(list(csv.DictReader(open(run / "cv_folds.csv")))) == 4
    assert [r["participant"] for r in csv.DictReader(open(run / "cv_participants.csv"))] == [
        "sub-01",
        "sub-02",
        "sub-03",
        "sub-04",
    ]
    assert json.loads((run / "labels.json").read_text())["class_column"] == "trial_type"
    model = tmp_path / "mine.onnx"
    res = invoke("export", "--run", run, "--out", model)
    assert res.exit_code == 0, res.output
    assert f"36 real trials ({small['out']})" in " ".join(
        res.stdout.split()
    )  # parity on the run's own data
    card = (tmp_path / "mine.md").read_text()
    assert (
        f"fmri-edge train --data {small['out']}" in card
        and "95 % interval" in card
        and "new participants" in card
    )
    res = invoke("info", model, "--json")
    study = json.loads(res.stdout)["study"]
    assert study["labels"]["class_map"] == {"img_neg": -1, "img_neu": 0, "img_pos": 1}
    assert study["window"] == {"n_regions": 246, "n_times": 25, "baseline_s": 5.0}
    assert (
        study["participants"] == ["sub-01", "sub-02", "sub-03", "sub-04"]
        and study["cv"]["estimate"] == ev["estimate"]
    )
    assert "study CV" in invoke("info", model).stdout
    res = invoke("predict", small["out"], "--model", model, "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    assert "do not look like the challenge's" not in res.stderr
    res = invoke("score", tmp_path / "p.csv", small["out"], "--json")
    assert json.loads(res.stdout)["n_trials"] == 36


def test_predict_warns_when_the_trials_were_cut_with_another_window(small, tmp_path):
    src = small["out"] / "sub-01" / "fMRI_data.npz"
    with np.load(src, allow_pickle=False) as z:
        np.savez(
            tmp_path / "shifted.npz",
            **{k: z[k] for k in z.files if k != "baseline_s"},
            baseline_s=np.float64(3),
        )
    res = invoke("predict", tmp_path / "shifted.npz")
    assert res.exit_code == 0, res.output
    assert "cut as 25 s from onset − 3 s, the model reads 25 s from onset − 5 s" in " ".join(
        res.stderr.split()
    )


# ---- train: what is refused (one line, exit 2) ----------------------------------------------------------


def _study(root, classes_of=None, n=4, n_trials=12, tsv=None):
    x, y, subj = simulate(n_trials, n_subjects=n, effect=0.03, seed=3)
    for s in range(n):
        lab = y[subj == s].copy()
        if classes_of and s in classes_of:
            lab[:, 0] = classes_of[s](lab[:, 0])
        write_icbhi(root, x[subj == s], lab, f"sub-{s + 1:02d}")
    if tsv:
        (root / "participants.tsv").write_text(tsv)
    return root


def test_train_refusals(tmp_path):
    one = _study(tmp_path / "one", {1: lambda c: np.ones_like(c)})
    one_line_error(
        invoke("train", "--data", one, "--out", tmp_path / "r"),
        "sub-02",
        "every trial of sub-02 has CLASS 1",
    )
    few = _study(tmp_path / "few", n=2)
    one_line_error(
        invoke("train", "--data", few, "--out", tmp_path / "r"), "2 participant(s)", "at least 3"
    )
    rows = _study(tmp_path / "rows")
    np.savez(rows / "sub-03" / "labels.npz", data=np.zeros((5, 2)))
    one_line_error(
        invoke("train", "--data", rows, "--out", tmp_path / "r"), "5 label rows for 12 trials"
    )
    nocol = _study(
        tmp_path / "nocol", tsv="participant_id\tsite\nsub-01\tA\nsub-02\tA\nsub-03\tB\nsub-04\tB\n"
    )
    one_line_error(
        invoke(
            "train", "--data", nocol, "--group-by", "participants:scanner", "--out", tmp_path / "r"
        ),
        "participants.tsv",
        "no column 'scanner'",
        "participant_id, site",
    )
    one_line_error(
        invoke(
            "train", "--data", nocol, "--group-by", "participants:site", "--out", tmp_path / "r"
        ),
        "2 CV group(s)",
        "at least 3 groups",
    )
    one_line_error(
        invoke("train", "--data", tmp_path / "one" / "nope", "--out", tmp_path / "r"),
        "no such folder",
    )
    # held out, sub-04 takes every positive trial with it: its training side lacks CLASS 1
    lacks = _study(tmp_path / "lacks", {s: (lambda c: np.where(c == 1, -1, c)) for s in range(3)})
    one_line_error(
        invoke("train", "--data", lacks, "--out", tmp_path / "r"),
        "holding out sub-04",
        "no trial of CLASS 1",
    )
    long = tmp_path / "long"
    x, y, subj = simulate(12, n_subjects=3, n_times=30, seed=1)
    for s in range(3):
        write_icbhi(long, x[subj == s], y[subj == s], f"sub-{s + 1:02d}")
    one_line_error(
        invoke("train", "--data", long, "--out", tmp_path / "r"),
        "30-s trials (the recipe: 25 s)",
        "--config",
    )


def test_groups_from_participants_tsv(tmp_path):
    from fmri_edge.evaluation import splits

    root = _study(
        tmp_path / "g",
        n=6,
        tsv="participant_id\tsite\n"
        + "".join(f"sub-{i:02d}\t{'ABC'[(i - 1) // 2]}\n" for i in range(1, 7)),
    )
    groups, how = splits.study_groups(
        [f"sub-{i:02d}" for i in range(1, 7)], "participants:site", root
    )
    assert groups == {
        "sub-01": "A",
        "sub-02": "A",
        "sub-03": "B",
        "sub-04": "B",
        "sub-05": "C",
        "sub-06": "C",
    }
    folds = splits.subject_folds(sorted(groups), groups)
    assert [t for _, t in folds] == [
        ["sub-01", "sub-02"],
        ["sub-03", "sub-04"],
        ["sub-05", "sub-06"],
    ]
    many = [f"p{i:02d}" for i in range(25)]
    g, how = splits.study_groups(many, "auto", tmp_path)
    assert len(set(g.values())) == splits.K_FOLDS and "10-fold" in how
    assert splits.study_groups(many[:20], "auto", tmp_path)[1] == "leave-one-participant-out"


def test_binomial_threshold_and_bootstrap():
    from scipy.stats import binom

    from fmri_edge.training import evaluation

    for n, p in ((240, 1 / 3), (36, 1 / 3), (480, 0.3375), (10, 0.5)):
        assert evaluation.binomial_threshold(n, p) == pytest.approx((binom.isf(0.05, n, p) + 1) / n)
    correct = np.r_[np.ones(30), np.zeros(30)].astype(bool)
    who = np.repeat(["a", "b", "c", "d", "e", "f"], 10)
    lo, hi = evaluation.participant_bootstrap(correct, who, seed=0)
    assert lo < 0.5 < hi
    shuffled = evaluation.shuffle_within(
        np.c_[np.arange(60), np.arange(60)], who, np.random.default_rng(0)
    )
    for p in set(who):  # rows stay whole and inside their participant
        assert (
            sorted(shuffled[who == p, 0]) == list(np.flatnonzero(who == p))
            and (shuffled[:, 0] == shuffled[:, 1]).all()
        )


# ---- the acceptance run: 10 participants (TR 1.5 s, 24 trials each), signal and null -----------------------


def _cv_accuracy(tmp_path, null: bool, seed: int) -> tuple[float, dict]:
    from fmri_edge.training.recipe import load_recipe, shipped_recipe
    from fmri_edge.training.run import make_plan, run

    root = tmp_path / ("null" if null else "signal")
    nifti_sim.write_atlas(tmp_path / "atlas.nii.gz")
    nifti_sim.write_labeled_study(
        root, n_subjects=10, n_runs=2, n_events=12, tr=1.5, null=null, seed=seed
    )
    window = ex.Window(246, 25, 5.0)
    opts = ex.ExtractOptions(
        labels=ev_lib.LabelSpec("trial_type", ev_lib.parse_class_map(CLASS_MAP), "rating", (1, 9))
    )
    results = study_lib.extract_bids(
        root, ex.Atlas(tmp_path / "atlas.nii.gz", 246), tmp_path / f"out-{root.name}", window, opts
    )
    assert sum(p.n_trials for p in results) == 240
    recipe = load_recipe(shipped_recipe())
    recipe.data = str(tmp_path / f"out-{root.name}")
    res = run(
        recipe,
        ["subject"],
        tmp_path / f"run-{root.name}",
        fit_final=False,
        plan=make_plan(recipe, "auto"),
    )
    return res["evaluation"]["estimate"], res["evaluation"]


def test_planted_signal_is_found_and_a_null_study_stays_at_chance(tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        signal, ev = _cv_accuracy(tmp_path, null=False, seed=0)
        null, ev_null = _cv_accuracy(tmp_path, null=True, seed=1)
    finally:
        torch.set_num_threads(threads)
    assert ev["n_trials"] == 240 and ev_null["n_trials"] == 240
    assert signal > ev["chance"]["binomial_threshold"] and signal >= 0.55, ev
    assert null <= 0.45, ev_null


def test_another_trial_length_where_a_recipe_allows_it(tmp_path):
    from fmri_edge.training.recipe import shipped_recipe

    x, y, subj = simulate(12, n_subjects=3, n_times=30, seed=1)
    for s in range(3):
        write_icbhi(tmp_path / "long", x[subj == s], y[subj == s], f"sub-{s + 1:02d}")
    recipe = tmp_path / "r30.toml"
    recipe.write_text(
        shipped_recipe()
        .read_text()
        .replace("time_window = [5, 25]", "time_window = [5, 30]\nn_times = 30")
    )
    res = invoke(
        "train",
        "-c",
        recipe,
        "--data",
        tmp_path / "long",
        "--out",
        tmp_path / "r",
        "--no-final",
        "--threads",
        1,
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["evaluation"]["n_trials"] == 36
