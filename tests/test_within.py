"""train --protocol within (issue 31): leave-one-run-out inside each participant, a model per
participant and fold. A signal that each participant carries in its own pattern is found within
participants and not across them; a null study stays at chance under both."""

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from fmri_edge.cli import app  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402
from tests.trial_studies import write_trial_study  # noqa: E402

runner = CliRunner()


def train(*args):
    return runner.invoke(app, ["train", *map(str, args), "--threads", "1", "--json"])


def evaluation(res, key="evaluation"):
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["out"]
    return json.loads(open(f"{out}/results.json").read())[key]


def test_an_individual_signal_is_found_within_and_not_across_participants(tmp_path):
    data = write_trial_study(tmp_path / "ind", 6, 2, 12, signal="individual", effect=0.03)
    res = train(
        "--data",
        data,
        "--protocol",
        "subject",
        "--protocol",
        "within",
        "--out",
        tmp_path / "run",
        "--no-final",
    )
    across, within = evaluation(res), evaluation(res, "evaluation_within")
    assert within["protocol"] == "within" and within["n_folds"] == 12  # 6 participants × 2 runs
    assert within["estimate"] > within["chance"]["binomial_threshold"] + 0.2  # well above chance
    assert within["interval_95"][0] > within["chance"]["binomial_threshold"]
    assert across["estimate"] <= across["chance"]["binomial_threshold"]  # not shared: chance across
    assert "new run of the same participant" in within["estimates"]
    assert (tmp_path / "run" / "cv_participants_within.csv").is_file()


def test_a_null_study_stays_at_chance_within_and_across(tmp_path):
    data = write_trial_study(tmp_path / "null", 6, 2, 12, signal="null")
    res = train(
        "--data",
        data,
        "--protocol",
        "subject",
        "--protocol",
        "within",
        "--out",
        tmp_path / "run",
        "--no-final",
    )
    for ev in (evaluation(res), evaluation(res, "evaluation_within")):
        assert ev["estimate"] <= ev["chance"]["binomial_threshold"], ev["estimate"]


def test_within_permutations_shuffle_within_participant_and_run_and_export_is_refused(tmp_path):
    data = write_trial_study(tmp_path / "ind", 4, 2, 9, signal="individual", effect=0.04)
    res = train(
        "--data", data, "--protocol", "within", "--permutations", 3, "--out", tmp_path / "run"
    )
    ev = evaluation(res)
    assert ev["permutation"]["n"] == 3 and ev["permutation"]["p"] == 0.25  # (0 + 1) / (3 + 1)
    assert not (tmp_path / "run" / "model.pt").exists()  # no model for new participants
    assert len(list((tmp_path / "run").glob("fold*.pt"))) == 8  # one per participant and fold
    exp = runner.invoke(
        app, ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "w.onnx")]
    )
    one_line_error(exp, "one model per participant and fold", "--protocol subject")
    assert not (tmp_path / "w.onnx").exists()


def test_a_participant_with_one_run_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    data = write_trial_study(tmp_path / "s", 4, 2, 9, signal="individual", one_run="sub-03")
    res = runner.invoke(
        app, ["train", "--data", str(data), "--protocol", "within", "--out", str(tmp_path / "run")]
    )
    one_line_error(res, "sub-03", "one run", "--protocol subject")
    assert not (tmp_path / "run").exists()
