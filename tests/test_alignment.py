"""Subject alignment at predict time: the same answers however a participant's trials arrive, the
same computation as training, single trials still answered, and Score-optimal LEVEL answers."""

import numpy as np
import pytest

from fmri_edge.errors import InputError
from fmri_edge.decoding import answers as lib
from fmri_edge.evaluation import scoring
from fmri_edge.model.runtime import Model

torch = pytest.importorskip("torch")


def _rows(decoder, paths, **kw):
    rows, problems = {}, []
    for item in lib.predict(decoder, paths, **kw):
        if isinstance(item, InputError):
            problems.append(item)
            continue
        for t, p in zip(item.trial, item.class_probs):
            rows[(item.participant, int(t))] = p
    return rows, problems


@pytest.fixture(scope="module")
def subject5(sim_data):
    x, y, subj = sim_data
    return x[subj == 5], y[subj == 5]


def test_one_file_chunks_and_several_files_give_identical_answers(
    aligned_model, subject5, tmp_path
):
    x, _ = subject5
    d = Model(aligned_model)
    assert d.aligned
    whole = tmp_path / "S05.npy"
    np.save(whole, x)
    ref, problems = _rows(d, [whole])
    assert len(ref) == 30 and not problems
    chunked, _ = _rows(d, [whole], batch_size=7)  # 5 chunks of one file
    (tmp_path / "runs").mkdir()
    np.save(tmp_path / "runs" / "a.npy", x[:11])
    np.save(tmp_path / "runs" / "b.npy", x[11:])
    spread, problems = _rows(
        d, [tmp_path / "runs" / "a.npy", tmp_path / "runs" / "b.npy"], participant="S05"
    )
    assert not problems
    assert sorted(spread) == sorted(ref)  # trials numbered on across files
    for (
        key,
        p,
    ) in (
        ref.items()
    ):  # the same answers; probabilities differ by float32 rounding of other batch sizes
        np.testing.assert_allclose(chunked[key], p, atol=1e-4)
        np.testing.assert_allclose(spread[key], p, atol=1e-4)
        assert np.argmax(chunked[key]) == np.argmax(p) == np.argmax(spread[key])


def test_alignment_changes_the_answers_and_matches_training(
    aligned_model, aligned_network, subject5, tmp_path
):
    """predict aligns a participant exactly as training's predict_proba does, and it matters."""
    from fmri_edge.training.fit import predict_proba

    x, _ = subject5
    np.save(tmp_path / "S05.npy", x)
    d = Model(aligned_model)
    got, _ = _rows(d, [tmp_path / "S05.npy"])
    want = predict_proba(aligned_network, x, np.zeros(len(x)))["class"]
    np.testing.assert_allclose(np.stack([got[("S05", t)] for t in range(1, 31)]), want, atol=1e-4)
    unaligned, problems = _rows(d, [tmp_path / "S05.npy"], align=False)
    assert [p.outcome for p in problems] == ["predicted"] and "--no-align" in problems[0].problem
    assert max(np.abs(unaligned[k] - got[k]).max() for k in got) > 1e-3


def test_a_single_trial_is_answered_with_the_population_statistics(
    aligned_model, subject5, tmp_path
):
    x, _ = subject5
    np.save(tmp_path / "one.npy", x[0])  # (246, 25): one trial
    d = Model(aligned_model)
    rows, problems = _rows(d, [tmp_path / "one.npy"])
    assert list(rows) == [("one", 1)]
    assert len(problems) == 1 and problems[0].outcome == "predicted"
    assert (
        "only 1 good trial" in problems[0].problem
        and f"≥ {lib.MIN_ALIGN_TRIALS}" in problems[0].problem
    )
    np.testing.assert_allclose(
        rows[("one", 1)], d.run(np.ascontiguousarray(x[:1]))["class_probs"][0], atol=1e-6
    )


def test_two_files_implying_one_participant_are_still_refused_without_participant(
    aligned_model, subject5, tmp_path
):
    x, _ = subject5
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "P17.npy", x)
    rows, problems = _rows(
        Model(aligned_model), [tmp_path / "a" / "P17.npy", tmp_path / "b" / "P17.npy"]
    )
    assert len(rows) == 30
    assert [p.outcome for p in problems] == ["refused"] and "--participant" in problems[0].problem


def test_the_graph_exposes_features_and_defaults_its_statistics(aligned_model, subject5):
    x, _ = subject5
    d = Model(aligned_model)
    out = d.run(np.ascontiguousarray(x[:3]), outputs=("class_probs", "features", "normalized"))
    axes = d.info.meta["normalized_axes"]  # the graph's own layout of the representation
    assert axes in (["batch", "regions", "time"], ["batch", "time", "regions"])
    shape = (246, 5) if axes[1] == "regions" else (5, 246)
    assert d.align_shape == shape
    assert out["features"].shape == (3, 246 * 5) and out["normalized"].shape == (3, *shape)
    neutral = (np.zeros(shape, np.float32), np.ones(shape, np.float32))
    same = d.run(np.ascontiguousarray(x[:3]), neutral, outputs=("features", "normalized"))
    np.testing.assert_allclose(same["features"], same["normalized"].reshape(3, -1), atol=1e-6)


# ---- Score-optimal LEVEL ---------------------------------------------------------------------------


def _decide(class_probs, level_given_class, rule):
    from fmri_edge.training.fit import decide
    from fmri_edge.training.protocols import baseline_level

    d = decide({"class": class_probs, "level_mix": class_probs @ level_given_class}, rule)
    return d["class"], d.get("level", baseline_level(d["class"]))


def test_score_optimal_level_wins_where_the_fixed_rule_is_wrong():
    """Positive trials rated +4 and negative ones −1: the fixed rule (−3, 0, +2) pays for it."""
    rng = np.random.default_rng(0)
    cond = np.zeros((3, 9))
    cond[0, 3], cond[1, 4], cond[2, 8] = 1.0, 1.0, 1.0  # −1 → −1, 0 → 0, +1 → +4
    true_class = rng.choice([-1, 0, 1], 300)
    true_level = np.select([true_class < 0, true_class > 0], [-1, 4], 0)
    probs = np.full((300, 3), 0.1)
    probs[np.arange(300), true_class + 1] = 0.8
    fixed = _decide(probs, cond, "argmax")
    optimal = _decide(probs, cond, "min_expected_error")
    s_fixed = scoring.challenge_score(fixed[0], true_class, fixed[1], true_level)["Score"]
    s_opt = scoring.challenge_score(optimal[0], true_class, optimal[1], true_level)["Score"]
    assert s_opt < s_fixed - 0.1


def test_score_optimal_level_is_never_worse_in_expectation():
    """Labels drawn from the model's own distribution: least expected error is least on average."""
    rng = np.random.default_rng(1)
    cond = rng.dirichlet(np.ones(9), size=3)
    probs = rng.dirichlet(np.ones(3), size=4000)
    true_class = np.array([rng.choice([-1, 0, 1], p=p) for p in probs])
    true_level = np.array([rng.choice(np.arange(-4, 5), p=cond[c + 1]) for c in true_class])
    fixed = _decide(probs, cond, "argmax")[1]
    optimal = _decide(probs, cond, "min_expected_error")[1]
    assert scoring.level_error(optimal, true_level) <= scoring.level_error(fixed, true_level)


def test_a_linear_model_explains_itself_by_contributions(aligned_model, subject5, tmp_path):
    """A linear model has no region attention, but --explain and explain give its exact region
    contributions (tests/test_contributions.py checks the numbers)."""
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    np.save(tmp_path / "S05.npy", subject5[0])
    for args in (
        ["predict", str(tmp_path / "S05.npy"), "--explain"],
        ["explain", str(tmp_path / "S05.npy")],
    ):
        res = CliRunner().invoke(app, [*args, "--model", str(aligned_model)])
        assert (
            res.exit_code == 0
            and "contribution" in res.stdout
            and "answered class's logit" in res.stderr
        )


def test_cli_participant_option_numbers_trials_on(aligned_model, subject5, tmp_path):
    import csv

    from typer.testing import CliRunner

    from fmri_edge.cli import app

    x, _ = subject5
    np.save(tmp_path / "run1.npy", x[:12])
    np.save(tmp_path / "run2.npy", x[12:])
    res = CliRunner().invoke(
        app,
        [
            "predict",
            str(tmp_path / "run1.npy"),
            str(tmp_path / "run2.npy"),
            "--participant",
            "P21",
            "--model",
            str(aligned_model),
            "--out",
            str(tmp_path / "s.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [(r["Participant"], int(r["Trial"])) for r in rows] == [("P21", t) for t in range(1, 31)]


def test_single_trial_answers_of_a_level_model_do_not_depend_on_the_scanner_gain(
    sim_data, tmp_path
):
    """The sustained level means something only against the participant's own trials. Without
    them (one trial, fewer than 10, --no-align: the graph's defaults) the level step is neutral, so
    a trial's answer is the same whatever its raw BOLD gain; with the population's level as the
    default instead (as before), a gain of 3 would move every answer."""
    pytest.importorskip("torch")
    from fmri_edge.model.runtime import Model
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit
    from tests.conftest import level_recipe

    x, y, subj = sim_data
    r = level_recipe()
    model = fit(r, x[subj < 4], y[subj < 4], participants=subj[subj < 4]).model
    out = tmp_path / "level.onnx"
    export_onnx(
        [model], out, {"model_version": "t", "region_names": [f"R{i}" for i in range(246)]}, x[:64]
    )
    d = Model(out)
    one = x[subj == 4][:8]
    outs = ("class_probs", "features", "normalized")
    a, b = (
        d.run(one, outputs=outs),
        d.run((one * 3.0).astype(np.float32), outputs=outs),
    )  # the graph's defaults
    np.testing.assert_allclose(a["class_probs"], b["class_probs"], atol=1e-4)
    level = (
        a["normalized"][:, 5]
        if d.info.meta["normalized_axes"][1] == "time"
        else a["normalized"][:, :, 5]
    )
    assert np.abs(level).max() > 1  # the level itself is there (log BOLD) …
    features = a["features"].reshape(len(one), *a["normalized"].shape[1:])
    z_level = features[:, 5] if d.info.meta["normalized_axes"][1] == "time" else features[:, :, 5]
    assert np.abs(z_level).max() < 1e-6  # … and neutral without the participant
