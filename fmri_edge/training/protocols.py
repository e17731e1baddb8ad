"""Evaluation protocols over the labeled ICBHI subjects, and the final fit on all of them.

- ``random``: the paper's protocol, a stratified random 8:1:1 split of *trials* (same subjects
  on both sides: optimistic), repeated over seeds.
- ``subject``: leave-one-order-mate-group-out cross-validation (9 folds); inside each fold one
  more group of the training subjects is held out as validation for the checkpoint choice, so
  the held-out fold is never looked at until it is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fmri_edge.evaluation import scoring, splits
from fmri_edge.model.normalize import normalize_by_participant
from fmri_edge.training.fit import FitResult, common_checkpoint, decide, fit, predict_proba
from fmri_edge.training.model import CLASS_RULE
from fmri_edge.training.recipe import Recipe

Progress = Callable[[str, int, int], None]  # (stage, epoch, epochs)


@dataclass
class Dataset:
    trials: np.ndarray  # (N, 246, T) float32 raw BOLD
    labels: np.ndarray  # (N, 2) [CLASS, LEVEL]
    participants: np.ndarray  # (N,) participant id per trial
    trial_index: np.ndarray  # (N,) 1-based trial number within its participant
    groups: np.ndarray | None = (
        None  # (N,) CV group of the trial's participant (None: ICBHI order-mates)
    )
    level_rated: np.ndarray | None = (
        None  # (N,) bool: LEVEL is the participant's rating (None: all are)
    )

    def take(self, mask) -> "Dataset":
        return Dataset(
            self.trials[mask],
            self.labels[mask],
            self.participants[mask],
            self.trial_index[mask],
            *(None if a is None else a[mask] for a in (self.groups, self.level_rated)),
        )

    def with_labels(self, labels: np.ndarray) -> "Dataset":
        return Dataset(
            self.trials, labels, self.participants, self.trial_index, self.groups, self.level_rated
        )

    def group_map(self) -> dict[str, str] | None:
        """{participant: CV group}, or None where the data name no groups."""
        if self.groups is None:
            return None
        return dict(zip(self.participants.tolist(), self.groups.tolist()))

    def of(self, participants: list[str]) -> "Dataset":
        return self.take(np.isin(self.participants, participants))


def dataset_from_icbhi(subjects: dict[str, tuple[np.ndarray, np.ndarray]]) -> Dataset:
    names = sorted(subjects)
    return Dataset(
        trials=np.concatenate([subjects[p][0] for p in names]),
        labels=np.concatenate([subjects[p][1] for p in names]),
        participants=np.concatenate([[p] * len(subjects[p][0]) for p in names]),
        trial_index=np.concatenate([np.arange(1, len(subjects[p][0]) + 1) for p in names]),
    )


def normalize_subjects(ds: Dataset, mode: str | None) -> Dataset:
    """Subject-wise normalization per participant (:mod:`fmri_edge.model.normalize`); a no-op for "none"."""
    if (mode or "none") == "none":
        return ds
    return Dataset(
        normalize_by_participant(ds.trials, ds.participants, mode),
        ds.labels,
        ds.participants,
        ds.trial_index,
        ds.groups,
        ds.level_rated,
    )


def prepare(recipe: Recipe, ds: Dataset) -> Dataset:
    """The dataset as the recipe's model receives it (subject-wise normalization, if any)."""
    return normalize_subjects(ds, recipe.model.subject_norm)


@dataclass
class FoldResult:
    name: str
    test: Dataset
    probs: dict
    fits: list  # FitResult per network (one, or one per group with an ensemble)
    metrics: dict = field(default_factory=dict)

    @property
    def fit(self) -> FitResult:
        return self.fits[0]


def evaluate(recipe: Recipe, probs: dict, labels: np.ndarray) -> dict:
    """Paper metrics and challenge score for whatever heads the model has. A class-only model
    answers LEVEL with the class-only baseline (−1 → −3, 0 → 0, 1 → 2)."""
    d = decide(probs, recipe.eval.level_rule)
    cls = d.get("class")
    lvl = d.get("level")
    if cls is None:  # level-only model: its class is the sign of its level
        cls = np.sign(lvl)
    if lvl is None:
        lvl = baseline_level(cls)
    return scoring.full_report(cls, labels[:, 0], lvl, labels[:, 1])


def baseline_level(valence_class: np.ndarray) -> np.ndarray:
    """The class-only LEVEL baseline: −1 → −3, 0 → 0, 1 → 2 (:data:`~fmri_edge.training.model.CLASS_RULE`)."""
    return np.select(
        [valence_class < 0, valence_class > 0], [CLASS_RULE[-1], CLASS_RULE[1]], CLASS_RULE[0]
    )


def fit_networks(
    recipe: Recipe,
    ds: Dataset,
    name: str,
    seed: int,
    progress: Progress | None = None,
    val_ds: Dataset | None = None,
    pool: Dataset | None = None,
) -> list[FitResult]:
    """The recipe's model fitted on ``ds``: one network validated on ``val_ds`` or, with
    ``recipe.ensemble``, one network per subject group of ``ds`` (``ensemble_seeds`` per group),
    each trained on the other groups and validated (checkpoint chosen) on its own — or, with
    ``eval.checkpoint_on = "ensemble"``, all at the one epoch best on their validation groups together."""
    common = recipe.ensemble and recipe.eval.checkpoint_on == "ensemble"

    def one(fit_ds, v_ds, label, s):
        cb = (lambda e, row: progress(label, e, recipe.optim.epochs)) if progress else None
        val = (None, None, None) if v_ds is None else (v_ds.trials, v_ds.labels, v_ds.participants)
        return fit(
            recipe,
            fit_ds.trials,
            fit_ds.labels,
            val[0],
            val[1],
            seed=s,
            on_epoch=cb,
            participants=fit_ds.participants,
            val_participants=val[2],
            pool=None if pool is None else (pool.trials, pool.participants),
            keep_states=common,
        )

    if not recipe.ensemble:
        return [one(ds, val_ds, name, seed)]
    groups = splits.groups_of(sorted(set(ds.participants)), ds.group_map())
    n = len(groups)  # seed s of group j: seed + j + s·n (s = 0 is the one-per-group ensemble)
    fits = [
        one(
            ds.of([p for h, ps in groups.items() if h != g for p in ps]),
            ds.of(ps),
            f"{name} · val {g}" + (f" · seed {s}" if s else ""),
            seed + j + s * n,
        )
        for s in range(max(1, recipe.ensemble_seeds))
        for j, (g, ps) in enumerate(groups.items())
    ]
    if common:  # checkpoint_on = "ensemble": one epoch for all, on all their validation trials
        common_checkpoint(fits)
    return fits


def ensemble_proba(fits: list[FitResult], test: Dataset, pool: Dataset | None = None) -> dict:
    """Probabilities of the networks on ``test`` (each participant aligned over its own trials,
    or over all of them in ``pool``), averaged per output: what the exported ensemble computes."""
    where = None if pool is None else (pool.trials, pool.participants)
    each = [predict_proba(f.model, test.trials, test.participants, pool=where) for f in fits]
    return {t: np.mean([p[t] for p in each], axis=0) for t in each[0]}


def _fit_fold(recipe, name, fit_ds, val_ds, test_ds, progress, seed, pool=None) -> FoldResult:
    fits = fit_networks(recipe, fit_ds, name, seed, progress, val_ds, pool)
    probs = ensemble_proba(fits, test_ds, pool)
    return FoldResult(name, test_ds, probs, fits, evaluate(recipe, probs, test_ds.labels))


def cv_folds(ds: Dataset) -> list[tuple[list[str], list[str]]]:
    """The subject CV's folds: [(training participants, held-out participants)], one per group."""
    return splits.subject_folds(sorted(set(ds.participants)), ds.group_map())


def run_subject_cv(
    recipe: Recipe, ds: Dataset, progress: Progress | None = None
) -> list[FoldResult]:
    ds = prepare(recipe, ds)
    return [
        fit_subject_fold(recipe, ds, k, train_p, test_p, progress)
        for k, (train_p, test_p) in enumerate(cv_folds(ds))
    ]


def fit_subject_fold(
    recipe: Recipe, ds: Dataset, k: int, train_p, test_p, progress: Progress | None = None
) -> FoldResult:
    """Fold ``k`` of the subject CV on a prepared ``ds``: its training participants (less an inner
    validation group for a network trained by epochs) fitted, its held-out participants answered."""
    name = "test " + "+".join(test_p)
    if recipe.ensemble or recipe.optim.solver == "lbfgs":
        # ensemble: every training group takes its turn as validation; lbfgs: nothing to choose
        fit_ds, val_ds = ds.of(train_p), None
    else:
        fit_p, val_p = splits.inner_validation(
            train_p, recipe.eval.inner_val_groups, seed=recipe.seed + k, groups=ds.group_map()
        )
        fit_ds, val_ds = ds.of(fit_p), ds.of(val_p)
    return _fit_fold(recipe, name, fit_ds, val_ds, ds.of(test_p), progress, recipe.seed + k)


def run_random_splits(
    recipe: Recipe, ds: Dataset, progress: Progress | None = None
) -> list[FoldResult]:
    ds = prepare(recipe, ds)
    out = []
    for seed in recipe.eval.seeds:
        tr, va, te = splits.random_split(ds.labels[:, 0], seed)
        # a participant's trials fall on all three sides: it is aligned over all of them (no labels
        # needed), as predict aligns a whole subject folder
        out.append(
            _fit_fold(
                recipe,
                f"seed {seed}",
                ds.take(tr),
                ds.take(va),
                ds.take(te),
                progress,
                seed,
                pool=ds,
            )
        )
    return out


def pooled(recipe: Recipe, folds: list[FoldResult]) -> dict:
    """Metrics over all held-out predictions together, plus the per-fold spread."""
    labels = np.concatenate([f.test.labels for f in folds])
    probs = {t: np.concatenate([f.probs[t] for f in folds]) for t in folds[0].probs}
    summary = evaluate(recipe, probs, labels)
    for key in ("Score", "CLASS_error", "LEVEL_error"):
        v = [f.metrics[key] for f in folds]
        summary[f"{key}_folds_mean"], summary[f"{key}_folds_std"] = (
            float(np.mean(v)),
            float(np.std(v)),
        )
    for task in ("CLASS", "LEVEL"):
        for m in ("accuracy", "precision", "sensitivity", "f1"):
            v = [f.metrics[task][m] for f in folds]
            summary[task][f"{m}_folds_mean"], summary[task][f"{m}_folds_std"] = (
                float(np.mean(v)),
                float(np.std(v)),
            )
    summary["best_epochs"] = [r.best_epoch for f in folds for r in f.fits]
    vm = [r.val_metric for f in folds for r in f.fits if r.val_metric is not None]
    summary["inner_val_metric_mean"] = float(np.mean(vm)) if vm else None
    return summary


def fit_all(
    recipe: Recipe, ds: Dataset, epochs: int | None, progress: Progress | None = None
) -> list[FitResult]:
    """The shipped model on all labeled subjects: a single network for a fixed number of epochs
    chosen beforehand by CV, or (``recipe.ensemble``) one network per group, as in the CV."""
    ds = prepare(recipe, ds)
    if recipe.ensemble:
        return fit_networks(recipe, ds, "all subjects", recipe.seed, progress)
    cb = (lambda e, row: progress("all subjects", e, epochs)) if progress else None
    return [
        fit(recipe, ds.trials, ds.labels, epochs=epochs, on_epoch=cb, participants=ds.participants)
    ]
