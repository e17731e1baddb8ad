"""Training on simulated subjects: the recipe → train → export → predict → score chain via the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
from fmri_edge.cli import app  # noqa: E402
from tests.conftest import level_recipe, write_icbhi  # noqa: E402

RECIPE = """
name = "sim"
data = "{data}"
atlas = "/nonexistent/BN_atlas.txt"
full_epochs = 4
groups = "participants:order_group"
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
    (
        tmp_path / "Train" / "participants.tsv"
    ).write_text(  # the order-mate pairs, as ICBHI's Train has them
        "participant_id\torder_group\nP01\t1\nP10\t1\nP02\t2\nP11\t2\nP08\t8\nP09\t9\n"
    )
    recipe = tmp_path / "sim.toml"
    recipe.write_text(RECIPE.format(data=tmp_path / "Train"))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "-c", str(recipe), "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert set(summary["summaries"]) == {"subject", "random"} and summary["final"]["epochs"] == 4
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    cv = results["protocols"]["subject"]
    assert len(cv["folds"]) == 4  # groups P01+P10, P02+P11, P08, P09
    assert len(cv["predictions"]) == 180  # every trial held out exactly once
    res = runner.invoke(
        app, ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")]
    )
    assert res.exit_code == 0, res.output
    card = (tmp_path / "m.md").read_text()
    assert "sha256" in card and "cross-subject" in card and "optimistic" in card
    res = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "Train"),
            "--model",
            str(tmp_path / "m.onnx"),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", str(tmp_path / "p.csv"), str(tmp_path / "Train"), "--json"])
    assert json.loads(res.stdout)["n_trials"] == 180


def test_sim_model_finds_planted_signal_on_held_out_subject(sim_model, sim_data):
    from fmri_edge.model.runtime import Model

    x, y, subj = sim_data
    out = Model(sim_model).run(x[subj == 5])
    acc = np.mean(np.array([-1, 0, 1])[out["class_probs"].argmax(1)] == y[subj == 5, 0])
    assert acc >= 0.6


def _lbfgs_recipe(C=0.01):
    return level_recipe("lbfgs", C)


def test_lbfgs_solver_reaches_the_logistic_regression_optimum_deterministically(sim_data):
    """optim.solver = "lbfgs" is scikit-learn's LogisticRegression(C): at its result the gradient of
    C·Σ log-loss + ½‖W‖² vanishes (checked here in numpy, independently of torch's loss), the seed
    changes nothing, and where scikit-learn is installed (the [nifti] extra brings it) it gives the
    same probabilities."""
    from fmri_edge.training.fit import fit, represent

    x, y, subj = sim_data
    r = _lbfgs_recipe()
    a = fit(r, x, y, participants=subj)
    b = fit(r, x, y, participants=subj, seed=123)
    w, bias = (
        a.model.final_layer.weight.detach().double().numpy(),
        a.model.final_layer.bias.detach().double().numpy(),
    )
    np.testing.assert_array_equal(w, b.model.final_layer.weight.detach().numpy())
    z = represent(a.model, x, subj).reshape(len(x), -1).double().numpy()
    logits = z @ w.T + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(3)[y[:, 0] + 1]
    grad_w, grad_b = r.optim.C * (p - onehot).T @ z + w, r.optim.C * (p - onehot).sum(0)
    assert np.abs(grad_w).max() < 1e-3 * np.abs(w).max() and np.abs(grad_b).max() < 1e-4
    assert a.history[0]["iterations"] < r.optim.max_iter and "warning" not in a.history[0]
    assert np.abs(w).max() > 1e-3  # it did move from zero
    sklearn = pytest.importorskip("sklearn.linear_model")
    ref = sklearn.LogisticRegression(C=r.optim.C, max_iter=5000, tol=1e-8).fit(z, y[:, 0])
    np.testing.assert_allclose(p, ref.predict_proba(z), atol=1e-4)


def test_lbfgs_subject_cv_fits_each_fold_on_all_its_training_subjects(sim_data):
    """Nothing to choose, so no inner validation group is taken out of training."""
    from fmri_edge.training.protocols import Dataset, run_subject_cv

    x, y, subj = sim_data
    names = np.array([f"P{s + 1:02d}" for s in subj])
    ds = Dataset(x, y, names, np.concatenate([np.arange(1, 31)] * 6))
    r = _lbfgs_recipe()
    r.model.trial_level = False
    folds = run_subject_cv(r, ds)
    from fmri_edge.training.fit import fit

    for f in folds:
        held_out = set(f.test.participants.tolist())
        assert f.fit.val_metric is None and f.fit.best_epoch == 1
        assert len(held_out) in (1, 2) and f.metrics["CLASS"]["accuracy"] > 0.5
    train = ~np.isin(names, list(folds[0].test.participants))
    alone = fit(
        r, x[train], y[train], participants=names[train]
    )  # every training subject, nothing held back
    np.testing.assert_allclose(
        folds[0].fit.model.final_layer.weight.detach().numpy(),
        alone.model.final_layer.weight.detach().numpy(),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="lbfgs"):
        r.model.kind = "cnn"
        fit(r, x, y, participants=subj)
