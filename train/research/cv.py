"""Subject CV of one candidate recipe through the tool's own pipeline (fmri_edge.training.protocols),
so every number is what `fmri-edge train` would report for that recipe.

usage: python train/research/cv.py NAME [--base train/RECIPE.toml] [--set section.key=json_value ...]
           [--data DIR] [--threads N] [--random]

--random: the paper's random 8:1:1 trial split (seeds of the recipe; optimistic) instead of the subject CV.

Prints one row and appends it to runs/research/cv_log.md (and runs/research/NAME.json).
Columns: inner = mean over every network of its validation metric at the kept checkpoint (the
only number used to choose between candidates; optimistic, equally for all), inner_last10 =
the same averaged over each network's last 10 epochs (less optimistic); outer = pooled held-out
accuracy / Score and the per-fold accuracy spread (reported, never used to choose)."""

import json
import time
from pathlib import Path

import numpy as np

from harness import RESULTS, icbhi_dataset, parser, recipe_of, write_result


def main(argv=None):
    from fmri_edge.training import protocols as P
    from fmri_edge.training.recipe import Recipe

    ap = parser(__doc__)
    ap.add_argument(
        "--random",
        action="store_true",
        help="the paper's random 8:1:1 split instead of the subject CV",
    )
    args = ap.parse_args(argv)
    name, base, random_protocol = args.name, args.base, args.random
    r = recipe_of(args)
    ds = icbhi_dataset(r)
    t0 = time.time()
    folds = (P.run_random_splits if random_protocol else P.run_subject_cv)(r, ds)
    wall = time.time() - t0
    s = P.pooled(r, folds)
    fits = [x for f in folds for x in f.fits]
    inner = float(np.mean([x.val_metric for x in fits]))
    inner10 = float(np.mean([np.mean([h["val_metric"] for h in x.history[-10:]]) for x in fits]))
    # the same held-out probabilities under the other LEVEL rule, for the Score-optimal comparison
    other = "argmax" if r.eval.level_rule == "min_expected_error" else "min_expected_error"
    r2 = Recipe(**{**r.__dict__})
    r2.eval = type(r.eval)(**{**r.eval.__dict__, "level_rule": other})
    s2 = P.pooled(r2, folds)
    row = dict(
        name=name,
        protocol="random" if random_protocol else "subject",
        base=base,
        args=args.sets,
        inner=inner,
        inner_last10=inner10,
        acc=s["CLASS"]["accuracy"],
        f1=s["CLASS"]["f1"],
        fold_acc_mean=s["CLASS"]["accuracy_folds_mean"],
        fold_acc_std=s["CLASS"]["accuracy_folds_std"],
        LEVEL_error=s["LEVEL_error"],
        Score=s["Score"],
        level_rule=r.eval.level_rule,
        other_rule=other,
        other_LEVEL_error=s2["LEVEL_error"],
        other_Score=s2["Score"],
        networks=len(fits),
        best_epochs_median=float(np.median([x.best_epoch for x in fits])),
        seconds=round(wall, 1),
    )
    # per fold, for the nested choice (train/research/nested.py): that fold's inner numbers (its own
    # networks only, trained and validated on its training subjects) and its held-out probabilities
    per_fold = [
        dict(
            name=f.name,
            inner=float(np.mean([x.val_metric for x in f.fits])),
            inner_last10=float(
                np.mean([np.mean([h["val_metric"] for h in x.history[-10:]]) for x in f.fits])
            ),
            participants=f.test.participants.tolist(),
            trial=f.test.trial_index.tolist(),
            labels=f.test.labels.tolist(),
            probs={t: p.tolist() for t, p in f.probs.items()},
        )
        for f in folds
    ]
    line = (
        f"| {name} | {inner:.3f} | {inner10:.3f} | {row['acc']:.3f} | {row['fold_acc_mean']:.3f} ± "
        f"{row['fold_acc_std']:.3f} | {row['f1']:.3f} | {row['LEVEL_error']:.4f} | {row['Score']:.4f} | {other}: "
        f"{row['other_Score']:.4f} | {len(fits)} | {wall:.0f} s | `cv.py {name} {('--base ' + base + ' ') if base else ''}"
        f"{''.join(f'--set {kv} ' for kv in args.sets).rstrip()}{' --random' if random_protocol else ''}` |"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(RESULTS / f"{name}.folds.json").write_text(
        json.dumps(dict(row=row, recipe=r.to_dict(), folds=per_fold))
    )
    write_result(name, row, line)


if __name__ == "__main__":
    main()
