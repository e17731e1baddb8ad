"""A plain scikit-learn logistic regression in the subject CV, as a reference row.

The features are the recipe's own representation (per-trial normalization, window, bins, then each
participant z-scored over its own trials: fmri_edge.training.fit.represent), flattened; the model is
LogisticRegression(C) fitted to convergence on all training subjects of the outer fold. C is fixed
beforehand (0.01, the value of issue 9's table), never tuned here. "inner_last10" for this row is
the leave-one-group-out error inside the outer fold's training subjects (a model fitted on 7 groups,
scored on the 8th; no checkpoint or selection involved), so it sits on the same footing as the
networks' last-10 number. Writes runs/research/NAME.json and NAME.folds.json like cv.py.

usage: python train/research/rounds/logreg_cv.py NAME [--base train/fmri-edge-ensemble.toml] [--C 0.01]
           [--set section.key=json_value ...] [--data DIR]
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from fmri_edge.evaluation import scoring, splits  # noqa: E402
from fmri_edge.training import protocols as P  # noqa: E402
from fmri_edge.training.fit import represent  # noqa: E402
from fmri_edge.training.model import build_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/research: the harness
from harness import RESULTS, icbhi_dataset, parser, recipe_of, write_result  # noqa: E402


def features(r):
    """(dataset, X, y) of a recipe: its representation of every trial, flattened (float64), and CLASS.
    Also used by train/research/logreg_nested.py."""
    ds = icbhi_dataset(r)
    model = build_model(
        r.model
    )  # only its representation is used (no parameters are learned there)
    X = (
        represent(model, ds.trials, ds.participants)
        .reshape(len(ds.trials), -1)
        .numpy()
        .astype(np.float64)
    )
    return ds, X, ds.labels[:, 0].astype(int)


def main(argv=None):
    ap = parser(__doc__, base="train/fmri-edge-ensemble.toml")  # the Round 4-5 default recipe
    ap.add_argument("--C", type=float, default=0.01)
    args = ap.parse_args(argv)
    name, base, C = args.name, args.base, args.C
    r = recipe_of(args)

    ds, X, y = features(r)

    def lr_fit(mask):
        return LogisticRegression(C=C, max_iter=5000).fit(X[mask], y[mask])

    t0 = time.time()
    folds, per_fold = [], []
    for train_p, test_p in splits.subject_folds(sorted(set(ds.participants))):
        tr, te = np.isin(ds.participants, train_p), np.isin(ds.participants, test_p)
        groups = splits.groups_of(sorted(train_p))
        inner = []
        for g, ps in groups.items():
            va = np.isin(ds.participants, ps)
            inner.append(float(np.mean(lr_fit(tr & ~va).predict(X[va]) != y[va])))
        clf = lr_fit(tr)
        p = clf.predict_proba(X[te])[:, [list(clf.classes_).index(c) for c in (-1, 0, 1)]]
        test = ds.take(te)
        per_fold.append(
            dict(
                name="test " + "+".join(test_p),
                inner=float(np.mean(inner)),
                inner_last10=float(np.mean(inner)),
                participants=test.participants.tolist(),
                trial=test.trial_index.tolist(),
                labels=test.labels.tolist(),
                probs={"class": p.tolist()},
            )
        )
        cls = np.array([-1, 0, 1])[p.argmax(1)]
        folds.append(
            scoring.challenge_score(
                cls, test.labels[:, 0], P.baseline_level(cls), test.labels[:, 1]
            )
            | {"cls": cls, "lab": test.labels}
        )
    cls = np.concatenate([f["cls"] for f in folds])
    lab = np.concatenate([f["lab"] for f in folds])
    s = scoring.challenge_score(cls, lab[:, 0], P.baseline_level(cls), lab[:, 1])
    acc = [1 - f["CLASS_error"] for f in folds]
    row = dict(
        name=name,
        protocol="subject",
        base=base,
        args=args.sets,
        C=C,
        inner=float(np.mean([f["inner"] for f in per_fold])),
        inner_last10=float(np.mean([f["inner"] for f in per_fold])),
        acc=1 - s["CLASS_error"],
        fold_acc_mean=float(np.mean(acc)),
        fold_acc_std=float(np.std(acc)),
        LEVEL_error=s["LEVEL_error"],
        Score=s["Score"],
        seconds=round(time.time() - t0, 1),
    )
    rec = r.to_dict()
    rec["eval"]["level_rule"] = "argmax"
    RESULTS.mkdir(parents=True, exist_ok=True)
    Path(RESULTS / f"{name}.folds.json").write_text(
        json.dumps(dict(row=row, recipe=rec, folds=per_fold))
    )
    line = (
        f"| {name} | {row['inner']:.3f} (LOGO) | {row['acc']:.3f} | {row['fold_acc_mean']:.3f} ± {row['fold_acc_std']:.3f} "
        f"| {row['LEVEL_error']:.4f} | {row['Score']:.4f} | {row['seconds']:.0f} s | `logreg_cv.py {name} --base {base} --C {C}"
        f"{''.join(' --set ' + kv for kv in args.sets)}` |"
    )
    write_result(name, row, line)


if __name__ == "__main__":
    main()
