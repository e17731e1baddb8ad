"""Region attention as an output: per-trial top regions, data-set summary, figure, faithfulness.

The planted-signal tests train their own small model (``attentive_model``): the shared
``sim_model`` fixture follows the paper's recipe (weak L2, early stopping) under which the input
SE gate barely moves from its random initialization in 25 epochs — see docs/explain.md. With a
strong L2 on the conv/dense weights (the SE gate's bias is not penalized, so gain moves into it)
and a fixed number of epochs, the gate learns, and explain must then surface the planted regions.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ICBHI, SIGNAL_REGIONS
from fmri_edge.explanation import regions as explain
from fmri_edge.explanation import faithfulness
from fmri_edge.cli import app
from fmri_edge.model.runtime import Model

NAMES = [
    f"R{i // 2}_{'LR'[i % 2]}" for i in range(246)
]  # hemisphere suffixes alternate like the atlas


@pytest.fixture(scope="module")
def attentive_model(tmp_path_factory, sim_data, tiny_recipe):
    """A small SE model trained on simulated subjects 0-4 (subject 5 held out) so that its input
    attention is learned: L2 0.3 on conv/dense weights, lr 2e-2, 60 epochs, last weights kept."""
    pytest.importorskip("torch")
    import dataclasses

    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit

    import torch

    recipe = dataclasses.replace(
        tiny_recipe, optim=dataclasses.replace(tiny_recipe.optim, l2=0.3, lr=2e-2, epochs=60)
    )
    x, y, subj = sim_data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread is fastest, above all on a busy machine
    try:
        res = fit(recipe, x[subj < 5], y[subj < 5])
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("attentive") / "attentive.onnx"
    meta = {
        "model_version": "attentive-sim",
        "level_rule": "argmax",
        "region_names": NAMES,
        "normalization": {"per_trial": "baseline_z", "baseline_s": 5},
        "training": {"participants": ["S1", "S2", "S3", "S4", "S5"]},
    }
    export_onnx([res.model], out, meta, x[:64])
    return out


@pytest.fixture(scope="module")
def held_out(sim_data, tmp_path_factory):
    """Simulated subject 5 (never trained on) as an ICBHI-style folder S6/."""
    x, y, subj = sim_data
    root = tmp_path_factory.mktemp("heldout")
    (root / "S6").mkdir()
    np.savez(root / "S6" / "fMRI_data.npz", data=x[subj == 5].astype(np.float64))
    return root / "S6"


# ---- the output and its names ---------------------------------------------------------------------


def test_hemisphere_comes_from_the_atlas_suffix():
    assert [explain.hemisphere(n) for n in ("A9/46d_L", "aSTS_R", "mAmyg_L", "Vermis", "A_LR")] == [
        "L",
        "R",
        "L",
        "",
        "",
    ]


def test_region_weights_output_has_one_weight_per_named_region(attentive_model, sim_data):
    d = Model(attentive_model)
    out = d.run(np.ascontiguousarray(sim_data[0][:7]))
    w = out["region_weights"]
    assert w.shape == (7, d.info.n_regions) == (7, len(d.info.region_names))
    assert d.info.region_names == tuple(NAMES)
    assert np.all((w > 0) & (w < 1))  # sigmoid excitation


def test_brainnetome_names_and_lobes(icbhi):
    names = [
        line.split("\t")[1]
        for line in (ICBHI / "BN_atlas.txt").read_text().splitlines()[1:]
        if line.strip()
    ]
    assert len(names) == 246 and [names[i] for i in SIGNAL_REGIONS] == [
        "A9/46d_L",
        "A9/46d_R",
        "aSTS_L",
        "aSTS_R",
    ]
    lobes = explain.brainnetome_lobes(names)
    assert [lobe for lobe, _, _ in lobes][-1] == "subcortical" and lobes[-1][2] == 246
    assert all(names[i] in explain.REFERENCE_REGIONS for i in (14, 15, 86, 87, 210, 211, 212, 213))
    assert {explain.hemisphere(n) for n in names} == {"L", "R"}
    assert explain.brainnetome_lobes(NAMES) == []


def test_top_regions_are_sorted_with_names_and_hemispheres():
    w = np.array([[0.1, 0.9, 0.5, 0.9], [0.3, 0.2, 0.1, 0.0]], dtype=np.float32)
    names = ["a_L", "b_R", "c_L", "d_R"]
    assert explain.top_k_indices(w, 3).tolist() == [[1, 3, 2], [0, 1, 2]]  # ties: lower index first
    top = explain.top_regions(w, names, 2)
    assert top[0] == [
        {"rank": 1, "index": 1, "region": "b_R", "hemisphere": "R", "weight": 0.9},
        {"rank": 2, "index": 3, "region": "d_R", "hemisphere": "R", "weight": 0.9},
    ]
    assert explain.top_k_indices(w, 99).shape == (2, 4)


def test_streaming_summary_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    w, cls = rng.random((50, 6)), rng.choice([-1, 0, 1], 50)
    acc = explain.AttentionAccumulator([f"r{i}_L" for i in range(6)], top_k=2)
    acc.add(w[:20], cls[:20])
    acc.add(w[20:], cls[20:])
    s = acc.result()
    np.testing.assert_allclose(s.mean, w.mean(0))
    np.testing.assert_allclose(s.std, w.std(0), atol=1e-9)
    np.testing.assert_allclose(s.class_mean[2], w[cls == 1].mean(0))
    assert s.class_counts.tolist() == [np.sum(cls == c) for c in (-1, 0, 1)]
    assert s.top_k_rate.sum() == pytest.approx(2.0)
    assert s.ranking()[0] == np.argmax(w.mean(0)) and s.ranks()[np.argmax(w.mean(0))] == 1
    assert len(s.rows()) == 6 and json.dumps(s.to_json())


def test_uniform_weights_are_flagged():
    acc = explain.AttentionAccumulator(["a", "b", "c"])
    acc.add(np.ones((4, 3)), np.array([-1, 0, 1, 1]))
    assert acc.result().uniform


# ---- masking ----------------------------------------------------------------------------------------


def test_masking_flattens_exactly_the_chosen_regions_at_their_baseline():
    rng = np.random.default_rng(1)
    x = rng.normal(100, 5, (3, 8, 25)).astype(np.float32)
    m = faithfulness.mask_regions(x, np.array([[0, 5], [1, 2], [7, 7]]), baseline_s=5)
    assert np.all(m[0, 0] == x[0, 0, :5].mean(dtype=np.float32)) or np.allclose(
        m[0, 0], x[0, 0, :5].mean(), atol=1e-4
    )
    assert np.ptp(m[0, 5]) == 0 and np.ptp(m[1, 1]) == 0 and np.ptp(m[2, 7]) == 0
    untouched = np.ones((3, 8), bool)
    untouched[[0, 0, 1, 1, 2], [0, 5, 1, 2, 7]] = False
    np.testing.assert_array_equal(m[untouched], x[untouched])
    assert not np.shares_memory(m, x)
    assert np.allclose(m[0, 5], x[0, 5, :5].mean(), rtol=3e-5)  # its level: the fixation mean


def test_masked_regions_normalize_to_exactly_zero_in_float32():
    """Rounding the flat level makes float32 means exact: with the naive level, a flat region's
    per-region z-score (zscore_region) is ±1 rounding noise instead of 0."""
    rng = np.random.default_rng(2)
    x = rng.uniform(400, 14_000, (4, 246, 1)).astype(np.float32) * rng.normal(
        1, 0.01, (4, 246, 25)
    ).astype(np.float32)
    m = faithfulness.mask_regions(x, np.tile(np.arange(246), (4, 1)), baseline_s=5)
    mu, base = m.mean(2, keepdims=True), m[:, :, :5].mean(2, keepdims=True)
    assert np.all(m - mu == 0) and np.all(m - base == 0) and np.all(m.std(2) == 0)


# ---- planted signal ------------------------------------------------------------------------------------


def test_planted_regions_rank_at_the_top(attentive_model, held_out):
    s, problems = explain.summarize(Model(attentive_model), [held_out])
    assert not problems and s.n_trials == 30
    ranks = s.ranks()[list(SIGNAL_REGIONS)]
    top = s.ranking()[:5].tolist()
    assert top[0] in SIGNAL_REGIONS, (top, ranks)
    assert sum(r in SIGNAL_REGIONS for r in top) >= 3, (top, ranks)
    assert ranks.max() <= 10, ranks  # all four among the top 10 of 246


def test_masking_top_k_by_attention_beats_random_regions(attentive_model, held_out):
    report, _ = faithfulness.faithfulness_paths(
        Model(attentive_model), [held_out], ks=(4, 10), draws=10, seed=0
    )
    assert report.held_out["status"] == "yes" and report.n_trials == 30
    for row in report.rows:
        top, rnd, bottom = row["top"], row["random"], row["bottom"]
        assert top["delta_p"] > rnd["delta_p"] + 2 * rnd["delta_p_std"], row
        assert row["random"]["draws_at_least_top"] == 0, row
        assert top["changed"] >= rnd["changed"] and top["delta_p"] > bottom["delta_p"], row


def test_training_participants_are_not_held_out(attentive_model, sim_data, tmp_path):
    (tmp_path / "S1").mkdir()
    np.savez(tmp_path / "S1" / "fMRI_data.npz", data=sim_data[0][:5].astype(np.float64))
    report, _ = faithfulness.faithfulness_paths(
        Model(attentive_model), [tmp_path / "S1"], ks=(3,), draws=2
    )
    assert report.held_out == {
        "status": "no",
        "detail": "1 participant(s) were in the training data",
        "overlap": ["S1"],
    }


# ---- command line ----------------------------------------------------------------------------------------


def test_predict_explain_adds_regions_to_table_json_and_a_sidecar(
    attentive_model, held_out, tmp_path
):
    runner = CliRunner()
    out = tmp_path / "sub.csv"
    r = runner.invoke(
        app,
        [
            "predict",
            str(held_out),
            "--model",
            str(attentive_model),
            "--explain",
            "--top-k",
            "3",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "top 3 regions" in r.stdout
    assert out.read_text().splitlines()[0] == "Participant,Trial,CLASS,LEVEL"
    side = (tmp_path / "sub.regions.csv").read_text().splitlines()
    assert (
        side[0] == "Participant,Trial,Rank,Region,Hemisphere,Weight,Index"
        and len(side) == 1 + 30 * 3
    )
    p, t, rank, region, hemi, weight, idx = side[1].split(",")
    assert (p, t, rank) == ("S6", "1", "1") and region == NAMES[int(idx)] and hemi == region[-1]

    r = runner.invoke(
        app, ["predict", str(held_out), "--model", str(attentive_model), "--explain", "--json"]
    )
    doc = json.loads(r.stdout)
    regions = doc["predictions"][0]["regions"]
    assert len(regions) == 5 and set(regions[0]) == {"region", "hemisphere", "weight", "index"}
    assert [x["weight"] for x in regions] == sorted((x["weight"] for x in regions), reverse=True)

    # an existing sidecar is refused like an existing --out, and nothing is written
    out.unlink()
    r = runner.invoke(
        app,
        ["predict", str(held_out), "--model", str(attentive_model), "--explain", "--out", str(out)],
    )
    assert r.exit_code == 2 and "exists" in r.output and not out.exists()


def test_predict_without_explain_adds_nothing(attentive_model, held_out, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "predict",
            str(held_out),
            "--model",
            str(attentive_model),
            "--json",
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "regions" not in json.loads(r.stdout)["predictions"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_explain_command_json_and_faithfulness(attentive_model, held_out):
    r = CliRunner().invoke(
        app,
        [
            "explain",
            str(held_out),
            "--model",
            str(attentive_model),
            "--json",
            "--faithfulness",
            "--k",
            "4",
            "--draws",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    regions = doc["summary"]["regions"]
    assert len(regions) == 246 and regions[0]["rank"] == 1 and regions[0]["index"] in SIGNAL_REGIONS
    assert set(regions[0]) >= {
        "region",
        "hemisphere",
        "mean",
        "std",
        "top_k_rate",
        "by_class",
        "rank_by_class",
    }
    assert sum(c["n_trials"] for c in doc["summary"]["classes"]) == 30
    f = doc["faithfulness"]
    assert f["results"][0]["k"] == 4 and f["random_draws"] == 3 and f["held_out"]["status"] == "yes"


def test_explain_command_table_and_plot(attentive_model, held_out, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "attention.png"
    r = CliRunner().invoke(
        app,
        [
            "explain",
            str(held_out),
            "--model",
            str(attentive_model),
            "--rows",
            "8",
            "--plot",
            str(png),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "ranked by mean weight" in r.stdout and NAMES[SIGNAL_REGIONS[0]] in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(
        app, ["explain", str(held_out), "--model", str(attentive_model), "--plot", str(png)]
    )
    assert r.exit_code == 2 and "exists" in r.output


def test_explain_and_plot_modules_import_neither_torch_nor_matplotlib():
    code = (
        "import sys, fmri_edge.explanation.regions, fmri_edge.explanation.plot, fmri_edge.cli\n"
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\nprint('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
