"""Round 5 of docs/research.md: logistic regression with C chosen inside each outer fold, against
the shipped ensemble's held-out predictions, plus the nested choice between the two.

Features: train/research/logreg_cv.py's (the recipe's representation, flattened). Per outer fold
(fmri_edge.evaluation.splits.subject_folds), C is chosen from GRID by leave-one-group-out over the 8 training
groups (mean CLASS error over the groups, ties to the smaller C), refitted on all training subjects
and scored on the held-out fold. The logreg's inner criterion for the nested choice is the LOGO
error of that whole procedure inside the training groups (C re-chosen without the scored group);
the ensemble's is inner_last10 of a seed-0 re-run of the shipped recipe (runs/research/SHIP.folds.json,
written by `cv.py SHIP --base train/fmri-edge-ensemble.toml`, the Round 4-5 default recipe). Every fit is cached by the set of groups
left out, so the 9 x (8 + 28) inner fits share their models (645 fits in all).

usage: python train/research/rounds/logreg_nested.py NAME [--ship-csv PATH] [--ship-run r5_ship] [--data DIR]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from fmri_edge.evaluation import scoring, splits
from fmri_edge.training.protocols import baseline_level
from fmri_edge.training.recipe import load_recipe
from fold_stats import FitCache, paired, read_answers, summary as fold_summary
from logreg_cv import features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/research: the harness
from harness import RESULTS, parser, set_threads, write_result  # noqa: E402

GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
CLS = np.array([-1, 0, 1])


def main(argv=None):
    ap = parser(__doc__, recipe=False)
    ap.add_argument(
        "--ship-csv", default="runs/fmri-edge-ensemble/cv_predictions.csv"
    )  # the Round 4-5 default model
    ap.add_argument("--ship-run", default="r5_ship")
    args = ap.parse_args(argv)
    name, ship_csv, ship_run = args.name, args.ship_csv, args.ship_run
    set_threads(args)

    t0 = time.time()
    recipe = load_recipe("train/fmri-edge-ensemble.toml")  # the Round 4-5 representation
    if args.data:
        recipe.data = str(args.data)
    ds, X, y = features(recipe)
    parts = np.asarray(ds.participants)
    grp = np.array([splits.subject_group(p) for p in parts])
    fits = FitCache(y, grp)

    def fit(excluded, C):
        """Class probabilities (columns -1, 0, 1) for all trials of a model fitted without ``excluded`` groups."""
        return fits.probs(C, lambda: LogisticRegression(C=C, max_iter=5000), X, excluded)

    def choose_C(left_out, groups):
        """C with the lowest mean LOGO error over ``groups`` (each scored by a fit without it and ``left_out``)."""
        e = {
            C: float(np.mean([fits.error(fit(left_out | {g}, C), g) for g in groups])) for C in GRID
        }
        return min(GRID, key=lambda C: (e[C], C)), e

    def score(cls, mask):
        return scoring.challenge_score(
            cls, ds.labels[mask, 0], baseline_level(cls), ds.labels[mask, 1]
        )

    # the shipped recipe's held-out predictions, read (not retrained)
    ship_cls, ship_prob = read_answers(ship_csv, parts, ds.trial_index)
    assert (CLS[ship_prob.argmax(1)] == ship_cls).mean() > 0.99, (
        "CSV CLASS is not the argmax of its probabilities"
    )
    ship_fold = {}
    if (RESULTS / f"{ship_run}.folds.json").exists():
        for f in json.loads((RESULTS / f"{ship_run}.folds.json").read_text())["folds"]:
            g = splits.subject_group(f["participants"][0])
            rerun = CLS[np.asarray(f["probs"]["class"]).argmax(1)]
            m = grp == g
            order = [
                list(zip(parts[m], ds.trial_index[m])).index((p, t))
                for p, t in zip(f["participants"], f["trial"])
            ]
            ship_fold[g] = dict(
                crit=f["inner_last10"], agree=float(np.mean(rerun == ship_cls[m][order]))
            )

    rows, lr_cls, fixed_cls = [], np.zeros_like(y), {C: np.zeros_like(y) for C in GRID}
    for train_p, test_p in splits.subject_folds(sorted(set(parts))):
        t = splits.subject_group(test_p[0])
        G = sorted({splits.subject_group(p) for p in train_p})
        te = grp == t
        C_k, e1 = choose_C({t}, G)
        lr_cls[te] = CLS[fit({t}, C_k)[te].argmax(1)]
        for C in GRID:
            fixed_cls[C][te] = CLS[fit({t}, C)[te].argmax(1)]
        # the whole procedure's LOGO error inside the training groups: C re-chosen without the scored group
        crit = []
        for g in G:
            C_g, _ = choose_C({t, g}, [h for h in G if h != g])
            crit.append(fits.error(fit({t, g}, C_g), g))
        rows.append(
            dict(
                fold=t,
                C=C_k,
                logo=e1,
                lr_crit=float(np.mean(crit)),
                lr_crit_min=min(e1.values()),
                ship_crit=ship_fold.get(t, {}).get("crit"),
                ship_rerun_agree=ship_fold.get(t, {}).get("agree"),
                lr=score(lr_cls[te], te),
                ship=score(ship_cls[te], te),
            )
        )

    def summary(cls):
        return fold_summary(cls, ds.labels, grp, [r["fold"] for r in rows])

    out = dict(
        name=name,
        grid=GRID,
        ship_csv=ship_csv,
        ship_run=ship_run,
        folds=rows,
        ship=summary(ship_cls),
        logreg=summary(lr_cls),
        fixed={str(C): summary(v) for C, v in fixed_cls.items()},
    )
    out["logreg_vs_ship"] = dict(
        acc=paired(out["logreg"]["fold_acc"], out["ship"]["fold_acc"]),
        Score=paired(out["logreg"]["fold_Score"], out["ship"]["fold_Score"], True),
    )
    if len(ship_fold) == len(rows):
        for key, by in (("nested", "lr_crit"), ("nested_min", "lr_crit_min")):
            cls = ship_cls.copy()
            picks = []
            for r in rows:
                pick = "logreg" if r[by] < r["ship_crit"] else "ship"  # ties: the shipped ensemble
                picks.append(pick)
                if pick == "logreg":
                    cls[grp == r["fold"]] = lr_cls[grp == r["fold"]]
            out[key] = summary(cls) | dict(picks=picks, by=by)
            out[key]["vs_ship"] = dict(
                acc=paired(out[key]["fold_acc"], out["ship"]["fold_acc"]),
                Score=paired(out[key]["fold_Score"], out["ship"]["fold_Score"], True),
            )
    out["fits"], out["convergence_warnings"], out["seconds"] = (
        len(fits.fits),
        fits.warnings,
        round(time.time() - t0, 1),
    )
    write_result(name, out)
    print_tables(out, rows)


def print_tables(out, rows):
    f3 = lambda s: (
        f"{s['acc']:.4f} | {s['fold_acc_mean']:.3f} ± {s['fold_acc_std']:.3f} | {s['Score']:.4f}"
    )
    pr = lambda p: f"{p['mean']:+.3f} ± {p['se']:.3f} (better {p['better']}, worse {p['worse']})"
    print(
        "| fold | C chosen | LOGO err per C | logreg crit (whole procedure) | min over grid | ship last-10 | rerun = CSV | logreg acc | ship acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sc = "–" if r["ship_crit"] is None else f"{r['ship_crit']:.3f}"
        ag = "–" if r["ship_rerun_agree"] is None else f"{r['ship_rerun_agree']:.3f}"
        print(
            f"| {r['fold']} | {r['C']:g} | {' '.join(f'{v:.3f}' for v in r['logo'].values())} | {r['lr_crit']:.3f} "
            f"| {r['lr_crit_min']:.3f} | {sc} | {ag} | {1 - r['lr']['CLASS_error']:.3f} | {1 - r['ship']['CLASS_error']:.3f} |"
        )
    print(
        "\n| row | pooled acc | fold acc | Score | vs shipped: acc | vs shipped: Score |\n|---|---|---|---|---|---|"
    )
    print(f"| shipped (CSV) | {f3(out['ship'])} | – | – |")
    print(
        f"| logreg, C by inner LOGO | {f3(out['logreg'])} | {pr(out['logreg_vs_ship']['acc'])} | {pr(out['logreg_vs_ship']['Score'])} |"
    )
    for key in ("nested", "nested_min"):
        if key in out:
            print(
                f"| {key} ({out[key]['by']}; picks {' '.join(p[0] for p in out[key]['picks'])}) | {f3(out[key])} "
                f"| {pr(out[key]['vs_ship']['acc'])} | {pr(out[key]['vs_ship']['Score'])} |"
            )
    for C, s in out["fixed"].items():
        d = paired(s["fold_acc"], out["ship"]["fold_acc"])
        print(f"| fixed C {C} (description only) | {f3(s)} | {pr(d)} | – |")
    print(
        f"\n{out['fits']} fits, {out['convergence_warnings']} convergence warnings, {out['seconds']} s"
    )


if __name__ == "__main__":
    main()
