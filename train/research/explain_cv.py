"""What each class relies on, from the cross-validation fold models, and how faithful the
explanations are (docs/explain.md).

For each run (a linear run explains by region contributions, an SE CNN run by input SE attention)
every fold model is exported to ONNX exactly as `fmri-edge export` would, and its held-out
participants are explained exactly as `fmri-edge explain` does (each participant aligned over its
own trials). Per fold and CLASS: the mean score over the held-out trials answered as that class,
and that fold's top-20 regions; over folds: how many folds put each region in their top 20
(stability) and the pooled mean map. Faithfulness (`fmri_edge.explanation.regions.faithfulness`): per fold,
mask each held-out trial's top-k regions by its explanation, k random regions (10 draws) and its
bottom-k; pooled over folds, weighted by trials.

usage: python train/research/explain_cv.py RUN [RUN …] [--data ../shared/data/icbhi2024/Train]
           [--atlas ../shared/data/icbhi2024/BN_Atlas_246_1mm.nii.gz] [--json docs/explain_cv.json]
           [--png-dir docs] [--top 20]
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fmri_edge.explanation import regions as explain

from fmri_edge.explanation import faithfulness
from fmri_edge.data.io import load_trials
from fmri_edge.model.runtime import Model
from fmri_edge.training.onnx_export import export_onnx
from fmri_edge.training.checkpoints import fold_models
from fmri_edge.training.recipe import read_atlas
from harness import data_of, parser

classes = (-1, 0, 1)
KS = (5, 10, 20)


def explain_run(run: Path, data: Path, names: list, top: int) -> dict:
    folds = fold_models(run)
    kind = None
    counts = {
        c: np.zeros(len(names), int) for c in classes
    }  # folds with the region in their top-20
    sums = {c: np.zeros(len(names)) for c in classes}  # pooled over held-out trials
    n_class = {c: 0 for c in classes}
    faith_rows = {k: [] for k in KS}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for fold, members, test in folds:
            path = Path(tmp) / f"{fold}.onnx"
            x_parity = np.ascontiguousarray(
                load_trials(data / test[0] / "fMRI_data.npz")[:16], dtype=np.float32
            )
            export_onnx(
                members,
                path,
                {
                    "model_version": f"{run.name}/{fold}",
                    "level_rule": "argmax",
                    "region_names": names,
                    "region_attention": any(m.input_se is not None for m in members),
                },
                x_parity,
            )
            d = Model(path)
            kind = d.explanation
            paths = [data / p for p in test]
            s, problems = explain.summarize(d, paths)
            assert not problems, problems
            for j, c in enumerate(classes):
                if s.class_counts[j]:
                    counts[c][s.ranking(c)[:top]] += 1
                    sums[c] += s.class_mean[j] * s.class_counts[j]
                    n_class[c] += int(s.class_counts[j])
            f, _ = faithfulness.faithfulness_paths(d, paths, KS, draws=10, seed=0)
            for row in f.rows:
                faith_rows[row["k"]].append((f.n_trials, row))
            print(
                f"{run.name} {fold} {test}: {s.n_trials} trials, answered {s.class_counts.tolist()}",
                flush=True,
            )
    out = {
        "run": str(run),
        "kind": kind,
        "n_folds": len(folds),
        "top": top,
        "seconds": round(time.perf_counter() - t0),
        "classes": {},
        "faithfulness": {},
    }
    for c in classes:
        mean = sums[c] / max(n_class[c], 1)
        order = np.lexsort((-mean, -counts[c]))  # most folds first, then the pooled mean
        out["classes"][str(c)] = {
            "n_trials": n_class[c],
            "mean": [round(float(v), 6) for v in mean],
            "folds_in_top": counts[c].tolist(),
            "stable": [
                {"region": names[i], "folds": int(counts[c][i]), "mean": round(float(mean[i]), 4)}
                for i in order
                if counts[c][i] >= (len(folds) + 1) // 2
            ],
            "top_pooled": [names[i] for i in np.argsort(-mean)[:top]],
        }
    for k, rows in faith_rows.items():
        w = np.array([n for n, _ in rows], float)
        pick = lambda f: float(np.average([f(r) for _, r in rows], weights=w))  # noqa: E731
        out["faithfulness"][str(k)] = {
            "n_trials": int(w.sum()),
            "changed": {
                "top": pick(lambda r: r["top"]["changed"]),
                "random": pick(lambda r: r["random"]["changed"]),
                "bottom": pick(lambda r: r["bottom"]["changed"]),
            },
            "delta_p": {
                "top": pick(lambda r: r["top"]["delta_p"]),
                "random": pick(lambda r: r["random"]["delta_p"]),
                "random_sd_over_draws": pick(lambda r: r["random"]["delta_p_std"]),
                "bottom": pick(lambda r: r["bottom"]["delta_p"]),
            },
            "folds_top_beats_every_random_draw": sum(
                r["random"]["draws_at_least_top"] == 0 for _, r in rows
            ),
            "folds_top_above_bottom": sum(
                r["top"]["delta_p"] > r["bottom"]["delta_p"] for _, r in rows
            ),
        }
    return out


def figure(result: dict, out: Path, atlas_path: Path, names: list) -> None:
    """One glass brain per CLASS (rows): the pooled mean map over the fold models' held-out trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    from fmri_edge.explanation import brainmap
    from fmri_edge.explanation.regions import KINDS

    kind = KINDS[result["kind"]]
    atlas = brainmap.load_label_image(atlas_path, len(names))
    maps = [np.array(result["classes"][str(c)]["mean"]) for c in classes]
    if kind.signed:
        peak = max(float(np.abs(m).max()) for m in maps)
        vmin, vmax, cmap, threshold = -peak, peak, "RdBu_r", None
    else:
        vmin, vmax, cmap = (
            min(float(m.min()) for m in maps),
            max(float(m.max()) for m in maps),
            "viridis",
        )
        threshold = 0.999 * vmin
    fig = plt.figure(figsize=(10, 8.5), dpi=80)
    label = {-1: "negative (−1)", 0: "neutral (0)", 1: "positive (+1)"}
    for row, (c, m) in enumerate(zip(classes, maps)):
        ax = fig.add_axes((0.0, 0.66 - 0.31 * row, 0.94, 0.27))
        img = nib.Nifti1Image(brainmap.paint(atlas, m), atlas.affine)
        display = plotting.plot_glass_brain(
            img,
            axes=ax,
            display_mode="lzry",
            plot_abs=not kind.signed,
            colorbar=True,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            threshold=threshold,
            black_bg=False,
            annotate=row == 0,
        )
        display._cbar.set_label(kind.units, fontsize=8)
        n = result["classes"][str(c)]["n_trials"]
        ax.set_title(f"answered {label[c]}: {n} held-out trials", fontsize=10, loc="left")
    what = "mean contribution to the class's logit" if kind.signed else "mean input SE attention"
    fig.suptitle(
        f"{Path(result['run']).name}, {result['n_folds']} cross-validation fold models, each on its held-out "
        f"participants: {what}",
        fontsize=10,
        x=0.01,
        y=0.995,
        ha="left",
    )
    fig.savefig(out, dpi=80)
    plt.close(fig)
    from PIL import Image  # 256 colours: a third of the bytes in the repository, no visible change

    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)
    print(f"wrote {out}")


def main(argv=None):
    ap = parser(__doc__, name=False, recipe=False, threads=None)
    ap.add_argument(
        "runs",
        type=Path,
        nargs="+",
        metavar="RUN",
        help="run folder(s) written by `fmri-edge train`",
    )
    ap.add_argument(
        "--atlas",
        type=Path,
        default=Path("../shared/data/icbhi2024/BN_Atlas_246_1mm.nii.gz"),
        help="atlas label image for the figures",
    )
    ap.add_argument("--json", dest="json_path", default=None, help="write the results here as JSON")
    ap.add_argument(
        "--png-dir",
        type=Path,
        default=Path("docs"),
        help="folder of the figures explain_cv_RUN.png",
    )
    ap.add_argument(
        "--top", type=int, default=20, help="regions per fold and class counted as its top"
    )
    args = ap.parse_args(argv)
    data, top, json_path = data_of(args), args.top, args.json_path
    names = read_atlas(data.parent / "BN_atlas.txt")
    command = sys.argv if argv is None else [sys.argv[0], *argv]
    results = []
    for run in args.runs:
        r = explain_run(run, data, names, top)
        results.append(r)
        figure(r, args.png_dir / f"explain_cv_{run.name}.png", args.atlas, names)
        for k, f in r["faithfulness"].items():
            print(
                f"{run.name} k={k}: changed top {f['changed']['top']:.3f} random {f['changed']['random']:.3f} "
                f"bottom {f['changed']['bottom']:.3f}; |dp| top {f['delta_p']['top']:.4f} random "
                f"{f['delta_p']['random']:.4f} ± {f['delta_p']['random_sd_over_draws']:.4f} bottom "
                f"{f['delta_p']['bottom']:.4f}; folds where top beat every random draw "
                f"{f['folds_top_beats_every_random_draw']}/{r['n_folds']}"
            )
        for c, v in r["classes"].items():
            print(
                f"{run.name} class {c}: {len(v['stable'])} regions in ≥ {(r['n_folds'] + 1) // 2} folds' top {top}: "
                + ", ".join(f"{s['region']} {s['folds']}" for s in v["stable"][:12])
            )
    if json_path:
        Path(json_path).write_text(
            json.dumps({"command": "python " + " ".join(command), "results": results}, indent=1)
        )
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
