"""One recipe, end to end: evaluate under the chosen protocols, then fit the shipped model.

Writes to ``runs/<recipe name>/``: ``results.json`` (metrics per protocol and fold, every
held-out prediction), ``model.pt`` (all subjects) and ``fold<k>.pt`` (the subject-CV fold
models, each with the participants it never saw).
"""
from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import fmri_edge
from fmri_edge.io import InputError, UsageError, load_icbhi
from fmri_edge.training.fit import save_checkpoint
from fmri_edge.training.protocols import (Dataset, Progress, dataset_from_icbhi, fit_all, pooled,
                                          run_random_splits, run_subject_cv)
from fmri_edge.training.recipe import Recipe, read_atlas


def load_dataset(recipe: Recipe) -> tuple[Dataset, list[str]]:
    ds = dataset_from_icbhi(load_icbhi(recipe.data, n_times=recipe.model.n_times))
    atlas = Path(recipe.atlas)
    names = read_atlas(atlas) if atlas.is_file() else [f"region_{i}" for i in range(recipe.model.n_regions)]
    if recipe.regions:
        missing = [r for r in recipe.regions if r not in names]
        if missing:
            raise InputError(atlas, f"regions {missing} of the recipe are not in this atlas")
        recipe.model.region_idx = [names.index(r) for r in recipe.regions]
    return ds, names


def _predictions(folds) -> list[dict]:
    rows = []
    for f in folds:
        for i in range(len(f.test.labels)):
            rows.append({"fold": f.name, "participant": str(f.test.participants[i]),
                         "trial": int(f.test.trial_index[i]),
                         "CLASS": int(f.test.labels[i, 0]), "LEVEL": int(f.test.labels[i, 1]),
                         **{f"{t}_probs": np.round(p[i], 6).tolist() for t, p in f.probs.items()}})
    return rows


def write_held_out_csv(recipe: Recipe, folds, path: Path) -> None:
    """Every trial's answer from the fold model that never saw its subject, in the submission
    format, so that `fmri-edge score cv_predictions.csv <Train>` gives the honest score."""
    from fmri_edge import submission
    from fmri_edge.training.fit import decide
    from fmri_edge.training.protocols import baseline_level

    with submission.atomic_write(path, force=True) as f:
        submission.write_header(f, probs=True)  # cross-validation diagnostics keep the class probabilities
        for fold in folds:
            d = decide(fold.probs, recipe.eval.level_rule)
            cls = d.get("class", np.sign(d.get("level", 0)))
            lvl = d.get("level", baseline_level(cls))
            probs = fold.probs.get("class", np.full((len(cls), 3), np.nan))
            for p in sorted(set(fold.test.participants.tolist())):
                m = fold.test.participants == p
                submission.write_rows(f, p, fold.test.trial_index[m], cls[m], lvl[m], probs[m], probs=True)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def run(recipe: Recipe, protocols: list[str], out_dir: Path, fit_final: bool = True,
        progress: Progress | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    ds, region_names = load_dataset(recipe)
    results = {"recipe": recipe.to_dict(), "fmri_edge_version": fmri_edge.__version__,
               "git_commit": git_commit(), "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpus": torch.get_num_threads(), "python": platform.python_version(),
                           "torch": torch.__version__},
               "n_trials": len(ds.labels), "participants": sorted(set(ds.participants.tolist())),
               "protocols": {}}
    cv_folds = None
    for protocol in protocols:
        t0 = time.perf_counter()
        folds = (run_subject_cv if protocol == "subject" else run_random_splits)(recipe, ds, progress)
        if protocol == "subject":
            cv_folds = folds
        results["protocols"][protocol] = {
            "summary": pooled(recipe, folds),
            "folds": [{"name": f.name, "best_epoch": f.fit.best_epoch, "val_metric": f.fit.val_metric,
                       "history": f.fit.history, **f.metrics} for f in folds],
            "predictions": _predictions(folds),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if protocol == "subject":
            write_held_out_csv(recipe, folds, out_dir / "cv_predictions.csv")
        if protocol == "subject":  # fold models: for int8 checks, attention studies
            for k, f in enumerate(folds):
                test_p = sorted(set(f.test.participants.tolist()))
                if len(f.fits) == 1:
                    save_checkpoint(f.fit.model, out_dir / f"fold{k}.pt", fold=f.name, test_participants=test_p)
                else:  # an ensemble per fold: its networks in a folder of their own
                    (out_dir / f"fold{k}").mkdir(exist_ok=True)
                    for j, r in enumerate(f.fits):
                        save_checkpoint(r.model, out_dir / f"fold{k}" / f"member{j}.pt", fold=f.name,
                                        test_participants=test_p)
    if fit_final:
        epochs = recipe.full_epochs
        if epochs is None and not recipe.ensemble:
            if cv_folds is None:
                raise UsageError("full_epochs is not set in the recipe and no subject CV ran to choose it")
            epochs = int(np.median([f.fit.best_epoch for f in cv_folds]))
        t0 = time.perf_counter()
        final = fit_all(recipe, ds, epochs, progress)
        epochs = epochs or int(np.median([r.best_epoch for r in final]))
        results["final"] = {"epochs": epochs, "seconds": round(time.perf_counter() - t0, 1),
                            "participants": results["participants"], "networks": len(final),
                            "best_epochs": [r.best_epoch for r in final]}
        for old in out_dir.glob("member*.pt"):
            old.unlink()
        for j, r in enumerate(final):
            save_checkpoint(r.model, out_dir / ("model.pt" if j == 0 else f"member{j}.pt"),
                            region_names=region_names, recipe=json.dumps(recipe.to_dict()), epochs=epochs,
                            participants=results["participants"])
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results
