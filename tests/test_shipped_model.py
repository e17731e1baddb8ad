"""The shipped model: self-description, and the challenge's output on the real test subjects."""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmri_edge.cli import app
from fmri_edge.model.runtime import Model, default_model_path

runner = CliRunner()


@pytest.fixture(scope="module")
def shipped():
    path = default_model_path()
    if not path.is_file():
        pytest.skip(f"no shipped model at {path}")
    return Model(path)


def test_shipped_model_describes_itself(shipped):
    meta = shipped.info.meta
    assert (shipped.info.n_regions, shipped.info.n_times) == (246, 25)
    assert meta["training"]["participants"] == [f"P{i:02d}" for i in range(1, 17)]
    assert {"subject", "random"} <= set(meta["metrics"])
    assert meta["normalization"]["inside_graph"] is True
    # subject alignment inside the graph, with the training population's statistics as defaults
    assert shipped.aligned and meta["subject_alignment"]["mode"] in ("center", "zscore")
    assert meta["recipe"] == "train/fmri-edge.toml"


def test_region_names_are_the_atlas(shipped, icbhi):
    lines = (icbhi / "BN_atlas.txt").read_text().splitlines()[1:]
    assert list(shipped.info.region_names) == [
        ln.split("\t")[1].strip() for ln in lines if ln.strip()
    ]


def test_predict_test_subjects_gives_complete_submission(shipped, icbhi, tmp_path):
    res = runner.invoke(
        app, ["predict", str(icbhi / "Test"), "--out", str(tmp_path / "submission.csv")]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "submission.csv")))
    assert len(rows) == 120
    assert [(r["Participant"], int(r["Trial"])) for r in rows] == [
        (f"P{p}", t) for p in range(17, 21) for t in range(1, 31)
    ]
    # the shipped model has no LEVEL head: LEVEL follows the class-only rule
    assert all({"-1": "-3", "0": "0", "1": "2"}[r["CLASS"]] == r["LEVEL"] for r in rows)


def test_info_json_of_shipped_model():
    if not default_model_path().is_file():
        pytest.skip("no shipped model")
    res = runner.invoke(app, ["info", "--json"])
    meta = json.loads(res.stdout)
    assert res.exit_code == 0 and meta["model_version"].startswith("fmri-edge@")
    assert (
        meta["recipe"] == "train/fmri-edge.toml" and Path(meta["recipe"]).is_file()
    )  # re-runnable
