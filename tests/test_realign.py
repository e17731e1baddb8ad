"""Realignment in `fmri-edge stream`: motion estimated per volume, region means from the atlas moved
by it, motion reported (--motion-out, fd_max, motion_flag), moving runs replayed (simulate --motion),
the series chosen by volume number. Small native-space phantoms (32×32×20 voxels of 6 mm)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nibabel")
pytest.importorskip("nilearn")
pytest.importorskip("scipy")

from fmri_edge.imaging import extract  # noqa: E402
from fmri_edge.imaging import motion
from fmri_edge.realtime import realign
from fmri_edge.simulation import native_sim
from fmri_edge.realtime import stream as lib  # noqa: E402
from fmri_edge.errors import InputError  # noqa: E402
from fmri_edge.simulation.replay import replay, volume_file  # noqa: E402
from fmri_edge.model.runtime import Model  # noqa: E402
from fmri_edge.realtime.watch import VolumeFolder  # noqa: E402

TR = 2.0
SHAPE, VOXEL = (32, 32, 20), 6.0
SKYRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtcloud-sample"


@pytest.fixture(scope="module")
def decoder():
    return Model()


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """A still native-space run on an oblique grid (4 events, 62 volumes), its atlas and events."""
    root = tmp_path_factory.mktemp("native")
    rng = np.random.default_rng(0)
    onsets = 9.3 + 28.0 * np.arange(4)
    n_vol = int((onsets[-1] + 22) / TR) + 1
    t = np.arange(n_vol) * TR
    level = rng.uniform(6000, 12000, 246)
    valence = np.array([-1, 1, 0, 1.0])
    bump = np.exp(-((((t[:, None] - onsets[None]) - 8.0) / 4.0) ** 2)) @ (0.02 * valence)
    rel = 0.005 * np.sin(2 * np.pi * t[:, None] / rng.uniform(20, 60, 246) + rng.uniform(0, 6, 246))
    rel[:, [14, 15, 86, 87]] += bump[:, None]
    run = native_sim.write_run(root, level[None] * (1 + rel), TR, SHAPE, VOXEL, noise=0.002)
    events = root / "events.tsv"
    events.write_text(
        "onset\tduration\ttrial_type\n" + "".join(f"{o:.1f}\t15\tx\n" for o in onsets)
    )
    run["events"] = events
    run["n"] = n_vol
    return run


@pytest.fixture(scope="module")
def reference_answers(native, decoder, tmp_path_factory):
    from fmri_edge.decoding.answers import Batch, predict

    window = extract.Window.from_model(decoder.info)
    r = extract.extract_run(
        native["bold"], extract.Atlas(native["atlas"], window.n_regions), native["events"], window
    )
    trials = extract.save_trials(tmp_path_factory.mktemp("x") / "trials.npz", [r])
    probs = np.concatenate(
        [b.class_probs for b in predict(decoder, [trials], align=False) if isinstance(b, Batch)]
    )
    return {i + 1: p for i, p in enumerate(probs)}


def _folder(native, tmp_path, trace=None, name="w"):
    folder = tmp_path / name
    folder.mkdir()
    replay(native["bold"], folder, TR, speed=1e6, split_every=0, motion=trace)
    return folder


def _stream(folder, native, decoder, **kw):
    answers = []
    live = lib.Stream(
        folder,
        native["atlas"],
        native["events"],
        TR,
        decoder,
        align="none",
        include_existing=True,
        volume_timeout=0.3,
        on_answer=answers.append,
        **kw,
    )
    return live, live.run(), [json.loads(a) for a in answers]


def _brain_points(native):
    import nibabel as nib

    labels = np.asarray(nib.load(str(native["atlas"])).dataobj) > 0
    return (np.c_[np.argwhere(labels), np.ones(labels.sum())] @ native["affine"].T)[:, :3]


def test_spm_parameters_round_trip():
    p = np.array([1.5, -2.0, 0.7, 0.03, -0.02, 0.05])
    np.testing.assert_allclose(motion.spm_params(motion.spm_matrix(p)), p, atol=1e-12)
    m = motion.spm_matrix(p)
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)


def test_framewise_displacement_is_powers():
    a, b = np.zeros(6), np.array([0.1, -0.2, 0.3, 0.01, 0.0, -0.02])
    assert motion.framewise_displacement(b, a) == pytest.approx(0.6 + 50 * 0.03)
    assert motion.framewise_displacement(b, None) == 0.0
    np.testing.assert_allclose(motion.fd_series(np.stack([a, b, b])), [0, 2.1, 0])


def test_realigner_recovers_known_moves_up_to_3_mm_3_degrees(native):
    import nibabel as nib

    img = nib.load(str(native["bold"]))
    ref = np.asarray(img.dataobj[..., 0])
    pts = _brain_points(native)
    r = realign.Realigner(ref, img.affine)
    for p in (
        [0.5, 0, 0, 0, 0, 0],
        [1, -1, 1, *np.deg2rad([1, -1, 1])],
        [3, 2, -3, *np.deg2rad([3, -2, 3])],
    ):
        moved = motion.move_volume(ref, img.affine, p)
        m = r.estimate(moved, start=np.eye(4))  # no help from a previous volume
        assert realign.mean_displacement(m, motion.spm_matrix(p), pts) < 0.2
        assert realign.mean_displacement(np.eye(4), motion.spm_matrix(p), pts) > 0.4


def test_moved_regions_at_zero_motion_are_extracts_means(native):
    import nibabel as nib

    from fmri_edge.imaging.volumes import RegionIndex

    img = nib.load(str(native["bold"]))
    labels = np.asarray(nib.load(str(native["atlas"])).dataobj)
    vol = np.asarray(img.dataobj[..., 3], dtype=np.float32)
    moved = realign.MovedRegions(labels, img.affine, 246)
    np.testing.assert_allclose(
        moved.means(vol, img.affine, np.eye(4)), RegionIndex(labels, 246).means(vol), rtol=1e-9
    )
    m = motion.spm_matrix(
        [0.5, -0.3, 0.2, 0.004, 0, -0.003]
    )  # moved: the same whatever the memory order
    a = realign.MovedRegions(np.asfortranarray(labels), img.affine, 246).means(vol, img.affine, m)
    b = realign.MovedRegions(np.ascontiguousarray(labels), img.affine, 246).means(
        vol, img.affine, m
    )
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert np.isfinite(a).all() and not np.allclose(
        a, moved.means(vol, img.affine, np.eye(4)), rtol=1e-4
    )


def test_still_run_realigned_answers_as_extract_and_predict(
    native, decoder, reference_answers, tmp_path
):
    """No motion, realignment on: same CLASS, probabilities within 1e-3 of extract + predict --no-align."""
    live, result, answers = _stream(
        _folder(native, tmp_path), native, decoder, motion_out=tmp_path / "m.tsv"
    )
    assert result.complete and len(answers) == len(reference_answers)
    for a in answers:
        want = reference_answers[a["trial"]]
        assert a["CLASS"] == [-1, 0, 1][int(np.argmax(want))]
        np.testing.assert_allclose(a["probs"], want, atol=1e-3)
        assert a["motion_flag"] is False and a["fd_max"] < 0.05
    rows = (tmp_path / "m.tsv").read_text().splitlines()
    assert rows[0].split("\t") == [
        "volume",
        "file",
        "trans_x",
        "trans_y",
        "trans_z",
        "rot_x",
        "rot_y",
        "rot_z",
        "framewise_displacement",
    ]
    assert len(rows) == native["n"] + 1 and rows[1].split("\t")[:2] == [
        "0",
        volume_file("nii", 1, 1),
    ]


def test_moving_run_motion_is_estimated_and_reported(native, decoder, tmp_path):
    trace = motion.drift_trace(native["n"], seed=1)
    folder = _folder(native, tmp_path, trace)
    live, result, answers = _stream(
        folder, native, decoder, motion_out=tmp_path / "m.tsv", fd_threshold=0.5
    )
    assert result.complete
    est = np.loadtxt(tmp_path / "m.tsv", skiprows=1, usecols=range(2, 9))
    pts = _brain_points(native)
    err = [
        realign.mean_displacement(motion.spm_matrix(e[:6]), motion.spm_matrix(t), pts)
        for e, t in zip(est, trace)
    ]
    assert max(err) < 0.2
    fd = est[:, 6]
    np.testing.assert_allclose(
        fd, motion.fd_series(est[:, :6]), atol=2e-4
    )  # the file holds 6 decimals
    for a in answers:
        t = next(t for t in live.schedule.trials if t.row == a["trial"])
        assert a["fd_max"] == pytest.approx(fd[t.lo : t.hi + 1].max(), abs=1e-4)
        assert a["motion_flag"] == bool(fd[t.lo : t.hi + 1].max() > 0.5)
    assert (
        result.flagged == sum(a["motion_flag"] for a in answers) > 0
    )  # the jump is in some window


def test_reference_and_dummy_scans(native, decoder, tmp_path):
    """--reference: motion relative to that volume; --dummy-scans: the reference is the first volume after them."""
    import nibabel as nib

    trace = np.zeros((native["n"], 6))
    trace[:, 0] = 1.0  # the whole run 1 mm to the right of the reference scan
    folder = _folder(native, tmp_path, trace)
    img = nib.load(str(native["bold"]))
    ref = tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj[..., 0]), img.affine), str(ref))
    _, result, _ = _stream(folder, native, decoder, reference=ref, motion_out=tmp_path / "m.tsv")
    est = np.loadtxt(tmp_path / "m.tsv", skiprows=1, usecols=range(2, 8))
    assert result.complete and np.abs(est[:, 0] - 1.0).max() < 0.1
    trace[:3, 0] = 0.0  # dummy scans before the head settled
    folder = _folder(native, tmp_path, trace, "w2")
    _, result, _ = _stream(folder, native, decoder, dummy_scans=3, motion_out=tmp_path / "m2.tsv")
    rows = np.loadtxt(tmp_path / "m2.tsv", skiprows=1, usecols=(0, 2))
    assert result.complete and rows[:, 0].tolist() == list(
        range(native["n"])
    )  # every volume, in order
    assert np.abs(rows[3:, 1]).max() < 0.1 and np.abs(rows[:3, 1] + 1.0).max() < 0.1


def test_a_reference_that_cannot_be_read_is_one_error(native, decoder, tmp_path):
    bad = tmp_path / "ref.nii"
    bad.write_bytes(b"not nifti")
    with pytest.raises(InputError, match="ref.nii"):
        lib.Stream(tmp_path, native["atlas"], native["events"], TR, decoder, reference=bad)


def test_motion_traces_read_and_refused(tmp_path):
    good = motion.write_trace(tmp_path / "t.tsv", motion.drift_trace(50))
    np.testing.assert_allclose(motion.read_trace(good), motion.drift_trace(50), atol=1e-6)
    trace = motion.drift_trace(400)
    assert np.abs(trace[:, :3]).max() <= 3.0 and np.rad2deg(np.abs(trace[:, 3:]).max()) <= 3.0
    assert motion.fd_series(trace).max() > 2.0  # the jump
    (tmp_path / "bad.tsv").write_text("trans_x\ttrans_y\n0\t0\n")
    with pytest.raises(InputError, match="bad.tsv: motion trace has no column"):
        motion.read_trace(tmp_path / "bad.tsv")


def test_another_series_arriving_with_the_first_volume_does_not_capture_the_stream(tmp_path):
    (tmp_path / "img-00002-00037.nii").write_bytes(b"x")  # the last volume of the previous series
    (tmp_path / "img-00003-00001.nii").write_bytes(b"x")  # the run's first volume
    feed = VolumeFolder(tmp_path, lambda p: (None, None, None), poll=0.01)
    feed.start = None
    items = list(feed.collect())
    assert feed.series == "img-00003-#.nii"
    assert any("another series" in str(i) for i in items if isinstance(i, InputError))
    chosen = VolumeFolder(tmp_path, lambda p: (None, None, None), poll=0.01, series_choice="2")
    list(chosen.collect())
    assert chosen.series == "img-00002-#.nii"


def test_cli_simulate_scanner_with_motion(native, tmp_path):
    from typer.testing import CliRunner

    from fmri_edge.cli import app

    out = tmp_path / "w"
    out.mkdir()
    r = CliRunner().invoke(
        app,
        [
            "simulate",
            "--scanner",
            str(out),
            "--from",
            str(native["bold"]),
            "--tr",
            "2",
            "--speed",
            "1e6",
            "--motion",
            "drift",
            "--motion-truth",
            str(tmp_path / "truth.tsv"),
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert len(list(out.iterdir())) == native["n"]
    np.testing.assert_allclose(
        motion.read_trace(tmp_path / "truth.tsv"), motion.drift_trace(native["n"]), atol=1e-6
    )
    (tmp_path / "bad.tsv").write_text("nothing\n")
    r = CliRunner().invoke(
        app,
        [
            "simulate",
            "--scanner",
            str(out),
            "--from",
            str(native["bold"]),
            "--tr",
            "2",
            "--motion",
            str(tmp_path / "bad.tsv"),
        ],
    )
    assert r.exit_code == 2 and "bad.tsv" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not SKYRA.is_dir(), reason=f"the real Skyra series is not at {SKYRA}")
def test_real_skyra_series_motion_and_a_truncated_file(tmp_path, decoder):
    """The real mosaic series: every volume realigned (small real drift, < 1 mm); the truncated copy of
    volume 5 is retried until --volume-timeout, then reported, and never read."""
    pytest.importorskip("pydicom")
    import nibabel as nib

    from fmri_edge.imaging import dicom

    folder = tmp_path / "w"
    folder.mkdir()
    for k in range(1, 11):
        src = SKYRA / (
            "truncated/trunc_001_000013_000005.dcm" if k == 5 else f"001_000013_{k:06d}.dcm"
        )
        shutil.copy(src, folder / f"001_000013_{k:06d}.dcm")
    data, affine, _ = dicom.read_volume(folder / "001_000013_000001.dcm")
    head = data > data.mean()
    labels = np.zeros(data.shape, np.int16)
    ijk = np.argwhere(head)
    labels[tuple(ijk.T)] = 1 + np.arange(len(ijk)) * 246 // len(ijk)  # 246 slabs of the head
    atlas = tmp_path / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), str(atlas))
    events = tmp_path / "events.tsv"
    events.write_text(
        "onset\tduration\ttrial_type\n6\t15\tx\n"
    )  # needs more volumes than the series has
    problems = []
    live = lib.Stream(
        folder,
        atlas,
        events,
        1.5,
        decoder,
        include_existing=True,
        volume_timeout=0.5,
        motion_out=tmp_path / "m.tsv",
        on_answer=lambda line: None,
        on_problem=problems.append,
    )
    live.run()
    rows = [r.split("\t") for r in (tmp_path / "m.tsv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 5, 6, 7, 8, 9]  # volume 5 (index 4) never read
    assert any("000005.dcm" in str(p) and "did not decode within" in str(p) for p in problems)
    assert live.feed.pending == {} and all(float(r[8]) < 0.5 for r in rows)


@pytest.mark.skipif(not SKYRA.is_dir(), reason=f"the real Skyra series is not at {SKYRA}")
def test_real_skyra_motion_agrees_with_spm_realign():
    """fmri-edge's realignment against SPM's (python-rtspm, the oracle extra): within 0.1 mm mean
    displacement per volume on the real series (benchmarks/realign_oracle.py measures it)."""
    pytest.importorskip("pydicom")
    pytest.importorskip("rtspm")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from realign_oracle import SPM

    from fmri_edge.imaging import dicom

    vols = [dicom.read_volume(SKYRA / f"001_000013_{k:06d}.dcm") for k in range(1, 11)]
    ref, affine = vols[0][0], vols[0][1]
    head = ref > ref.mean()
    pts = (np.c_[np.argwhere(head), np.ones(head.sum())] @ affine.T)[:, :3]
    ours, spm = realign.Realigner(ref, affine), SPM(ref, affine)
    moves = []
    for data, aff, _ in vols[1:]:
        a, b = ours.estimate(data, aff), spm.estimate(data)
        assert realign.mean_displacement(a, b, pts) < 0.1
        moves.append(realign.mean_displacement(b, np.eye(4), pts))
    assert max(moves) > 0.2  # the series really drifts: the agreement is not two zeros


def test_live_view_shows_volumes_fd_latency_and_flagged_answers():
    import io

    from rich.console import Console

    from fmri_edge.cli.liveview import LiveView

    buf = io.StringIO()
    view = LiveView(0.5, Console(file=buf, force_terminal=True, width=120))
    with view:
        view.volume({"volume": 0, "file": "img-00001-00001.nii", "fd": 0.0, "realign_ms": 4.2})
        view.volume({"volume": 1, "file": "img-00001-00002.nii", "fd": 0.9, "realign_ms": 5.0})
        view.answer(
            json.dumps(
                {
                    "trial": 3,
                    "onset": 40.6,
                    "CLASS": -1,
                    "LEVEL": -2,
                    "probs": [0.7, 0.2, 0.1],
                    "latency_ms": 12.3,
                    "fd_max": 0.9,
                    "motion_flag": True,
                }
            )
        )
        view.problem(InputError(Path("x.nii"), "did not decode", outcome="skipped"))
    text = buf.getvalue()
    assert "img-00001-00002.nii" in text and "0.900 mm" in text and "1 flagged" in text
    assert "0.90 !" in text and "x.nii: did not decode" in text and "12.3 ms" in text
