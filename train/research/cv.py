"""Subject CV of one candidate recipe through the tool's own pipeline (fmri_edge.training.protocols),
so every number is what `fmri-edge train` would report for that recipe.

usage: python train/research/cv.py NAME [--base train/RECIPE.toml] [section.key=json_value ...] [--threads N] [--random]

--random: the paper's random 8:1:1 trial split (seeds of the recipe; optimistic) instead of the subject CV.

Prints one row and appends it to runs/research/cv_log.md (and runs/research/NAME.json).
Columns: inner = mean over every network of its validation metric at the kept checkpoint (the
only number used to choose between candidates; optimistic, equally for all), inner_last10 =
the same averaged over each network's last 10 epochs (less optimistic); outer = pooled held-out
accuracy / Score and the per-fold accuracy spread (reported, never used to choose)."""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fmri_edge.io import load_icbhi
from fmri_edge.training import protocols as P
from fmri_edge.training.recipe import Recipe, load_recipe

args = sys.argv[1:]
name = args.pop(0)
base, threads, random_protocol = None, 1, "--random" in args
if random_protocol:
    args.remove("--random")
if "--base" in args:
    i = args.index("--base"); base = args[i + 1]; del args[i:i + 2]
if "--threads" in args:
    i = args.index("--threads"); threads = int(args[i + 1]); del args[i:i + 2]
torch.set_num_threads(threads)
r = load_recipe(base) if base else Recipe()
for kv in args:
    k, v = kv.split("=", 1)
    sec, key = k.split(".") if "." in k else (None, k)
    obj = getattr(r, sec) if sec else r
    assert hasattr(obj, key), k
    val = json.loads(v)
    setattr(obj, key, tuple(val) if key in ("widths", "dense") else val)

ds = P.dataset_from_icbhi(load_icbhi(r.data, n_times=r.model.n_times))
t0 = time.time()
folds = (P.run_random_splits if random_protocol else P.run_subject_cv)(r, ds)
wall = time.time() - t0
s = P.pooled(r, folds)
fits = [x for f in folds for x in f.fits]
inner = float(np.mean([x.val_metric for x in fits]))
inner10 = float(np.mean([np.mean([h["val_metric"] for h in x.history[-10:]]) for x in fits]))
# the same held-out probabilities under the other LEVEL rule, for the Score-optimal comparison
other = "argmax" if r.eval.level_rule == "min_expected_error" else "min_expected_error"
r2 = Recipe(**{**r.__dict__}); r2.eval = type(r.eval)(**{**r.eval.__dict__, "level_rule": other})
s2 = P.pooled(r2, folds)
row = dict(name=name, protocol="random" if random_protocol else "subject", base=base, args=args, inner=inner, inner_last10=inner10,
           acc=s["CLASS"]["accuracy"], f1=s["CLASS"]["f1"], fold_acc_mean=s["CLASS"]["accuracy_folds_mean"],
           fold_acc_std=s["CLASS"]["accuracy_folds_std"], LEVEL_error=s["LEVEL_error"], Score=s["Score"],
           level_rule=r.eval.level_rule, other_rule=other, other_LEVEL_error=s2["LEVEL_error"], other_Score=s2["Score"],
           networks=len(fits), best_epochs_median=float(np.median([x.best_epoch for x in fits])), seconds=round(wall, 1))
Path("runs/research").mkdir(parents=True, exist_ok=True)
Path(f"runs/research/{name}.json").write_text(json.dumps(row, indent=1))
# per fold, for the nested choice (train/research/nested.py): that fold's inner numbers (its own
# networks only, trained and validated on its training subjects) and its held-out probabilities
per_fold = [dict(name=f.name, inner=float(np.mean([x.val_metric for x in f.fits])),
                 inner_last10=float(np.mean([np.mean([h["val_metric"] for h in x.history[-10:]]) for x in f.fits])),
                 participants=f.test.participants.tolist(), trial=f.test.trial_index.tolist(),
                 labels=f.test.labels.tolist(), probs={t: p.tolist() for t, p in f.probs.items()})
            for f in folds]
Path(f"runs/research/{name}.folds.json").write_text(json.dumps(dict(row=row, recipe=r.to_dict(), folds=per_fold)))
line = (f"| {name} | {inner:.3f} | {inner10:.3f} | {row['acc']:.3f} | {row['fold_acc_mean']:.3f} ± {row['fold_acc_std']:.3f} "
        f"| {row['f1']:.3f} | {row['LEVEL_error']:.4f} | {row['Score']:.4f} | {other}: {row['other_Score']:.4f} "
        f"| {len(fits)} | {wall:.0f} s | `cv.py {name} {('--base ' + base + ' ') if base else ''}{' '.join(args)}"
        f"{' --random' if random_protocol else ''}` |")
print(line)
with open("runs/research/cv_log.md", "a") as f:
    f.write(line + "\n")
