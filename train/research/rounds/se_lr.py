"""Does the input SE block learn? The shipped recipe's settings, subject CV, input-SE lr multiplier
(no L2 on it): inner-validation metric, held-out accuracy, and how far the SE region ranking moved
from its initialisation (Spearman rank correlation on held-out trials).
usage: python train/research/rounds/se_lr.py MULT [--data DIR]   (from the repository root)"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fmri_edge.data.io import load_icbhi
from fmri_edge.training import protocols as P
from fmri_edge.training.model import build_model
from fmri_edge.training.recipe import Recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train/research: the harness
from harness import data_of, parser, set_threads  # noqa: E402


def main(argv=None):
    ap = parser(__doc__, name=False, recipe=False)
    ap.add_argument("mult", type=float, help="learning-rate multiplier of the input SE block")
    args = ap.parse_args(argv)
    set_threads(args)
    r = Recipe()
    r.optim.epochs = 40
    r.model.normalization = "zscore_region"
    r.model.time_window = [5, 25]
    r.model.dropout = 0.5
    r.augment.noise_std = 0.2
    r.augment.mixup_alpha = 0.2
    r.optim.input_se_lr_mult = args.mult
    ds = P.dataset_from_icbhi(load_icbhi(data_of(args)))
    t = time.time()
    folds = P.run_subject_cv(r, ds)
    s = P.pooled(r, folds)
    # movement of the input-SE weights vs. the same seed's initialisation, on held-out trials
    rho = []
    for k, f in enumerate(folds):
        torch.manual_seed(r.seed + k)
        init = build_model(r.model).eval()
        x = torch.as_tensor(f.test.trials)
        with torch.no_grad():
            w0 = init.region_weights(x).mean(0).numpy()
            w1 = f.fit.model.region_weights(x).mean(0).numpy()
        rk = lambda v: np.argsort(np.argsort(v))  # noqa: E731
        rho.append(np.corrcoef(rk(w0), rk(w1))[0, 1])
    print(
        json.dumps(
            {
                "mult": args.mult,
                "inner": s["inner_val_metric_mean"],
                "outer_acc": s["CLASS"]["accuracy"],
                "outer_f1": s["CLASS"]["f1"],
                "fold_std": s["CLASS"]["accuracy_folds_std"],
                "spearman_init_vs_trained": float(np.mean(rho)),
                "sec": time.time() - t,
            }
        )
    )


if __name__ == "__main__":
    main()
