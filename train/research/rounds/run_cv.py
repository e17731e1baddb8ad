"""Subject-CV (9 folds, inner val group for checkpoint) of one candidate recipe (Rounds 1-3 of
docs/research.md; the recipe defaults with 40 epochs unless --base).
usage: python train/research/rounds/run_cv.py NAME [--set section.key=json_value ...] [--seeds N] [--random] [--data DIR]
Prints + appends to runs/research/research_log.md and runs/research/NAME.json."""

import sys
import time
from pathlib import Path

import numpy as np

from fmri_edge import valence
from fmri_edge.evaluation import scoring, splits
from fmri_edge.data.io import load_icbhi
from fmri_edge.training import protocols as P
from fmri_edge.training.fit import fit, predict_proba
from fmri_edge.training.recipe import Recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/research: the harness
from harness import RESULTS, data_of, parser, recipe_of, write_result  # noqa: E402


def default_recipe():
    r = Recipe()
    r.optim.epochs = 40
    return r


def level_answers(probs, cls):
    out = {"baseline": P.baseline_level(cls)}
    if "class" in probs and "_cond" in probs:
        # class_prior: p(level|x) = sum_c p(c|x) P_train(level|c) (training-fold labels), min expected error
        pl = np.einsum("nc,ncl->nl", probs["class"], probs["_cond"])
        out["class_prior"] = valence.decide_level(pl, "min_expected_error")
    if "level" in probs:
        out["argmax"] = valence.decide_level(probs["level"], "argmax")
        out["min_exp"] = valence.decide_level(probs["level"], "min_expected_error")
        # hybrid: level restricted to sign consistent with predicted class, min expected error
        e = valence.expected_level_error(probs["level"])
        mask = np.sign(valence.LEVEL_VALUES)[None, :] == cls[:, None]
        out["min_exp_cls"] = valence.LEVEL_VALUES[np.argmin(np.where(mask, e, np.inf), axis=1)]
    return out


def report(probs, labels):
    cls = (
        valence.decide_class(probs["class"])
        if "class" in probs
        else np.sign(valence.decide_level(probs["level"]))
    )
    rep = scoring.classification_report(cls, labels[:, 0], valence.CLASS_VALUES)
    lv = {k: scoring.level_error(v, labels[:, 1]) for k, v in level_answers(probs, cls).items()}
    return {"acc": rep["accuracy"], "f1": rep["f1"], "level_err": lv}


def cat(L):
    d = {t: np.concatenate([p[t] for p in L]) for t in L[0]}
    if "_cond" in d:
        d["_cond"] = d["_cond"]  # (N,3,9)
    return d


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="networks per fold (different seeds), probabilities averaged",
    )
    ap.add_argument(
        "--random",
        action="store_true",
        help="the paper's random 8:1:1 split instead of the subject CV",
    )
    args = ap.parse_args(argv)
    name, n_seeds, random_proto = args.name, args.seeds, args.random
    r = recipe_of(args, default=default_recipe)
    ds0 = P.dataset_from_icbhi(load_icbhi(data_of(args, r)))
    ds = P.prepare(r, ds0)

    t0 = time.time()
    outer_probs, outer_labels, inner_probs, inner_labels, fold_acc, best_ep, vm, vm_last = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    if not random_proto:
        fold_iter = []
        for k, (train_p, test_p) in enumerate(splits.subject_folds(sorted(set(ds.participants)))):
            fit_p, val_p = splits.inner_validation(
                train_p, r.eval.inner_val_groups, seed=r.seed + k
            )
            fold_iter.append((ds.of(fit_p), ds.of(val_p), ds.of(test_p), r.seed + k))
    else:
        fold_iter = []
        for s in r.eval.seeds:
            tr, va, te = splits.random_split(ds.labels[:, 0], s)
            fold_iter.append((ds.take(tr), ds.take(va), ds.take(te), s))
    for fit_ds, val_ds, test_ds, seed in fold_iter:
        po, pi = [], []
        for j in range(n_seeds):
            res = fit(
                r,
                fit_ds.trials,
                fit_ds.labels,
                val_ds.trials,
                val_ds.labels,
                seed=seed + 1000 * j,
                participants=fit_ds.participants,
                val_participants=val_ds.participants,
            )
            po.append(predict_proba(res.model, test_ds.trials, test_ds.participants))
            pi.append(predict_proba(res.model, val_ds.trials, val_ds.participants))
            best_ep.append(res.best_epoch)
            vm.append(res.val_metric)
            vm_last.append(np.mean([h["val_metric"] for h in res.history[-10:]]))
        po = {t: np.mean([p[t] for p in po], 0) for t in po[0]}
        pi = {t: np.mean([p[t] for p in pi], 0) for t in pi[0]}
        cond = np.array(
            [
                [np.mean(fit_ds.labels[fit_ds.labels[:, 0] == c, 1] == l) for l in range(-4, 5)]
                for c in (-1, 0, 1)
            ]
        )
        po["_cond"] = np.repeat(cond[None], len(test_ds.labels), 0)
        pi["_cond"] = np.repeat(cond[None], len(val_ds.labels), 0)
        outer_probs.append(po)
        outer_labels.append(test_ds.labels)
        inner_probs.append(pi)
        inner_labels.append(val_ds.labels)
        fold_acc.append(report(po, test_ds.labels)["acc"])
    wall = time.time() - t0
    O = report(cat(outer_probs), np.concatenate(outer_labels))
    I = report(cat(inner_probs), np.concatenate(inner_labels))
    rule = "min_exp" if "level" in O["level_err"] and "min_exp" in O["level_err"] else "baseline"
    # level rule chosen on inner val (lowest inner level error among available rules)
    rule = min(I["level_err"], key=I["level_err"].get)
    score = scoring.score_from_errors(1 - O["acc"], O["level_err"][rule])
    res = dict(
        name=name,
        args=args.sets,
        n_seeds=n_seeds,
        protocol="random" if random_proto else "subject",
        inner_val_metric_mean=float(np.mean(vm)),
        inner_val_last10_mean=float(np.mean(vm_last)),
        inner_ckpt_acc=I["acc"],
        inner_level_err=I["level_err"],
        inner_rule=rule,
        outer_acc=O["acc"],
        outer_f1=O["f1"],
        outer_level_err=O["level_err"],
        outer_score=score,
        fold_acc_mean=float(np.mean(fold_acc)),
        fold_acc_std=float(np.std(fold_acc)),
        fold_acc=fold_acc,
        best_epochs=best_ep,
        wall_s=wall,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.savez(
        RESULTS / f"{name}_probs.npz",
        **{"outer_" + t: v for t, v in cat(outer_probs).items()},
        **{"inner_" + t: v for t, v in cat(inner_probs).items()},
        outer_labels=np.concatenate(outer_labels),
        inner_labels=np.concatenate(inner_labels),
    )
    fmt = lambda d: "/".join(f"{k}:{v:.3f}" for k, v in d.items())
    line = (
        f"| {name} | {res['protocol']} | {res['inner_val_metric_mean']:.3f} | {res['inner_val_last10_mean']:.3f} | {I['acc']:.3f} | "
        f"{O['acc']:.3f} | {O['f1']:.3f} | {fmt(O['level_err'])} ({rule}) | {score:.4f} | "
        f"{res['fold_acc_mean']:.3f}±{res['fold_acc_std']:.3f} | {np.median(best_ep):.0f} | {wall:.0f}s | "
        f"`run_cv.py {name}{''.join(' --set ' + kv for kv in args.sets)}{' --seeds %d' % n_seeds if n_seeds > 1 else ''}"
        f"{' --random' if random_proto else ''}` |"
    )
    write_result(name, res, line, log="research_log.md")


if __name__ == "__main__":
    main()
