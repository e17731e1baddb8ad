"""fmri-edge's realignment against SPM's (python-rtspm: OpenNFT's port of spm_realign, GPL-3.0, the
`oracle` extra — never a runtime dependency), on the real Siemens Skyra series in
../shared/data/rtcloud-sample (10 volumes, mosaic DICOM, 64×64×27, oblique), and on synthetic moves.

Each volume is read once by fmri_edge.imaging.dicom (nibabel's mosaic wrapper, LPS → RAS) and realigned to
the series' first volume by both: fmri_edge.realtime.realign.Realigner (each volume starting from the previous
estimate, as stream does) and rtspm.spm_realign_rt with OpenNFT's flags (quality 0.9, fwhm 5, sep 4,
4th-degree B-splines). Reported per volume: both motions' mean displacement from the reference
(over the voxels brighter than the reference's mean: the head) and the mean displacement between the
two estimates; and the time each took. `--synthetic` adds known moves of the first volume (resampled,
cubic) up to 3 mm / 3°, against the truth.

    .venv/bin/python benchmarks/realign_oracle.py --json benchmarks/results/realign_oracle.json
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
SERIES = ROOT.parent / "shared" / "data" / "rtcloud-sample"
ONE_BASED = np.array([[1, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1], [0, 0, 0, 1]], dtype=np.float64)


class SPM:
    """rtspm's real-time SPM realign, as OpenNFT calls it (pyOpenNFT's flags)."""

    def __init__(self, reference: np.ndarray, affine: np.ndarray):
        from rtspm import spm_realign_rt

        self.realign = spm_realign_rt
        self.mat = affine @ ONE_BASED  # SPM's voxel (1-based) → world
        self.flags = {
            "quality": 0.9,
            "fwhm": 5,
            "sep": 4,
            "interp": 4,
            "wrap": np.zeros((3, 1)),
            "rtm": 0,
            "PW": "",
            "lkp": np.arange(6),
        }
        self.r = [
            {
                "Vol": np.asfortranarray(reference, dtype=np.float64),
                "mat": self.mat.copy(),
                "dim": np.array(reference.shape),
            },
            {},
        ]
        self.state = (None,) * 6
        self.n = 0
        self.estimate(reference)

    def estimate(self, data: np.ndarray) -> np.ndarray:
        self.n += 1
        self.r[1] = {
            "Vol": np.asfortranarray(data, dtype=np.float64),
            "mat": self.mat.copy(),
            "dim": np.array(data.shape),
        }
        self.flags["lkp"] = np.arange(6)
        self.r, a0, x1, x2, x3, deg, b, _ = self.realign(self.r, self.flags, self.n, 1, *self.state)
        self.state = (a0, x1, x2, x3, deg, b)
        return np.linalg.inv(
            self.r[1]["mat"] @ np.linalg.inv(self.r[0]["mat"])
        )  # reference → volume world


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--synthetic", action="store_true", help="also known moves of the first volume")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from fmri_edge.imaging import dicom
    from fmri_edge.imaging import motion
    from fmri_edge.realtime import realign

    files = sorted(p for p in SERIES.glob("001_000013_*.dcm") if not p.name.endswith("000000.dcm"))
    if not files:
        raise SystemExit(f"{SERIES}: the Skyra series is not there")
    vols = [dicom.read_volume(f) for f in files]
    ref, affine = vols[0][0], vols[0][1]
    head = ref > ref.mean()
    pts = (np.c_[np.argwhere(head), np.ones(head.sum())] @ affine.T)[:, :3]
    load = [os.getloadavg()]
    ours, spm = realign.Realigner(ref, affine), SPM(ref, affine)
    rows = []
    for f, (data, aff, _) in zip(files, vols):
        t0 = time.perf_counter()
        m1 = ours.estimate(data, aff)
        t1 = time.perf_counter()
        m2 = spm.estimate(data)
        t2 = time.perf_counter()
        rows.append(
            {
                "file": f.name,
                "ours_mm": round(realign.mean_displacement(m1, np.eye(4), pts), 4),
                "spm_mm": round(realign.mean_displacement(m2, np.eye(4), pts), 4),
                "difference_mm": round(realign.mean_displacement(m1, m2, pts), 4),
                "ours_params": [round(v, 5) for v in motion.spm_params(m1)],
                "spm_params": [round(v, 5) for v in motion.spm_params(m2)],
                "ours_ms": round((t1 - t0) * 1e3, 1),
                "spm_ms": round((t2 - t1) * 1e3, 1),
            }
        )
    diff = np.array([r["difference_mm"] for r in rows[1:]])
    out = {
        "command": "python benchmarks/realign_oracle.py " + " ".join(sys.argv[1:]),
        "series": str(SERIES),
        "grid": list(ref.shape),
        "voxel_mm": [round(v, 3) for v in realign.voxel_sizes(affine)],
        "skyra": {
            "volumes": rows,
            "difference_mm_mean": round(float(diff.mean()), 4),
            "difference_mm_max": round(float(diff.max()), 4),
            "ours_ms_p50": float(np.median([r["ours_ms"] for r in rows[1:]])),
            "spm_ms_p50": float(np.median([r["spm_ms"] for r in rows[1:]])),
        },
    }
    if args.synthetic:
        rng = np.random.default_rng(0)
        syn = []
        for size in (0.5, 1.0, 2.0, 3.0):
            p = np.r_[
                rng.uniform(-1, 1, 3) * size / np.sqrt(3),
                np.deg2rad(rng.uniform(-1, 1, 3) * size / np.sqrt(3)),
            ]
            moved = motion.move_volume(ref, affine, p) * (
                1 + 0.01 * rng.standard_normal(ref.shape)
            ).astype(np.float32)
            truth = motion.spm_matrix(p)
            ours, spm = realign.Realigner(ref, affine), SPM(ref, affine)
            t0 = time.perf_counter()
            m1 = ours.estimate(moved, affine)
            t1 = time.perf_counter()
            m2 = spm.estimate(moved)
            t2 = time.perf_counter()
            syn.append(
                {
                    "move_mm": round(realign.mean_displacement(truth, np.eye(4), pts), 3),
                    "ours_error_mm": round(realign.mean_displacement(m1, truth, pts), 4),
                    "spm_error_mm": round(realign.mean_displacement(m2, truth, pts), 4),
                    "ours_ms": round((t1 - t0) * 1e3, 1),
                    "spm_ms": round((t2 - t1) * 1e3, 1),
                }
            )
        out["synthetic"] = syn
    load.append(os.getloadavg())
    out["load_average"] = {
        "before": [round(x, 2) for x in load[0]],
        "after": [round(x, 2) for x in load[1]],
    }
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
