"""fmri-edge adapt: the correction, the edited ONNX graph, the CLI, every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fmri_edge import valence
from fmri_edge.decoding import adapt
from fmri_edge.model import onnx_edit
from fmri_edge.cli import app
from fmri_edge.model.runtime import Model, check_model_card, file_sha256
from tests.test_runtime_without_torch import _run

runner = CliRunner()
NAMES = [f"R{i}" for i in range(246)]


def _linear_recipe():
    from fmri_edge.training.recipe import Recipe

    r = Recipe(name="adapt-test", data="/nonexistent")
    r.model.kind, r.model.se = "linear", False
    r.model.normalization, r.model.time_window, r.model.time_bins = "psc_mean", [5, 25], 5
    r.model.subject_align = "zscore"
    r.optim.epochs, r.optim.lr = 20, 0.01
    return r


@pytest.fixture(scope="session")
def adapt_models(tmp_path_factory, sim_data):
    """A linear model (subject-aligned, class-only) and an ensemble of two, trained on simulated
    subjects 0-3 (4 validates), exported; subject 5 is the participant to adapt to."""
    pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit

    x, y, subj = sim_data
    r = _linear_recipe()
    tr, va = subj < 4, subj == 4
    fits = [
        fit(r, x[tr], y[tr], x[va], y[va], seed=s, participants=subj[tr], val_participants=subj[va])
        for s in (0, 1)
    ]
    folder = tmp_path_factory.mktemp("adapt")
    meta = {
        "model_version": "adapt-test",
        "level_rule": "argmax",
        "region_names": NAMES,
        "heads": {"class": 3},
    }
    export_onnx([fits[0].model], folder / "single.onnx", meta, x[:64])
    export_onnx(
        [f.model for f in fits],
        folder / "ensemble.onnx",
        {**meta, "level_rule": "min_expected_error"},
        x[:64],
    )
    # as models were exported before they carried the adaptation head
    export_onnx([fits[0].model], folder / "headless.onnx", meta, x[:64], adaptation_head=False)
    return folder / "single.onnx", folder / "ensemble.onnx"


@pytest.fixture()
def headless(adapt_models):
    return adapt_models[0].parent / "headless.onnx"


@pytest.fixture()
def participant(tmp_path, sim_data):
    """Subject 5's 30 trials as P17.npy and labels of 9 of them (3 per class) as a CSV."""
    x, y, subj = sim_data
    xs, ys = x[subj == 5], y[subj == 5]
    trials = tmp_path / "P17.npy"
    np.save(trials, xs)
    pick = np.concatenate([np.flatnonzero(ys[:, 0] == c)[:3] for c in (-1, 0, 1)]) + 1
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "Participant,Trial,CLASS,LEVEL\n"
        + "".join(f"P17,{t},{ys[t - 1, 0]},{ys[t - 1, 1]}\n" for t in pick)
    )
    return trials, labels, ys, pick


def _base_outputs(model, trials):
    seen = adapt.base_outputs(Model(model), [trials])
    return seen


# ---- the correction ---------------------------------------------------------------------------------


def test_bias_recovers_a_shifted_prior_and_shrinkage_pulls_it_to_zero():
    rng = np.random.default_rng(0)
    p = np.full((60, 3), 1 / 3)
    y = rng.choice(3, size=60, p=[0.6, 0.2, 0.2])
    w = adapt.class_weights(y)
    assert np.isclose(w.sum(), 60) and np.allclose([w[y == c].sum() for c in range(3)], 20)
    # balanced weights: a class-frequency shift alone is not learned as a prior …
    flat = adapt.fit_correction(p, y, "bias", 1.0)
    assert np.abs(flat.bias).max() < 1e-6
    # … but a model that systematically under-rates class 0 is corrected upward for it
    p2 = np.tile([0.2, 0.4, 0.4], (60, 1))
    y2 = np.repeat([0, 1, 2], 20)
    corr = adapt.fit_correction(p2, y2, "bias", 1.0)
    assert corr.bias[0] > corr.bias[1] + 0.3
    norms = [
        np.linalg.norm(adapt.fit_correction(p2, y2, "bias", lam).bias)
        for lam in (0.1, 1, 10, 100, 1e6)
    ]
    assert all(a > b for a, b in zip(norms, norms[1:])) and norms[-1] < 1e-3


def test_features_method_fits_the_span_of_the_labeled_trials():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(12, 40))
    y = np.arange(12) % 3
    p = np.full((12, 3), 1 / 3)
    corr = adapt.fit_correction(p, y, "features", 0.3, f)
    assert corr.weight.shape == (40, 3)
    got = valence.CLASS_VALUES[np.argmax(corr.apply(p, np.full((12, 9), 1 / 9), f)[0], axis=1)]
    assert np.mean(got == valence.CLASS_VALUES[y]) == 1.0  # 12 points in 40 dims: separable
    with pytest.raises(ValueError, match="unknown adaptation method"):
        adapt.fit_correction(p, y, "magic", 1.0)


# ---- the graph ---------------------------------------------------------------------------------------


def test_wire_format_round_trip_is_byte_exact(adapt_models):
    data = adapt_models[0].read_bytes()
    m = onnx_edit.ModelProto(data)
    assert m.to_bytes() == data
    assert "features" in m.graph_names(onnx_edit.GRAPH_OUTPUT)
    name, value = onnx_edit.read_tensor(
        onnx_edit.tensor("w", np.arange(6, dtype=np.float32).reshape(2, 3))
    )
    assert name == "w" and value.tolist() == [[0, 1, 2], [3, 4, 5]]
    for v in (0, 1, 127, 128, 300, 2**40):
        assert onnx_edit.read_varint(onnx_edit.varint(v), 0)[0] == v
    m.set_metadata("x", "1")
    assert m.metadata()["x"] == "1"
    m.set_metadata("x", None)
    assert "x" not in m.metadata() and "fmri_edge" in m.metadata()
    with pytest.raises(onnx_edit.WireError):
        onnx_edit.ModelProto(data[:-7])


@pytest.mark.parametrize("method", adapt.METHODS)
def test_identity_when_shrinkage_dominates(adapt_models, participant, tmp_path, method):
    trials, labels, _, _ = participant
    for base in adapt_models:
        out = tmp_path / f"{base.stem}-{method}.onnx"
        r = adapt.adapt([trials], labels, base, out, method=method, shrinkage=1e9)
        before, after = _base_outputs(base, trials), _base_outputs(out, trials)
        assert np.array_equal(before.trial, after.trial)
        for k in ("class_probs", "level_probs", "features"):
            np.testing.assert_allclose(getattr(after, k), getattr(before, k), atol=1e-5)
        assert r.changed == 0
        # and a weak pull changes the answers: the test above can fail
        weak = adapt.adapt(
            [trials],
            labels,
            base,
            tmp_path / f"weak-{base.stem}-{method}.onnx",
            method=method,
            shrinkage=0.01,
        )
        moved = _base_outputs(weak.out, trials)
        assert np.abs(moved.class_probs - before.class_probs).max() > 1e-2


def test_adapted_graph_computes_its_numpy_definition_and_level_follows_class(
    adapt_models, participant, tmp_path
):
    trials, labels, ys, pick = participant
    for base in adapt_models:
        b = _base_outputs(base, trials)
        # a class-only model: level_probs = class_probs @ P(LEVEL | CLASS)
        m, *_ = np.linalg.lstsq(b.class_probs, b.level_probs, rcond=None)
        for method in adapt.METHODS:
            r = adapt.adapt(
                [trials],
                labels,
                base,
                tmp_path / f"{base.stem}-{method}.onnx",
                method=method,
                shrinkage=0.5,
            )
            a = _base_outputs(r.out, trials)
            # only the head's defaults (and the alignment's) changed: same nodes, same outputs
            before, after = onnx_edit.ModelProto.load(base), onnx_edit.ModelProto.load(r.out)
            assert [f.raw for f in before.graph if f.number == 1] == [
                f.raw for f in after.graph if f.number == 1
            ]
            assert after.initializer("adapt_bias").ravel().tolist() == pytest.approx(
                r.correction.bias.tolist()
            )
            lmap = adapt.level_map(Model(base).info.meta)
            assert lmap is not None and np.allclose(lmap, m, atol=1e-4)
            want_c, want_l = r.correction.apply(b.class_probs, b.level_probs, b.features, lmap)
            np.testing.assert_allclose(a.class_probs, want_c, atol=1e-6)
            np.testing.assert_allclose(a.level_probs, want_l, atol=1e-6)
            np.testing.assert_allclose(a.level_probs, a.class_probs @ m, atol=1e-5)
            np.testing.assert_allclose(a.class_probs.sum(1), 1, atol=1e-5)
            assert r.max_check_diff < 1e-5 and r.k == len(pick) == 9


def test_adaptation_head_at_its_defaults_changes_no_output_bit(adapt_models, headless, sim_data):
    x = sim_data[0][:40].astype(np.float32)
    with_head, without = Model(adapt_models[0]), Model(headless)
    assert with_head.adaptable and not without.adaptable
    names = list(without.outputs)
    assert names == list(with_head.outputs)
    z = without.represent(x)
    for subject in (None, (z.mean(axis=0), z.std(axis=0) + 0.1)):
        a, b = with_head.run(x, subject, names), without.run(x, subject, names)
        for k in names:
            assert np.array_equal(a[k], b[k]), k  # bit for bit, not within a tolerance
    # the graph inputs are there, with zero defaults
    m = onnx_edit.ModelProto.load(adapt_models[0])
    assert {"adapt_bias", "adapt_scale", "adapt_weight"} <= set(
        m.graph_names(onnx_edit.GRAPH_INPUT)
    )
    assert m.initializer("adapt_weight").shape == (
        with_head.run(x[:1], outputs=["features"])["features"].shape[1],
        3,
    )
    assert not any(m.initializer(n).any() for n in ("adapt_bias", "adapt_scale", "adapt_weight"))


def test_adapt_refuses_a_model_exported_before_the_head_which_predict_still_runs(
    headless, participant, tmp_path
):
    trials, labels, _, _ = participant
    _refused(
        [trials, "--labels", labels, "--model", headless, "--out", tmp_path / "o.onnx"],
        "headless.onnx",
        "no adaptation inputs",
        "export it again",
    )
    res = runner.invoke(
        app, ["predict", str(trials), "--model", str(headless), "--out", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "o.onnx").exists()


def test_participant_statistics_become_the_defaults(adapt_models, participant, tmp_path):
    trials, labels, _, _ = participant
    base = adapt_models[0]
    r = adapt.adapt([trials], labels, base, tmp_path / "a.onnx")
    seen = adapt.base_outputs(Model(base), [trials])
    x = np.load(trials)[:3].astype(np.float32)
    alone = Model(r.out).run(x)["class_probs"]  # 3 trials: predict would use the defaults
    fed = Model(r.out).run(x, subject=seen.subject)["class_probs"]
    np.testing.assert_allclose(alone, fed, atol=1e-5)
    assert not np.allclose(
        Model(base).run(x)["class_probs"], Model(base).run(x, seen.subject)["class_probs"]
    )


# ---- CLI ---------------------------------------------------------------------------------------------


def test_cli_adapt_info_predict_round_trip(adapt_models, participant, tmp_path):
    trials, labels, _, pick = participant
    base = adapt_models[1]
    out = tmp_path / "M-P17.onnx"
    res = runner.invoke(
        app,
        [
            "adapt",
            str(trials),
            "--labels",
            str(labels),
            "--model",
            str(base),
            "--out",
            str(out),
            "--method",
            "scale_bias",
            "--shrinkage",
            "5",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "answers changed" in res.output and "K = 9" in res.output
    assert check_model_card(out) == out.with_suffix(".md")
    # with fmri_edge.model.integrity (weights digests), the adapted graph carries its own, verified
    assert getattr(Model(out), "integrity", "verified") == "verified"
    assert f"`{file_sha256(base)}`" in out.with_suffix(".md").read_text()
    res = runner.invoke(app, ["info", str(out), "--json"])
    a = json.loads(res.output)["adaptation"]
    assert (
        a["participant"] == "P17"
        and a["k"] == 9
        and a["method"] == "scale_bias"
        and a["shrinkage"] == 5.0
    )
    assert a["base_sha256"] == file_sha256(base) and a["labeled_trials"] == [int(t) for t in pick]
    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0 and "adapted to" in res.output and "P17" in res.output
    res = runner.invoke(
        app, ["predict", str(trials), "--model", str(out), "--out", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 31
    assert "adapted to participant" not in res.output
    np.save(tmp_path / "P18.npy", np.load(trials))
    res = runner.invoke(app, ["predict", str(tmp_path / "P18.npy"), "--model", str(out)])
    assert res.exit_code == 0 and "adapted to participant P17" in " ".join(res.output.split())
    # an existing output is kept without --force
    res = runner.invoke(
        app,
        ["adapt", str(trials), "--labels", str(labels), "--model", str(base), "--out", str(out)],
    )
    assert res.exit_code == 2 and "exists" in res.output


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from fmri_edge import cli

    params = inspect.signature(cli.adapt).parameters
    assert params["method"].default == adapt.DEFAULT_METHOD
    assert params["shrinkage"].default is None  # the library picks by the model's alignment


def test_default_shrinkage_follows_alignment(adapt_models, participant, tmp_path):
    trials, labels, _, _ = participant
    r = adapt.adapt([trials], labels, adapt_models[0], tmp_path / "a.onnx")
    assert (
        r.correction.shrinkage == adapt.DEFAULT_SHRINKAGE["aligned"]
        and r.correction.method == "features"
    )


def test_labels_npz_labels_the_first_trials(adapt_models, participant, tmp_path):
    trials, _, ys, _ = participant
    npz = tmp_path / "labels.npz"
    np.savez(npz, data=ys[:12].astype(np.float64))
    res = runner.invoke(
        app,
        [
            "adapt",
            str(trials),
            "--labels",
            str(npz),
            "--model",
            str(adapt_models[0]),
            "--out",
            str(tmp_path / "a.onnx"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["k"] == 12


def _refused(args, *needles):
    res = runner.invoke(app, ["adapt", *map(str, args)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "Traceback" not in text and text.startswith("error:"), text
    for n in needles:
        assert n in text, text
    return text


def _csv(path, rows, header="Participant,Trial,CLASS,LEVEL"):
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_refusals(adapt_models, participant, tmp_path, sim_data):
    trials, labels, ys, _ = participant
    base = adapt_models[0]
    out = tmp_path / "o.onnx"
    common = ["--model", base, "--out", out]
    ok_rows = [f"P17,{t},{c},0" for t, c in ((1, -1), (2, 0), (3, 1))]
    # labels for trials that are not in TRIALS
    bad = _csv(tmp_path / "far.csv", ok_rows + ["P17,31,1,2"])
    _refused([trials, "--labels", bad, *common], "far.csv", "line 5", "trial 31", "not in TRIALS")
    npz = tmp_path / "labels.npz"
    np.savez(npz, data=np.concatenate([ys, ys[:2]]).astype(np.float64))
    _refused([trials, "--labels", npz, *common], "labels.npz", "trial 31", "not in TRIALS")
    other = _csv(tmp_path / "other.csv", [r.replace("P17", "P03") for r in ok_rows])
    _refused([trials, "--labels", other, *common], "other.csv", "'P03'", "'P17'")
    # a single class
    one = _csv(tmp_path / "one.csv", [f"P17,{t},1,2" for t in (1, 2, 3, 4)])
    _refused([trials, "--labels", one, *common], "one.csv", "at least two classes")
    # too few labels
    few = _csv(tmp_path / "few.csv", ok_rows[:2])
    _refused([trials, "--labels", few, *common], "few.csv", "only 2 labeled", "at least 3")
    # malformed CSVs, by line
    _refused(
        [
            trials,
            "--labels",
            _csv(tmp_path / "c1.csv", ["P17,1,-1"], "Participant,Trial,VALENCE"),
            *common,
        ],
        "c1.csv",
        "line 1",
        "no CLASS column",
    )
    _refused(
        [trials, "--labels", _csv(tmp_path / "c2.csv", [ok_rows[0], "P17,2,5,0"]), *common],
        "c2.csv",
        "line 3",
        "CLASS 5 outside",
    )
    _refused(
        [trials, "--labels", _csv(tmp_path / "c3.csv", [*ok_rows, "P17,2,1,0"]), *common],
        "c3.csv",
        "line 5",
        "duplicate row for participant P17, trial 2",
    )
    _refused([trials, "--labels", tmp_path / "l.txt", *common], "l.txt", "labels.npz or a .csv")
    # a model without the features output
    data = onnx_edit.ModelProto.load(base)
    data.graph = [
        f
        for f in data.graph
        if not (
            f.number == onnx_edit.GRAPH_OUTPUT
            and onnx_edit.strings_of(f.payload, 1) == ["features"]
        )
    ]
    data.set_metadata(
        "weights_sha256", None
    )  # the graph changed: its export digest no longer applies
    plain = tmp_path / "plain.onnx"
    data.save(plain)
    _refused(
        [trials, "--labels", labels, "--model", plain, "--out", out],
        "plain.onnx",
        "no `features` output",
    )
    # an adapted model is not adapted again
    adapt.adapt([trials], labels, base, tmp_path / "once.onnx")
    _refused(
        [trials, "--labels", labels, "--model", tmp_path / "once.onnx", "--out", out],
        "once.onnx",
        "already adapted",
    )
    # several participants
    np.save(tmp_path / "P18.npy", np.load(trials))
    _refused(
        [trials, tmp_path / "P18.npy", "--labels", labels, *common],
        "2 participants",
        "--participant",
    )
    assert not out.exists()


def test_adapt_runs_with_torch_unimportable(adapt_models, participant, tmp_path):
    trials, labels, _, _ = participant
    r = _run(f"""
        from typer.testing import CliRunner
        from fmri_edge.cli import app
        res = CliRunner().invoke(app, ["adapt", r"{trials}", "--labels", r"{labels}", "--model",
                                       r"{adapt_models[1]}", "--out", r"{tmp_path / "x.onnx"}", "--method", "features"])
        assert res.exit_code == 0, (res.output, res.exception)
        assert "torch" not in sys.modules and "onnx" not in sys.modules
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr + r.stdout


def test_head_of_a_model_with_a_level_head_is_exact_at_defaults_and_adapts_as_defined(
    participant, tmp_path, sim_data
):
    """The other LEVEL branch (a CNN with CLASS and LEVEL heads, no alignment): at its defaults the
    head changes no output bit; adapted, LEVEL is reweighted per class as Correction.apply says."""
    torch = pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.model import ModelConfig, build_model

    torch.manual_seed(0)
    net = build_model(
        ModelConfig(widths=(8, 8, 8), dense=(16, 8), heads={"class": 3, "level": 9})
    ).eval()
    meta = {"model_version": "heads", "level_rule": "argmax", "region_names": NAMES}
    x = sim_data[0][:16].astype(np.float32)
    export_onnx([net], tmp_path / "head.onnx", meta, x)
    export_onnx([net], tmp_path / "bare.onnx", meta, x, adaptation_head=False)
    with_head, bare = Model(tmp_path / "head.onnx"), Model(tmp_path / "bare.onnx")
    assert not with_head.aligned and adapt.level_map(with_head.info.meta) is None
    a, b = with_head.run(x, outputs=bare.outputs), bare.run(x, outputs=bare.outputs)
    assert all(np.array_equal(a[k], b[k]) for k in bare.outputs)
    trials, labels, _, _ = participant
    r = adapt.adapt(
        [trials],
        labels,
        tmp_path / "head.onnx",
        tmp_path / "a.onnx",
        method="scale_bias",
        shrinkage=0.01,
    )
    base, got = _base_outputs(tmp_path / "head.onnx", trials), _base_outputs(r.out, trials)
    want_c, want_l = r.correction.apply(base.class_probs, base.level_probs, base.features)
    assert np.abs(want_c - base.class_probs).max() > 1e-3  # the correction is not the identity
    np.testing.assert_allclose(got.class_probs, want_c, atol=1e-6)
    np.testing.assert_allclose(got.level_probs, want_l, atol=1e-6)
