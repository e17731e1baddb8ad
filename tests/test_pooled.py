"""train --data A --data B (issue 31): pooled studies, participants scoped by study, leave-one-study-out."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from fmri_edge.cli import app  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402
from tests.trial_studies import write_trial_study  # noqa: E402

runner = CliRunner()


def test_two_studies_sharing_participant_names_pool_and_generalise_across_studies(tmp_path):
    a = write_trial_study(tmp_path / "labA", 5, 2, 9, signal="shared", seed=1)
    b = write_trial_study(
        tmp_path / "labB", 5, 2, 9, signal="shared", seed=2, rated=True
    )  # both: sub-01 … sub-05
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(a),
            "--data",
            str(b),
            "--group-by",
            "study",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        len(r["participants"]) == 10
        and "labA/sub-01" in r["participants"]
        and "labB/sub-01" in r["participants"]
    )
    ev = r["evaluation"]
    assert ev["n_folds"] == 2 and ev["groups"].startswith("leave-one-study-out")
    assert ev["estimate"] > ev["chance"]["binomial_threshold"] + 0.15
    assert [s["study"] for s in ev["studies"]] == ["labA", "labB"]
    assert all(s["trials"] == 90 for s in ev["studies"])
    assert ev["level"]["rated_trials"] == 90  # LEVEL only where the study rated it
    assert [s["name"] for s in r["studies"]] == ["labA", "labB"]
    exp = runner.invoke(
        app, ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]
    )
    assert exp.exit_code == 0, exp.output
    card = next(tmp_path.glob("m*.md"), None) or next((tmp_path / "run").glob("*.md"), None)
    info = runner.invoke(app, ["info", str(tmp_path / "m.onnx"), "--json"])
    assert (
        [s["name"] for s in json.loads(info.stdout)["metadata"]["study"]["studies"]]
        == ["labA", "labB"]
        if "metadata" in json.loads(info.stdout)
        else True
    )
    assert card is None or "labB" in card.read_text()


def test_studies_with_no_class_in_common_are_refused_in_one_line(tmp_path):
    a = write_trial_study(tmp_path / "a", 3, 2, 6, classes=(-1, 1))
    b = write_trial_study(
        tmp_path / "b", 3, 2, 6, classes=(0,), seed=3
    )  # a study of neutral trials only
    res = runner.invoke(
        app, ["train", "--data", str(a), "--data", str(b), "--out", str(tmp_path / "run")]
    )
    one_line_error(res, "no CLASS in common", "a: -1, +1", "b: 0")
    assert not (tmp_path / "run").exists()
    c = write_trial_study(tmp_path / "c", 3, 2, 6, classes=(0, 1), seed=4)
    res = runner.invoke(
        app, ["train", "--data", str(a), "--data", str(c), "--out", str(tmp_path / "run")]
    )
    one_line_error(res, "share CLASS +1 only")
    assert not (tmp_path / "run").exists()


def test_group_by_study_needs_two_studies(tmp_path):
    a = write_trial_study(tmp_path / "a", 3, 2, 6)
    res = runner.invoke(
        app, ["train", "--data", str(a), "--group-by", "study", "--out", str(tmp_path / "run")]
    )
    one_line_error(res, "--group-by study", "two or more --data")
    assert not (tmp_path / "run").exists()
