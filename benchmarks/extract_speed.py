"""Speed and peak memory of extract's region-means kernel against nilearn's NiftiLabelsMasker (nifti extra).

Writes (once, into --work) a synthetic fMRIPrep-sized run: --volumes volumes (default 120) of
97×115×97 voxels at 2 mm (the MNI152NLin2009cAsym 2 mm grid), TR 2 s, float32 .nii.gz, a 246-label
atlas on the same grid and one on the 1 mm grid (193×229×193, resampled by extract), and 12 events.
Then, alternating so that both meet the same load, each in a fresh process under /usr/bin/time -v:

- ``kernel``: fmri_edge.imaging.extract's region signals (atlas read and checked, the run read block by block,
  means by the kernel), timed inside the process from before the atlas is read to the signals;
- ``masker``: ``NiftiLabelsMasker(labels_img=atlas, strategy="mean", standardize=None,
  resampling_target=None).fit_transform(bold)``, timed the same way (nilearn reads the file itself);
- ``command``: the whole ``fmri-edge extract`` command line (imports, model metadata, output file).

It reports the median of --repeats runs of each (wall and CPU seconds of the timed section), the
kernel/masker ratio of the medians, each
process's peak resident memory, and the largest relative difference between the kernel's and the
masker's region signals. Then, for stream, per-volume read and reduce times of single 3-D volume
files (.nii and .nii.gz): median and 99th percentile.

    .venv/bin/python benchmarks/extract_speed.py --work scratch/bench-extract --json benchmarks/results/extract.json

Not a test: timings depend on the machine and on what else runs on it (the load average is
recorded before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE_2MM = (97, 115, 97)
SHAPE_1MM = (193, 229, 193)
TR = 2.0
N_REGIONS = 246


def _affine(mm: float, shape) -> np.ndarray:
    a = np.diag([mm, mm, mm, 1.0])
    a[:3, 3] = [-96.0, -132.0, -78.0]  # the MNI152NLin2009cAsym 2 mm origin
    return a


def atlas(shape, mm: float) -> np.ndarray:
    """246 labels in an ellipsoid 'brain': slabs of equal voxel count along a scrambled axis order."""
    idx = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    r = sum(((idx[i] - centre[i]) / (0.42 * shape[i])) ** 2 for i in range(3))
    inside = r <= 1
    key = (idx[0] * 7 + idx[1] * 3 + idx[2] * 11)[inside]  # any ordering; slabs of voxels
    order = np.argsort(key, kind="stable")
    labels = np.zeros(inside.sum(), dtype=np.int16)
    labels[order] = (np.arange(order.size) * N_REGIONS // order.size + 1).astype(np.int16)
    out = np.zeros(shape, dtype=np.int16)
    out[inside] = labels
    return out


def make(work: Path, n_volumes: int) -> dict[str, Path]:
    import nibabel as nib

    work.mkdir(parents=True, exist_ok=True)
    files = {
        "bold": work / f"bold-{n_volumes}.nii.gz",
        "atlas_2mm": work / "atlas_2mm.nii.gz",
        "atlas_1mm": work / "atlas_1mm.nii.gz",
        "events": work / "events.tsv",
        "volume_nii": work / "volume.nii",
        "volume_gz": work / "volume.nii.gz",
    }
    if not files["atlas_2mm"].exists():
        nib.save(
            nib.Nifti1Image(atlas(SHAPE_2MM, 2.0), _affine(2.0, SHAPE_2MM)), str(files["atlas_2mm"])
        )
    if not files["atlas_1mm"].exists():
        nib.save(
            nib.Nifti1Image(atlas(SHAPE_1MM, 1.0), _affine(1.0, SHAPE_1MM)), str(files["atlas_1mm"])
        )
    if not files["bold"].exists():
        rng = np.random.default_rng(0)
        base = np.where(atlas(SHAPE_2MM, 2.0) > 0, 9500.0, 30.0).astype(np.float32)
        data = np.empty(SHAPE_2MM + (n_volumes,), dtype=np.float32)
        for k in range(n_volumes):  # a volume at a time: bounded memory while making it
            data[..., k] = base * (1 + 0.01 * rng.standard_normal(SHAPE_2MM, dtype=np.float32))
        img = nib.Nifti1Image(data, _affine(2.0, SHAPE_2MM))
        img.header.set_zooms((2.0, 2.0, 2.0, TR))
        img.header.set_xyzt_units("mm", "sec")
        t = time.perf_counter()
        nib.save(img, str(files["bold"]))
        print(
            f"wrote {files['bold']} ({files['bold'].stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
        for name in ("volume_nii", "volume_gz"):
            nib.save(nib.Nifti1Image(data[..., 0], _affine(2.0, SHAPE_2MM)), str(files[name]))
        del data, img
    onsets = 12.3 + 20.1 * np.arange(12)
    onsets = onsets[onsets + 20 < n_volumes * TR]
    files["events"].write_text(
        "onset\tduration\ttrial_type\n" + "".join(f"{o:.1f}\t15\tvideo\n" for o in onsets)
    )
    return files


# ---- one measurement, in its own process ------------------------------------------------------------


def worker(kind: str, bold: Path, atlas_path: Path, save: Path) -> None:
    """Time one way of getting the run's region signals (after imports); save them; print seconds."""
    import warnings

    if kind == "kernel":
        import nibabel  # noqa: F401  (imports are outside the timed section, as nilearn's are for the masker)

        from fmri_edge.imaging import extract, volumes

        t, cpu = time.perf_counter(), time.process_time()
        a = extract.Atlas(atlas_path, N_REGIONS)
        h = volumes.read_header(bold)
        signals = extract.region_signals(h, a, TR, extract.ExtractOptions(), None, [])
    else:
        from nilearn.maskers import NiftiLabelsMasker

        t, cpu = time.perf_counter(), time.process_time()
        masker = NiftiLabelsMasker(
            labels_img=str(atlas_path),
            background_label=0,
            strategy="mean",
            standardize=None,
            resampling_target=None,
            keep_masked_labels=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signals = masker.fit_transform(str(bold))
    seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    np.save(save, signals)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))


def timed(cmd: list[str]) -> dict:
    """Run under /usr/bin/time -v: wall seconds (whole process), CPU seconds, peak RSS, and the
    worker's own JSON (its timed section) when it prints one."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    user = float(re.search(r"User time \(seconds\): (\S+)", r.stderr).group(1))
    sys_s = float(re.search(r"System time \(seconds\): (\S+)", r.stderr).group(1))
    out = {
        "process_wall_s": round(seconds, 2),
        "cpu_s": round(user + sys_s, 2),
        "peak_rss_mb": round(rss_kb / 1024),
    }
    last = r.stdout.strip().splitlines()[-1:] if r.stdout.strip() else []
    if last and last[0].startswith('{"seconds"'):
        out.update({k: round(v, 3) for k, v in json.loads(last[0]).items()})
    return out


def per_volume(files: dict[str, Path], repeats: int = 30) -> dict:
    """Read one 3-D volume file and reduce it (stream's work per volume): median and p99, ms."""
    from fmri_edge.imaging import extract, volumes

    index = volumes.RegionIndex.on_grid(
        extract.Atlas(files["atlas_2mm"], N_REGIONS), SHAPE_2MM, _affine(2.0, SHAPE_2MM), []
    )
    result = {}
    for name in ("volume_nii", "volume_gz"):
        read, reduce = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            data, _ = volumes.read_volume(files[name])
            t1 = time.perf_counter()
            index.means(data)
            t2 = time.perf_counter()
            read.append((t1 - t0) * 1e3)
            reduce.append((t2 - t1) * 1e3)
        result[files[name].name] = {
            "read_ms_p50": round(float(np.percentile(read, 50)), 2),
            "read_ms_p99": round(float(np.percentile(read, 99)), 2),
            "reduce_ms_p50": round(float(np.percentile(reduce, 50)), 2),
            "reduce_ms_p99": round(float(np.percentile(reduce, 99)), 2),
            "repeats": repeats,
        }
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("scratch/bench-extract"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--volumes", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", choices=("kernel", "masker"), help=argparse.SUPPRESS)
    ap.add_argument("--bold", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--atlas", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.bold, args.atlas, args.save)
    files = make(args.work, args.volumes)
    py, exe = sys.executable, str(Path(sys.executable).with_name("fmri-edge"))
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {
        "kernel": [],
        "masker": [],
        "command": [],
        "command, 1 mm atlas": [],
    }
    for rep in range(args.repeats):
        for kind in ("kernel", "masker"):
            runs[kind].append(
                timed(
                    [
                        py,
                        __file__,
                        "--worker",
                        kind,
                        "--bold",
                        str(files["bold"]),
                        "--atlas",
                        str(files["atlas_2mm"]),
                        "--save",
                        str(args.work / f"{kind}.npy"),
                    ]
                )
            )
            print(f"{kind} run {rep + 1}: {runs[kind][-1]}", file=sys.stderr)
        for name, atlas_path in (
            ("command", files["atlas_2mm"]),
            ("command, 1 mm atlas", files["atlas_1mm"]),
        ):
            runs[name].append(
                timed(
                    [
                        exe,
                        "extract",
                        str(files["bold"]),
                        "--atlas",
                        str(atlas_path),
                        "--events",
                        str(files["events"]),
                        "--out",
                        str(args.work / "trials.npz"),
                        "--force",
                    ]
                )
            )
            print(f"{name} run {rep + 1}: {runs[name][-1]}", file=sys.stderr)
    kernel, masker = np.load(args.work / "kernel.npy"), np.load(args.work / "masker.npy")

    def median(kind, key):
        return round(statistics.median(r[key] for r in runs[kind]), 2)

    summary = {
        "kernel_s": median("kernel", "seconds"),
        "masker_s": median("masker", "seconds"),
        "ratio_kernel_to_masker": round(
            median("kernel", "seconds") / median("masker", "seconds"), 3
        ),
        "kernel_cpu_s": median("kernel", "cpu_seconds"),
        "masker_cpu_s": median("masker", "cpu_seconds"),
        "ratio_kernel_to_masker_cpu": round(
            median("kernel", "cpu_seconds") / median("masker", "cpu_seconds"), 3
        ),
        "kernel_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["kernel"]),
        "masker_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["masker"]),
        "command_wall_s": median("command", "process_wall_s"),
        "ratio_command_to_masker_process": round(
            median("command", "process_wall_s") / median("masker", "process_wall_s"), 3
        ),
        "command_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["command"]),
        "command_1mm_atlas_wall_s": median("command, 1 mm atlas", "process_wall_s"),
        "command_1mm_atlas_peak_rss_mb": max(r["peak_rss_mb"] for r in runs["command, 1 mm atlas"]),
        "max_relative_difference": float(np.abs(kernel / masker - 1).max()),
    }
    print(json.dumps(summary), file=sys.stderr)
    result = {
        "command": "python benchmarks/extract_speed.py " + " ".join(sys.argv[1:]),
        "run": {
            "shape": [*SHAPE_2MM, args.volumes],
            "voxel_mm": 2.0,
            "tr_s": TR,
            "dtype": "float32",
            "bold_bytes_on_disk": files["bold"].stat().st_size,
        },
        "summary": summary,
        "runs": runs,
        "per_volume": per_volume(files),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import isal
        import nibabel
        import nilearn

        result["versions"] = {
            "nilearn": nilearn.__version__,
            "nibabel": nibabel.__version__,
            "numpy": np.__version__,
            "isal": isal.__version__,
        }
    except ImportError:
        pass
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
