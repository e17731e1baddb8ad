"""``predict`` on a Dask cluster (the optional extra ``pip install 'fmri-edge[dask]'``).

The same answers as :func:`fmri_edge.decoding.answers.predict`, item for item and in the same order,
computed by the workers of a Dask scheduler (``tcp://host:8786``, e.g. one started by
``dask_jobqueue.SLURMCluster``) or of a ``LocalCluster`` of N processes (``local:N``). Nothing of
Dask is imported until a cluster is asked for.

What travels: the client sends paths, trial ranges and the options; each worker reads the files
itself with the project's safe loaders (never unpickled), so workers need the inputs and the model
at the same paths as the client (a shared file system, as on a SLURM cluster). Answers come back
as :class:`~fmri_edge.decoding.answers.Batch` objects (Dask pickles results between its own processes).

How the work is split: by participant and file, and ``.npy`` files (memory-mapped) by spans of
whole batches of trials, so every onnxruntime call sees the same trials as locally. A model with
subject alignment gets a first pass per span (each chunk's statistics), merged on a worker in file
and chunk order into the participant's plan (:func:`fmri_edge.decoding.answers.participant_plan`); the
second pass depends on it. Everything is submitted at once and the client collects the answers in
order, streaming them to the CSV. A worker that dies has its tasks (and lost results) recomputed
by the scheduler from their inputs: nothing is lost or duplicated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path

import numpy as np

from fmri_edge.data import io
from fmri_edge.decoding import answers
from fmri_edge.errors import InputError
from fmri_edge.scheduler import connect, load_distributed, result
from fmri_edge.model.runtime import Model, file_sha256

DEFAULT_TASK_TRIALS = 2048  # trials per task (rounded up to whole batches): ≈ 1 s of work per task


# ---- the worker side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """The client's model as a worker opens it: the same path (a shared file system), checked
    against the client's sha256, with ``threads`` onnxruntime threads per task."""

    path: str
    sha256: str
    threads: int = 1


_decoders: dict[ModelRef, Model] = {}
_decoders_lock = threading.Lock()


def worker_decoder(ref: ModelRef) -> Model:
    """One :class:`~fmri_edge.model.runtime.Model` per worker process and model, opened by the first
    task that needs it after checking the file's sha256 on that machine (a different file at the
    same path on another node is refused, not silently used)."""
    with _decoders_lock:
        if ref not in _decoders:
            path, where = Path(ref.path), _worker_name()
            if not path.is_file():
                raise InputError(
                    path,
                    f"model file not found on {where}; workers need the model and the "
                    "inputs at the same paths as the client (a shared file system)",
                )
            got = file_sha256(path)
            if got != ref.sha256:
                raise InputError(
                    path,
                    f"sha256 {got[:16]}… on {where} differs from the client's "
                    f"{ref.sha256[:16]}…: the workers see another model file at this path",
                )
            _decoders[ref] = Model(path, threads=ref.threads)
        return _decoders[ref]


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"Dask worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this machine"


def _own_problems(items: list, span) -> list:
    """A file's own problems (unreadable, wrong shape: no trial number) are reported by the task
    of its first span only, as the whole file reports them once locally."""
    if span is None or span[0] == 0:
        return items
    return [x for x in items if not (isinstance(x, InputError) and x.trial is None)]


def stats_task(ref: ModelRef, src: io.Source, batch_size: int, policy, span) -> list:
    """First pass over one span of one file: :func:`fmri_edge.decoding.answers.source_stats`."""
    return _own_problems(
        list(answers.source_stats(worker_decoder(ref), src, batch_size, policy, span)), span
    )


def plan_task(name: str, sources: list[io.Source], stats: list | None, align: bool) -> tuple:
    """One participant's plan from its spans' first passes (``stats``: per file, the list of its
    spans' results in order; None for a model without subject alignment)."""
    if stats is not None:
        stats = answers.gather_stats(
            (src, chain.from_iterable(parts)) for src, parts in zip(sources, stats)
        )
    return answers.participant_plan(name, sources, stats, align)


def answer_task(
    ref: ModelRef,
    src: io.Source,
    batch_size: int,
    policy,
    span,
    plan: tuple,
    reported: bool,
    weights: bool,
) -> list:
    """Second pass over one span of one file: :func:`fmri_edge.decoding.answers.predict_source`. Without
    ``weights`` the region weights and contributions stay on the worker (only ``--explain`` reads them)."""
    subject, offsets, _ = plan
    items = _own_problems(
        list(
            answers.predict_source(
                worker_decoder(ref),
                src,
                batch_size,
                policy,
                subject,
                offsets[src.path],
                reported,
                span,
            )
        ),
        span,
    )
    if not weights:
        items = [
            replace(x, region_weights=np.empty((len(x), 0), np.float32), region_contributions=None)
            if isinstance(x, answers.Batch)
            else x
            for x in items
        ]
    return items


# ---- the client side ---------------------------------------------------------------------------


def header_trials(path: Path) -> int:
    """How many trials a file holds, from its header alone: for splitting and the progress bar
    only; 0 where it cannot be read (its task reports why)."""
    shape = io.declared_shape(path)
    return 0 if not shape else 1 if len(shape) == 2 else int(shape[0])


def spans(n_trials: int, step: int, split: bool) -> list[tuple[tuple[int, int] | None, int]]:
    """(span, trials) per task of one file: the whole file (span None) or ``step`` trials each."""
    if not split or n_trials <= step:
        return [(None, n_trials)]
    return [
        ((a, min(a + step, n_trials)), min(step, n_trials - a)) for a in range(0, n_trials, step)
    ]


def predict(
    client,
    decoder: Model,
    paths: list,
    batch_size: int = answers.DEFAULT_BATCH,
    policy: answers.Policy | None = None,
    participant: str | None = None,
    align: bool = True,
    threads: int = 1,
    weights: bool = True,
    task_trials: int | None = None,
    on_total=None,
    on_trials=None,
):
    """:func:`fmri_edge.decoding.answers.predict` on the workers of a ``distributed.Client``: the same
    :class:`~fmri_edge.decoding.answers.Batch` and :class:`~fmri_edge.data.InputError` items in the same
    order. ``threads``: onnxruntime threads per task; ``task_trials``: trials per task (default
    :data:`DEFAULT_TASK_TRIALS`, rounded up to whole batches); ``weights=False`` leaves region weights
    out (empty); ``on_total(n)`` is called once with the trials planned, ``on_trials(n)`` as the
    answers of n trials are computed (from Dask's thread: keep it quick)."""
    distributed = load_distributed()
    ref = ModelRef(str(decoder.path.resolve()), file_sha256(decoder.path), max(1, threads))
    policy = policy or answers.Policy()
    batch = answers.effective_batch(batch_size)
    task_trials = task_trials or DEFAULT_TASK_TRIALS
    step = batch * max(1, -(-task_trials // batch))  # whole batches: the same chunks as locally
    split = (decoder.info.subject_normalization or "none") == "none"
    address = getattr(getattr(client, "scheduler", None), "address", None) or "the scheduler"

    def counted(future, n):
        if on_trials is not None and n:
            future.add_done_callback(lambda f: f.status == "finished" and on_trials(n))
        return future

    def submit(name, sources):
        """A unit's tasks (:func:`fmri_edge.decoding.answers.participant_units`): (plan, answers, trials)."""
        per_file = [
            spans(header_trials(src.path), step, split and src.path.suffix == ".npy")
            for src in sources
        ]
        stats = None
        if decoder.aligned:
            stats = [
                [
                    client.submit(stats_task, ref, src, batch_size, policy, span, pure=False)
                    for span, _ in file_spans
                ]
                for src, file_spans in zip(sources, per_file)
            ]
        plan = client.submit(plan_task, name, sources, stats, align, pure=False)
        answers = [
            counted(
                client.submit(
                    answer_task,
                    ref,
                    src,
                    batch_size,
                    policy,
                    span,
                    plan,
                    decoder.aligned,
                    weights,
                    pure=False,
                ),
                n,
            )
            for src, file_spans in zip(sources, per_file)
            for span, n in file_spans
        ]
        return plan, answers, sum(n for file_spans in per_file for _, n in file_spans)

    def collect(plan, answers):
        yield from result(plan, address, distributed)[2]
        while answers:
            yield from result(answers.pop(0), address, distributed)

    planned, total = [], 0
    for item in answers.group_sources(paths, participant):
        if isinstance(item, InputError):
            planned.append(item)
            continue
        name, sources = item
        units = {
            tuple(unit): submit(name, unit)
            for unit in answers.participant_units(sources, participant)
        }
        total += sum(n for _, _, n in units.values())
        planned.append((name, units))
    if on_total is not None:
        on_total(total)
    for (
        item
    ) in planned:  # everything is submitted: the cluster works while answers are collected in order
        if isinstance(item, InputError):
            yield item
            continue
        name, units = item
        yield from answers.answer_units(
            name, [list(u) for u in units], lambda unit: collect(*units[tuple(unit)][:2])
        )


def predict_to(
    address: str,
    decoder: Model,
    paths: list,
    csv_file=None,
    batch_size: int = answers.DEFAULT_BATCH,
    keep: int | None = 60,
    policy: answers.Policy | None = None,
    on_batch=None,
    participant: str | None = None,
    align: bool = True,
    probs: bool = False,
    threads: int = 0,
    weights: bool = True,
    console=None,
    task_trials: int | None = None,
) -> answers.Summary:
    """:func:`fmri_edge.decoding.answers.predict_to` through the cluster at ``address`` (see
    :func:`connect`), with a progress bar of the trials answered on ``console`` (stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    with (
        connect(address, threads) as (client, ort_threads),
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar,
    ):
        task = bar.add_task(f"trials on {address}", total=None)
        items = predict(
            client,
            decoder,
            paths,
            batch_size,
            policy,
            participant,
            align,
            ort_threads,
            weights,
            task_trials,
            on_total=lambda n: bar.update(task, total=n),
            on_trials=lambda n: bar.advance(task, n),
        )
        return answers.predict_to(
            decoder,
            paths,
            csv_file,
            batch_size,
            keep,
            policy,
            on_batch,
            participant,
            align,
            probs,
            items=items,
        )
