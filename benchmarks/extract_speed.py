"""Speed and peak memory of `fmri-edge extract` on one realistic run (needs the nifti extra).

Writes (once, into --work) a synthetic fMRIPrep-sized run: 300 volumes of 97×115×97 voxels at
2 mm (MNI152NLin2009cAsym 2 mm grid size), TR 2 s, float32 .nii.gz (≈ 1.3 GB uncompressed), a
246-label atlas on the same 2 mm grid and one on the 1 mm grid (193×229×193, as the Brainnetome
BN_Atlas_246_1mm.nii.gz; resampled by extract), and 12 events. Then it runs the real command line
under /usr/bin/time -v for each case and reports wall seconds (whole command, imports included) and
the peak resident memory.

    .venv/bin/python benchmarks/extract_speed.py --work scratch/bench --json benchmarks/results/extract.json

Not a test: timings depend on the machine and on what else runs on it (the load average is
recorded before and after).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE_2MM = (97, 115, 97)
SHAPE_1MM = (193, 229, 193)
N_VOLUMES = 300
TR = 2.0
N_REGIONS = 246


def _affine(mm: float, shape) -> np.ndarray:
    a = np.diag([mm, mm, mm, 1.0])
    a[:3, 3] = [-96.0, -132.0, -78.0]          # the MNI152NLin2009cAsym 2 mm origin
    return a


def atlas(shape, mm: float) -> np.ndarray:
    """246 labels in an ellipsoid 'brain': slabs of equal voxel count along a scrambled axis order."""
    idx = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape, dtype=np.float32) - 1) / 2
    r = sum(((idx[i] - centre[i]) / (0.42 * shape[i])) ** 2 for i in range(3))
    inside = r <= 1
    key = (idx[0] * 7 + idx[1] * 3 + idx[2] * 11)[inside]           # any ordering; slabs of voxels
    order = np.argsort(key, kind="stable")
    labels = np.zeros(inside.sum(), dtype=np.int16)
    labels[order] = (np.arange(order.size) * N_REGIONS // order.size + 1).astype(np.int16)
    out = np.zeros(shape, dtype=np.int16)
    out[inside] = labels
    return out


def make(work: Path) -> dict[str, Path]:
    import nibabel as nib

    work.mkdir(parents=True, exist_ok=True)
    files = {"bold": work / "bold.nii.gz", "atlas_2mm": work / "atlas_2mm.nii.gz",
             "atlas_1mm": work / "atlas_1mm.nii.gz", "events": work / "events.tsv"}
    if not files["atlas_2mm"].exists():
        nib.save(nib.Nifti1Image(atlas(SHAPE_2MM, 2.0), _affine(2.0, SHAPE_2MM)), str(files["atlas_2mm"]))
    if not files["atlas_1mm"].exists():
        nib.save(nib.Nifti1Image(atlas(SHAPE_1MM, 1.0), _affine(1.0, SHAPE_1MM)), str(files["atlas_1mm"]))
    if not files["bold"].exists():
        rng = np.random.default_rng(0)
        base = np.where(atlas(SHAPE_2MM, 2.0) > 0, 9500.0, 30.0).astype(np.float32)
        data = np.empty(SHAPE_2MM + (N_VOLUMES,), dtype=np.float32)
        for k in range(N_VOLUMES):              # a volume at a time: bounded memory while making it
            data[..., k] = base * (1 + 0.01 * rng.standard_normal(SHAPE_2MM, dtype=np.float32))
        img = nib.Nifti1Image(data, _affine(2.0, SHAPE_2MM))
        img.header.set_zooms((2.0, 2.0, 2.0, TR))
        img.header.set_xyzt_units("mm", "sec")
        t = time.perf_counter()
        nib.save(img, str(files["bold"]))
        print(f"wrote {files['bold']} ({files['bold'].stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
        del data, img
    onsets = 12.3 + 47.1 * np.arange(12)
    files["events"].write_text("onset\tduration\ttrial_type\n" + "".join(f"{o:.1f}\t15\tvideo\n" for o in onsets))
    return files


def timed(cmd: list[str]) -> dict:
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    user = float(re.search(r"User time \(seconds\): (\S+)", r.stderr).group(1))
    sys_s = float(re.search(r"System time \(seconds\): (\S+)", r.stderr).group(1))
    return {"wall_s": round(seconds, 2), "cpu_s": round(user + sys_s, 2), "peak_rss_mb": round(rss_kb / 1024)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("scratch/bench-extract"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    files = make(args.work)
    exe = str(Path(sys.executable).with_name("fmri-edge"))
    load_before = os.getloadavg()
    cases = {}
    for name, atlas_path in (("atlas on the BOLD grid (2 mm)", files["atlas_2mm"]),
                             ("atlas at 1 mm, resampled to 2 mm", files["atlas_1mm"])):
        out = args.work / "trials.npz"
        runs = [timed([exe, "extract", str(files["bold"]), "--atlas", str(atlas_path), "--events",
                       str(files["events"]), "--out", str(out), "--force"]) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["wall_s"])
        cases[name] = {"best": best, "runs": runs}
        print(f"{name}: {best['wall_s']:.1f} s wall, {best['cpu_s']:.1f} s CPU, peak {best['peak_rss_mb']} MB "
              f"(best of {args.repeats})", file=sys.stderr)
    baseline = timed([exe, "--version"])
    result = {
        "command": "python benchmarks/extract_speed.py " + " ".join(sys.argv[1:]),
        "run": {"shape": [*SHAPE_2MM, N_VOLUMES], "voxel_mm": 2.0, "tr_s": TR, "dtype": "float32",
                "bold_bytes_on_disk": files["bold"].stat().st_size, "events": 12},
        "cases": cases, "cli_startup": baseline,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import nibabel
        import nilearn

        result["versions"] = {"nilearn": nilearn.__version__, "nibabel": nibabel.__version__, "numpy": np.__version__}
    except ImportError:
        pass
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
