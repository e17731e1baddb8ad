"""extract --confounds-strategy (issue 31): nilearn's fMRIPrep strategies; scrubbed volumes are never
samples of a trial; the counts per participant are right; a strategy whose columns are missing is
one line and nothing is written."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "nilearn", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'"
)

from fmri_edge.imaging import confounds as strategies  # noqa: E402
from fmri_edge.cli import app  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402

runner = CliRunner()
LABELS = [
    "--class-column",
    "trial_type",
    "--class-map",
    "img_neg=negative,img_neu=neutral,img_pos=positive",
]
# FD above 0.5 mm at these volumes of sub-01's run 1: 40 and 43 are 2 apart (the 2 volumes between
# them form a segment shorter than 5: nilearn's neighbour rule censors them too), 90 alone
SPIKES = {40: 0.9, 43: 0.7, 90: 1.2}


def _tsvs(study):
    return sorted(study.glob("derivatives/fmriprep/sub-*/func/*_desc-confounds_timeseries.tsv"))


def _read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return rows


def _write(path, rows, drop=()):
    cols = [c for c in rows[0] if c not in drop]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols, delimiter="\t", lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def expected_censored(fd, scrub=5, threshold=0.5):
    """FD > threshold, then segments shorter than ``scrub`` between (or before / after) censored
    volumes: written from Power et al. 2014's description, not from nilearn's code."""
    bad = np.zeros(len(fd), bool)
    bad[1:] = np.asarray(fd[1:]) > threshold
    idx = np.flatnonzero(bad)
    if not len(idx):
        return bad
    if idx[0] < scrub:
        bad[: idx[0]] = True
    if len(fd) - idx[-1] - 1 < scrub:
        bad[idx[-1] :] = True
    for a, b in zip(idx[:-1], idx[1:]):
        if 1 < b - a < scrub + 1:
            bad[a:b] = True
    return bad


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("conf")
    res = runner.invoke(
        app,
        [
            "simulate",
            str(d / "sim"),
            "--study",
            "--subjects",
            "3",
            "--runs",
            "2",
            "--trials",
            "8",
            "--confounds",
        ],
    )
    assert res.exit_code == 0, res.output
    study = d / "sim" / "study"
    first = _tsvs(study)[0]
    rows = _read(first)
    for r in rows[1:]:
        r["framewise_displacement"] = "0.100000"
    for k, v in SPIKES.items():
        rows[k]["framewise_displacement"] = f"{v:.6f}"
    _write(first, rows)
    return {"dir": d, "study": study, "atlas": d / "sim" / "atlas.nii.gz"}


def test_scrubbing_censors_exactly_the_high_motion_volumes_and_counts_them_per_participant(
    study, tmp_path
):
    out = tmp_path / "trials"
    res = runner.invoke(
        app,
        [
            "extract",
            str(study["study"]),
            "--atlas",
            str(study["atlas"]),
            "--out",
            str(out),
            *LABELS,
            "--confounds-strategy",
            "scrubbing",
            "--fd-threshold",
            "0.5",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "labels.json").read_text())
    assert summary["confounds_strategy"]["strategy"] == "scrubbing"
    assert summary["confounds_strategy"]["parameters"]["fd_threshold"] == 0.5
    want = {}
    for tsv in _tsvs(study["study"]):
        fd = [
            float("nan")
            if r["framewise_displacement"] == "n/a"
            else float(r["framewise_displacement"])
            for r in _read(tsv)
        ]
        dv = [
            float("nan") if r["std_dvars"] == "n/a" else float(r["std_dvars"]) for r in _read(tsv)
        ]
        assert np.nanmax(dv) < 1.5  # DVARS censors nothing here: FD alone decides
        sub = tsv.name.split("_")[0]
        want[sub] = want.get(sub, 0) + int(expected_censored(fd).sum())
    got = {p: c["scrubbing"]["censored"] for p, c in summary["participants"].items()}
    assert got == want
    assert want["sub-01"] >= 3 + 2  # the spikes and the short segment between two of them
    for p, c in summary["participants"].items():
        s = c["scrubbing"]
        with np.load(out / p / "fMRI_data.npz", allow_pickle=False) as z:
            marked = z["scrubbed_volumes"]
            assert len(marked) == c["trials"]
            assert int((marked > 0).sum()) == s["trials_interpolated"]
    # the run's censored volumes exactly: nilearn's sample mask equals the rule above
    bold = next(study["study"].glob("derivatives/fmriprep/sub-01/func/*run-1*_bold.nii.gz"))
    fd = [
        float("nan") if r["framewise_displacement"] == "n/a" else float(r["framewise_displacement"])
        for r in _read(_tsvs(study["study"])[0])
    ]
    _, mask = strategies.load(bold, strategies.parse("scrubbing", 0.5, None), len(fd))
    assert np.array_equal(
        np.setdiff1d(np.arange(len(fd)), mask), np.flatnonzero(expected_censored(fd))
    )


def test_a_trial_losing_most_of_its_window_is_dropped_the_others_interpolated():
    times = np.arange(100) * 1.5
    kept = np.setdiff1d(np.arange(100), np.arange(20, 30))  # 15 s censored
    offsets = np.arange(25) - 5.0
    lost, drop = strategies.scrub_trials(times, kept, np.array([35.0, 44.0, 120.0]), offsets)
    assert lost.tolist()[2] == 0 and not drop[2]
    assert lost[0] > 0 and drop[0]  # window 30–54 s: 10 of 17 volumes gone
    assert lost[1] > 0 and not drop[1]  # window 39–63 s: 4 of 17 lost, interpolated


def test_a_strategy_whose_columns_are_missing_is_one_line_and_nothing_is_written(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study["study"], copy)
    tsv = _tsvs(copy)[2]
    _write(tsv, _read(tsv), drop=("framewise_displacement",))
    out = tmp_path / "trials"
    res = runner.invoke(
        app,
        [
            "extract",
            str(copy),
            "--atlas",
            str(study["atlas"]),
            "--out",
            str(out),
            *LABELS,
            "--confounds-strategy",
            "scrubbing",
        ],
    )
    one_line_error(res, tsv.name, "framewise_displacement")
    assert not out.exists()


def test_bad_strategy_options_are_one_line(study, tmp_path):
    base = [
        "extract",
        str(study["study"]),
        "--atlas",
        str(study["atlas"]),
        "--out",
        str(tmp_path / "t"),
        *LABELS,
    ]
    one_line_error(
        runner.invoke(app, [*base, "--confounds-strategy", "aggressive"]), "simple, scrubbing"
    )
    one_line_error(
        runner.invoke(app, [*base, "--confounds-strategy", "simple", "--fd-threshold", "0.3"]),
        "scrubbing",
    )
    one_line_error(runner.invoke(app, [*base, "--fd-threshold", "0.3"]), "--confounds-strategy")
    one_line_error(
        runner.invoke(app, [*base, "--confounds", "auto", "--confounds-strategy", "simple"]),
        "choose one",
    )
    assert not (tmp_path / "t").exists()
