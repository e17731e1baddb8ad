"""How long `fmri-edge register` takes and how wrong it can be, on a synthetic proxy.

The participant: the MNI152 2009 tissue maps (nilearn) with an EPI-like contrast that is NOT the
template's (grey, white, CSF 700, 520, 1300 against register's 800, 550, 1000), moved by a known
12-parameter affine (tests/mni_corpus.known_affine: 6°/−4°/5°, scales 0.95–1.06, shears ≤ 0.03,
(7, −9, 12) mm) onto an oblique 48×56×40 grid of 3.5 mm, smoothed, with a ±15 % coil ramp and
noise; the T1 on its own oblique 2 mm grid. Measured per method and repeat: seconds of registration,
mean distance (mm) between where the estimated and the true transform put the reference's voxels,
and the label Dice of the carried atlas against the truly moved atlas (the generated parcellation,
and the real Brainnetome atlas when ../shared/data/icbhi2024 holds it).

    python benchmarks/register_accuracy.py --repeats 3 --json benchmarks/results/register_accuracy.json
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import mni_corpus  # noqa: E402

from fmri_edge.imaging import register as lib  # noqa: E402

BN = ROOT / ".." / "shared" / "data" / "icbhi2024" / "BN_Atlas_246_1mm.nii.gz"
SHAPE = (48, 56, 40)


def simpleitk_affine(fixed: Path, moving: Path) -> np.ndarray:
    """SimpleITK's affine registration, Mattes MI, 3 levels, 10 % sampling → 4×4 RAS fixed → moving."""
    import SimpleITK as sitk

    f = sitk.ReadImage(str(fixed), sitk.sitkFloat32)
    m = sitk.ReadImage(str(moving), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(
        f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(init, inPlace=False)
    t = reg.Execute(f, m)
    if t.GetName() == "CompositeTransform":
        t = sitk.CompositeTransform(t).GetNthTransform(0)
    affine = sitk.AffineTransform(t)
    a = np.array(affine.GetMatrix()).reshape(3, 3)
    c = np.array(affine.GetCenter())
    tr = np.array(affine.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = tr + c - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def main() -> None:
    import nibabel as nib
    from scipy import ndimage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("scratch/bench-register"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-simpleitk", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    epi, t1, gm, affine = mni_corpus.tissue(3, weights=(700, 520, 1300))
    labels = mni_corpus.parcellation(gm, affine)
    t = mni_corpus.known_affine()
    grid = mni_corpus.functional_grid(t, SHAPE)
    ref = mni_corpus.moved(ndimage.gaussian_filter(epi, 1.0), affine, t, SHAPE, grid, order=1)
    bias = 1 + 0.3 * (np.indices(SHAPE)[1] / SHAPE[1] - 0.5)
    ref = np.abs(ref * bias + np.random.default_rng(0).normal(0, 15, SHAPE)).astype(np.float32)
    anat_shape = (84, 100, 84)
    anat_grid = mni_corpus.functional_grid(t, anat_shape, voxel_mm=2.0)
    anat = mni_corpus.moved(t1, affine, t, anat_shape, anat_grid, order=1)
    paths = {
        "ref": args.work / "ref.nii.gz",
        "atlas": args.work / "atlas.nii.gz",
        "t1w": args.work / "t1w.nii.gz",
    }
    nib.save(nib.Nifti1Image(ref, grid), str(paths["ref"]))
    nib.save(nib.Nifti1Image(labels, affine), str(paths["atlas"]))
    nib.save(nib.Nifti1Image(anat, anat_grid), str(paths["t1w"]))
    truths = {
        "generated": (labels, affine, mni_corpus.moved(labels, affine, t, SHAPE, grid, order=0))
    }
    if BN.exists():
        bn = nib.load(str(BN))
        bl = np.asarray(bn.dataobj).astype(np.int16)
        truths["brainnetome"] = (
            bl,
            bn.affine,
            mni_corpus.moved(bl, bn.affine, t, SHAPE, grid, order=0),
        )

    ijk = np.indices(SHAPE).reshape(3, -1).astype(np.float64)
    inside = (truths["generated"][2] > 0).ravel()  # error over the atlas's voxels
    pts = grid[:3, :3] @ ijk[:, inside] + grid[:3, 3:4]
    true = np.linalg.inv(t)

    def error(m):
        return float(
            np.linalg.norm(
                (m[:3, :3] @ pts + m[:3, 3:4]) - (true[:3, :3] @ pts + true[:3, 3:4]), axis=0
            ).mean()
        )

    rows = []
    start_err = error(np.eye(4))

    def record(method, matrix, seconds):
        row = {"method": method, "seconds": round(seconds, 2), "error_mm": round(error(matrix), 3)}
        for name, (lab, lab_aff, truth) in truths.items():
            carried = lib.labels_through(lab, lab_aff, SHAPE, grid, matrix)
            row[f"dice_{name}"] = round(mni_corpus.label_agreement(carried, truth), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for _ in range(args.repeats):
        for template in ("epi", "t1"):
            r = lib.register(paths["ref"], paths["atlas"], None, template=template)
            record(f"greedy affine NMI, {template} template", r.matrix, r.seconds)
        r = lib.register(paths["ref"], paths["atlas"], None, anat=paths["t1w"])
        record("greedy through the T1 (rigid + affine)", r.matrix, r.seconds)
        if not args.no_simpleitk:
            t0 = time.perf_counter()
            m = simpleitk_affine(paths["ref"], lib.template_path("epi"))
            record("SimpleITK affine Mattes MI, epi template", m, time.perf_counter() - t0)
    summary = {
        "start_error_mm": round(start_err, 2),
        "load_average": os.getloadavg(),
        "rows": rows,
        "command": "python benchmarks/register_accuracy.py " + " ".join(sys.argv[1:]),
    }
    print(
        json.dumps(
            {"start_error_mm": summary["start_error_mm"], "load_average": summary["load_average"]}
        )
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
