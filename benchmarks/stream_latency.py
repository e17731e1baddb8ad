"""Latency of `fmri-edge stream` at the scanner's pace (needs the nifti extra; realtime for file events).

Writes (once, into --work) a 97×115×97 float32 run (the MNI152NLin2009cAsym 2 mm grid size) of
--volumes volumes at TR 1 s, a 246-label atlas on the same grid (extract_speed.py's), and events
one second apart from 5 s on, so that every volume from the 30th on completes exactly one trial's
25-s window. Then `fmri-edge simulate --scanner` (another process) replays the run into an empty
folder at TR pace (every third volume written in place in two halves with a pause), while the
stream runs here, in this process, and answers each trial.

`--grid epi` writes instead a native-space EPI-like run of 64×64×36 voxels of 3.5 mm on an oblique
grid (fmri_edge.simulation.native_sim: nilearn's MNI152 T1, the Brainnetome atlas from ../shared/data/icbhi2024
when present, else 246 Voronoi parcels). Realignment is on (stream's default) unless --no-realign.

Recorded per volume: the read (decode), realign (motion estimate) and reduce (246 region means) times; per answer: the latency
from the file that completed the trial's window becoming complete (its mtime) to the answer (JSON
line out, row on disk); p50 / p99 / max.

    .venv/bin/python benchmarks/stream_latency.py --work scratch/bench-stream --json benchmarks/results/stream_latency.json

Not a test: timings depend on the machine and on what else runs on it (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# as `fmri-edge stream` (fmri_edge/cli/__init__.py: SMALL_NUMPY_COMMANDS) does before numpy is imported:
# OpenBLAS's thread pool only waits for a core here
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import SHAPE_2MM, _affine, atlas  # noqa: E402

TR = 1.0


def make_epi(work: Path, n_volumes: int) -> dict[str, Path]:
    from fmri_edge.simulation import native_sim

    work.mkdir(parents=True, exist_ok=True)
    files = {
        "bold": work / f"epi_{n_volumes}" / "bold.nii",
        "atlas": work / f"epi_{n_volumes}" / "atlas_native.nii.gz",
        "events": work / "events.tsv",
    }
    if not files["bold"].exists():
        rng = np.random.default_rng(0)
        signals = rng.uniform(6000, 12000, 246)[None] * (
            1 + 0.01 * rng.standard_normal((n_volumes, 246))
        )
        bn = (
            Path(__file__).resolve().parents[2]
            / "shared"
            / "data"
            / "icbhi2024"
            / "BN_Atlas_246_1mm.nii.gz"
        )
        native_sim.write_run(files["bold"].parent, signals, TR, atlas=bn if bn.exists() else None)
    onsets = np.arange(5.0, n_volumes - 20.0, 1.0)
    files["events"].write_text(
        "onset\tduration\ttrial_type\n" + "".join(f"{o:.1f}\t15\tvideo\n" for o in onsets)
    )
    return files


def make(work: Path, n_volumes: int) -> dict[str, Path]:
    import nibabel as nib

    work.mkdir(parents=True, exist_ok=True)
    files = {
        "bold": work / f"bold_{n_volumes}.nii",
        "atlas": work / "atlas_2mm.nii.gz",
        "events": work / "events.tsv",
    }
    labels = atlas(SHAPE_2MM, 2.0)
    if not files["atlas"].exists():
        nib.save(nib.Nifti1Image(labels, _affine(2.0, SHAPE_2MM)), str(files["atlas"]))
    if not files["bold"].exists():
        rng = np.random.default_rng(0)
        base = np.where(labels > 0, 9500.0, 30.0).astype(np.float32)
        data = np.empty(SHAPE_2MM + (n_volumes,), dtype=np.float32)
        for k in range(n_volumes):
            data[..., k] = base * (1 + 0.01 * rng.standard_normal(SHAPE_2MM, dtype=np.float32))
        img = nib.Nifti1Image(data, _affine(2.0, SHAPE_2MM))
        img.header.set_zooms((2.0, 2.0, 2.0, TR))
        img.header.set_xyzt_units("mm", "sec")
        nib.save(img, str(files["bold"]))
    onsets = np.arange(5.0, n_volumes - 20.0, 1.0)
    files["events"].write_text(
        "onset\tduration\ttrial_type\n" + "".join(f"{o:.1f}\t15\tvideo\n" for o in onsets)
    )
    return files


def stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {
        "n": int(v.size),
        "p50": round(float(np.percentile(v, 50)), 2),
        "p99": round(float(np.percentile(v, 99)), 2),
        "max": round(float(v.max()), 2),
        "mean": round(float(v.mean()), 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("scratch/bench-stream"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--volumes", type=int, default=90)
    ap.add_argument(
        "--poll", type=float, default=None, help="poll the folder instead of file events"
    )
    ap.add_argument("--format", default="nii", choices=("nii", "dicom"))
    ap.add_argument(
        "--grid",
        default="2mm",
        choices=("2mm", "epi"),
        help="97×115×97 (2mm) or 64×64×36 at 3.5 mm (epi)",
    )
    ap.add_argument("--no-realign", action="store_true")
    ap.add_argument(
        "--motion",
        help="the replay moves the head: a trace TSV or 'drift' (simulate --scanner --motion)",
    )
    args = ap.parse_args()

    from fmri_edge.model.runtime import Model
    from fmri_edge.realtime.stream import Stream

    files = (
        make_epi(args.work, args.volumes) if args.grid == "epi" else make(args.work, args.volumes)
    )
    watch = args.work / "watch"
    if watch.exists():
        for p in watch.iterdir():
            p.unlink()
    watch.mkdir(exist_ok=True)
    problems = []
    live = Stream(
        watch,
        files["atlas"],
        files["events"],
        TR,
        Model(threads=1),
        align="running",
        out=args.work / "answers.csv",
        force=True,
        volume_timeout=5.0,
        poll=args.poll,
        on_answer=lambda line: None,
        on_problem=problems.append,
        realign=not args.no_realign,
    )
    exe = str(Path(sys.executable).with_name("fmri-edge"))
    load_before = os.getloadavg()
    player = subprocess.Popen(
        [
            exe,
            "simulate",
            "--scanner",
            str(watch),
            "--from",
            str(files["bold"]),
            "--tr",
            str(TR),
            "--format",
            args.format,
        ]
        + (["--motion", args.motion] if args.motion else []),
        stderr=subprocess.DEVNULL,
    )
    t0 = time.perf_counter()
    result = live.run()
    wall = time.perf_counter() - t0
    player.wait()
    t = result.timing
    out = {
        "command": "python benchmarks/stream_latency.py " + " ".join(sys.argv[1:]),
        "grid": [64, 64, 36] if args.grid == "epi" else list(SHAPE_2MM),
        "tr_s": TR,
        "realign": not args.no_realign,
        "motion": args.motion,
        "volumes": args.volumes,
        "format": args.format,
        "watch": f"poll every {args.poll:g} s" if args.poll else "file events (watchfiles/inotify)",
        "trials": result.n_trials,
        "answered": result.answered,
        "incomplete": len(result.incomplete),
        "volumes_retried_while_written": live.feed.retried,
        "wait_ms": stats(t.wait_ms),
        "read_ms": stats(t.read_ms),
        "realign_ms": stats(t.realign_ms) if t.realign_ms else None,
        "reduce_ms": stats(t.reduce_ms),
        "answer_ms": stats(t.answer_ms),
        "latency_ms": stats(t.latency_ms),
        "answers_within_50_ms": f"{int((np.asarray(t.latency_ms) <= 50).sum())}/{len(t.latency_ms)}",
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "problems": [str(p) for p in problems if getattr(p, "outcome", "") != "note"],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
