"""fmri-edge stream: trials answered live from volumes replayed into a folder (simulated data only;
sockets bound on 127.0.0.1 only). The replay runs many times faster than real time."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("nilearn")

from fmri_edge.imaging import extract  # noqa: E402
from fmri_edge.simulation import nifti_sim
from fmri_edge.realtime import stream as lib
from fmri_edge.errors import InputError, UsageError  # noqa: E402
from fmri_edge.simulation.replay import replay, volume_file  # noqa: E402
from fmri_edge.model.runtime import Model  # noqa: E402
from fmri_edge.realtime.watch import volume_name  # noqa: E402

TR = 2.0
SPEED = 100.0  # 20 ms between volumes


@pytest.fixture(scope="module")
def decoder():
    return Model()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A simulated run (4 events, ~60 volumes of 14³ voxels), its atlas and events."""
    root = tmp_path_factory.mktemp("run")
    atlas = nifti_sim.write_atlas(root / "atlas.nii.gz")
    sim = nifti_sim.write_run(root / "bold.nii.gz", root / "events.tsv", tr=TR, n_events=4, seed=3)
    return sim, atlas


@pytest.fixture(scope="module")
def reference(run, decoder, tmp_path_factory):
    """extract + predict --no-align on the same run: {events row: class probabilities}."""
    from fmri_edge.decoding.answers import Batch, predict

    sim, atlas = run
    window = extract.Window.from_model(decoder.info)
    r = extract.extract_run(sim.bold, extract.Atlas(atlas, window.n_regions), sim.events, window)
    trials = extract.save_trials(tmp_path_factory.mktemp("extracted") / "trials.npz", [r])
    batches = [b for b in predict(decoder, [trials], align=False) if isinstance(b, Batch)]
    probs = np.concatenate([b.class_probs for b in batches])
    rows = extract.read_events(sim.events).row  # every event fits in the run: trial n is row n
    assert len(probs) == len(rows)
    return {int(row): p for row, p in zip(rows, probs)}


@pytest.fixture(scope="module")
def replayed(run, tmp_path_factory):
    """The run already replayed into a folder (nii), for tests that stream it with include_existing."""
    folder = tmp_path_factory.mktemp("replayed")
    replay(run[0].bold, folder, TR, speed=1e6, split_every=0)
    return folder


def _stream(folder, run, decoder, **kw):
    sim, atlas = run
    answers, problems = [], []
    kw.setdefault("volume_timeout", 1.0)
    kw.setdefault(
        "realign", False
    )  # the cube phantom does not move; realignment: tests/test_realign.py
    live = lib.Stream(
        folder,
        atlas,
        sim.events,
        TR,
        decoder,
        on_answer=answers.append,
        on_problem=problems.append,
        **kw,
    )
    return live, answers, problems


def _live(folder, run, decoder, fmt="nii", **kw):
    """Stream while the run is replayed into ``folder`` (some volumes in two halves with a pause)."""
    live, answers, problems = _stream(folder, run, decoder, **kw)
    t = threading.Thread(
        target=replay,
        args=(run[0].bold, folder, TR, SPEED, fmt),
        kwargs={"split_every": 3, "pause": 0.05},
    )
    t.start()
    try:
        result = live.run()
    finally:
        t.join()
    result.retried = live.feed.retried
    return result, [json.loads(a) for a in answers], problems


def test_volume_numbers_come_from_the_file_name():
    assert volume_name("img-00001-00005.nii") == ("img-00001-#.nii", 5)
    assert volume_name("001_000005_000123.dcm") == ("001_000005_#.dcm", 123)
    assert volume_name("run1_vol0042.nii.gz") == ("run1_vol#.nii.gz", 42)
    for name in (".img-1-2.nii", "notes.txt", "atlas.nii", "img-1-2.nii.tmp"):
        assert volume_name(name) is None or name == "atlas.nii" and volume_name(name) is None


def test_stream_answers_every_trial_as_extract_and_predict_do(run, decoder, reference, tmp_path):
    """The done-when check: volumes written live, some in place in two halves; --no-align answers
    equal extract + predict --no-align (same CLASS, probabilities within 1e-4)."""
    folder = tmp_path / "watch"
    folder.mkdir()
    out = tmp_path / "answers.csv"
    result, answers, problems = _live(folder, run, decoder, align="none", out=out)
    assert result.complete and result.answered == len(reference) == len(answers)
    assert result.retried > 0  # volumes were seen half-written, and waited for
    assert not result.incomplete and not [p for p in problems if p.outcome == "refused"]
    for a in answers:
        want = reference[a["trial"]]
        assert a["CLASS"] == [-1, 0, 1][int(np.argmax(want))]
        np.testing.assert_allclose(a["probs"], want, atol=1e-4)
        assert a["latency_ms"] >= 0 and a["aligned"] == "population"
    rows = out.read_text().splitlines()
    assert rows[0] == "Participant,Trial,CLASS,LEVEL,p_negative,p_neutral,p_positive"
    assert [int(r.split(",")[1]) for r in rows[1:]] == [a["trial"] for a in answers]
    assert {r.split(",")[0] for r in rows[1:]} == {"watch"}


def test_each_trial_is_answered_by_the_volume_that_completes_its_window(run, decoder, replayed):
    live, answers, _ = _stream(replayed, run, decoder, include_existing=True, align="none")
    needed = {t.row: t.hi for t in live.schedule.trials}
    result = live.run()
    assert result.complete
    for a in map(json.loads, answers):
        assert a["volume"] == needed[a["trial"]]
        assert a["file"] == volume_file("nii", 1, needed[a["trial"]] + 1)
        times = extract.volume_times(needed[a["trial"]] + 1, TR)
        assert (
            times[-1] >= a["onset"] + 19 - 1e-6 > times[-2]
        )  # the volume right of the last sample


def test_files_already_there_are_reported_and_not_used(run, decoder, replayed, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(replayed, folder)
    live, answers, problems = _stream(folder, run, decoder, volume_timeout=0.3)
    assert "already in the folder at start" in str(problems[0]) and problems[0].outcome == "ignored"
    live.feed.ended = True  # nothing new will come: end at once
    live.close()
    assert not answers


def test_polling_gives_the_same_answers(run, decoder, reference, tmp_path):
    result, answers, _ = _live(tmp_path, run, decoder, align="none", poll=0.01)
    assert result.complete
    for a in answers:
        np.testing.assert_allclose(a["probs"], reference[a["trial"]], atol=1e-4)


def test_dicom_volumes_give_the_same_classes(run, decoder, reference, tmp_path):
    pytest.importorskip("pydicom")
    result, answers, problems = _live(tmp_path, run, decoder, fmt="dicom", align="none")
    assert result.complete, problems
    for a in answers:  # uint16 pixels with a rescale slope: values within a quantization step
        np.testing.assert_allclose(a["probs"], reference[a["trial"]], atol=2e-3)


def test_a_missing_volume_makes_only_its_trials_incomplete(run, decoder, replayed, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(replayed, folder)
    live, answers, problems = _stream(
        folder, run, decoder, include_existing=True, align="none", volume_timeout=0.2
    )
    lost = live.schedule.trials[1]
    (folder / volume_file("nii", 1, lost.lo + 2)).unlink()
    result = live.run()
    assert result.answered == len(live.schedule.trials) - 1 and not result.complete
    assert [p.problem for p in result.incomplete if f"event row {lost.row} " in p.problem]
    assert any("never came" in str(p) for p in problems)


def test_a_corrupt_or_foreign_volume_is_skipped_and_reported(run, decoder, replayed, tmp_path):
    folder = tmp_path / "w"
    shutil.copytree(replayed, folder)
    live, _, problems = _stream(
        folder, run, decoder, include_existing=True, align="none", volume_timeout=0.2
    )
    t0, t1 = live.schedule.trials[0], live.schedule.trials[2]
    cut = folder / volume_file("nii", 1, t0.hi + 1)
    cut.write_bytes(cut.read_bytes()[:1000])  # never completes
    other = folder / volume_file("nii", 1, t1.lo + 2)
    import nibabel as nib

    nib.save(
        nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), str(other)
    )  # another grid
    nib.save(
        nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4)),
        str(folder / "img-00002-00001.nii"),
    )
    shutil.copy(folder / volume_file("nii", 1, 5), folder / "img-00001-005.nii")  # volume 5 again
    result = live.run()
    text = [str(p) for p in problems]
    assert any(cut.name in s and "did not decode within" in s for s in text)
    assert any(other.name in s and "differs from the first volume" in s for s in text)
    assert any("another series" in s for s in text)
    assert any("a second file for volume 5" in s for s in text)
    gone = {p.problem.split(" ")[2] for p in result.incomplete}
    assert gone == {str(t0.row), str(t1.row)} and result.answered == len(live.schedule.trials) - 2


def test_trials_beyond_the_end_of_the_run_are_declared_incomplete(run, decoder, replayed, tmp_path):
    sim, atlas = run
    events = tmp_path / "events.tsv"
    events.write_text(sim.events.read_text() + "500.0\t15.0\tpositive\n")
    live = lib.Stream(
        replayed,
        atlas,
        events,
        TR,
        decoder,
        include_existing=True,
        volume_timeout=0.2,
        on_answer=lambda line: None,
    )
    result = live.run()
    assert result.answered == 4 and len(result.incomplete) == 1
    assert "runs past the end of the scan" in result.incomplete[0].problem


def test_running_alignment_starts_once_ten_trials_are_in(decoder):
    rng = np.random.default_rng(0)
    trials = rng.uniform(9000, 10000, (12, 246, 25)).astype(np.float32)
    running = lib.Alignment(decoder, "running")
    words = [running(trials[i : i + 1])[1] for i in range(12)]
    assert words[8].startswith("population") and words[9] == "running (10 trials)"
    from fmri_edge.model.normalize import AlignStats

    subject, _ = lib.Alignment(decoder, "running", min_trials=1)(trials[:1])
    np.testing.assert_allclose(subject[0], AlignStats.of(decoder.represent(trials[:1])).result()[0])
    assert lib.Alignment(decoder, "none")(trials[:1]) == (None, "population")


def test_stats_from_an_earlier_run(decoder, tmp_path):
    rng = np.random.default_rng(1)
    earlier = tmp_path / "calibration.npy"
    np.save(earlier, rng.uniform(9000, 10000, (12, 246, 25)).astype(np.float32))
    a = lib.Alignment(decoder, "stats", [earlier])
    assert a(np.load(earlier)[:1])[1] == "stats-from" and a.subject is not None
    np.save(earlier, np.load(earlier)[:3])
    with pytest.raises(InputError, match="≥ 10 trials"):
        lib.Alignment(decoder, "stats", [earlier])


def test_a_full_disk_keeps_whole_rows_only(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    rows = lib.RowFile(tmp_path / "a.csv")
    answer = lib.Answer(1, 10.0, "neutral", 0, 0, [0.2, 0.5, 0.3], 12, "x.nii", 1.0, "population")
    assert rows.row("P", answer)
    os.dup2(os.open("/dev/full", os.O_WRONLY), rows.fd)  # the disk fills up
    assert not rows.row("P", answer) and "cannot write" in str(rows.error)
    assert (tmp_path / "a.csv").read_text().splitlines()[1] == "P,1,0,0,0.2000,0.5000,0.3000"


def test_send_over_udp_and_tcp_and_a_receiver_that_is_not_listening():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    s = lib.Sender(f"udp://127.0.0.1:{udp.getsockname()[1]}")
    assert s.send('{"trial": 1}')
    assert json.loads(udp.recv(1000)) == {"trial": 1}
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    t = lib.Sender(f"tcp://127.0.0.1:{port}")
    conn, _ = server.accept()
    assert t.send('{"trial": 2}') and json.loads(conn.recv(1000)) == {"trial": 2}
    for sock in (conn, server, udp):
        sock.close()
    t.close()
    with pytest.raises(UsageError, match="no receiver"):
        lib.Sender(f"tcp://127.0.0.1:{port}")
    gone = lib.Sender(
        f"udp://127.0.0.1:{port}"
    )  # nobody listens there: the kernel says so on a later send
    assert not all(gone.send('{"trial": 3}') for _ in range(5)) and "stopped listening" in str(
        gone.error
    )
    with pytest.raises(UsageError, match="udp://HOST:PORT"):
        lib.Sender("http://127.0.0.1:1")


def test_cli_stream_one_line_errors(tmp_path, run):
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    sim, atlas = run
    r = CliRunner().invoke(
        app,
        [
            "stream",
            str(tmp_path / "nope"),
            "--atlas",
            str(atlas),
            "--events",
            str(sim.events),
            "--tr",
            "2",
        ],
    )
    assert r.exit_code == 2 and "watch folder does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_simulate_scanner(tmp_path, run):
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    sim, _ = run
    r = CliRunner().invoke(
        app,
        [
            "simulate",
            "--scanner",
            str(tmp_path),
            "--from",
            str(sim.bold),
            "--tr",
            str(TR),
            "--speed",
            "1e6",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        volume_file("nii", 1, k + 1) for k in range(sim.n_volumes)
    ]
    r = CliRunner().invoke(
        app, ["simulate", "--scanner", str(tmp_path / "no"), "--from", str(sim.bold), "--tr", "2"]
    )
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_cli_stream(tmp_path, run, reference):
    """`stream` as a user runs it while a scanner writes: JSON lines on stdout, rows in --out, exit 0."""
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    sim, atlas = run
    player = threading.Timer(0.5, replay, args=(sim.bold, tmp_path, TR, SPEED))
    player.start()
    try:
        r = CliRunner().invoke(
            app,
            [
                "stream",
                str(tmp_path),
                "--atlas",
                str(atlas),
                "--events",
                str(sim.events),
                "--tr",
                str(TR),
                "--no-align",
                "--no-realign",
                "--volume-timeout",
                "2",
                "--out",
                str(tmp_path.parent / "a.csv"),
                "--participant",
                "P21",
            ],
        )
    finally:
        player.join()
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(a["trial"] for a in lines) == sorted(reference)
    assert {"trial", "onset", "CLASS", "LEVEL", "probs", "volume", "latency_ms"} <= set(lines[0])
    assert lines[0]["participant"] == "P21" and "answered 4 of 4" in r.stderr
    assert len((tmp_path.parent / "a.csv").read_text().splitlines()) == 5


def test_sigterm_leaves_whole_rows_and_exit_143(run, decoder, replayed, tmp_path):
    """A stream stopped by SIGTERM (or Ctrl-C) mid-run: the answers so far are on disk, whole rows."""
    import signal
    import subprocess
    import sys
    import time

    sim, atlas = run
    live, _, _ = _stream(replayed, run, decoder)
    first_two = max(t.hi for t in live.schedule.trials[:2])
    live.close()
    folder = tmp_path / "w"
    folder.mkdir()
    for k in range(first_two + 1):
        shutil.copy(replayed / volume_file("nii", 1, k + 1), folder)
    out = tmp_path / "a.csv"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmri_edge.cli",
            "stream",
            str(folder),
            "--atlas",
            str(atlas),
            "--events",
            str(sim.events),
            "--tr",
            str(TR),
            "--out",
            str(out),
            "--include-existing",
            "--no-realign",
            "--volume-timeout",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not out.exists() or len(out.read_text().splitlines()) < 3
    ):
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    rows = out.read_text().splitlines()
    assert (
        len(rows) == 3
        and all(len(r.split(",")) == 7 for r in rows)
        and out.read_text().endswith("\n")
    )
    assert len(stdout.splitlines()) == 2


def test_dicom_reader_siemens_mosaic_and_a_partial_file(tmp_path):
    """The Siemens mosaic that ships inside nibabel (ideacmdtool's kind of file) unpacks to a volume;
    the same file cut short parses its header but not its pixels: one line naming the file."""
    pytest.importorskip("pydicom")
    import gzip

    import nibabel

    from fmri_edge.imaging import dicom

    src = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "siemens_dwi_0.dcm.gz"
    if not src.is_file():
        pytest.skip("nibabel's test DICOM is not installed")
    whole = tmp_path / "001_000005_000001.dcm"
    whole.write_bytes(gzip.decompress(src.read_bytes()))
    data, affine, series = dicom.read_volume(whole)
    assert (
        data.shape == (128, 128, 48)
        and data.dtype == np.float32
        and affine.shape == (4, 4)
        and series
    )
    part = tmp_path / "001_000005_000002.dcm"
    part.write_bytes(whole.read_bytes()[: whole.stat().st_size - 10_000])
    with pytest.raises(InputError, match="001_000005_000002.dcm: not a readable DICOM volume"):
        dicom.read_volume(part)


def test_a_dicom_of_another_series_is_refused(run, decoder, tmp_path):
    pytest.importorskip("pydicom")
    import nibabel as nib

    from fmri_edge.imaging import dicom

    sim, _ = run
    replay(sim.bold, tmp_path, TR, speed=1e6, fmt="dicom", split_every=0)
    img = nib.load(str(sim.bold))
    stray = tmp_path / volume_file("dicom", 1, 3)
    stray.write_bytes(dicom.Encoder(img.affine, img.shape[:3])(np.asarray(img.dataobj[..., 2]), 3))
    live, _, problems = _stream(
        tmp_path, run, decoder, include_existing=True, align="none", volume_timeout=0.2
    )
    result = live.run()
    assert any(stray.name in str(p) and "another series" in str(p) for p in problems)
    assert result.answered == len([t for t in live.schedule.trials if not t.lo <= 2 <= t.hi])


def test_dicom_fast_path_reads_what_nibabel_reads(run, tmp_path):
    """After the first volume of an enhanced series, volumes with the same geometry and scaling are
    read from their pixel data directly: the same arrays as nibabel's wrappers give; a cut file is an
    error naming it; another geometry goes through nibabel again."""
    pytest.importorskip("pydicom")
    from fmri_edge.imaging import dicom

    sim, _ = run
    replay(sim.bold, tmp_path, TR, speed=1e6, fmt="dicom", split_every=0)
    files = sorted(tmp_path.iterdir())[:4]
    reader = dicom.Reader()
    for f in files:
        fast, slow = reader(f), dicom.read_volume(f)
        np.testing.assert_array_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
        assert fast[2] == slow[2]
    assert reader.template is not None
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(files[1].read_bytes()[:-3000])
    with pytest.raises(InputError, match="cut.dcm: not a readable DICOM volume"):
        reader(cut)


@pytest.mark.parametrize("tr, ref", [(2.0, 0.0), (2.0, 0.5), (0.8, 0.0), (1.3, 0.25)])
def test_the_schedule_cuts_each_trial_as_extract_cuts_the_whole_run(tmp_path, decoder, tr, ref):
    """With only the volumes up to the one right of its last sample, each trial is the trial extract
    cuts from the whole run; and that volume is the first one it could be answered at."""
    rng = np.random.default_rng(int(tr * 10 + ref * 4))
    onsets = np.sort(rng.uniform(5.0, 200.0, 25))
    events = tmp_path / "events.tsv"
    events.write_text(
        "onset\tduration\ttrial_type\n" + "".join(f"{o:.3f}\t15\tx\n" for o in onsets)
    )
    ev = extract.read_events(events)
    window = extract.Window.from_model(decoder.info)
    n = int(np.ceil(260 / tr))
    signals = rng.uniform(500, 15000, (n, 246))
    whole, keep, _ = extract.cut_trials(
        extract.volume_times(n, tr, ref), signals, ev, window, "run"
    )
    schedule = lib.Schedule(ev, window, tr, ref)
    assert [t.i for t in schedule.trials] == keep.tolist()
    for t, want in zip(schedule.trials, whole):
        np.testing.assert_allclose(schedule.cut(t, signals)[0], want, rtol=1e-6)
        last_sample = t.onset + window.offsets()[-1]
        times = extract.volume_times(t.hi + 1, tr, ref)
        assert times[-1] >= last_sample - 1e-6 and (t.hi == 0 or times[-2] < last_sample - 1e-6)
