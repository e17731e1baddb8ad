"""Nested choice with the criterion averaged over seeds (Round 4 of docs/research.md).

Every candidate PREFIX was run by cv.py once per seed as PREFIX_s1, PREFIX_s2, … . Per candidate
and outer fold, the criterion (``--by``, default inner_last10) is averaged over the seeds and the
held-out class probabilities are averaged over the seeds (one seed-averaged prediction per trial).
Per outer fold the candidate with the lowest seed-averaged criterion of that fold is chosen (ties:
the first listed; list the shipped recipe first) and the fold is scored with its seed-averaged
probabilities. ``--ref RUN`` adds reference rows (e.g. the logistic regression) that are printed
and compared but take no part in the choice.

usage: python train/research/nested_seeds.py NAME PREFIX [PREFIX ...] [--seeds s1,s2] [--by inner_last10|inner] [--ref RUN ...]
"""

from __future__ import annotations


import numpy as np

from harness import parser, write_log
from nested import load_run, nested_choice, paired, pooled_scores


def seed_average(runs: list[dict]) -> dict:
    """One run whose folds carry the seeds' mean inner numbers and mean held-out probabilities."""
    ref = runs[0]
    for r in runs[1:]:
        assert [(f["name"], f["trial"], f["participants"]) for f in r["folds"]] == [
            (f["name"], f["trial"], f["participants"]) for f in ref["folds"]
        ], "seeds differ in folds"
    folds = []
    for k, f in enumerate(ref["folds"]):
        each = [r["folds"][k] for r in runs]
        folds.append(
            {
                **f,
                "inner": float(np.mean([e["inner"] for e in each])),
                "inner_last10": float(np.mean([e["inner_last10"] for e in each])),
                "probs": {
                    t: np.mean([np.asarray(e["probs"][t]) for e in each], axis=0).tolist()
                    for t in f["probs"]
                },
            }
        )
    return {"row": ref["row"], "recipe": ref["recipe"], "folds": folds}


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__, recipe=False, data=False, threads=None)
    ap.add_argument(
        "prefixes", nargs="+", metavar="PREFIX", help="candidates run as PREFIX_s1, PREFIX_s2, …"
    )
    ap.add_argument("--seeds", default="s1,s2", help="seed suffixes, comma-separated")
    ap.add_argument("--by", default="inner_last10", choices=("inner", "inner_last10"))
    ap.add_argument(
        "--ref",
        action="append",
        default=[],
        metavar="RUN",
        help="reference run (no part in the choice)",
    )
    args = ap.parse_args(argv)
    name, prefixes, seeds, by, refs = (
        args.name,
        args.prefixes,
        args.seeds.split(","),
        args.by,
        args.ref,
    )
    per_seed = {p: [load_run(f"{p}_{s}") for s in seeds] for p in prefixes}
    runs = {p: seed_average(v) for p, v in per_seed.items()}
    rule = runs[prefixes[0]]["recipe"]["eval"]["level_rule"]
    ref = pooled_scores(runs[prefixes[0]]["folds"], rule)

    print(
        f"| candidate | {by} (seed mean) | outer acc (seed-avg probs) | fold acc | Score | per seed: acc / Score | vs {prefixes[0]} (paired per fold) |"
    )
    print("|---|---|---|---|---|---|---|")
    for p in prefixes:
        r = pooled_scores(runs[p]["folds"], rule)
        crit = np.mean([f[by] for f in runs[p]["folds"]])
        each = [pooled_scores(x["folds"], rule) for x in per_seed[p]]
        seeds_txt = ", ".join(f"{e['acc']:.3f} / {e['Score']:.4f}" for e in each)
        print(
            f"| {p} | {crit:.3f} | {r['acc']:.3f} | {r['fold_acc_mean']:.3f} ± {r['fold_acc_std']:.3f} | {r['Score']:.4f} "
            f"| {seeds_txt} | {paired(r['fold_acc'], ref['fold_acc']) if p != prefixes[0] else '–'} |"
        )
    for n in refs:
        x = load_run(n)
        r = pooled_scores(x["folds"], x["recipe"]["eval"]["level_rule"])
        print(
            f"| {n} (reference) | {np.mean([f[by] for f in x['folds']]):.3f} | {r['acc']:.3f} | "
            f"{r['fold_acc_mean']:.3f} ± {r['fold_acc_std']:.3f} | {r['Score']:.4f} | – | {paired(r['fold_acc'], ref['fold_acc'])} |"
        )

    chosen, picks = nested_choice(runs, by)
    s = pooled_scores(chosen, rule)
    print("\nchoice per fold:", ", ".join(f"{f['name']}: {p}" for f, p in zip(chosen, picks)))
    print(
        "criterion per fold (chosen / shipped):",
        ", ".join(
            f"{c[by]:.3f}/{runs[prefixes[0]]['folds'][k][by]:.3f}" for k, c in enumerate(chosen)
        ),
    )
    print(
        f"nested {name}: {by} {np.mean([f[by] for f in chosen]):.3f}, outer acc {s['acc']:.3f}, "
        f"fold {s['fold_acc_mean']:.3f} ± {s['fold_acc_std']:.3f}, Score {s['Score']:.4f}"
    )
    print(f"nested vs {prefixes[0]}: {paired(s['fold_acc'], ref['fold_acc'])}")
    line = (
        f"| {name} | {np.mean([f[by] for f in chosen]):.3f} ({by}, seeds {'+'.join(seeds)}) | – | {s['acc']:.3f} "
        f"| {s['fold_acc_mean']:.3f} ± {s['fold_acc_std']:.3f} | – | – | {s['Score']:.4f} | nested over {len(prefixes)} | – | – | "
        f"`nested_seeds.py {name} {' '.join(prefixes)}` |"
    )
    write_log(line)


if __name__ == "__main__":
    main()
