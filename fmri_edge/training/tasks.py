"""``train --scheduler``: the evaluated protocol's folds and its permutation null as Dask tasks.

The same scheduler option as ``predict`` and ``extract`` (:func:`fmri_edge.scheduler.connect`:
``local:N`` worker processes, or a scheduler's ``tcp://host:port``; the ``dask`` extra). What
makes the numbers the local run's:

- every fold is a task that fits exactly what the local loop fits for that fold, with the same
  seed (``recipe.seed + k``: seeded per task, never per worker);
- the permutation shuffles are drawn on the client, in the local run's order from the same
  generator (:func:`fmri_edge.training.evaluation.shuffles`); each permutation is one task that
  reruns the whole CV on its labels and returns its accuracy;
- each task runs torch with one thread (as ``train --threads 1``): the fits are deterministic.

The dataset is sent to the workers once (``scatter``); results come back in submission order. A
worker lost mid-run has its tasks recomputed by the scheduler from their inputs (Dask's own
rescheduling; a task that kills workers again and again is one line); a cluster gone is one line
(:class:`fmri_edge.scheduler.ClusterError`), exit 2, and nothing of the run is written.
"""

from __future__ import annotations

import numpy as np

from fmri_edge.training import evaluation


def _one_thread():
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def fold_task(recipe, ds, protocol: str, runs, k: int):
    """Fold ``k`` of ``protocol`` on the worker: the local loop's fold, with its seed."""
    _one_thread()
    from fmri_edge.training.protocols import prepare

    prepared = prepare(recipe, ds)
    if protocol == "within":
        from fmri_edge.training.within import within_fold

        return within_fold(recipe, prepared, runs, k)
    return subject_fold(recipe, prepared, k)


def subject_fold(recipe, ds, k: int):
    """Fold ``k`` of :func:`fmri_edge.training.protocols.run_subject_cv` (a prepared ``ds``)."""
    from fmri_edge.training.protocols import cv_folds, fit_subject_fold

    train_p, test_p = cv_folds(ds)[k]
    return fit_subject_fold(recipe, ds, k, train_p, test_p)


def permutation_task(recipe, ds, protocol: str, runs, labels: np.ndarray) -> float:
    """One permutation: the whole CV rerun on shuffled ``labels``, its pooled CLASS accuracy."""
    _one_thread()
    from fmri_edge.training.protocols import run_subject_cv

    shuffled = ds.with_labels(labels)
    if protocol == "within":
        from fmri_edge.training.within import run_within_cv

        folds = run_within_cv(recipe, shuffled, runs)
    else:
        folds = run_subject_cv(recipe, shuffled)
    return evaluation.accuracy_of(folds, recipe.eval.level_rule)


def worker_environment():
    """Dask config for the workers ``local:N`` spawns: glibc's malloc left at its defaults. Dask's
    nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to the OS), which also turns off
    glibc's dynamic mmap threshold: every array above 128 KiB is then mmap'ed and unmapped, and a
    fit's many megabyte temporaries cost page faults: measured here, a permutation took 0.5 s of CPU
    in a worker against 0.23 s in the client; unset, 0.22 s. Workers started elsewhere (``dask
    worker``, SLURMCluster) should be started with ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_:
    null`` in their Dask config (or ``--no-nanny``)."""
    import dask

    return dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


class DaskExecutor:
    """Folds and permutations on the client's cluster (see the module)."""

    def __init__(self, client, address: str):
        from fmri_edge import scheduler

        self.client, self.address, self.distributed = client, address, scheduler.load_distributed()
        self._ds = None
        self._null: dict = {}  # protocol → the permutation futures, submitted with the folds

    def _data(self, ds):
        if self._ds is None or self._ds[0] is not ds:
            self._ds = (ds, self.client.scatter(ds, broadcast=True))
        return self._ds[1]

    def _gather(self, futures, stage: str, progress):
        from fmri_edge import scheduler

        out = []
        for i, f in enumerate(futures):
            out.append(scheduler.result(f, self.address, self.distributed))
            if progress:
                progress(stage, i + 1, len(futures))
        return out

    def cv(
        self,
        recipe,
        ds,
        protocol: str,
        plan,
        progress=None,
        shuffled: list[np.ndarray] | None = None,
    ):
        """The protocol's folds (first in the queue) and, with ``shuffled``, its permutations
        submitted at once behind them, so the workers never wait for the client."""
        from fmri_edge.training.within import within_folds

        data = self._data(ds)
        n = len(within_folds(ds, plan.runs)) if protocol == "within" else len(plan.folds)
        futures = [
            self.client.submit(
                fold_task, recipe, data, protocol, plan.runs, k, pure=False, priority=10
            )
            for k in range(n)
        ]
        if shuffled:
            self._null[protocol] = [
                self.client.submit(
                    permutation_task, recipe, data, protocol, plan.runs, y, pure=False
                )
                for y in shuffled
            ]
        return self._gather(futures, f"{protocol} CV folds on {self.address}", progress)

    def null(
        self, recipe, ds, protocol: str, plan, shuffled: list[np.ndarray], progress=None
    ) -> list[float]:
        futures = self._null.pop(protocol, None)
        if futures is None:
            data = self._data(ds)
            futures = [
                self.client.submit(
                    permutation_task, recipe, data, protocol, plan.runs, y, pure=False
                )
                for y in shuffled
            ]
        return self._gather(futures, f"permutation null on {self.address}", progress)
