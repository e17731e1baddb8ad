"""Training on simulated subjects: the recipe → train → export → predict → score chain via the CLI."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
from fmri_edge.cli import app  # noqa: E402
from tests.conftest import write_icbhi  # noqa: E402

RECIPE = """
name = "sim"
data = "{data}"
atlas = "/nonexistent/BN_atlas.txt"
full_epochs = 4
[model]
widths = [8, 8, 8]
dense = [16, 8]
heads = {{class = 3, level = 9}}
normalization = "baseline_z"
[optim]
epochs = 3
batch_size = 32
[eval]
protocols = ["subject", "random"]
seeds = [0]
"""


def test_train_export_predict_score_via_cli(tmp_path, sim_data):
    x, y, subj = sim_data
    for s, name in enumerate(["P01", "P10", "P02", "P11", "P08", "P09"]):
        write_icbhi(tmp_path / "Train", x[subj == s], y[subj == s], name)
    recipe = tmp_path / "sim.toml"
    recipe.write_text(RECIPE.format(data=tmp_path / "Train"))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "-c", str(recipe), "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert set(summary["summaries"]) == {"subject", "random"} and summary["final"]["epochs"] == 4
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    cv = results["protocols"]["subject"]
    assert len(cv["folds"]) == 4                      # groups P01+P10, P02+P11, P08, P09
    assert len(cv["predictions"]) == 180              # every trial held out exactly once
    res = runner.invoke(app, ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "m.md").read_text()
    assert "sha256" in card and "cross-subject" in card and "optimistic" in card
    res = runner.invoke(app, ["predict", str(tmp_path / "Train"), "--model", str(tmp_path / "m.onnx"),
                              "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", str(tmp_path / "p.csv"), str(tmp_path / "Train"), "--json"])
    assert json.loads(res.stdout)["n_trials"] == 180


def test_sim_model_finds_planted_signal_on_held_out_subject(sim_model, sim_data):
    from fmri_edge.runtime import Decoder

    x, y, subj = sim_data
    out = Decoder(sim_model).run(x[subj == 5])
    acc = np.mean(np.array([-1, 0, 1])[out["class_probs"].argmax(1)] == y[subj == 5, 0])
    assert acc >= 0.6
