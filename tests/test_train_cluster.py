"""`train --scheduler` (issue 31): folds and permutations as Dask tasks give the local run's numbers;
a killed worker loses nothing; a scheduler that is not there is one line and nothing is written."""

import json
import os
import signal

import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'fmri-edge[dask]')"
)
pytest.importorskip("torch")
import distributed  # noqa: E402

from fmri_edge import scheduler  # noqa: E402
from fmri_edge.cli import app  # noqa: E402
from tests.test_extract import one_line_error  # noqa: E402
from tests.trial_studies import write_trial_study  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_trial_study(
        tmp_path_factory.mktemp("tc") / "s", 4, 2, 9, signal="individual", effect=0.02
    )


def _results(path):
    return json.loads((path / "results.json").read_text())


@pytest.mark.parametrize("protocol", ["subject", "within"])
def test_the_cluster_gives_the_local_numbers(study, tmp_path, protocol):
    common = [
        "train",
        "--data",
        str(study),
        "--protocol",
        protocol,
        "--permutations",
        "4",
        "--threads",
        "1",
        "--no-final",
        "--json",
    ]
    a = runner.invoke(app, [*common, "--out", str(tmp_path / "local")])
    b = runner.invoke(app, [*common, "--out", str(tmp_path / "dask"), "--scheduler", "local:2"])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    ra, rb = _results(tmp_path / "local"), _results(tmp_path / "dask")
    assert ra["protocols"][protocol]["predictions"] == rb["protocols"][protocol]["predictions"]
    assert ra["evaluation"]["permutation"] == rb["evaluation"]["permutation"]
    assert ra["evaluation"]["estimate"] == rb["evaluation"]["estimate"]
    assert (tmp_path / "dask" / "cv_predictions.csv").read_text() == (
        tmp_path / "local" / "cv_predictions.csv"
    ).read_text()


def test_a_killed_worker_is_retried_and_the_null_is_unchanged(study):
    from fmri_edge.training import evaluation, tasks
    from fmri_edge.training.recipe import load_recipe, shipped_recipe
    from fmri_edge.training.run import make_plan, run_subject_cv

    recipe = load_recipe(shipped_recipe())
    recipe.data = str(study)
    plan = make_plan(recipe, "auto", ["subject"])
    shuffled = evaluation.shuffles(plan.ds.labels, plan.ds.participants, 6, recipe.seed)
    want = evaluation.permutation_null(
        lambda y: run_subject_cv(recipe, plan.ds.with_labels(y)),
        plan.ds.labels,
        plan.ds.participants,
        6,
        recipe.eval.level_rule,
        recipe.seed,
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as lc,
        distributed.Client(lc) as client,
    ):
        pids = client.run(os.getpid)
        ex = tasks.DaskExecutor(client, "local:2")
        data = ex._data(plan.ds)
        futures = [
            client.submit(tasks.permutation_task, recipe, data, "subject", None, y, pure=False)
            for y in shuffled
        ]
        scheduler.result(futures[0], "local:2", distributed)
        busy = [w for w, keys in client.processing().items() if keys]
        victim = busy[0] if busy else next(iter(pids))
        os.kill(pids[victim], signal.SIGKILL)
        got = [scheduler.result(f, "local:2", distributed) for f in futures]
        assert pids[victim] not in client.run(os.getpid).values()
    assert got == want


def test_a_scheduler_that_is_not_there_is_one_line_and_nothing_is_written(
    study, tmp_path, monkeypatch
):
    monkeypatch.setattr(scheduler, "CONNECT_TIMEOUT", 2)
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(study),
            "--scheduler",
            "tcp://127.0.0.1:9",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    one_line_error(res, "tcp://127.0.0.1:9", "--scheduler local:N")
    assert not (tmp_path / "run").exists()
    res = runner.invoke(
        app,
        ["train", "--data", str(study), "--scheduler", "local:0", "--out", str(tmp_path / "run")],
    )
    one_line_error(res, "local:N")
    assert not (tmp_path / "run").exists()


def test_local_workers_keep_mallocs_defaults(monkeypatch):
    """Dask's nannies set MALLOC_TRIM_THRESHOLD_, which doubled a permutation's CPU in a worker:
    the workers train --scheduler local:N spawns have it unset. (A nanny also writes it into its
    parent's os.environ: the clusters of the tests above did, in this pytest process, so it is
    removed first, as in a fresh `fmri-edge train` process.)"""
    from fmri_edge.training.tasks import worker_environment

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with worker_environment(), scheduler.connect("local:1") as (client, _):
        assert list(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == [None]
        assert list(client.run(lambda: os.environ.get("OMP_NUM_THREADS")).values()) == ["1"]
