"""One recipe, end to end: evaluate under the chosen protocols, then fit the shipped model.

The data is any folder of participant folders holding ``fMRI_data.npz`` + ``labels.npz`` (ICBHI's
``Train``, or ``extract --class-column …``'s output). Writes to ``runs/<recipe name>/`` (or
``--out``): ``results.json`` (metrics per protocol and fold, every held-out prediction, the
evaluation: interval, chance, permutation null), ``cv_predictions.csv``, ``cv_folds.csv``,
``cv_participants.csv``, ``model.pt`` (all participants) and ``fold<k>.pt`` (the subject-CV fold
models, each with the participants it never saw), and the study's ``labels.json`` where it has one.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import fmri_edge
from fmri_edge.evaluation import splits
from fmri_edge.data.io import load_icbhi
from fmri_edge.errors import InputError, UsageError
from fmri_edge.training import evaluation
from fmri_edge.training.fit import save_checkpoint
from fmri_edge.training.protocols import (
    Dataset,
    Progress,
    cv_folds,
    dataset_from_icbhi,
    fit_all,
    pooled,
    run_random_splits,
    run_subject_cv,
)
from fmri_edge.training.recipe import Recipe, read_atlas


MIN_PARTICIPANTS = 3


def check_shape(recipe: Recipe, data: Path) -> None:
    """The study's trials have the recipe's regions and seconds (from the first file's header), or a
    clear message: another trial length or atlas needs a recipe made for it."""
    from fmri_edge.data.io import declared_shape, discover

    sources = discover([data])
    shape = declared_shape(sources[0].path) if sources else None
    if shape is None or len(shape) != 3:
        return  # the loader names the problem
    _, r, t = shape
    m = recipe.model
    if (r, t) != (m.n_regions, m.n_times):
        what = " and ".join(
            x
            for x in (
                f"{r} regions (the recipe: {m.n_regions})" if r != m.n_regions else "",
                f"{t}-s trials (the recipe: {m.n_times} s)" if t != m.n_times else "",
            )
            if x
        )
        raise UsageError(
            f"{sources[0].path}: {what}; the recipe {recipe.source or recipe.name} is made for "
            f"{m.n_regions} regions × {m.n_times} s. Cut trials with the model's window (extract) or "
            "train a recipe of your own (--config) whose [model] n_regions, n_times and time_window fit"
        )


def load_dataset(recipe: Recipe, group_by: str | None = None) -> tuple[Dataset, list[str], str]:
    """The recipe's data as a :class:`Dataset` with its CV groups and which LEVELs are ratings,
    the region names, and where the groups come from. ``group_by`` overrides the recipe's
    ``groups``. Refuses fewer than 3 participants and a participant whose trials are all of one class."""
    from fmri_edge.imaging.events import level_rated
    from fmri_edge.data.io import LABEL_FILE, discover

    data = Path(recipe.data)
    check_shape(recipe, data)
    subjects = load_icbhi(data, n_times=recipe.model.n_times, n_regions=recipe.model.n_regions)
    if len(subjects) < MIN_PARTICIPANTS:
        raise UsageError(
            f"{data}: {len(subjects)} participant(s) with labels; training and an honest "
            f"cross-validation need at least {MIN_PARTICIPANTS}"
        )
    label_files = {src.participant: src.path.parent / LABEL_FILE for src in discover([data])}
    for p, (_, labels) in subjects.items():
        if len(np.unique(labels[:, 0])) < 2:
            raise InputError(
                label_files[p],
                f"every trial of {p} has CLASS {int(labels[0, 0])}; each "
                "participant needs trials of at least two classes (leave it "
                "out, or check the class map)",
            )
    ds = dataset_from_icbhi(subjects)
    groups, how = splits.study_groups(sorted(subjects), group_by or recipe.groups, data)
    ds.groups = np.asarray([groups[p] for p in ds.participants])
    ds.level_rated = np.concatenate(
        [level_rated(label_files[p], len(subjects[p][1])) for p in sorted(subjects)]
    )
    atlas = Path(recipe.atlas)
    names = read_atlas(atlas) if atlas.is_file() else _region_names(recipe.model.n_regions)
    if recipe.regions:
        missing = [r for r in recipe.regions if r not in names]
        if missing:
            raise InputError(atlas, f"regions {missing} of the recipe are not in this atlas")
        recipe.model.region_idx = [names.index(r) for r in recipe.regions]
    return ds, names, how


def _region_names(n_regions: int) -> list[str]:
    """The shipped model's region names (Brainnetome) where the count matches, else region_<i>."""
    try:
        from fmri_edge.model.runtime import Model

        names = list(Model().info.meta.get("region_names") or [])
    except Exception:  # no shipped model: names are only labels
        names = []
    return names if len(names) == n_regions else [f"region_{i}" for i in range(n_regions)]


def check_folds(ds: Dataset) -> list[tuple[list[str], list[str]]]:
    """The subject CV's folds; refuses a training side that lacks a class."""
    folds = cv_folds(ds)
    for train_p, test_p in folds:
        have = set(np.unique(ds.of(train_p).labels[:, 0]).tolist())
        if have != {-1, 0, 1}:
            missing = sorted({-1, 0, 1} - have)
            raise UsageError(
                f"the fold holding out {'+'.join(test_p)} trains on no trial of CLASS "
                f"{', '.join(map(str, missing))}; every training fold needs all three classes "
                "(group the participants differently, --group-by)"
            )
    return folds


def _predictions(folds) -> list[dict]:
    rows = []
    for f in folds:
        for i in range(len(f.test.labels)):
            rows.append(
                {
                    "fold": f.name,
                    "participant": str(f.test.participants[i]),
                    "trial": int(f.test.trial_index[i]),
                    "CLASS": int(f.test.labels[i, 0]),
                    "LEVEL": int(f.test.labels[i, 1]),
                    **{f"{t}_probs": np.round(p[i], 6).tolist() for t, p in f.probs.items()},
                }
            )
    return rows


def write_held_out_csv(recipe: Recipe, folds, path: Path) -> None:
    """Every trial's answer from the fold model that never saw its subject, in the submission
    format, so that `fmri-edge score cv_predictions.csv <Train>` gives the honest score."""
    from fmri_edge.data import submission
    from fmri_edge.training.fit import decide
    from fmri_edge.training.protocols import baseline_level

    with submission.atomic_write(path, force=True) as f:
        submission.write_header(
            f, probs=True
        )  # cross-validation diagnostics keep the class probabilities
        for fold in folds:
            d = decide(fold.probs, recipe.eval.level_rule)
            cls = d.get("class", np.sign(d.get("level", 0)))
            lvl = d.get("level", baseline_level(cls))
            probs = fold.probs.get("class", np.full((len(cls), 3), np.nan))
            for p in sorted(set(fold.test.participants.tolist())):
                m = fold.test.participants == p
                submission.write_rows(
                    f, p, fold.test.trial_index[m], cls[m], lvl[m], probs[m], probs=True
                )


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.CalledProcessError):
        return None


@dataclass
class Plan:
    """What a run will train on, known before any fit: the data, its region names, where the CV
    groups come from and the subject CV's folds (checked: every training side has every class)."""

    ds: Dataset
    region_names: list[str]
    groups_how: str
    folds: list[tuple[list[str], list[str]]]
    runs: np.ndarray | None = (
        None  # --protocol within: each trial's run (fmri_edge.training.within)
    )
    studies: list | None = (
        None  # train --data A --data B: the pooled studies (fmri_edge.training.pooling)
    )


def make_plan(
    recipe: Recipe,
    group_by: str | None = None,
    protocols: list[str] | None = None,
    studies: list | None = None,
) -> Plan:
    if studies:  # several extracted studies pooled (train --data A --data B …)
        from fmri_edge.training import pooling

        ds, names, how, studies = pooling.load_studies(recipe, studies, group_by, load_dataset)
    else:
        ds, names, how = load_dataset(recipe, group_by)
    runs = None
    if protocols and "within" in protocols:
        from fmri_edge.training import within

        runs = (
            within.trial_runs(recipe.data, ds) if not studies else within.pooled_runs(studies, ds)
        )
        within.check_within(ds, runs)
    only_within = bool(protocols) and set(protocols) == {"within"}
    return Plan(
        ds, names, how, cv_folds(ds) if only_within else check_folds(ds), runs, studies or None
    )


def cv_runner(protocol: str, plan: "Plan"):
    """``(recipe, ds, progress) → folds`` of a protocol on the plan's data (``ds`` may carry shuffled labels)."""
    if protocol == "within":
        from fmri_edge.training.within import run_within_cv

        return lambda recipe, ds, progress=None: run_within_cv(recipe, ds, plan.runs, progress)
    return run_subject_cv if protocol == "subject" else run_random_splits


def shuffle_units(protocol: str, plan: "Plan") -> np.ndarray:
    """What the permutation null shuffles labels within: participants, or participant × run."""
    if protocol == "within":
        from fmri_edge.training.within import shuffle_units as units

        return units(plan.ds, plan.runs)
    return plan.ds.participants


def _write_table(path: Path, rows: list[dict]) -> None:
    import csv

    from fmri_edge.data.submission import atomic_write

    with atomic_write(path, force=True) as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def evaluate_cv(
    recipe: Recipe,
    ds: Dataset,
    folds,
    how: str,
    out_dir: Path,
    permutations: int = 0,
    progress: Progress | None = None,
    run_cv=None,
    units: np.ndarray | None = None,
    null: list[float] | None = None,
    suffix: str = "",
) -> dict:
    """The subject CV's evaluation (:mod:`fmri_edge.training.evaluation`): the headline with its
    interval, chance and permutation null; the per-fold and per-participant tables (also written as
    ``cv_folds.csv`` and ``cv_participants.csv``). ``run_cv`` and ``units``: another protocol's CV
    (``--protocol within``) and what its labels are shuffled within; ``null``: a permutation null
    computed elsewhere (on a Dask cluster, :mod:`fmri_edge.training.tasks`)."""
    rule = recipe.eval.level_rule
    run_cv = run_cv or run_subject_cv
    if null is None:
        null = evaluation.permutation_null(
            lambda y: run_cv(recipe, ds.with_labels(y)),
            ds.labels,
            ds.participants if units is None else units,
            permutations,
            rule,
            recipe.seed,
            progress,
        )
    ev = evaluation.summarize(folds, rule, null, seed=recipe.seed)
    groups = ds.group_map()
    ev["groups"] = how
    ev["folds"] = evaluation.fold_table(folds, groups, rule)
    ev["participants"] = evaluation.participant_table(folds, groups, rule)
    _write_table(out_dir / f"cv_folds{suffix}.csv", ev["folds"])
    _write_table(out_dir / f"cv_participants{suffix}.csv", ev["participants"])
    return ev


def run(
    recipe: Recipe,
    protocols: list[str],
    out_dir: Path,
    fit_final: bool = True,
    progress: Progress | None = None,
    plan: Plan | None = None,
    permutations: int = 0,
    own_data: bool = False,
    executor=None,
) -> dict:
    """``own_data``: the data is not the recipe's own (``train --data``). The run is written into a
    temporary folder beside ``out_dir`` that replaces it at the end (:mod:`run_folder`): an interrupted
    run leaves the earlier one whole. ``executor``: runs the evaluated protocol's folds and
    permutations elsewhere (:class:`fmri_edge.training.tasks.DaskExecutor`, ``--scheduler``), with the
    same numbers."""
    from fmri_edge.training.run_folder import staged

    with staged(out_dir) as tmp:
        return _run(
            recipe, protocols, tmp, fit_final, progress, plan, permutations, own_data, executor
        )


def _run(
    recipe: Recipe,
    protocols: list[str],
    out_dir: Path,
    fit_final: bool = True,
    progress: Progress | None = None,
    plan: Plan | None = None,
    permutations: int = 0,
    own_data: bool = False,
    executor=None,
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan or make_plan(recipe)
    ds, region_names = plan.ds, plan.region_names
    results = {
        "recipe": recipe.to_dict(),
        "fmri_edge_version": fmri_edge.__version__,
        "git_commit": git_commit(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "data": str(recipe.data),
        "own_data": own_data,
        "groups": plan.groups_how,
        "n_trials": len(ds.labels),
        "participants": sorted(set(ds.participants.tolist())),
        "n_times": int(ds.trials.shape[2]),
        "n_regions": int(ds.trials.shape[1]),
        "protocols": {},
    }
    from fmri_edge.imaging.atlas_provenance import study_atlas
    from fmri_edge.data.io import discover

    atlas = study_atlas(
        discover([Path(recipe.data)])
    )  # which atlas made the trials (extract records it)
    if atlas is not None:
        results["atlas"] = atlas
    labels_json = Path(recipe.data) / "labels.json"
    if labels_json.is_file():  # the study's label provenance (extract --class-column), for export
        results["study_labels"] = json.loads(labels_json.read_text())
        (out_dir / "labels.json").write_text(labels_json.read_text())
    if plan.studies:  # pooled studies: which, and how many of their participants and trials
        results["studies"] = plan.studies
    evaluated = [p for p in protocols if p in ("subject", "within")]
    # the subject CV keeps its file names; a within CV beside it writes *_within.csv and evaluation_within
    suffix = {p: "_within" if p == "within" and "subject" in protocols else "" for p in evaluated}
    subject_folds = None
    for protocol in protocols:
        t0 = time.perf_counter()
        runner = cv_runner(protocol, plan)
        if (
            executor is not None and protocol in evaluated
        ):  # folds and permutations submitted together
            folds = executor.cv(
                recipe,
                ds,
                protocol,
                plan,
                progress,
                evaluation.shuffles(
                    ds.labels, shuffle_units(protocol, plan), permutations, recipe.seed
                )
                if permutations
                else None,
            )
        else:
            folds = runner(recipe, ds, progress)
        if protocol == "subject":
            subject_folds = folds
        results["protocols"][protocol] = {
            "summary": pooled(recipe, folds),
            "folds": [
                {
                    "name": f.name,
                    "best_epoch": f.fit.best_epoch,
                    "val_metric": f.fit.val_metric,
                    "history": f.fit.history,
                    **f.metrics,
                }
                for f in folds
            ],
            "predictions": _predictions(folds),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        if protocol in evaluated:
            key = "evaluation" + suffix[protocol]
            write_held_out_csv(recipe, folds, out_dir / f"cv_predictions{suffix[protocol]}.csv")
            units = shuffle_units(protocol, plan)
            null = None
            if executor is not None and permutations:
                null = executor.null(
                    recipe,
                    ds,
                    protocol,
                    plan,
                    evaluation.shuffles(ds.labels, units, permutations, recipe.seed),
                    progress,
                )
            results[key] = evaluate_cv(
                recipe,
                ds,
                folds,
                plan.groups_how
                if protocol == "subject"
                else "leave-one-run-out within each participant",
                out_dir,
                permutations,
                progress,
                runner,
                units,
                null,
                suffix[protocol],
            )
            results[key]["protocol"] = protocol
            if protocol == "within":
                from fmri_edge.training.within import SENTENCE

                results[key]["estimates"] = SENTENCE
            if plan.studies:
                from fmri_edge.training.pooling import study_table

                results[key]["studies"] = study_table(folds, recipe.eval.level_rule)
                if protocol == "subject" and plan.groups_how.startswith("leave-one-study-out"):
                    results[key]["estimates"] = (
                        "This estimates how well a model trained on the other studies decodes the valence CLASS of "
                        "a whole new study (other participants, and whatever else differs between these studies: "
                        "stimuli, scanner, TR); it is not an estimate for studies unlike these."
                    )
        if (
            protocol in evaluated and not suffix[protocol]
        ):  # fold models: for int8 checks, attention studies
            for k, f in enumerate(folds):
                test_p = sorted(set(f.test.participants.tolist()))
                if len(f.fits) == 1:
                    save_checkpoint(
                        f.fit.model, out_dir / f"fold{k}.pt", fold=f.name, test_participants=test_p
                    )
                else:  # an ensemble per fold: its networks in a folder of their own
                    (out_dir / f"fold{k}").mkdir(exist_ok=True)
                    for j, r in enumerate(f.fits):
                        save_checkpoint(
                            r.model,
                            out_dir / f"fold{k}" / f"member{j}.pt",
                            fold=f.name,
                            test_participants=test_p,
                        )
    if fit_final and "within" in protocols and "subject" not in protocols:
        fit_final = (
            False  # one model per participant and fold: nothing for new participants to export
        )
        results["final"] = None
        results["export"] = "refused: --protocol within"
    if fit_final:
        epochs = recipe.full_epochs
        if epochs is None and not recipe.ensemble:
            if subject_folds is None:
                raise UsageError(
                    "full_epochs is not set in the recipe and no subject CV ran to choose it"
                )
            epochs = int(np.median([f.fit.best_epoch for f in subject_folds]))
        t0 = time.perf_counter()
        final = fit_all(recipe, ds, epochs, progress)
        epochs = epochs or int(np.median([r.best_epoch for r in final]))
        results["final"] = {
            "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1),
            "participants": results["participants"],
            "networks": len(final),
            "best_epochs": [r.best_epoch for r in final],
        }
        for old in out_dir.glob("member*.pt"):
            old.unlink()
        for j, r in enumerate(final):
            save_checkpoint(
                r.model,
                out_dir / ("model.pt" if j == 0 else f"member{j}.pt"),
                region_names=region_names,
                recipe=json.dumps(recipe.to_dict()),
                epochs=epochs,
                participants=results["participants"],
            )
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results
