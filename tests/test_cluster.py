"""`predict --scheduler`: the same bytes as local predict from a Dask cluster, a killed worker
loses nothing, a lost cluster is one line and no output. In-process clusters on 127.0.0.1."""

import copy
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'fmri-edge[dask]')"
)
import distributed  # noqa: E402

from fmri_edge.errors import InputError
from fmri_edge import scheduler as connection  # noqa: E402
from fmri_edge.decoding import cluster  # noqa: E402
from fmri_edge.decoding import answers as local  # noqa: E402
from fmri_edge.cli import EXIT_PARTIAL, app  # noqa: E402
from fmri_edge.model.normalize import AlignStats  # noqa: E402
from fmri_edge.model.runtime import Model, file_sha256  # noqa: E402
from tests.conftest import write_icbhi  # noqa: E402

runner = CliRunner()
BATCH, TASK = 4, 8  # tiny batches and tasks: files of 20-40 trials are split into several tasks


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scheduler():
    """2 in-process workers × 1 thread behind a TCP scheduler on 127.0.0.1 (results are pickled
    over TCP, as with remote workers)."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address="127.0.0.1:0",
    ) as lc:
        yield lc.scheduler_address


@pytest.fixture
def small_tasks(monkeypatch):
    monkeypatch.setattr(cluster, "DEFAULT_TASK_TRIALS", TASK)


@pytest.fixture(scope="module")
def aligned_model(tmp_path_factory, sim_data, tiny_recipe):
    """A tiny model with in-graph subject alignment (z-scored representation per participant)."""
    pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit

    r = copy.deepcopy(tiny_recipe)
    r.model.subject_align, r.optim.epochs = "zscore", 2
    x, y, subj = sim_data
    res = fit(r, x[subj < 4], y[subj < 4], participants=subj[subj < 4])
    out = tmp_path_factory.mktemp("aligned") / "aligned.onnx"
    export_onnx([res.model], out, {"model_version": "tiny-aligned", "level_rule": "argmax"}, x[:64])
    assert Model(out).aligned
    return out


def mixed_folder(root, sim_data):
    """Several .npy (some split into tasks), an .npz, subject folders, one broken and one
    wrong-shaped file (split into tasks too: reported once), a NaN trial in a later task."""
    x, y, subj = sim_data
    root.mkdir()
    np.save(root / "runA.npy", x[:37])  # 37 trials: 5 tasks of 8 (the last short)
    nan = x[40:60].copy()
    nan[13, 7, 3] = np.nan  # trial 14, in the second task
    np.save(root / "nan.npy", nan)
    np.save(root / "one.npy", x[70])  # a single (246, T) trial
    np.savez(root / "packed.npz", data=x[80:92])
    np.save(root / "wrongT.npy", np.ones((20, 246, 30)))  # refused, once, though split in 3 tasks
    (root / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    for s in (4, 5):
        write_icbhi(root, x[subj == s][:15], y[subj == s][:15], f"P{s}")
    return root


def same_run(tmp_path, model, inputs, *options, address):
    """The CLI locally and on ``address``: (local result, cluster result, their output folders)."""
    runs = []
    for name, extra in (("local", ()), ("cluster", ("--scheduler", address))):
        d = tmp_path / name
        d.mkdir()
        res = invoke(
            "predict",
            *inputs,
            "--model",
            model,
            "--out",
            d / "p.csv",
            "--errors",
            d / "e.json",
            "--batch-size",
            BATCH,
            *options,
            *extra,
        )
        assert res.exit_code in (0, EXIT_PARTIAL), (name, res.output, res.exception)
        runs.append((res, d))
    assert runs[0][0].exit_code == runs[1][0].exit_code
    return runs


def test_cluster_csv_errors_and_messages_equal_local_on_a_mixed_folder(
    sim_model, sim_data, tmp_path, scheduler, small_tasks
):
    folder = mixed_folder(tmp_path / "in", sim_data)
    (lres, ld), (cres, cd) = same_run(tmp_path, sim_model, [folder], address=scheduler)
    csv_text = (ld / "p.csv").read_bytes()
    assert (cd / "p.csv").read_bytes() == csv_text
    assert (cd / "e.json").read_bytes() == (ld / "e.json").read_bytes()
    assert (
        cres.stderr.replace(str(cd), str(ld)) == lres.stderr
    )  # every problem, once, in the same order
    assert cres.stdout == lres.stdout
    errors = json.loads((cd / "e.json").read_text())
    assert sum(e["file"].endswith("wrongT.npy") for e in errors) == 1
    assert [e["trial"] for e in errors if e["file"].endswith("nan.npy")] == [14]
    assert {e["file"].rsplit("/", 1)[-1] for e in errors} == {"wrongT.npy", "broken.npy", "nan.npy"}
    assert (
        csv_text.count(b"\nrunA,") == 37
        and csv_text.count(b"\nnan,") == 19
        and b"\nP5,15," in csv_text
    )


def test_local_2_json_and_explain_equal_local(sim_model, sim_data, tmp_path):
    """The literal `--scheduler local:2` (2 worker processes): --json and --explain come through."""
    folder = mixed_folder(tmp_path / "in", sim_data)
    (lres, ld), (cres, cd) = same_run(
        tmp_path,
        sim_model,
        [folder / "runA.npy", folder / "P4", folder / "broken.npy"],
        "--json",
        "--explain",
        "--top-k",
        3,
        address="local:2",
    )
    local_doc, cluster_doc = json.loads(lres.stdout), json.loads(cres.stdout)
    assert cluster_doc == local_doc and cluster_doc["n_trials"] == 52
    assert len(cluster_doc["predictions"][0]["regions"]) == 3
    assert (cd / "p.csv").read_bytes() == (ld / "p.csv").read_bytes()
    assert (cd / "p.regions.csv").read_bytes() == (ld / "p.regions.csv").read_bytes()


@pytest.mark.parametrize("options", [(), ("--participant", "P"), ("--no-align",)])
def test_subject_alignment_through_the_cluster_equals_local(
    aligned_model, sim_data, tmp_path, scheduler, small_tasks, options
):
    """Alignment statistics merged from tasks on two workers give the same bytes: one participant
    per file (one of them too small to align, with its warning), or all files as one participant."""
    x = sim_data[0]
    inputs = []
    for name, part in (("a", x[:30]), ("b", x[30:35]), ("c", x[40:61])):
        np.save(tmp_path / f"{name}.npy", part)
        inputs.append(tmp_path / f"{name}.npy")
    (lres, ld), (cres, cd) = same_run(tmp_path, aligned_model, inputs, *options, address=scheduler)
    assert (cd / "p.csv").read_bytes() == (ld / "p.csv").read_bytes()
    assert cres.stderr.replace(str(cd), str(ld)) == lres.stderr
    warned = "subject alignment needs" in lres.stderr
    assert warned == (options != ("--participant", "P"))
    if options == ("--participant", "P"):  # trials numbered on from file to file
        assert (cd / "p.csv").read_text().splitlines()[-1].startswith("P,56,")


def test_chunk_statistics_merged_in_order_equal_adding_in_order():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3, 2, size=(n, 4, 5)) for n in (7, 1, 12, 3)]
    added, merged = AlignStats(), AlignStats()
    for c in chunks:
        added.add(c)
    parts = [AlignStats.of(c) for c in chunks]
    for p in parts:
        merged.merge(p)
    assert merged.n == added.n == 23
    assert np.array_equal(merged.mean, added.mean) and np.array_equal(
        merged.m2, added.m2
    )  # bit for bit
    whole = np.concatenate(chunks)
    np.testing.assert_allclose(merged.result()[1], whole.std(axis=0) + 1e-6, rtol=1e-6)


def test_spans_cover_every_trial_once_in_whole_batches():
    s = cluster.spans(37, 8, True)
    assert [span for span, _ in s] == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 37)]
    assert sum(n for _, n in s) == 37
    assert cluster.spans(37, 8, False) == [(None, 37)] and cluster.spans(5, 8, True) == [(None, 5)]


def test_progress_counts_every_trial_and_items_match_local(
    sim_model, sim_data, tmp_path, scheduler
):
    folder = mixed_folder(tmp_path / "in", sim_data)
    decoder = Model(sim_model)
    seen = {"total": None, "done": 0}

    def done(n):
        seen["done"] += n

    with distributed.Client(scheduler) as client:
        items = list(
            cluster.predict(
                client,
                decoder,
                [folder],
                BATCH,
                task_trials=TASK,
                weights=False,
                on_total=lambda n: seen.update(total=n),
                on_trials=done,
            )
        )
    want = list(local.predict(decoder, [folder], BATCH))
    assert [type(i) for i in items] == [type(i) for i in want]
    for got, exp in zip(items, want):
        if isinstance(exp, InputError):
            assert got.as_dict() == exp.as_dict()
        else:
            assert (got.participant, got.path) == (exp.participant, exp.path)
            np.testing.assert_array_equal(got.trial, exp.trial)
            np.testing.assert_array_equal(got.class_probs, exp.class_probs)
            assert got.region_weights.shape == (len(got), 0)  # left on the worker without --explain
    # every trial of every readable file: 37 + 20 + 1 + 12 + 20 (wrongT, refused) + 2 × 15
    assert seen["total"] == 120
    deadline = (
        time.time() + 120
    )  # callbacks run on Dask's thread: wait for them (a busy machine is slow)
    while seen["done"] < 120 and time.time() < deadline:
        time.sleep(0.05)
    assert seen["done"] == 120


def test_a_killed_worker_loses_nothing(sim_model, sim_data, tmp_path):
    """SIGKILL one of two worker processes while it runs a task: its tasks and the results it held
    are recomputed, and the answers are the same, complete, without duplicates."""
    x = sim_data[0]
    np.save(tmp_path / "big.npy", np.concatenate([x, x]))  # 360 trials, 45 tasks of 8
    decoder = Model(sim_model)
    killed = {}

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

        def kill_one():
            busy = {w: len(keys) for w, keys in client.processing().items() if keys}
            assert busy, "no worker was busy when one was to be killed"
            worker = next(iter(busy))
            killed.update(worker=worker, pid=pids[worker], tasks=busy[worker])
            os.kill(pids[worker], signal.SIGKILL)

        mp = pytest.MonkeyPatch()
        mp.setattr(
            cluster, "answer_task", _slowed(cluster.answer_task)
        )  # ≥ 50 ms a task: the kill lands mid-run
        items = []
        try:
            for item in cluster.predict(
                client, decoder, [tmp_path / "big.npy"], BATCH, threads=1, task_trials=TASK
            ):
                items.append(item)
                if len(items) == 1:
                    kill_one()
        finally:
            mp.undo()
        assert killed["tasks"] >= 1
        assert killed["pid"] not in client.run(os.getpid).values()
    want = list(local.predict(decoder, [tmp_path / "big.npy"], BATCH))
    got_trials = np.concatenate([b.trial for b in items])
    assert np.array_equal(got_trials, np.arange(1, 361))  # all, once, in order
    assert np.array_equal(
        np.concatenate([b.class_probs for b in items]),
        np.concatenate([b.class_probs for b in want]),
    )


def _slowed(task):
    def slow(*args, **kwargs):
        time.sleep(0.05)
        return task(*args, **kwargs)

    return slow


def test_a_cluster_gone_mid_run_is_one_error_and_no_output(
    sim_model, sim_data, tmp_path, monkeypatch
):
    np.save(tmp_path / "a.npy", sim_data[0][:120])
    lc = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address="127.0.0.1:0",
    )
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 2)
    monkeypatch.setattr(cluster, "DEFAULT_TASK_TRIALS", TASK)
    monkeypatch.setattr(cluster, "answer_task", _slowed(cluster.answer_task))
    closing = threading.Thread(target=lc.close)
    monkeypatch.setattr(cluster, "result", _close_after_first(cluster.result, closing))
    out = tmp_path / "p.csv"
    res = invoke(
        "predict",
        tmp_path / "a.npy",
        "--model",
        sim_model,
        "--out",
        out,
        "--batch-size",
        BATCH,
        "--scheduler",
        lc.scheduler_address,
    )
    closing.join(10)
    assert res.exit_code == 2, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "lost the Dask cluster" in lines[0] and "nothing written" in lines[0]
    ), res.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def _close_after_first(result, closing):
    def first_then_close(future, *args):
        value = result(future, *args)
        if not closing.is_alive() and closing.ident is None:
            closing.start()
        return value

    return first_then_close


def test_an_unreachable_scheduler_is_one_line(sim_model, sim_data, tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT", 1)
    np.save(tmp_path / "a.npy", sim_data[0][:3])
    res = invoke(
        "predict",
        tmp_path / "a.npy",
        "--model",
        sim_model,
        "--out",
        tmp_path / "p.csv",
        "--scheduler",
        "tcp://127.0.0.1:9",
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a Dask scheduler at tcp://127.0.0.1:9" in lines[0], (
        res.stderr
    )
    assert not (tmp_path / "p.csv").exists()
    for bad in ("local:0", "local:two"):
        res = invoke("predict", tmp_path / "a.npy", "--model", sim_model, "--scheduler", bad)
        assert res.exit_code == 2 and "expected local:N with N ≥ 1" in res.stderr


def test_workers_refuse_a_model_whose_sha256_differs(sim_model, tmp_path):
    ref = cluster.ModelRef(str(sim_model), "0" * 64, 1)
    with pytest.raises(InputError, match="differs from the client's 0000000000000000"):
        cluster.worker_decoder(ref)
    with pytest.raises(InputError, match="model file not found"):
        cluster.worker_decoder(cluster.ModelRef(str(tmp_path / "none.onnx"), "0" * 64, 1))
    good = cluster.ModelRef(str(sim_model), file_sha256(sim_model), 1)
    assert cluster.worker_decoder(good) is cluster.worker_decoder(good)  # opened once per process


def test_nan_error_stops_the_cluster_run_like_local(
    sim_model, sim_data, tmp_path, scheduler, small_tasks
):
    bad = sim_data[0][:30].copy()
    bad[20, 1, 1] = np.nan
    np.save(tmp_path / "a.npy", bad)
    results = [
        invoke(
            "predict",
            tmp_path / "a.npy",
            "--model",
            sim_model,
            "--out",
            tmp_path / f"{n}.csv",
            "--batch-size",
            BATCH,
            "--nan",
            "error",
            *extra,
        )
        for n, extra in (("l", ()), ("c", ("--scheduler", scheduler)))
    ]
    assert [r.exit_code for r in results] == [2, 2]
    assert results[1].stderr == results[0].stderr and "trial 21" in results[0].stderr
    assert not (tmp_path / "l.csv").exists() and not (tmp_path / "c.csv").exists()


def test_a_second_file_of_a_participant_is_refused_as_locally(
    sim_model, sim_data, tmp_path, scheduler
):
    """Without --participant the second file of a name is refused once the first answered a trial;
    a refused first file leaves the name free (the rule of fmri_edge.decoding.answers.answer_units)."""
    x = sim_data[0]
    (tmp_path / "both").mkdir()
    np.save(tmp_path / "both" / "a.npy", x[:3])
    np.savez(tmp_path / "both" / "a.npz", data=x[3:5])  # refused: a.npy answered first
    (tmp_path / "free").mkdir()
    (tmp_path / "free" / "b.npy").write_bytes(b"")  # refused: b.npz still answered
    np.savez(tmp_path / "free" / "b.npz", data=x[5:9])
    (lres, ld), (cres, cd) = same_run(
        tmp_path, sim_model, [tmp_path / "both", tmp_path / "free"], address=scheduler
    )
    assert (cd / "p.csv").read_bytes() == (ld / "p.csv").read_bytes()
    assert cres.stderr.replace(str(cd), str(ld)) == lres.stderr
    rows = (cd / "p.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["a"] * 3 + ["b"] * 4
    assert "was already predicted from" in cres.stderr
