"""Every deliberately broken input of the corpus (tests/corpus.py) gets its one clear message: exit
code 2, no traceback, nothing unpickled — and a folder mixing all of them with good files still
gets every good trial predicted."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fmri_edge.data import submission
from fmri_edge.cli import app
from tests import corpus

pytest.importorskip("onnx")  # to build the test model and rewrite its metadata
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model that honours the ONNX contract (tests/corpus.py); built in a blink, no training."""
    return corpus.contract_model(tmp_path_factory.mktemp("model") / "contract.onnx")


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def test_the_corpus_is_large():
    assert len(corpus.BAD_FILES) + len(corpus.BAD_RUNS) >= 40


@pytest.mark.parametrize("name", sorted(corpus.BAD_FILES))
def test_bad_file_gets_its_message(name, model, tmp_path):
    case = corpus.BAD_FILES[name]
    path = tmp_path / case.filename
    case.write(path)
    res = invoke(["predict", path, "--model", model, "--out", tmp_path / "p.csv"])
    assert res.exit_code == 2, res.output
    assert case.message in res.stderr and str(path) in res.stderr, res.stderr
    assert res.stderr.count("error:") == 1
    assert "Traceback" not in res.output and res.stdout == ""
    assert not (tmp_path / "p.csv").exists()
    assert not corpus.exploded(tmp_path)


@pytest.mark.parametrize("name", sorted(corpus.BAD_RUNS))
def test_bad_run_gets_its_message(name, model, tmp_path):
    case = corpus.BAD_RUNS[name]
    res = invoke(case.make(tmp_path, model))
    assert res.exit_code == case.exit_code, res.output
    assert case.message in res.stderr, res.stderr
    assert "Traceback" not in res.output
    assert not corpus.exploded(tmp_path) and not (tmp_path / corpus.MARKER).exists()
    if case.exit_code == 2:
        assert not (tmp_path / "p.csv").exists() or (tmp_path / "p.csv").read_text() == "keep me"


def test_debug_shows_the_traceback(model, tmp_path):
    (tmp_path / "e.npy").write_bytes(b"")
    res = runner.invoke(app, ["--debug", "predict", str(tmp_path / "e.npy"), "--model", str(model)])
    assert res.exit_code != 0 and "empty file" in str(res.exception)


def test_mixed_folder_loses_no_good_trial(model, tmp_path):
    """All broken files, good files, and good files with a bad trial in one folder."""
    folder = tmp_path / "study"
    folder.mkdir()
    for case in corpus.BAD_FILES.values():
        case.write(folder / case.filename)
    good = {"good_a": corpus.trials(3, seed=1), "good_b": corpus.trials(1, seed=2)[0]}
    for name, x in good.items():
        np.save(folder / f"{name}.npy", x)
    expected = {
        (name, t) for name, x in good.items() for t in range(1, (len(x) if x.ndim == 3 else 1) + 1)
    }
    for name, (value, dtype) in corpus.BAD_TRIALS.items():  # trial 2 of 3 is bad
        x = corpus.trials(3, seed=3).astype(dtype)
        x[1, 10, 10] = value
        np.save(folder / f"bad_trial_{name}.npy", x)
        expected |= {(f"bad_trial_{name}", 1), (f"bad_trial_{name}", 3)}
    (folder / "P17").mkdir()  # an ICBHI subject folder beside them
    np.savez(folder / "P17" / "fMRI_data.npz", data=corpus.trials(2, seed=4).astype(np.float64))
    expected |= {("P17", 1), ("P17", 2)}

    res = invoke(
        [
            "predict",
            folder,
            "--model",
            model,
            "--out",
            tmp_path / "p.csv",
            "--errors",
            tmp_path / "e.json",
            "--batch-size",
            "2",
        ]
    )
    assert res.exit_code == 3, (
        res.output
    )  # a partial submission: the good rows, and a distinct code
    assert "Traceback" not in res.output
    n_refused = sum(not c.trial_level for c in corpus.BAD_FILES.values())
    assert (
        f"lacks {len(corpus.BAD_TRIALS) + sum(c.trial_level for c in corpus.BAD_FILES.values())} row(s) of "
        f"the trials found and every trial of {n_refused} refused input(s)"
        in " ".join(res.stderr.split())
    )
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert {(r["Participant"], int(r["Trial"])) for r in rows} == expected
    assert len(rows) == len(expected)
    errors = json.loads((tmp_path / "e.json").read_text())
    refused = {e["file"].rsplit("/", 1)[-1] for e in errors if e["outcome"] == "refused"}
    assert refused == {c.filename for c in corpus.BAD_FILES.values() if not c.trial_level}
    skipped = {
        (e["file"].rsplit("/", 1)[-1], e["trial"]) for e in errors if e["outcome"] == "skipped"
    }
    assert skipped == {(c.filename, 1) for c in corpus.BAD_FILES.values() if c.trial_level} | {
        (f"bad_trial_{n}.npy", 2) for n in corpus.BAD_TRIALS
    }
    assert all(set(e) == {"file", "trial", "outcome", "problem"} for e in errors)
    assert not corpus.exploded(folder)


def test_one_bad_trial_among_many_is_reported_in_json_output(model, tmp_path):
    x = corpus.trials(5)
    x[3, 0, 0] = np.nan
    np.save(tmp_path / "s.npy", x)
    res = invoke(["predict", tmp_path / "s.npy", "--model", model, "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["n_trials"] == 4
    assert [p["trial"] for p in doc["predictions"]] == [1, 2, 3, 5]
    assert doc["errors"] == [
        {
            "file": str(tmp_path / "s.npy"),
            "trial": 4,
            "outcome": "skipped",
            "problem": "1 NaN value(s), first at region 0, second 0 (0-based); trial skipped "
            "(--nan interpolate fills short gaps over time)",
        }
    ]
    assert "skipped:" in res.stderr and "trial 4" in res.stderr


# ---- interrupts and atomic writes ---------------------------------------------------------------------


def _interrupt_on_call(monkeypatch, n: int):
    from fmri_edge.model.runtime import Model

    calls = {"n": 0}
    run = Model.run

    def interrupted(self, x, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return run(self, x, *args, **kwargs)

    monkeypatch.setattr(Model, "run", interrupted)
    return calls


@pytest.mark.parametrize("existing", [True, False])
def test_ctrl_c_mid_stream_leaves_the_old_file_or_none(model, tmp_path, monkeypatch, existing):
    np.save(tmp_path / "a.npy", corpus.trials(6))
    out = tmp_path / "p.csv"
    if existing:
        out.write_text("old,complete,file\n")
    calls = _interrupt_on_call(monkeypatch, 2)
    res = invoke(
        [
            "predict",
            tmp_path / "a.npy",
            "--model",
            model,
            "--out",
            out,
            "--force",
            "--batch-size",
            "2",
        ]
    )
    assert calls["n"] == 2 and res.exit_code == 130
    assert "interrupted" in res.stderr and "Traceback" not in res.output
    assert (out.read_text() == "old,complete,file\n") if existing else not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"] + (["p.csv"] if existing else [])


def test_an_uninterrupted_run_replaces_the_file_completely(model, tmp_path):
    np.save(tmp_path / "a.npy", corpus.trials(6))
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    res = invoke(
        [
            "predict",
            tmp_path / "a.npy",
            "--model",
            model,
            "--out",
            out,
            "--force",
            "--batch-size",
            "2",
        ]
    )
    assert res.exit_code == 0
    assert len(submission.read_answers(out).trial) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "p.csv"]


def test_atomic_write_keeps_the_old_file_on_any_exception(tmp_path):
    out = tmp_path / "x.csv"
    out.write_text("old")
    for exc in (KeyboardInterrupt, RuntimeError, SystemExit):
        with pytest.raises(exc):
            with submission.atomic_write(out, force=True) as f:
                f.write("half")
                raise exc
        assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.csv"]
