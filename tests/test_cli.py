"""The CLI end to end on simulated data: predict → CSV → score, info, simulate, errors."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fmri_edge.cli import app
from tests.conftest import write_icbhi

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_predict_npy_writes_submission_csv(sim_model, sim_data, tmp_path):
    np.save(tmp_path / "sub01.npy", sim_data[0][:12])
    np.save(tmp_path / "one.npy", sim_data[0][0])  # a single (246, T) trial
    res = invoke(
        "predict",
        tmp_path / "sub01.npy",
        tmp_path / "one.npy",
        "--model",
        sim_model,
        "--out",
        tmp_path / "p.csv",
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.csv").read_text().splitlines()[
        0
    ] == "Participant,Trial,CLASS,LEVEL"  # the challenge's
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["Participant"], int(r["Trial"])) for r in rows] == [
        ("sub01", i) for i in range(1, 13)
    ] + [("one", 1)]
    assert all(int(r["CLASS"]) in (-1, 0, 1) and -4 <= int(r["LEVEL"]) <= 4 for r in rows)
    assert "sub01" in res.stdout
    assert "found 2 file(s) of 2 participant(s) holding 13 trial(s); predicted 13" in res.stderr
    assert "participant name(s) 'one', 'sub01' do not look like the challenge's (P17)" in " ".join(
        res.stderr.split()
    )
    res = invoke(
        "predict",
        tmp_path / "sub01.npy",
        "--model",
        sim_model,
        "--out",
        tmp_path / "q.csv",
        "--probs",
    )
    rows = list(csv.DictReader(open(tmp_path / "q.csv")))
    assert list(rows[0]) == [
        "Participant",
        "Trial",
        "CLASS",
        "LEVEL",
        "p_negative",
        "p_neutral",
        "p_positive",
    ]
    assert all(
        abs(sum(float(r[k]) for k in ("p_negative", "p_neutral", "p_positive")) - 1) < 2e-3
        for r in rows
    )
    assert [r["CLASS"] for r in rows] == [
        r["CLASS"] for r in csv.DictReader(open(tmp_path / "p.csv"))
    ][:12]


def test_predict_icbhi_layout_and_score_against_labels(sim_model, sim_data, tmp_path):
    x, y, subj = sim_data
    for s in (4, 5):
        write_icbhi(tmp_path / "study", x[subj == s], y[subj == s], f"P{s + 10}")
    res = invoke("predict", tmp_path / "study", "--model", sim_model, "--out", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 60 and {r["Participant"] for r in rows} == {"P14", "P15"}
    res = invoke("score", tmp_path / "p.csv", tmp_path / "study", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n_trials"] == 60
    # the planted signal is strong: the tiny model must beat chance clearly on unseen subjects
    assert report["CLASS"]["accuracy"] >= 0.6
    assert 0 <= report["Score"] <= 1 and set(report) >= {
        "CLASS_error",
        "LEVEL_error",
        "CLASS",
        "LEVEL",
    }
    res = invoke("score", tmp_path / "p.csv", tmp_path / "study")
    assert "CLASS_error" in res.stdout and "confusion" in res.stdout


def test_predict_json_is_one_document(sim_model, sim_data, tmp_path):
    np.save(tmp_path / "a.npy", sim_data[0][:5])
    res = invoke("predict", tmp_path / "a.npy", "--model", sim_model, "--json")
    doc = json.loads(res.stdout)
    assert doc["n_trials"] == 5 and len(doc["predictions"]) == 5 and doc["errors"] == []


def test_bad_file_in_batch_loses_nothing(sim_model, sim_data, tmp_path):
    np.save(tmp_path / "good.npy", sim_data[0][:7])
    np.save(tmp_path / "atlas200.npy", np.ones((3, 200, 25)))
    bad = sim_data[0][:4].copy()
    bad[2, 5, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    res = invoke(
        "predict",
        tmp_path / "good.npy",
        tmp_path / "atlas200.npy",
        tmp_path / "nan.npy",
        "--model",
        sim_model,
        "--out",
        tmp_path / "p.csv",
        "--errors",
        tmp_path / "e.json",
    )
    assert res.exit_code == 3, res.output  # partial: the good rows are written, exit 3
    assert "lacks 1 row(s) of the trials found and every trial of 1 refused input(s)" in " ".join(
        res.stderr.split()
    )
    assert (
        "found 3 file(s) of 3 participant(s) holding 11 trial(s); predicted 10, 1 missing; 1 input(s) "
        "refused" in " ".join(res.stderr.split())
    )
    expected = [("good", str(i)) for i in range(1, 8)] + [("nan", "1"), ("nan", "2"), ("nan", "4")]
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [(r["Participant"], r["Trial"]) for r in rows] == expected
    errors = json.loads((tmp_path / "e.json").read_text())
    assert {e["file"].rsplit("/", 1)[-1] for e in errors} == {"atlas200.npy", "nan.npy"}
    assert "Traceback" not in res.output
    res = invoke(
        "predict",
        tmp_path / "good.npy",
        tmp_path / "atlas200.npy",
        tmp_path / "nan.npy",
        "--model",
        sim_model,
        "--out",
        tmp_path / "p.csv",
        "--force",
        "--allow-partial",
    )
    assert res.exit_code == 0, res.output
    assert [
        (r["Participant"], r["Trial"]) for r in csv.DictReader(open(tmp_path / "p.csv"))
    ] == expected
    res = invoke(
        "predict",
        tmp_path / "good.npy",
        tmp_path / "good.npy",
        "--model",
        sim_model,
        "--out",
        tmp_path / "p.csv",
        "--force",
    )  # the same file twice loses nothing
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p, np.ones((2, 246, 30))), "expected 25 time points"),
        (lambda p: np.save(p, np.ones((2, 25, 246))), "swapped"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "refused"),
        (lambda p: p.write_text("not an array"), "not a .npy file"),
    ],
)
def test_bad_input_is_one_line_exit_2(sim_model, tmp_path, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    res = invoke("predict", path, "--model", sim_model)
    assert res.exit_code == 2
    assert message in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.output


def test_existing_output_needs_force(sim_model, sim_data, tmp_path):
    np.save(tmp_path / "a.npy", sim_data[0][:2])
    (tmp_path / "p.csv").write_text("keep me")
    res = invoke("predict", tmp_path / "a.npy", "--model", sim_model, "--out", tmp_path / "p.csv")
    assert res.exit_code == 2 and "--force" in res.stderr
    assert (tmp_path / "p.csv").read_text() == "keep me"


def test_info_and_simulate(sim_model, tmp_path):
    res = invoke("info", sim_model, "--json")
    meta = json.loads(res.stdout)
    assert meta["n_regions"] == 246 and meta["model_version"] == "tiny-sim"
    assert invoke("simulate", tmp_path / "s.npy", "--trials", "4").exit_code == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 246, 25)
    assert invoke("simulate", tmp_path / "study", "--subjects", "2", "--trials", "6").exit_code == 0
    assert np.load(tmp_path / "study" / "S02" / "labels.npz")["data"].shape == (6, 2)


def test_not_an_onnx_model_is_refused(tmp_path, sim_data):
    (tmp_path / "m.onnx").write_bytes(b"garbage")
    np.save(tmp_path / "a.npy", sim_data[0][:2])
    res = invoke("predict", tmp_path / "a.npy", "--model", tmp_path / "m.onnx")
    assert res.exit_code == 2 and "not a loadable ONNX model" in res.stderr
