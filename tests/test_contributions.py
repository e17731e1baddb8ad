"""Region contributions of linear models: each region's exact share of the answered class's logit.

The identity: Σ_r contribution_r + constant[answer] = log p(answer) − mean over classes of log p
(the centred logit; for an ensemble, the members' mean centred logit), on real trials for the
shipped model, and for ensembles, rank-limited and region-subset (EBR) linear members in PyTorch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fmri_edge.explanation import regions as explain
from fmri_edge.decoding import answers as predict
from fmri_edge.cli import app
from fmri_edge.model.runtime import CONTRIBUTION_OUTPUT, Model, default_model_path

runner = CliRunner()


def identity_gap(decoder: Model, batches) -> tuple[float, int]:
    """Largest |Σ contributions + constant − centred logit of the answer| over the batches."""
    const = np.array(decoder.info.meta["explanation"]["constant"], dtype=np.float64)
    worst, n = 0.0, 0
    for b in batches:
        log_p = np.log(b.class_probs.astype(np.float64))
        answer = np.argmax(b.class_probs, axis=1)
        centred = log_p[np.arange(len(b)), answer] - log_p.mean(axis=1)
        total = b.region_contributions.astype(np.float64).sum(axis=1) + const[answer]
        worst, n = max(worst, float(np.abs(total - centred).max())), n + len(b)
    return worst, n


def test_contributions_sum_to_the_answered_logit_on_real_trials(icbhi):
    d = Model(default_model_path())
    assert (
        d.explanation == "contribution"
        and d.info.meta["explanation"]["output"] == CONTRIBUTION_OUTPUT
    )
    for align in (
        True,
        False,
    ):  # each participant aligned over its own trials, and the graph's defaults
        batches = [
            b
            for b in predict.predict(d, [icbhi / "Train", icbhi / "Test"], align=align)
            if isinstance(b, predict.Batch)
        ]
        worst, n = identity_gap(d, batches)
        assert n == 600 and worst <= 1e-5, (align, worst)
        c = np.concatenate([b.region_contributions for b in batches])
        assert c.shape == (600, 246) and np.ptp(c) > 0


def _linear(kind="linear", seed=0, **kw):
    import torch

    from fmri_edge.training.model import ModelConfig, build_model

    torch.manual_seed(seed)
    cfg = dict(
        kind=kind,
        se=False,
        normalization="psc_mean",
        time_window=[5, 25],
        time_bins=5,
        subject_align="zscore",
        heads={"class": 3},
    )
    m = build_model(ModelConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():
        m.final_layer.weight.normal_(0, 0.3)
        m.final_layer.bias.normal_(0, 0.5)
        m.pop_scale.uniform_(0.5, 2.0)
    return m


def test_ensembles_rank_limited_and_ebr_members_split_their_mean_centred_logit(sim_data):
    torch = pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import Ensemble, contributing, explanation_metadata

    x = torch.as_tensor(sim_data[0][:40], dtype=torch.float32)
    ebr = [14, 15, 86, 87]
    cases = {
        "linear + lowrank, class and LEVEL heads": [
            _linear(heads={"class": 3, "level": 9}),
            _linear("lowrank", 1, heads={"level": 9, "class": 3}),
        ],
        "EBR": [_linear(region_idx=ebr)],
    }
    for name, members in cases.items():
        ens = Ensemble(members).eval()
        assert ens.contributing and contributing(members)
        stats = [
            s * 1.1 + 0.05 for s in ens.population_stats()
        ]  # a participant's statistics, fed to all
        with torch.inference_mode():
            cls, *_, contributions = ens(x, *stats)
            centred = []
            for m in members:
                logits = m.split_heads(m(x, *stats))["class"]
                centred.append(logits - logits.mean(dim=1, keepdim=True))
        answer = cls.argmax(dim=1)
        want = torch.stack(centred).mean(0)[torch.arange(len(x)), answer].double()
        const = torch.tensor(explanation_metadata(members)["constant"], dtype=torch.float64)
        got = contributions.double().sum(dim=1) + const[answer]
        assert contributions.shape == (40, 246), name
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, err_msg=name)
        if name == "EBR":  # regions the members do not read contribute exactly 0
            outside = np.setdiff1d(np.arange(246), ebr)
            assert np.all(contributions.numpy()[:, outside] == 0) and np.all(
                contributions.numpy()[:, ebr] != 0
            )


def test_an_unfused_linear_ensemble_exports_its_contributions(sim_data, tmp_path):
    pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import export_onnx

    members = [
        _linear(heads={"class": 3, "level": 9}),
        _linear("lowrank", 1, heads={"class": 3, "level": 9}),
    ]
    report = export_onnx(members, tmp_path / "lr.onnx", {"model_version": "t"}, sim_data[0][:32])
    d = Model(tmp_path / "lr.onnx")
    assert (
        report["ok"]
        and CONTRIBUTION_OUTPUT in report["max_abs_diff"]
        and d.explanation == "contribution"
    )
    out = d.run(np.ascontiguousarray(sim_data[0][:5], dtype=np.float32))
    assert out[CONTRIBUTION_OUTPUT].shape == (5, 246)


def test_predict_explain_names_regions_and_says_what_the_numbers_are(
    aligned_model, sim_data, tmp_path
):
    x, _, subj = sim_data
    np.save(tmp_path / "S5.npy", x[subj == 5])
    out = tmp_path / "sub.csv"
    r = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "S5.npy"),
            "--model",
            str(aligned_model),
            "--explain",
            "--top-k",
            "3",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "top 3 regions (contribution)" in r.stdout and "answered class's logit" in r.stderr
    assert "constant per class" in r.stderr
    side = (tmp_path / "sub.regions.csv").read_text().splitlines()
    assert (
        side[0] == "Participant,Trial,Rank,Region,Hemisphere,Contribution,Index"
        and len(side) == 1 + 30 * 3
    )

    r = runner.invoke(
        app,
        ["predict", str(tmp_path / "S5.npy"), "--model", str(aligned_model), "--explain", "--json"],
    )
    doc = json.loads(r.stdout)
    assert doc["explanation"]["kind"] == "contribution" and set(doc["explanation"]["constant"]) == {
        "-1",
        "0",
        "1",
    }
    regions = doc["predictions"][0]["regions"]
    assert set(regions[0]) == {"region", "hemisphere", "contribution", "index"} and regions[0][
        "region"
    ] == "R" + str(regions[0]["index"])
    assert [g["contribution"] for g in regions] == sorted(
        (g["contribution"] for g in regions), reverse=True
    )


def test_explain_ranks_regions_by_contribution_and_checks_faithfulness(
    aligned_model, sim_data, tmp_path
):
    x, _, subj = sim_data
    np.save(tmp_path / "S5.npy", x[subj == 5])
    r = runner.invoke(
        app,
        [
            "explain",
            str(aligned_model),
            str(tmp_path / "S5.npy"),
            "--json",
            "--faithfulness",
            "--k",
            "5",
            "--draws",
            "2",
        ],
    )  # explain MODEL DATA
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["kind"] == "contribution" and doc["explanation"]["kind"] == "contribution"
    assert (
        doc["faithfulness"]["ranked_by"] == "contribution"
        and doc["faithfulness"]["aligned_per_participant"]
    )
    means = [g["mean"] for g in doc["summary"]["regions"]]
    assert len(means) == 246 and means == sorted(means, reverse=True)


def test_bad_explain_requests_are_one_line_and_write_nothing(aligned_model, sim_data, tmp_path):
    np.save(tmp_path / "S5.npy", sim_data[0][:12])
    base = ["explain", str(tmp_path / "S5.npy"), "--model", str(aligned_model)]
    cases = {
        "--class 2: not one of the model's classes": [
            "--class",
            "2",
            "--atlas",
            "a.nii.gz",
            "--brain-map",
            str(tmp_path / "m.png"),
        ],
        "give --atlas": ["--brain-map", str(tmp_path / "m.png")],
        "--atlas is for --brain-map": ["--atlas", str(tmp_path / "a.nii.gz")],
        "atlas not found": [
            "--atlas",
            str(tmp_path / "a.nii.gz"),
            "--map-nifti",
            str(tmp_path / "m.nii"),
        ],
    }
    for message, extra in cases.items():
        r = runner.invoke(app, [*base, *extra])
        assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, (
            message,
            r.output,
        )
        assert len(r.stderr.strip().splitlines()) == 1 and sorted(
            p.name for p in tmp_path.iterdir()
        ) == ["S5.npy"]


def test_a_model_with_neither_kind_is_refused_with_the_reason(tmp_path):
    """e.g. a vanilla CNN (no input SE block, not linear), or an adapted linear model, whose
    contributions are its base model's."""
    from types import SimpleNamespace

    def model(meta):
        return SimpleNamespace(
            explanation=None, path=tmp_path / "m.onnx", info=SimpleNamespace(meta=meta)
        )

    with pytest.raises(
        explain.UsageError, match="neither region contributions nor region attention"
    ):
        explain.require_kind(model({"region_attention": False}))
    with pytest.raises(explain.UsageError, match="adapted to one participant.*base model"):
        explain.require_kind(model({"adaptation": {"base_model": "fmri-edge.onnx"}}))
