"""``train --protocol within``: within-participant decoding, leave-one-run-out inside each participant.

The MVPA tradition (nilearn's examples, Haxby 2001): a decoder per participant, trained on all of
its runs but one and tested on the run left out, so the test trials come from a scan the model never
saw. Runs are the ``run`` field ``extract`` writes into each participant's ``fMRI_data.npz`` (the
index of each trial's BOLD run). One model per participant and fold; every held-out trial is
answered once, so the report (pooled accuracy, participant bootstrap, binomial chance, per
participant) is the subject protocol's; its permutation null shuffles the labels within each
participant *and run* (the exchangeable unit when runs differ in baseline) and reruns every fold.

Refused with one line: a study without run fields (ICBHI's ``.npy`` trials), a participant with
one run. The number estimates how well a participant's own decoder generalises to a new run of the
same participant; it says nothing about new participants (that is ``--protocol subject``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError, UsageError
from fmri_edge.training.protocols import Dataset, FoldResult, Progress, _fit_fold, prepare
from fmri_edge.training.recipe import Recipe

SENTENCE = (
    "This estimates how well a decoder trained on a participant's other runs decodes the valence CLASS "
    "of a new run of the same participant (leave-one-run-out, one model per participant and fold); it "
    "is not an estimate for new participants (--protocol subject), new stimuli or other scanners."
)


def trial_runs(data: str | Path, ds: Dataset) -> np.ndarray:
    """The run of every trial of ``ds`` (in its order), from each participant's ``fMRI_data.npz``
    ``run`` field; refuses a file without it and a participant with one run."""
    from fmri_edge.data.io import discover

    paths = {src.participant: src.path for src in discover([Path(data)])}
    out = np.zeros(len(ds.participants), dtype=np.int64)
    for p in sorted(set(ds.participants.tolist())):
        path = paths[p]
        at = np.flatnonzero(ds.participants == p)
        runs = None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                runs = z["run"] if "run" in z.files else None
        if runs is None:
            raise InputError(
                path,
                "has no run field (extract writes one per trial): --protocol within needs each "
                "trial's run; use --protocol subject",
            )
        runs = np.asarray(runs).astype(np.int64).ravel()
        if len(runs) != len(at):
            raise InputError(path, f"{len(runs)} run entries for {len(at)} trials")
        if len(np.unique(runs)) < 2:
            raise InputError(
                path,
                f"{p} has one run ({len(at)} trials): leave-one-run-out needs at least two runs "
                "per participant (leave it out, or use --protocol subject)",
            )
        out[at] = runs
    return out


def within_folds(ds: Dataset, runs: np.ndarray) -> list[tuple[str, str, int]]:
    """[(participant, name, run)]: one fold per participant and run, in sorted order."""
    return [
        (p, f"{p} run {r}", int(r))
        for p in sorted(set(ds.participants.tolist()))
        for r in np.unique(runs[ds.participants == p])
    ]


def shuffle_units(ds: Dataset, runs: np.ndarray) -> np.ndarray:
    """The permutation's exchangeable units: participant × run."""
    return np.asarray([f"{p}\t{r}" for p, r in zip(ds.participants.tolist(), runs.tolist())])


def within_fold(
    recipe: Recipe, ds: Dataset, runs: np.ndarray, k: int, progress: Progress | None = None
) -> FoldResult:
    """Fold ``k`` of :func:`within_folds` on a prepared dataset: the participant's other runs train
    (no validation split: a converged fit has nothing to choose, a network its fixed ``epochs``),
    the held-out run is tested, each run aligned over its own trials."""
    p, name, r = within_folds(ds, runs)[k]
    mine = ds.participants == p
    return _fit_fold(
        recipe,
        name,
        ds.take(mine & (runs != r)),
        None,
        ds.take(mine & (runs == r)),
        progress,
        recipe.seed + k,
    )


def run_within_cv(
    recipe: Recipe, ds: Dataset, runs: np.ndarray, progress: Progress | None = None
) -> list[FoldResult]:
    ds = prepare(recipe, ds)
    return [within_fold(recipe, ds, runs, k, progress) for k in range(len(within_folds(ds, runs)))]


def check_within(ds: Dataset, runs: np.ndarray) -> None:
    """Every training side (a participant's other runs) holds at least two classes."""
    for p, name, r in within_folds(ds, runs):
        m = (ds.participants == p) & (runs != r)
        if len(np.unique(ds.labels[m, 0])) < 2:
            raise UsageError(
                f"the fold holding out {name} trains on trials of one CLASS only "
                f"({int(ds.labels[m, 0][0])}); every run-out fold needs two classes or more"
            )


EXPORT_REFUSED = (
    "a --protocol within run has one model per participant and fold, and no model for new "
    "participants: export a run of --protocol subject (train --data … without --protocol within)"
)


def pooled_runs(studies: list[dict], ds: Dataset) -> np.ndarray:
    """:func:`trial_runs` for pooled studies (participants named STUDY/participant)."""
    out = np.zeros(len(ds.participants), dtype=np.int64)
    for st in studies:
        prefix = st["name"] + "/"
        mine = np.char.startswith(ds.participants.astype(str), prefix)
        sub = ds.take(mine)
        sub.participants = np.asarray([p[len(prefix) :] for p in sub.participants.tolist()])
        out[mine] = trial_runs(st["path"], sub)
    return out
