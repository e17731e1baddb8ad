"""`extract STUDY --scheduler`: a study's runs extracted by Dask workers give the same files and the
same reports as locally; a bad run is reported, not retried. (An unreachable scheduler is one line:
tests/test_cluster.py, the same connection code as predict's.)"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'fmri-edge[dask]')"
)
pytest.importorskip(
    "nilearn", reason="extract needs the nifti extra: pip install 'fmri-edge[nifti]'"
)

from fmri_edge.simulation import nifti_sim  # noqa: E402
from fmri_edge.cli import app  # noqa: E402
from tests.test_cluster import scheduler  # noqa: E402,F401  (2 in-process workers behind a TCP scheduler)

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    nifti_sim.write_bids(d / "study", n_subjects=3, n_runs=2, n_events=2)
    bad = next((d / "study" / "derivatives").rglob("sub-02_*run-2_*_bold.nii.gz"))
    bad.write_bytes(bad.read_bytes()[:4000])  # cut short: reported, sub-02 keeps run 1
    return {"root": d / "study", "atlas": nifti_sim.write_atlas(d / "atlas.nii.gz"), "bad": bad}


def test_runs_on_the_cluster_give_the_local_files_and_reports(scheduler, study, tmp_path):
    local = invoke(
        "extract", study["root"], "--atlas", study["atlas"], "--out", tmp_path / "local", "--json"
    )
    remote = invoke(
        "extract",
        study["root"],
        "--atlas",
        study["atlas"],
        "--out",
        tmp_path / "remote",
        "--json",
        "--scheduler",
        scheduler,
    )
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert (
        [p["trials"] for p in a["participants"]]
        == [p["trials"] for p in b["participants"]]
        == [4, 2, 4]
    )
    assert [e["problem"] for e in a["errors"]] == [e["problem"] for e in b["errors"]]
    assert str(study["bad"]) in {e["file"] for e in b["errors"]}
    for sub in ("sub-01", "sub-02", "sub-03"):
        x, y = (np.load(tmp_path / side / sub / "fMRI_data.npz") for side in ("local", "remote"))
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key])


def test_scheduler_needs_a_study_and_a_valid_address(study, tmp_path):
    run = next((study["root"] / "derivatives").rglob("sub-01_*run-1_*_bold.nii.gz"))
    res = invoke(
        "extract",
        run,
        "--atlas",
        study["atlas"],
        "--events",
        tmp_path / "e.tsv",
        "--out",
        tmp_path / "t.npz",
        "--scheduler",
        "local:2",
    )
    assert res.exit_code == 2 and "distributes the runs of a BIDS folder" in res.stderr
    res = invoke(
        "extract",
        study["root"],
        "--atlas",
        study["atlas"],
        "--out",
        tmp_path / "o",
        "--scheduler",
        "local:zero",
    )
    assert res.exit_code == 2 and "expected local:N" in res.stderr
