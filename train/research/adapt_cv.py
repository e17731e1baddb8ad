"""Does `fmri-edge adapt` help? Cross-subject CV of subject adaptation, on the ONNX path.

usage: python train/research/adapt_cv.py [--base train/fmri-edge-linear.toml] [--out runs/adapt_cv]
           [--set model.subject_align='"none"'] [--data DIR] [--ks 3,6,9,15] [--draws 20] [--inner-draws 10]
           [--threads 1] [--plot docs/results/adapt_curve.png]

For every outer fold of the tool's subject CV (fmri_edge.evaluation.splits.subject_folds: one order-mate
group held out), the fold's networks are fitted (fmri_edge.training.protocols.run_subject_cv)
and exported with export_onnx. Each held-out subject is read exactly as `fmri-edge adapt` reads it
(fmri_edge.decoding.adapt.base_outputs: aligned over all of its trials); then, for K labeled trials (K/3 of
each class, `--draws` random draws), the correction is fitted on the K and every remaining trial
of that subject is scored, against the base model on the same remaining trials.

The method and shrinkage used for a held-out subject are chosen per K inside its outer fold
only: the fold's training subjects are split again by the same CV (run_subject_cv on them), each
inner held-out subject is adapted with every candidate, and the candidate with the best mean
inner accuracy gain is kept ("none" — no adaptation — is a candidate). The outer subject's
trials never take part in that choice.

Writes OUT/results.json, OUT/section.md (the docs/results.md section) and the plot.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fmri_edge import valence
from fmri_edge.decoding import adapt  # noqa: E402
from fmri_edge.evaluation import scoring, splits
from fmri_edge.model.runtime import Model  # noqa: E402
from harness import data_of, parser, recipe_of  # noqa: E402

SHRINKAGES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
CANDIDATES = [("none", None)] + [(m, s) for m in adapt.METHODS for s in SHRINKAGES]


def label(c) -> str:
    return "none" if c[0] == "none" else f"{c[0]} λ={c[1]:g}"


def export_folds(recipe, ds, folder: Path, tag: str, log) -> dict[str, Path]:
    """run_subject_cv on ``ds``; every fold's networks exported → {held-out participant: onnx}."""
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.protocols import run_subject_cv

    folder.mkdir(parents=True, exist_ok=True)
    t = time.time()
    folds = run_subject_cv(recipe, ds)
    out = {}
    for j, f in enumerate(folds):
        path = folder / f"{tag}_{j}.onnx"
        meta = {
            "model_version": f"{recipe.name}:{tag}:{f.name}",
            "level_rule": recipe.eval.level_rule,
            "region_names": [f"R{i}" for i in range(ds.trials.shape[1])],
            "heads": dict(recipe.model.heads),
        }
        members = [x.model for x in f.fits]
        if len(members) > 1:
            # the graph's default alignment is the members' average (Ensemble.population_stats), but
            # the PyTorch reference of the parity check uses each member's own: make them one, or
            # the export's parity check fails. Only the default (a participant with < 10 trials)
            # is affected; every CV subject here is aligned over its own 30 trials.
            import torch

            with torch.no_grad():
                for name in ("pop_mean", "pop_scale"):
                    avg = torch.stack([getattr(m, name) for m in members]).mean(0)
                    for m in members:
                        getattr(m, name).copy_(avg)
        export_onnx(members, path, meta, ds.trials[:64])
        for p in sorted(set(f.test.participants)):
            out[p] = path
    log(f"  {tag}: {len(folds)} folds trained and exported in {time.time() - t:.0f} s")
    return out


def observe_all(models: dict[str, Path], data: Path, labels: dict) -> dict:
    """Base outputs per held-out participant, through the ONNX file as `adapt` reads them."""
    obs = {}
    for p, path in models.items():
        seen = adapt.base_outputs(Model(path, threads=1), [data / p])
        assert np.array_equal(seen.trial, np.arange(1, len(labels[p]) + 1))
        obs[p] = {
            "class_probs": seen.class_probs,
            "level_probs": seen.level_probs,
            "features": seen.features,
            "labels": labels[p],
            "level_rule": Model(path).info.level_rule,
            "level_map": adapt.level_map(Model(path).info.meta),
        }
    return obs


def draws_of(y: np.ndarray, k: int, n: int, seed: int) -> list[np.ndarray]:
    """``n`` random labeled sets of size k, k/3 per class where the subject has them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pick = []
        for c in valence.CLASS_VALUES:
            idx = np.flatnonzero(y == c)
            pick += rng.choice(idx, size=min(k // 3, len(idx)), replace=False).tolist()
        rest = np.setdiff1d(np.arange(len(y)), pick)
        pick += rng.choice(rest, size=k - len(pick), replace=False).tolist()
        out.append(np.sort(np.array(pick)))
    return out


def evaluate(o: dict, cand, k: int, draws: list[np.ndarray]) -> dict:
    """Accuracy / Score of a candidate on the trials left after each draw (mean over draws)."""
    y = o["labels"][:, 0]
    yi = np.searchsorted(valence.CLASS_VALUES, y)
    scale = float(np.sqrt(np.mean(np.sum(o["features"] ** 2, axis=1)))) or 1.0
    acc, score = [], []
    for pick in draws:
        rest = np.setdiff1d(np.arange(len(y)), pick)
        cp, lp = o["class_probs"], o["level_probs"]
        if cand[0] != "none":
            corr = adapt.fit_correction(
                cp[pick], yi[pick], cand[0], cand[1], o["features"][pick], scale
            )
            cp, lp = corr.apply(cp[rest], lp[rest], o["features"][rest], o["level_map"])
        else:
            cp, lp = cp[rest], lp[rest]
        c = valence.decide_class(cp)
        lv = valence.decide_level(lp, o["level_rule"])
        acc.append(float(np.mean(c == y[rest])))
        score.append(scoring.challenge_score(c, y[rest], lv, o["labels"][rest, 1])["Score"])
    return {"acc": float(np.mean(acc)), "score": float(np.mean(score)), "acc_draws": acc}


def main(argv=None):
    ap = parser(__doc__, name=False, base="train/fmri-edge-linear.toml")
    ap.add_argument("--out", default="runs/adapt_cv")
    ap.add_argument("--ks", default="3,6,9,15")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--inner-draws", type=int, default=10)
    ap.add_argument("--plot", default="docs/results/adapt_curve.png")
    ap.add_argument(
        "--replot",
        action="store_true",
        help="only redraw the plot and section from OUT/results.json",
    )
    args = ap.parse_args(argv)
    if args.replot:
        results = json.loads((ROOT / args.out / "results.json").read_text())
        plot(results, ROOT / args.plot)
        section = markdown(results, results["command"])
        (ROOT / args.out / "section.md").write_text(section)
        print(section)
        return
    from fmri_edge.data.io import load_icbhi
    from fmri_edge.training.protocols import dataset_from_icbhi

    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.time()
    recipe = recipe_of(args)
    data = ROOT / data_of(args, recipe)
    subjects = load_icbhi(data, n_times=recipe.model.n_times)
    ds = dataset_from_icbhi(subjects)
    labels = {p: v[1] for p, v in subjects.items()}
    ks = [int(k) for k in args.ks.split(",")]
    out_dir = ROOT / args.out
    participants = sorted(subjects)
    outer_folds = splits.subject_folds(participants)

    log(f"outer CV ({len(outer_folds)} folds), recipe {args.base}")
    outer_models = export_folds(recipe, ds, out_dir / "onnx", "outer", log)
    outer = observe_all(outer_models, data, labels)

    chosen: dict[str, dict[int, tuple]] = {}
    inner_tables = []
    for fi, (train_p, test_p) in enumerate(outer_folds):
        log(
            f"fold {fi + 1}/{len(outer_folds)} (held out {'+'.join(test_p)}): inner CV for the choice"
        )
        inner = observe_all(
            export_folds(recipe, ds.of(train_p), out_dir / "onnx", f"inner{fi}", log), data, labels
        )
        table = {}
        for k in ks:
            gains = {}
            for cand in CANDIDATES:
                per = []
                for s, o in inner.items():
                    dr = draws_of(
                        o["labels"][:, 0],
                        k,
                        args.inner_draws,
                        seed=1000 + 31 * k + participants.index(s),
                    )
                    per.append(evaluate(o, cand, k, dr)["acc"])
                gains[label(cand)] = float(np.mean(per))
            base = gains["none"]
            # best mean inner accuracy; ties go to the earlier (more conservative) candidate
            best = max(
                CANDIDATES, key=lambda c: (round(gains[label(c)] - base, 6), -CANDIDATES.index(c))
            )
            for p in test_p:
                chosen.setdefault(p, {})[k] = best
            table[k] = {c: round(g - base, 4) for c, g in gains.items()}
            log(f"  K={k}: chose {label(best)} (inner gain {gains[label(best)] - base:+.3f})")
        inner_tables.append({"held_out": test_p, "inner_gain": table})

    results = {
        "recipe": args.base + "".join(f" --set {kv}" for kv in args.sets),
        "ks": ks,
        "draws": args.draws,
        "inner_draws": args.inner_draws,
        "candidates": [label(c) for c in CANDIDATES],
        "subjects": {},
        "inner": inner_tables,
    }
    grid = {
        k: {label(c): [] for c in CANDIDATES} for k in ks
    }  # diagnostic only, never used to choose
    for p in participants:
        o = outer[p]
        row = {}
        for k in ks:
            dr = draws_of(o["labels"][:, 0], k, args.draws, seed=31 * k + participants.index(p))
            base = evaluate(o, ("none", None), k, dr)
            got = evaluate(o, chosen[p][k], k, dr)
            diff = np.array(got["acc_draws"]) - np.array(base["acc_draws"])
            row[k] = {
                "chosen": label(chosen[p][k]),
                "base_acc": base["acc"],
                "acc": got["acc"],
                "base_score": base["score"],
                "score": got["score"],
                "gain": float(diff.mean()),
                "gain_sd_draws": float(diff.std()),
                "n_scored": int(len(o["labels"]) - k),
            }
            for c in CANDIDATES:
                grid[k][label(c)].append(evaluate(o, c, k, dr)["acc"] - base["acc"])
        results["subjects"][p] = row
    results["grid_outer_gain"] = {
        k: {c: float(np.mean(v)) for c, v in g.items()} for k, g in grid.items()
    }
    results["seconds"] = round(time.time() - t0, 1)
    results["command"] = " ".join(["python", "train/research/adapt_cv.py", *(argv or sys.argv[1:])])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    section = markdown(results, results["command"])
    (out_dir / "section.md").write_text(section)
    plot(results, ROOT / args.plot)
    print(section)


def summary(results: dict, k: int) -> dict:
    rows = [r[str(k)] if str(k) in r else r[k] for r in results["subjects"].values()]
    f = lambda key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows])))  # noqa: E731
    return {
        "base_acc": f("base_acc"),
        "acc": f("acc"),
        "base_score": f("base_score"),
        "score": f("score"),
        "gain": f("gain"),
        "worse": [p for p, r in results["subjects"].items() if (r.get(str(k)) or r[k])["gain"] < 0],
        "n_scored": rows[0]["n_scored"],
    }


def markdown(results: dict, command: str) -> str:
    ks = results["ks"]
    lines = [
        "## Subject adaptation (`fmri-edge adapt`)",
        "",
        f"Measured with `{command}` ({results['seconds'] / 60:.0f} min on the 2-core machine), recipe "
        f"`{results['recipe']}`. Cross-subject CV (order-mate pairs held out together); each held-out "
        f"subject is adapted on K labeled trials (K/3 per class, {results['draws']} random draws) and scored "
        "on its remaining trials, against the unadapted model on the same trials. Method and shrinkage are "
        'chosen per K by an inner CV on the outer fold\'s training subjects only ("none" is a candidate). '
        "Mean ± std over the 16 subjects:",
        "",
        "| K | scored trials (one = … points) | accuracy, no adaptation | accuracy, adapted | gain (points) | "
        "Score, no adaptation | Score, adapted | subjects worse | worst subject (points, ± sd over draws) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        s = summary(results, k)
        rows = {p: (r.get(str(k)) or r[k]) for p, r in results["subjects"].items()}
        worst = min(rows, key=lambda p: rows[p]["gain"])
        lines.append(
            f"| {k} | {s['n_scored']} ({100 / s['n_scored']:.1f}) | {s['base_acc'][0]:.3f} ± {s['base_acc'][1]:.3f} | "
            f"{s['acc'][0]:.3f} ± {s['acc'][1]:.3f} | {100 * s['gain'][0]:+.1f} ± {100 * s['gain'][1]:.1f} | "
            f"{s['base_score'][0]:.4f} | {s['score'][0]:.4f} | {len(s['worse'])} | {worst} "
            f"{100 * rows[worst]['gain']:+.1f} ± {100 * rows[worst]['gain_sd_draws']:.1f} |"
        )
    lines += ["", "Chosen by the inner CV (per outer fold, count of subjects):", ""]
    for k in ks:
        counts: dict[str, int] = {}
        for r in results["subjects"].values():
            c = (r.get(str(k)) or r[k])["chosen"]
            counts[c] = counts.get(c, 0) + 1
        lines.append(
            f"- K = {k}: "
            + ", ".join(f"{c} ({n})" for c, n in sorted(counts.items(), key=lambda x: -x[1]))
        )
    lines += [
        "",
        "Per subject at K = 9 (gain = mean over draws of adapted − unadapted accuracy on the same trials; "
        "sd over draws; one trial of the scored ones is "
        f"{100 / (summary(results, 9)['n_scored'] if 9 in ks else 21):.1f} points):",
        "",
        "| subject | no adaptation | adapted | gain ± sd (points) |",
        "|---|---|---|---|",
    ]
    if 9 in ks:
        for p, r in results["subjects"].items():
            x = r.get("9") or r[9]
            lines.append(
                f"| {p} | {x['base_acc']:.3f} | {x['acc']:.3f} | {100 * x['gain']:+.1f} ± "
                f"{100 * x['gain_sd_draws']:.1f} |"
            )
    lines += [
        "",
        "Diagnostic, not used for any choice: mean outer gain (points) of every candidate:",
        "",
        "| candidate | " + " | ".join(f"K = {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for c in results["candidates"]:
        g = results["grid_outer_gain"]
        lines.append(
            f"| {c} | " + " | ".join(f"{100 * (g.get(str(k)) or g[k])[c]:+.1f}" for k in ks) + " |"
        )
    lines += ["", "![accuracy vs K](results/adapt_curve.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = results["ks"]
    s = [summary(results, k) for k in ks]
    fig, ax = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for key, lab, style, dx in (
        ("base_acc", "no adaptation", "o--", -0.15),
        ("acc", "adapted (inner-CV choice)", "s-", 0.15),
    ):
        m = np.array([x[key][0] for x in s])
        sd = np.array([x[key][1] for x in s])
        ax[0].errorbar(np.array(ks) + dx, m, yerr=sd, fmt=style, capsize=3, label=lab)
    ax[0].set_title("held-out CLASS accuracy (mean ± std over subjects)", fontsize=9)
    ax[0].legend(fontsize=8)
    rng = np.random.default_rng(0)
    for i, k in enumerate(ks):
        g = np.array([100 * (r.get(str(k)) or r[k])["gain"] for r in results["subjects"].values()])
        ax[1].scatter(
            k + rng.uniform(-0.4, 0.4, len(g)),
            g,
            s=12,
            color="tab:gray",
            alpha=0.7,
            label="one subject (mean over draws)" if i == 0 else None,
        )
        ax[1].errorbar(
            k,
            g.mean(),
            yerr=g.std() / np.sqrt(len(g)),
            fmt="s",
            color="tab:orange",
            capsize=4,
            label="mean ± s.e. over subjects" if i == 0 else None,
        )
        one = (
            100
            / (
                results["subjects"][next(iter(results["subjects"]))][
                    str(k) if str(k) in results["subjects"][next(iter(results["subjects"]))] else k
                ]["n_scored"]
            )
        )
        ax[1].plot([k - 0.8, k + 0.8], [one, one], color="tab:blue", lw=0.8)
        ax[1].plot(
            [k - 0.8, k + 0.8],
            [-one, -one],
            color="tab:blue",
            lw=0.8,
            label="± one scored trial" if i == 0 else None,
        )
    ax[1].axhline(0, color="black", lw=0.6)
    ax[1].set_title("accuracy gain of adaptation (points)", fontsize=9)
    ax[1].legend(fontsize=7)
    for a in ax:
        a.set_xlabel("K labeled trials of the held-out subject")
        a.set_xticks(ks)
    fig.suptitle(f"Subject adaptation, cross-subject CV ({results['recipe']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
