"""Nested choice among candidates already run by train/research/cv.py, one honest outer number.

Inside every outer fold, the candidate with the lowest inner-validation metric *of that fold*
(computed by that fold's own networks, on its training subjects only) is kept, and that fold is
scored with the kept candidate's held-out probabilities. The held-out fold never takes part in the
choice, so the pooled result estimates what "pick among this grid by inner validation" achieves,
choice included. Ties go to the candidate listed first (list the shipped recipe first).

usage: python train/research/nested.py NAME RUN [RUN ...] [--by inner|inner_last10]
  reads runs/research/RUN.folds.json (written by cv.py), prints the nested row, the choice per fold
  and a paired per-fold comparison of every run (and of the nested choice) against the first RUN;
  appends the nested row to runs/research/cv_log.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fmri_edge.evaluation import scoring
from fmri_edge.training.fit import decide
from fmri_edge.training.protocols import baseline_level
from harness import RESULTS, parser, write_log


def load_run(name: str, where: str | Path = RESULTS) -> dict:
    return json.loads((Path(where) / f"{name}.folds.json").read_text())


def fold_scores(fold: dict, level_rule: str) -> dict:
    """Accuracy and challenge Score of one fold's held-out probabilities."""
    probs = {t: np.asarray(p) for t, p in fold["probs"].items()}
    labels = np.asarray(fold["labels"])
    d = decide(probs, level_rule)
    lvl = d.get("level", baseline_level(d["class"]))
    s = scoring.challenge_score(d["class"], labels[:, 0], lvl, labels[:, 1])
    return {
        "acc": 1 - s["CLASS_error"],
        "Score": s["Score"],
        "class": d["class"],
        "level": lvl,
        "labels": labels,
    }


def pooled_scores(folds: list[dict], level_rule: str) -> dict:
    each = [fold_scores(f, level_rule) for f in folds]
    cls = np.concatenate([e["class"] for e in each])
    lvl = np.concatenate([e["level"] for e in each])
    lab = np.concatenate([e["labels"] for e in each])
    s = scoring.challenge_score(cls, lab[:, 0], lvl, lab[:, 1])
    acc = [e["acc"] for e in each]
    return {
        "acc": 1 - s["CLASS_error"],
        "Score": s["Score"],
        "fold_acc": acc,
        "fold_acc_mean": float(np.mean(acc)),
        "fold_acc_std": float(np.std(acc)),
    }


def nested_choice(runs: dict[str, dict], by: str = "inner") -> tuple[list[dict], list[str]]:
    """Per outer fold, the fold of the run with the lowest ``by`` (ties: first run in ``runs``).
    Every run must have the same folds with the same held-out trials."""
    names = list(runs)
    ref = runs[names[0]]["folds"]
    for n in names[1:]:
        other = runs[n]["folds"]
        if [(f["name"], f["participants"], f["trial"]) for f in other] != [
            (f["name"], f["participants"], f["trial"]) for f in ref
        ]:
            raise ValueError(f"run {n} does not have the same outer folds as {names[0]}")
    chosen, picks = [], []
    for k in range(len(ref)):
        best = min(names, key=lambda n: (runs[n]["folds"][k][by], names.index(n)))
        chosen.append(runs[best]["folds"][k])
        picks.append(best)
    return chosen, picks


def paired(a: list[float], b: list[float]) -> str:
    d = np.asarray(a) - np.asarray(b)
    return (
        f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} (s.e.), "
        f"better in {int((d > 0).sum())}, worse in {int((d < 0).sum())} of {len(d)} folds"
    )


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, recipe=False, data=False, threads=None)
    ap.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="runs/research/RUN.folds.json, the shipped recipe first",
    )
    ap.add_argument("--by", default="inner", choices=("inner", "inner_last10"))
    args = ap.parse_args(argv)
    name, run_names, by = args.name, args.runs, args.by
    runs = {n: load_run(n) for n in run_names}
    rule = runs[run_names[0]]["recipe"]["eval"]["level_rule"]
    chosen, picks = nested_choice(runs, by)
    s = pooled_scores(chosen, rule)
    ref = pooled_scores(runs[run_names[0]]["folds"], rule)
    for n in run_names:
        r = pooled_scores(runs[n]["folds"], rule)
        print(
            f"{n:>16}: inner {np.mean([f['inner'] for f in runs[n]['folds']]):.3f}  acc {r['acc']:.3f}  "
            f"fold {r['fold_acc_mean']:.3f} ± {r['fold_acc_std']:.3f}  Score {r['Score']:.4f}  "
            f"vs {run_names[0]}: {paired(r['fold_acc'], ref['fold_acc'])}"
        )
    print("choice per fold:", ", ".join(f"{f['name']}: {p}" for f, p in zip(chosen, picks)))
    inner = float(np.mean([f[by] for f in chosen]))
    line = (
        f"| {name} | {inner:.3f} ({by}) | – | {s['acc']:.3f} | {s['fold_acc_mean']:.3f} ± {s['fold_acc_std']:.3f} "
        f"| – | – | {s['Score']:.4f} | nested over {len(run_names)} | – | – | "
        f"`nested.py {name} {' '.join(run_names)}{' --by ' + by if by != 'inner' else ''}` |"
    )
    print(line)
    print(f"nested vs {run_names[0]}: {paired(s['fold_acc'], ref['fold_acc'])}")
    write_log(line)


if __name__ == "__main__":
    main()
