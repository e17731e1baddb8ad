"""Does the input SE block learn? The shipped recipe's settings, subject CV, input-SE lr multiplier
(no L2 on it): inner-validation metric, held-out accuracy, and how far the SE region ranking moved
from its initialisation (Spearman rank correlation on held-out trials).
usage: python train/research/se_lr.py MULT   (from the repository root)"""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
from fmri_edge.io import load_icbhi
from fmri_edge.training.recipe import Recipe
from fmri_edge.training import protocols as P
from fmri_edge.training.model import build_model

mult = float(sys.argv[1])
r = Recipe(); r.optim.epochs = 40
r.model.normalization = "zscore_region"; r.model.time_window = [5, 25]; r.model.dropout = 0.5
r.augment.noise_std = 0.2; r.augment.mixup_alpha = 0.2
r.optim.input_se_lr_mult = mult
ds = P.dataset_from_icbhi(load_icbhi('../shared/data/icbhi2024/Train'))
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
        w0 = init.region_weights(x).mean(0).numpy(); w1 = f.fit.model.region_weights(x).mean(0).numpy()
    rk = lambda v: np.argsort(np.argsort(v))
    rho.append(np.corrcoef(rk(w0), rk(w1))[0, 1])
print(json.dumps({"mult": mult, "inner": s["inner_val_metric_mean"], "outer_acc": s["CLASS"]["accuracy"],
                  "outer_f1": s["CLASS"]["f1"], "fold_std": s["CLASS"]["accuracy_folds_std"],
                  "spearman_init_vs_trained": float(np.mean(rho)), "sec": time.time() - t}))
