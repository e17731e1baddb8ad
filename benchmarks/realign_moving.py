"""A replayed moving run in native space: is the motion estimated, and do the answers survive it?

Builds (once, into --work) a native-space EPI-like run (fmri_edge.simulation.native_sim): nilearn's MNI152 T1
on an oblique 64×64×36 grid of 3.5 mm voxels, the real Brainnetome atlas (../shared/data/icbhi2024)
put on that grid by nearest neighbour, and the region means of real ICBHI trials (--participants,
30 trials each, one after the other, 25 s apart; each trial scaled to one level per region) painted into their regions with the anatomy's contrast between regions (native_sim.paint), TR 2 s, 0.5 % voxel noise.
Then replays it with `simulate --scanner`'s replay (fmri_edge.simulation.replay, as fast as it can write) twice:
still, and with the head moved by a known trace (default: the built-in drift to 2 mm / 2° plus a
2 mm jump, `motion.drift_trace`; or --trace TRACE.tsv). Each folder is streamed (all volumes already
there, --include-existing) with and without realignment, answering every trial with --no-align.

Reports per volume the mean displacement (over the brain's voxels) between the estimated and the
true motion, and the share of trials whose CLASS equals the still run's without realignment (which
is extract + predict --no-align's answer, tests/test_stream.py), for: still + realign, moving +
realign, moving + --no-realign, and moving with the atlas moved by the true motion (the ceiling set by
partial volumes, whatever the estimator). Also the largest |Δp| between still + realign and still + no-realign.

    .venv/bin/python benchmarks/realign_moving.py --work scratch/bench-moving --json benchmarks/results/realign_moving.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "icbhi2024"
TR = 2.0


def signals_and_events(participants: list[str], work: Path) -> tuple[np.ndarray, Path, int]:
    trials = np.concatenate(
        [np.load(DATA / "Train" / p / "fMRI_data.npz")["data"] for p in participants]
    )
    n, r, t = trials.shape  # (N, 246, 25): seconds −5 … 19 of each trial
    # each trial on one level per region (the mean over all trials): the ICBHI trials come from separate
    # recordings whose region levels jump by several % from trial to trial, a contrast change that no real
    # run has and that a realigner reads as motion; within each trial, the signal is the real one.
    # native_sim paints it with the anatomy's contrast between regions (contrast="anatomy")
    level = trials.mean(axis=(0, 2))
    trials = trials / trials.mean(axis=2, keepdims=True) * level[None, :, None]
    seconds = np.concatenate([tr_.T for tr_ in trials])  # (N·25, 246), one row per second
    n_vol = len(seconds) // int(TR)
    signals = seconds[:: int(TR)][:n_vol]  # volume k at 2k s
    onsets = 5.0 + 25.0 * np.arange(n)
    keep = onsets + 19 <= (n_vol - 1) * TR
    events = work / "events.tsv"
    events.write_text(
        "onset\tduration\ttrial_type\n" + "".join(f"{o:.1f}\t15\tvideo\n" for o in onsets[keep])
    )
    return signals, events, int(keep.sum())


def stream(
    folder: Path,
    atlas: Path,
    events: Path,
    realign: bool,
    motion_out: Path | None = None,
    align: str = "none",
):
    from fmri_edge.model.runtime import Model
    from fmri_edge.realtime.stream import Stream

    answers = []
    live = Stream(
        folder,
        atlas,
        events,
        TR,
        Model(threads=1),
        align=align,
        include_existing=True,
        volume_timeout=1.0,
        on_answer=answers.append,
        realign=realign,
        motion_out=motion_out,
        force=True,
    )
    result = live.run()
    return {a["trial"]: a for a in map(json.loads, answers)}, result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("scratch/bench-moving"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--participants", default="P01,P02")
    ap.add_argument("--trace", type=Path, help="a motion TSV (default: the built-in drift)")
    ap.add_argument(
        "--align",
        default="none",
        choices=("none", "running"),
        help="stream's subject alignment (none: --no-align, as the comparison with extract + predict)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import nibabel as nib

    from fmri_edge.imaging import motion
    from fmri_edge.realtime import realign
    from fmri_edge.simulation import native_sim
    from fmri_edge.simulation.replay import replay

    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the ICBHI data are not there")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    signals, events, n_trials = signals_and_events(args.participants.split(","), work)
    run = work / "run"
    if not (run / "bold.nii").exists():
        native_sim.write_run(run, signals, TR, atlas=DATA / "BN_Atlas_246_1mm.nii.gz")
    atlas = run / "atlas_native.nii.gz"
    img = nib.load(str(run / "bold.nii"))
    n_vol = img.shape[3]
    trace = motion.read_trace(args.trace) if args.trace else motion.drift_trace(n_vol)
    motion.write_trace(work / "truth.tsv", trace[:n_vol])
    folders = {"still": work / "still", "moving": work / "moving"}
    for name, folder in folders.items():
        if not folder.exists():
            folder.mkdir()
            replay(
                run / "bold.nii",
                folder,
                TR,
                speed=1e6,
                split_every=0,
                motion=trace if name == "moving" else None,
            )
    load = [os.getloadavg()]
    base, _ = stream(folders["still"], atlas, events, realign=False, align=args.align)
    still, r_still = stream(folders["still"], atlas, events, realign=True, align=args.align)
    moving, r_moving = stream(
        folders["moving"],
        atlas,
        events,
        realign=True,
        align=args.align,
        motion_out=work / "motion.tsv",
    )
    moving_raw, _ = stream(folders["moving"], atlas, events, realign=False, align=args.align)
    # the ceiling: the atlas moved by the TRUE motion (the estimator replaced by the truth)
    estimate = realign.Realigner.estimate
    count = iter(range(n_vol))
    realign.Realigner.estimate = lambda self, data, affine=None, start=None: motion.spm_matrix(
        trace[next(count)]
    )
    try:
        moving_true, _ = stream(folders["moving"], atlas, events, realign=True, align=args.align)
    finally:
        realign.Realigner.estimate = estimate
    load.append(os.getloadavg())

    est = np.loadtxt(work / "motion.tsv", skiprows=1, usecols=range(2, 8))
    brain = np.asarray(nib.load(str(atlas)).dataobj) > 0
    pts = (np.c_[np.argwhere(brain), np.ones(brain.sum())] @ img.affine.T)[:, :3]
    err = np.array(
        [
            realign.mean_displacement(motion.spm_matrix(e), motion.spm_matrix(t), pts)
            for e, t in zip(est, trace[:n_vol])
        ]
    )
    size = np.array(
        [realign.mean_displacement(np.eye(4), motion.spm_matrix(t), pts) for t in trace[:n_vol]]
    )

    def agree(answers):
        same = [answers[k]["CLASS"] == base[k]["CLASS"] for k in base if k in answers]
        return {
            "same_class": int(sum(same)),
            "of": len(base),
            "share": round(float(np.mean(same)), 4),
        }

    fd_true = motion.fd_series(trace[:n_vol])
    flagged_true = sum(
        bool((fd_true[int(a["volume"]) - 12 : int(a["volume"]) + 1] > 0.5).any())
        for a in moving.values()
    )
    out = {
        "command": "python benchmarks/realign_moving.py " + " ".join(sys.argv[1:]),
        "trials_with_true_fd_over_0.5": int(flagged_true),
        "align": args.align,
        "grid": list(img.shape[:3]),
        "voxel_mm": 3.5,
        "volumes": n_vol,
        "trials": n_trials,
        "tr_s": TR,
        "trace": str(args.trace) if args.trace else "motion.drift_trace (built in)",
        "true_motion_mm": {
            "max_mean_displacement": round(float(size.max()), 3),
            "max_trans_mm": round(float(np.abs(trace[:, :3]).max()), 3),
            "max_rot_deg": round(float(np.rad2deg(np.abs(trace[:, 3:]).max())), 3),
            "largest_fd": round(float(fd_true.max()), 3),
        },
        "estimate_error_mm": {
            "mean": round(float(err.mean()), 4),
            "p50": round(float(np.median(err)), 4),
            "max": round(float(err.max()), 4),
            "volumes_within_0.2": f"{int((err <= 0.2).sum())}/{len(err)}",
        },
        "class_vs_still_no_realign": {
            "still_realign": agree(still),
            "moving_realign": agree(moving),
            "moving_no_realign": agree(moving_raw),
            "moving_true_motion": agree(moving_true),
        },
        "still_realign_max_prob_diff": round(
            float(
                max(np.abs(np.subtract(still[k]["probs"], base[k]["probs"])).max() for k in base)
            ),
            6,
        ),
        "moving_flagged_answers": r_moving.flagged,
        "still_flagged_answers": r_still.flagged,
        "realign_ms_p50": round(float(np.median(r_moving.timing.realign_ms)), 2),
        "load_average": {
            "before": [round(x, 2) for x in load[0]],
            "after": [round(x, 2) for x in load[1]],
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
