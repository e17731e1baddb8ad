"""Round 3 research hooks: seed ensembles per subject group, the checkpoint kept on validation
loss, and the nested choice among candidates (train/research/nested.py). Simulated data only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _recipe(**eval_kw):
    from fmri_edge.training.recipe import Recipe

    r = Recipe(name="sel", data="/nonexistent", seed=0)
    r.model.kind, r.model.se, r.model.normalization = "linear", False, "psc_mean"
    r.model.time_window, r.model.time_bins, r.model.subject_align = [5, 25], 5, "zscore"
    r.optim.epochs, r.optim.lr = 8, 0.01
    for k, v in eval_kw.items():
        setattr(r.eval, k, v)
    return r


def _dataset(sim_data, n_subjects=3):
    from fmri_edge.training.protocols import Dataset

    x, y, subj = sim_data
    keep = subj < n_subjects
    names = np.array([f"P{s + 17:02d}" for s in subj[keep]])  # singleton groups P17, P18, …
    return Dataset(x[keep], y[keep], names, np.ones(keep.sum(), dtype=int))


def test_seed_ensemble_adds_members_per_group_and_keeps_the_first_ones(sim_data):
    pytest.importorskip("torch")
    import torch
    from fmri_edge.training.protocols import fit_networks

    ds = _dataset(sim_data)
    r = _recipe()
    r.ensemble = True
    one = fit_networks(r, ds, "x", seed=0)
    r.ensemble_seeds = 2
    two = fit_networks(r, ds, "x", seed=0)
    assert len(one) == 3 and len(two) == 6
    for a, b in zip(one, two[:3]):  # seed 0 of each group is the one-per-group ensemble
        assert all(
            torch.equal(a.model.state_dict()[k], b.model.state_dict()[k])
            for k in a.model.state_dict()
        )
    w = [f.model.final_layer.weight for f in two]
    assert not torch.equal(w[0], w[3])  # same group, other seed: another network


def test_checkpoint_on_loss_keeps_the_lowest_validation_loss(sim_data):
    pytest.importorskip("torch")
    from fmri_edge.training.fit import fit

    x, y, subj = sim_data
    tr, va = subj < 4, subj == 4
    res = fit(
        _recipe(checkpoint_on="loss"),
        x[tr],
        y[tr],
        x[va],
        y[va],
        participants=subj[tr],
        val_participants=subj[va],
    )
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    # the reported inner number is still the selection metric (CLASS error) at the kept epoch
    assert res.val_metric == res.history[res.best_epoch - 1]["val_metric"]
    with pytest.raises(ValueError, match="checkpoint_on"):
        fit(_recipe(checkpoint_on="accuracy"), x[tr], y[tr], x[va], y[va])


def _nested():
    import sys

    research = str(ROOT / "train" / "research")
    if research not in sys.path:  # nested.py imports its sibling harness.py, as a script does
        sys.path.insert(0, research)
    spec = importlib.util.spec_from_file_location(
        "nested", ROOT / "train" / "research" / "nested.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(inners, correct):
    """A fake cv.py run: two folds of 3 trials, ``correct[k]`` of fold k answered right."""
    folds = []
    for k, (inner, ok) in enumerate(zip(inners, correct)):
        labels = [[-1, -3], [0, 0], [1, 2]]
        probs = [np.eye(3)[i if i < ok else (i + 1) % 3].tolist() for i in range(3)]
        folds.append(
            dict(
                name=f"fold{k}",
                inner=inner,
                inner_last10=inner,
                participants=[f"P{k}"] * 3,
                trial=[1, 2, 3],
                labels=labels,
                probs={"class": probs},
            )
        )
    return {"recipe": {"eval": {"level_rule": "argmax"}}, "folds": folds}


def test_nested_choice_uses_each_folds_own_inner_number_only():
    nested = _nested()
    runs = {"a": _run([0.30, 0.20], [1, 3]), "b": _run([0.25, 0.20], [3, 0])}
    chosen, picks = nested.nested_choice(runs)
    # fold 0: b has the lower inner; fold 1: a tie goes to the first run listed — even though b's
    # held-out answers in fold 0 and a's in fold 1 happen to be the right ones, nothing else counts
    assert picks == ["b", "a"]
    s = nested.pooled_scores(chosen, "argmax")
    assert s["acc"] == pytest.approx(1.0) and s["fold_acc"] == [1.0, 1.0]
    runs["c"] = _run([0.1, 0.1], [0, 0])
    runs["c"]["folds"][1]["trial"] = [1, 2, 4]
    with pytest.raises(ValueError, match="same outer folds"):
        nested.nested_choice(runs)


def test_lowrank_model_has_its_rank_limited_weights_and_exports(tmp_path, sim_data):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import torch
    from fmri_edge.model.runtime import Model
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit, predict_proba

    x, y, subj = sim_data
    r = _recipe()
    r.model.kind, r.model.rank = "lowrank", 2
    tr, va = subj < 4, subj == 4
    res = fit(r, x[tr], y[tr], x[va], y[va], participants=subj[tr], val_participants=subj[va])
    m = res.model
    assert m.temporal.weight.shape == (2, 5) and m.final_layer.weight.shape == (3, 246 * 2)
    # the whole model is linear in the aligned representation, with a class weight map of rank ≤ 2
    w = torch.einsum("kcr,rt->kct", m.final_layer.weight.reshape(3, 246, 2), m.temporal.weight)
    z = torch.randn(4, 246, 5)
    with torch.inference_mode():
        np.testing.assert_allclose(
            m.forward_normalized(z).numpy(),
            (torch.einsum("bct,kct->bk", z, w) + m.final_layer.bias).numpy(),
            atol=1e-4,
        )
    assert all(int(torch.linalg.matrix_rank(w[k])) <= 2 for k in range(3))
    out = tmp_path / "lowrank.onnx"
    export_onnx(
        [m],
        out,
        {
            "model_version": "lowrank",
            "level_rule": "argmax",
            "region_names": [f"R{i}" for i in range(246)],
        },
        x[:64],
    )
    held = subj == 5
    want = predict_proba(m, x[held])[
        "class"
    ]  # population statistics: what the graph's defaults give
    np.testing.assert_allclose(Model(out).run(x[held])["class_probs"], want, atol=1e-4)


def test_common_checkpoint_puts_every_member_at_the_epoch_best_on_average(sim_data):
    pytest.importorskip("torch")
    import torch
    from fmri_edge.training.fit import fit
    from fmri_edge.training.protocols import fit_networks

    ds = _dataset(sim_data)
    r = _recipe(checkpoint_on="ensemble")
    r.ensemble = True
    fits = fit_networks(r, ds, "x", seed=0)
    curves = np.array([[h["val_metric"] for h in f.history] for f in fits])
    losses = np.array([[h["val_loss"] for h in f.history] for f in fits])
    mean, mloss = curves.mean(0), losses.mean(0)
    e = min(range(len(mean)), key=lambda i: (mean[i], mloss[i]))
    assert {f.best_epoch for f in fits} == {e + 1}
    assert np.mean([f.val_metric for f in fits]) == pytest.approx(mean[e])
    assert all(f.states is None for f in fits)  # the per-epoch weights are let go
    # each member holds exactly the weights it had at that epoch: refit member 0 for e + 1 epochs
    g = sorted(set(ds.participants))
    tr, va = ds.participants != g[0], ds.participants == g[0]
    again = fit(
        r,
        ds.trials[tr],
        ds.labels[tr],
        ds.trials[va],
        ds.labels[va],
        seed=0,
        keep_states=True,
        participants=ds.participants[tr],
        val_participants=ds.participants[va],
    )
    ref = again.states[e]
    assert all(torch.equal(fits[0].model.state_dict()[k], ref[k]) for k in ref)
