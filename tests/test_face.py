"""The Python face gives the command's answers: ``fmri_edge.Decoder().predict`` against
``fmri-edge predict --json`` on the same trials (simulated demo, the ICBHI Test folders), alignment
included; ``score``, ``explain``, ``extract`` and ``load_trials`` as their commands."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fmri_edge
from fmri_edge.simulation.simulate import simulate

CLI = [sys.executable, "-m", "fmri_edge.cli"]


def cli_json(*args) -> dict:
    r = subprocess.run([*CLI, *map(str, args), "--json"], capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    return json.loads(r.stdout)


def rows(doc: dict) -> dict:
    return {(p["participant"], p["trial"]): p for p in doc["predictions"]}


def assert_same(answers, doc: dict) -> None:
    want = rows(doc)
    assert len(answers) == len(want)
    for i, key in enumerate(zip(answers.participant.tolist(), answers.trial.tolist())):
        w = want[key]
        assert (answers.valence_class[i], answers.valence_level[i]) == (w["CLASS"], w["LEVEL"]), key
        # the command's JSON rounds probabilities to 4 decimals
        np.testing.assert_allclose(answers.class_probs[i], w["class_probs"], atol=5.1e-5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = tmp_path_factory.mktemp("face") / "demo.npy"
    np.save(path, simulate(30, seed=0)[0])
    return path


def test_decoder_on_an_array_gives_the_commands_answers_alignment_included(demo):
    answers = fmri_edge.Decoder().predict(np.load(demo), participants=["demo"] * 30)
    assert_same(answers, cli_json("predict", demo))
    # the alignment mattered: the graph's defaults answer differently (the README's 12 of 30)
    plain = fmri_edge.Decoder().predict(np.load(demo), ["demo"] * 30, align=False)
    assert not np.array_equal(plain.class_probs, answers.class_probs)
    assert_same(plain, cli_json("predict", demo, "--no-align"))


def test_decoder_on_files_and_on_interleaved_participants(demo, tmp_path):
    x = np.load(demo)
    assert_same(fmri_edge.Decoder().predict(demo), cli_json("predict", demo))
    # two participants given interleaved: each aligned over its own trials (numbered in the order
    # given, as in a file), rows in input order
    np.save(tmp_path / "a.npy", x[:15])
    np.save(tmp_path / "b.npy", x[15:])
    who = np.array(["a"] * 15 + ["b"] * 15)
    order = np.ravel(np.column_stack([np.arange(15), np.arange(15, 30)]))  # a1 b1 a2 b2 …
    answers = fmri_edge.Decoder().predict(x[order], who[order])
    assert answers.participant.tolist() == who[order].tolist()
    assert_same(answers, cli_json("predict", tmp_path / "a.npy", tmp_path / "b.npy"))


def test_icbhi_test_folders_as_paths_and_as_arrays(icbhi):
    doc = cli_json("predict", icbhi / "Test")
    assert len(doc["predictions"]) == 120
    decoder = fmri_edge.Decoder()
    assert_same(decoder.predict(icbhi / "Test"), doc)
    names = sorted(p.name for p in (icbhi / "Test").iterdir() if p.is_dir())
    x = np.concatenate([fmri_edge.load_trials(icbhi / "Test" / n / "fMRI_data.npz") for n in names])
    who = np.repeat(names, 30)
    assert_same(decoder.predict(x, who), doc)


def test_predictions_frame_and_top_regions(demo):
    pd = pytest.importorskip("pandas")
    answers = fmri_edge.Decoder().predict(np.load(demo))
    frame = answers.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 30
    assert frame["CLASS"].tolist() == answers.valence_class.tolist()
    top = answers.top_regions(3)
    best = int(np.argmax(answers.region_scores[0]))
    assert len(top) == 30 and top[0][0] == answers.region_names[best]


def test_bad_arrays_are_one_input_error():
    x = simulate(3, seed=1)[0]
    with pytest.raises(fmri_edge.InputError, match="246"):
        fmri_edge.Decoder().predict(x[:, :10])
    x[1, 0, 0] = np.nan
    with pytest.raises(fmri_edge.InputError, match="trial 2 holds NaN"):
        fmri_edge.Decoder().predict(x)
    with pytest.raises(ValueError, match=r"3 name\(s\) for 2 trials"):
        fmri_edge.Decoder().predict(x[[0, 2]], participants=["a", "b", "c"])


def test_score_and_explain_match_their_commands(demo, tmp_path):
    csv = tmp_path / "p.csv"
    subprocess.run([*CLI, "predict", str(demo), "--out", str(csv)], check=True, capture_output=True)
    labels = tmp_path / "t.csv"
    lines = csv.read_text().splitlines()
    flipped = [lines[0]] + [",".join(r.split(",")[:2] + ["0", "0"]) for r in lines[1:]]
    labels.write_text("\n".join(flipped) + "\n")
    r = subprocess.run(
        [*CLI, "score", str(csv), str(labels), "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(json.dumps(fmri_edge.score(csv, labels))) == json.loads(r.stdout)
    answers = fmri_edge.Decoder().predict(demo)
    assert fmri_edge.score(answers, labels)["Score"] == json.loads(r.stdout)["Score"]
    summary = fmri_edge.explain(np.load(demo))
    doc = cli_json("explain", demo)
    assert [row["region"] for row in summary.rows(10)] == [
        row["region"] for row in doc["summary"]["regions"][:10]
    ]


def test_extract_gives_the_commands_trials(tmp_path):
    pytest.importorskip("nilearn")
    from fmri_edge.simulation import nifti_sim

    run = nifti_sim.write_run(tmp_path / "bold.nii.gz", tmp_path / "events.tsv", n_events=4)
    atlas = nifti_sim.write_atlas(tmp_path / "atlas.nii.gz")
    subprocess.run(
        [
            *CLI,
            "extract",
            str(run.bold),
            "--atlas",
            str(atlas),
            "--events",
            str(run.events),
            "--out",
            str(tmp_path / "t.npz"),
        ],
        check=True,
        capture_output=True,
    )
    cut = fmri_edge.extract(run.bold, atlas, events=run.events)
    np.testing.assert_array_equal(cut.trials, fmri_edge.load_trials(tmp_path / "t.npz"))
