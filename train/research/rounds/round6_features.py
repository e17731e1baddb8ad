"""Round 6 of docs/research.md: new features (or one other linear estimator), chosen inside.

Candidates A0–A5 (docs/research.md, "Round 6"): logistic regression at C = 0.01 on the shipped
representation (A0), plus the trial's sustained level (A1), its fluctuation energy (A2), both (A3),
shrinkage LDA on A0's features (A4), homologous regions averaged (A5). Every added block is z-scored
per participant over its own trials (no labels). Per outer fold (fmri_edge.evaluation.splits.subject_folds)
every candidate's inner criterion is its mean CLASS error over leave-one-group-out of the 8 training
groups; the lowest (ties: earlier in the list) is refitted on the training subjects and scores the
held-out fold. The candidate that ships is the one with the lowest LOGO error over all 9 groups.
Fits are cached by the set of groups left out (45 per candidate).

usage: python train/research/rounds/round6_features.py NAME [--ship-csv PATH] [--data DIR]
"""

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from fmri_edge.training.recipe import load_recipe
from fmri_edge.evaluation import splits
from fold_stats import FitCache, paired, read_answers, summary as fold_summary
from logreg_cv import features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/research: the harness
from harness import parser, set_threads, write_result  # noqa: E402

C = 0.01
CLS = np.array([-1, 0, 1])


def main(argv=None):
    ap = parser(__doc__, recipe=False)
    ap.add_argument(
        "--ship-csv", default="runs/fmri-edge-ensemble/cv_predictions.csv"
    )  # the Round 4-5 default model
    args = ap.parse_args(argv)
    name, ship_csv = args.name, args.ship_csv
    set_threads(args)

    t0 = time.time()
    recipe = load_recipe(
        "train/fmri-edge-ensemble.toml"
    )  # Round 6's base representation (Rounds 4-5)
    if args.data:
        recipe.data = str(args.data)
    ds, X0, y = features(recipe)  # (N, 246·5): psc_mean_gsr, 5–25 s, 5 bins, participant z-scored
    parts = np.asarray(ds.participants)
    grp = np.array([splits.subject_group(p) for p in parts])
    raw = np.asarray(ds.trials, dtype=np.float64)  # (N, 246, 25) raw BOLD
    start, stop = recipe.model.time_window

    def by_participant_z(v):
        """Each column z-scored over each participant's own trials (no labels), like the base alignment."""
        out = np.empty_like(v)
        for p in np.unique(parts):
            m = parts == p
            out[m] = (v[m] - v[m].mean(0)) / (v[m].std(0) + 1e-6)
        return out

    level = by_participant_z(np.log(raw[:, :, start:stop].mean(2)))
    mu = raw.mean(2, keepdims=True)
    psc = 100.0 * (raw - mu) / np.abs(mu)
    psc -= psc.mean(1, keepdims=True)  # psc_mean_gsr, per second
    variability = by_participant_z(np.log(psc[:, :, start:stop].std(2) + 1e-6))
    hemis = by_participant_z(X0.reshape(len(y), 123, 2, -1).mean(2).reshape(len(y), -1))

    logreg = lambda: LogisticRegression(C=C, max_iter=5000)  # noqa: E731
    candidates = {
        "A0 base": (X0, logreg),
        "A1 base + level": (np.hstack([X0, level]), logreg),
        "A2 base + variability": (np.hstack([X0, variability]), logreg),
        "A3 base + level + variability": (np.hstack([X0, level, variability]), logreg),
        "A4 shrinkage LDA": (
            X0,
            lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
        ),
        "A5 hemispheres": (hemis, logreg),
    }
    names = list(candidates)
    fits = FitCache(y, grp)

    def fit(cand, excluded):
        """Class probabilities (columns -1, 0, 1) for all trials, from a fit without the ``excluded`` groups."""
        X, make = candidates[cand]
        return fits.probs(cand, make, X, excluded)

    def logo(cand, left_out, groups):
        X, make = candidates[cand]
        return fits.logo(cand, make, X, left_out, groups)

    ship_cls, _ = read_answers(ship_csv, parts, ds.trial_index)

    rows, nested_cls = [], np.zeros_like(y)
    outer_cls = {c: np.zeros_like(y) for c in names}
    for train_p, test_p in splits.subject_folds(sorted(set(parts))):
        t = splits.subject_group(test_p[0])
        G = sorted({splits.subject_group(p) for p in train_p})
        te = grp == t
        inner = {c: logo(c, {t}, G) for c in names}
        pick = min(names, key=lambda c: (inner[c], names.index(c)))
        for c in names:
            outer_cls[c][te] = CLS[fit(c, {t})[te].argmax(1)]
        nested_cls[te] = outer_cls[pick][te]
        rows.append(dict(fold=t, inner=inner, pick=pick))
    all_groups = sorted(set(grp))
    ship_logo = {c: logo(c, set(), all_groups) for c in names}
    ships = min(names, key=lambda c: (ship_logo[c], names.index(c)))

    def summary(cls):
        return fold_summary(cls, ds.labels, grp, [r["fold"] for r in rows])

    res = {c: summary(v) for c, v in outer_cls.items()} | {
        "nested": summary(nested_cls),
        "shipped ensemble": summary(ship_cls),
    }
    pos_corr = float(
        np.mean(
            [
                np.corrcoef(np.asarray(ds.trial_index)[parts == p], level[parts == p].mean(1))[0, 1]
                for p in np.unique(parts)
            ]
        )
    )
    out = dict(
        name=name,
        C=C,
        folds=rows,
        results=res,
        ship_logo=ship_logo,
        ships=ships,
        level_position_corr=pos_corr,
        fits=len(fits.fits),
        convergence_warnings=fits.warnings,
        seconds=round(time.time() - t0, 1),
    )
    write_result(name, out)
    print_tables(out, names)


def print_tables(out, names):
    rows, res, ship_logo = out["folds"], out["results"], out["ship_logo"]
    short = {c: c.split()[0] for c in names}
    print("| held-out fold | " + " | ".join(f"{short[c]} inner" for c in names) + " | chosen |")
    print("|---|" + "---|" * (len(names) + 1))
    for r in rows:
        print(
            f"| {r['fold']} | "
            + " | ".join(f"{r['inner'][c]:.3f}" for c in names)
            + f" | {short[r['pick']]} |"
        )
    print(
        "| LOGO over all 9 groups | "
        + " | ".join(f"{ship_logo[c]:.3f}" for c in names)
        + f" | ships: {short[out['ships']]} |"
    )
    pr = lambda p: f"{p['mean']:+.3f} ± {p['se']:.3f} (better {p['better']}, worse {p['worse']})"  # noqa: E731
    print(
        "\n| row | pooled acc | fold acc (mean ± std) | Score | vs A0: acc | vs shipped: acc | vs shipped: Score |\n|---|---|---|---|---|---|---|"
    )
    for c, s in res.items():
        print(
            f"| {c} | {s['acc']:.4f} | {s['fold_acc_mean']:.3f} ± {s['fold_acc_std']:.3f} | {s['Score']:.4f} "
            f"| {pr(paired(s['fold_acc'], res['A0 base']['fold_acc']))} | {pr(paired(s['fold_acc'], res['shipped ensemble']['fold_acc']))} "
            f"| {pr(paired(s['fold_Score'], res['shipped ensemble']['fold_Score'], True))} |"
        )
    print(
        f"\nlevel vs trial position (mean within-participant r of the mean level block): {out['level_position_corr']:+.3f}"
    )
    print(
        f"{out['fits']} fits, {out['convergence_warnings']} convergence warnings, {out['seconds']} s"
    )


if __name__ == "__main__":
    main()
