"""Predict valence for trials in files and folders, chunk by chunk (numpy + onnxruntime only).

``predict(decoder, paths)`` yields a :class:`Batch` of answers per chunk of good trials and an
:class:`~fmri_edge.data.InputError` per problem (a bad file, or a bad trial inside a good file);
one problem never stops the others. Large ``.npy`` files are memory-mapped and streamed.
Repairs (NaN interpolation, cropping, padding) happen only when asked for (:class:`Policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmri_edge.errors import InputError
from fmri_edge import valence
from fmri_edge.data import io
from fmri_edge.model.normalize import AlignStats, SubjectStats
from fmri_edge.model.runtime import CONTRIBUTION_OUTPUT, Model

DEFAULT_BATCH = 256  # the fastest batch size measured by `fmri-edge bench` (docs/speed.md)
MAX_BATCH = 512  # larger chunks only cost memory and run slower per trial (cache misses): capped
MIN_ALIGN_TRIALS = (
    10  # fewer trials of a participant: aligned with the training population's statistics
)


@dataclass
class Batch:
    participant: str
    path: Path
    trial: np.ndarray  # (n,) 1-based trial numbers within the file
    class_probs: np.ndarray  # (n, 3) over CLASS −1, 0, 1
    level_probs: np.ndarray  # (n, 9) over LEVEL −4 … 4
    region_weights: np.ndarray  # (n, n_regions) input SE attention
    valence_class: np.ndarray  # (n,) in {−1, 0, 1}
    valence_level: np.ndarray  # (n,) in {−4 … 4}
    # (n, n_regions) each region's share of the answered class's logit, for models that have it
    region_contributions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.trial)

    def region_scores(self, kind: str) -> np.ndarray:
        """The per-region explanation of ``kind`` (:attr:`fmri_edge.model.runtime.Model.explanation`):
        contributions, or the input SE attention."""
        return self.region_contributions if kind == "contribution" else self.region_weights


def run_batched(
    decoder: Model, trials: np.ndarray, batch_size: int = DEFAULT_BATCH
) -> dict[str, np.ndarray]:
    """Model outputs for validated float32 trials, ``batch_size`` trials per onnxruntime call."""
    parts = [decoder.run(trials[i : i + batch_size]) for i in range(0, len(trials), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def run_by_participant(
    decoder: Model, trials: np.ndarray, participants: np.ndarray, batch_size: int = DEFAULT_BATCH
) -> dict[str, np.ndarray]:
    """:func:`run_batched` with each participant aligned over its own trials in ``trials`` (as
    ``predict`` aligns a subject folder; under :data:`MIN_ALIGN_TRIALS` trials, or for a model
    without alignment, the graph's defaults). Rows stay in the order of ``trials``."""
    out: dict[str, np.ndarray] = {}
    for rows, subject in participant_batches(decoder, trials, participants, batch_size):
        for k, v in decoder.run(trials[rows], subject).items():
            out.setdefault(k, np.empty((len(trials), *v.shape[1:]), v.dtype))[rows] = v
    return out


def participant_batches(
    decoder: Model, trials: np.ndarray, participants: np.ndarray, batch_size: int = DEFAULT_BATCH
):
    """(row indices, alignment statistics or None) per batch of one participant's trials: the
    statistics over all of that participant's trials in ``trials`` (None, the graph's defaults,
    under :data:`MIN_ALIGN_TRIALS` trials or for a model without alignment)."""
    participants = np.asarray(participants)
    for p in dict.fromkeys(participants.tolist()):
        idx = np.flatnonzero(participants == p)
        subject = None
        if decoder.aligned and len(idx) >= MIN_ALIGN_TRIALS:
            stats = AlignStats()
            for i in range(0, len(idx), batch_size):
                stats.merge(AlignStats.of(decoder.represent(trials[idx[i : i + batch_size]])))
            subject = stats.result()
        for i in range(0, len(idx), batch_size):
            yield idx[i : i + batch_size], subject


@dataclass(frozen=True)
class Policy:
    """What to do with trials that do not fit the model as stored; every repair is opt-in.

    - ``nan``: a trial with NaN/Inf is ``skip``-ped (reported, the others predicted), stops the
      run (``error``), or is ``interpolate``-d linearly over time when no region misses more than
      half its seconds (otherwise skipped);
    - ``crop``: trials longer than the model's T keep their first T seconds;
    - ``pad``: shorter trials repeat their last second up to T.
    """

    nan: str = "skip"
    crop: bool = False
    pad: bool = False

    def __post_init__(self):
        if self.nan not in io.NAN_POLICIES:
            raise ValueError(
                f"unknown NaN policy {self.nan!r}; choose from {', '.join(io.NAN_POLICIES)}"
            )


def model_ready(
    decoder: Model,
    source: io.Source,
    batch_size: int = DEFAULT_BATCH,
    policy: Policy | None = None,
    span: tuple[int, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray] | InputError]:
    """One file's trials as the model takes them: (1-based trial numbers, float32 trials) per
    chunk, and an :class:`~fmri_edge.data.InputError` per problem; every bad trial is reported.

    A model trained on subject-wise normalized trials (metadata ``subject_normalization``) gets
    them normalized over all of the file's good trials together, as in training: such a file is
    read twice, chunk by chunk — once for the statistics, once for the trials — so memory stays
    bounded however many trials it holds.

    ``span``: only trials ``start … stop − 1`` (0-based, ``start`` a multiple of the batch size, so
    chunks are the same as the whole file's), to share a file among workers (:mod:`fmri_edge.decoding.cluster`);
    not with subject-wise normalization, whose statistics need the whole file."""
    info, policy = decoder.info, policy or Policy()
    batch_size = effective_batch(batch_size)
    try:
        arr = io.check_trials(
            io.read_array(source.path),
            source.path,
            info.n_regions,
            info.n_times,
            crop=policy.crop,
            pad=policy.pad,
        )
    except InputError as e:
        yield e
        return
    chunks = screened_chunks(arr, source.path, info.n_times, batch_size, policy.nan, span)
    mode = info.subject_normalization or "none"
    if mode != "none" and span is not None:
        raise ValueError("subject-wise normalization needs the whole file: no span")
    if mode == "none":
        yield from chunks
        return
    stats = SubjectStats(mode)
    for item in chunks:
        if isinstance(item, InputError):
            yield item
        else:
            stats.add(item[1])
    if stats.n:
        for item in screened_chunks(arr, source.path, info.n_times, batch_size, policy.nan):
            if not isinstance(item, InputError):  # every problem was reported by the first pass
                yield item[0], stats.apply(item[1])


def predict_source(
    decoder: Model,
    source: io.Source,
    batch_size: int = DEFAULT_BATCH,
    policy: Policy | None = None,
    subject=None,
    trial_offset: int = 0,
    reported: bool = False,
    span: tuple[int, int] | None = None,
) -> Iterator[Batch | InputError]:
    """Answers for one file, chunk by chunk; every bad trial is reported and the rest predicted.
    ``subject``: the participant's alignment statistics (:func:`participant_stats`);
    ``trial_offset``: trials of the same participant in files before this one; ``reported``: the
    file's problems were already reported (by :func:`participant_stats`); ``span``: see
    :func:`model_ready`."""
    for item in model_ready(decoder, source, batch_size, policy, span):
        if isinstance(item, InputError):
            if not reported:
                yield item
        else:
            yield from answer(decoder, source, item[0] + trial_offset, item[1], subject)


def participant_stats(
    decoder: Model,
    sources: list[io.Source],
    batch_size: int = DEFAULT_BATCH,
    policy: Policy | None = None,
) -> tuple[AlignStats, list[InputError], dict]:
    """First pass over one participant's files: alignment statistics over all of its good trials
    (the graph's ``normalized`` output, chunk by chunk), every problem met, and the number of
    trials each file holds (for numbering the next file's trials on)."""
    return gather_stats((src, source_stats(decoder, src, batch_size, policy)) for src in sources)


def source_stats(
    decoder: Model,
    source: io.Source,
    batch_size: int = DEFAULT_BATCH,
    policy: Policy | None = None,
    span: tuple[int, int] | None = None,
) -> Iterator[tuple[int, AlignStats] | InputError]:
    """The first pass over one file (or a ``span`` of it, see :func:`model_ready`): per chunk,
    its last trial number and its alignment statistics alone, and every problem met."""
    for item in model_ready(decoder, source, batch_size, policy, span):
        if isinstance(item, InputError):
            yield item
        else:
            yield int(item[0][-1]), AlignStats.of(decoder.represent(item[1]))


def gather_stats(per_source) -> tuple[AlignStats, list[InputError], dict]:
    """:func:`participant_stats` from each file's :func:`source_stats` items, ``(source, items)``
    in file order; chunks are merged in order, so the statistics are the same wherever and in
    whatever pieces the chunks were computed."""
    stats, problems, counts = AlignStats(), [], {}
    for src, items in per_source:
        last = 0
        for item in items:
            if isinstance(item, InputError):
                problems.append(item)
                last = max(last, item.trial or 0)
            else:
                stats.merge(item[1])
                last = max(last, item[0])
        counts[src.path] = last
    return stats, problems, counts


def screened_chunks(
    arr: np.ndarray,
    path: Path,
    n_times: int,
    batch_size: int,
    nan: str = "skip",
    span: tuple[int, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray] | InputError]:
    """Checked (N, R, T) trials as stored → (1-based trial numbers, model-ready float32 trials) per
    chunk of ``batch_size``, and an :class:`~fmri_edge.data.InputError` per trial that needs a word;
    ``span``: only trials ``start … stop − 1`` (0-based)."""
    first, stop = span or (0, len(arr))
    stop = min(stop, len(arr))
    for start in range(first, stop, batch_size):
        if (
            start > first
        ):  # the previous chunk is done with: its pages leave memory (the page cache keeps them)
            release_pages(arr[start - batch_size : start])
        raw = arr[start : min(start + batch_size, stop)]
        chunk, keep, problems = screen(io.to_float32(raw), raw, path, start, nan)
        yield from problems
        if keep.size:
            chunk = chunk if keep.size == len(chunk) else chunk[keep]
            yield start + keep + 1, np.ascontiguousarray(io.pad_times(chunk, n_times))


def effective_batch(batch_size: int) -> int:
    """The batch size used: at least 1, at most :data:`MAX_BATCH`."""
    return max(1, min(batch_size, MAX_BATCH))


def release_pages(view: np.ndarray) -> None:
    """Drop the pages of a consumed part of a memory-mapped array from this process's resident
    memory (``madvise(MADV_DONTNEED)``; a read-only file mapping re-reads them if touched again).
    Without it, streaming a 2.5 GB ``.npy`` leaves all 2.5 GB counted as resident. A no-op for
    arrays that are not memory-mapped or where madvise is unavailable."""
    import mmap

    mm = getattr(view, "_mmap", None)
    if (
        mm is None
        or view.size == 0
        or not hasattr(mm, "madvise")
        or not hasattr(mmap, "MADV_DONTNEED")
    ):
        return
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = np.byte_bounds
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    lo, hi = byte_bounds(view)
    page = mmap.PAGESIZE
    start, stop = (lo - base) // page * page, (hi - base) // page * page
    if 0 <= start < stop <= len(mm):
        mm.madvise(mmap.MADV_DONTNEED, start, stop - start)


def answer(
    decoder: Model,
    source: io.Source,
    trial: np.ndarray,
    x: np.ndarray,
    subject=None,
) -> Iterator[Batch | InputError]:
    """One onnxruntime call → a :class:`Batch`; a trial whose outputs are not finite is reported
    and left out instead of being answered with garbage."""
    out = decoder.run(x, subject)
    finite = np.all([np.isfinite(v).all(axis=1) for v in out.values()], axis=0)
    for i in np.flatnonzero(~finite):
        yield InputError(
            source.path,
            "the model's outputs are not finite (largest |value| "
            f"{np.abs(x[i]).max():.3g} overflows float32 arithmetic; raw BOLD is about "
            "1e2 … 1e5); trial skipped — check the file's units",
            int(trial[i]),
            "skipped",
        )
    if not finite.all():
        trial, out = trial[finite], {k: v[finite] for k, v in out.items()}
    if len(trial):
        yield Batch(
            source.participant,
            source.path,
            trial,
            out["class_probs"],
            out["level_probs"],
            out["region_weights"],
            valence.decide_class(out["class_probs"]),
            valence.decide_level(out["level_probs"], decoder.info.level_rule),
            out.get(CONTRIBUTION_OUTPUT),
        )


def screen(
    chunk: np.ndarray,
    raw: np.ndarray,
    path: Path,
    start: int,
    nan: str = "skip",
) -> tuple[np.ndarray, np.ndarray, list[InputError]]:
    """Check the values of a float32 chunk (``raw``: the same trials as stored) under a NaN policy.
    Returns the chunk (repaired under ``interpolate``), the indices of trials to predict and one
    problem per trial that needs a word; raises the first NaN/Inf under ``error``."""
    keep = np.ones(len(chunk), dtype=bool)
    problems = []
    for i in io.nonfinite_trials(chunk):
        trial, found = int(start + i + 1), io.describe_nonfinite(raw[i], chunk[i])
        if nan == "error":
            raise InputError(
                path,
                f"{found}; stopped by --nan error (--nan skip predicts the other "
                "trials, --nan interpolate fills short gaps)",
                trial,
            )
        fixed = io.interpolate_nonfinite(chunk[i]) if nan == "interpolate" else None
        if fixed is not None:
            if not chunk.flags.writeable:  # a memory-mapped file is never written to
                chunk = chunk.copy()
            chunk[i] = fixed
            problems.append(
                InputError(
                    path,
                    f"{found}; filled by linear interpolation over time (--nan interpolate)",
                    trial,
                    "repaired",
                )
            )
            continue
        keep[i] = False
        hint = (
            f"a region misses more than {io.MAX_INTERPOLATED:.0%} of its seconds, too many to interpolate"
            if nan == "interpolate"
            else "--nan interpolate fills short gaps over time"
        )
        problems.append(InputError(path, f"{found}; trial skipped ({hint})", trial, "skipped"))
    idx = np.flatnonzero(keep)
    for i in idx[io.constant_trials(chunk[idx])]:
        problems.append(
            InputError(
                path,
                f"every value is {chunk[i, 0, 0]:g}: a constant trial carries no "
                "signal (a zero-filled gap?); predicted anyway, the answer only "
                "reflects the model's prior",
                int(start + i + 1),
                "predicted",
            )
        )
    return chunk, idx, problems


def group_sources(
    paths: list,
    participant: str | None = None,
) -> Iterator[tuple[str, list[io.Source]] | InputError]:
    """Every input file, grouped by participant in order of first appearance. A participant is a
    subject folder's name or a file's stem; ``participant`` names every input's trials as one
    participant's (e.g. several runs of one person), numbered on from file to file. The same file
    given twice is predicted once."""
    groups: dict[str, list[io.Source]] = {}
    for src in io.iter_sources(paths):
        if isinstance(src, InputError):
            yield src
            continue
        if participant is not None:
            src = io.Source(participant, src.path)
        group = groups.setdefault(src.participant, [])
        if any(g.path.resolve() == src.path.resolve() for g in group):
            yield InputError(src.path, "given more than once; predicted once", outcome="skipped")
        else:
            group.append(src)
    yield from groups.items()


def _n_trials(path: Path) -> int:
    """How many trials a file holds (0 where it cannot be read: that is reported when predicted)."""
    try:
        arr = io.read_array(path)
    except InputError:
        return 0
    return 1 if arr.ndim == 2 else int(arr.shape[0]) if arr.ndim else 0


def predict(
    decoder: Model,
    paths: list,
    batch_size: int = DEFAULT_BATCH,
    policy: Policy | None = None,
    participant: str | None = None,
    align: bool = True,
) -> Iterator[Batch | InputError]:
    """Answers for every file and folder in ``paths`` (see :func:`fmri_edge.data.io.discover`),
    participant by participant (:func:`group_sources`).

    A model with subject alignment gets each participant aligned over all of its good trials,
    wherever they come from (one file, chunks of it, several files with ``participant``): a first
    pass computes the statistics, a second predicts. A participant with fewer than
    :data:`MIN_ALIGN_TRIALS` trials (or ``align=False``) is answered with the training population's
    statistics, with a warning. Without ``participant``, a second file that implies a participant
    already predicted is refused: their trial numbers would collide in one submission."""
    for item in group_sources(paths, participant):
        if isinstance(item, InputError):
            yield item
            continue
        name, sources = item
        yield from answer_units(
            name,
            participant_units(sources, participant),
            lambda unit: _predict_participant(decoder, name, unit, batch_size, policy, align),
        )


def participant_units(
    sources: list[io.Source], participant: str | None = None
) -> list[list[io.Source]]:
    """The files answered together: all of a participant's with ``participant`` (trials numbered on
    from file to file), otherwise each file alone (see :func:`answer_units`)."""
    return [sources] if participant is not None else [[src] for src in sources]


def answer_units(name: str, units: list[list[io.Source]], answers) -> Iterator[Batch | InputError]:
    """``answers(unit)`` for each of a participant's :func:`participant_units` in turn; once one has
    answered a trial, the files of any later unit are refused: their trial numbers would collide
    with its in one submission (a refused file leaves the participant's name free)."""
    first = None
    for unit in units:
        if first is not None:
            for src in unit:
                yield InputError(
                    src.path,
                    f"participant {name!r} was already predicted from {first}; their "
                    "trial numbers would collide in one submission — rename one of them, "
                    "predict them separately, or give --participant to number the trials "
                    "of several files of one person on",
                    outcome="refused",
                )
            continue
        for out in answers(unit):
            if isinstance(out, Batch) and first is None:
                first = unit[0].path
            yield out


def _predict_participant(
    decoder: Model,
    name: str,
    sources: list[io.Source],
    batch_size: int,
    policy: Policy | None,
    align: bool,
) -> Iterator[Batch | InputError]:
    """One participant's files: alignment statistics over all of them (aligned models), then the
    answers, trial numbers running on from file to file."""
    stats = participant_stats(decoder, sources, batch_size, policy) if decoder.aligned else None
    subject, offsets, notes = participant_plan(name, sources, stats, align)
    yield from notes
    for src in sources:
        yield from predict_source(
            decoder, src, batch_size, policy, subject, offsets[src.path], reported=stats is not None
        )


def participant_plan(
    name: str,
    sources: list[io.Source],
    stats=None,
    align: bool = True,
) -> tuple[tuple | None, dict, list[InputError]]:
    """What predicting one participant's files needs: its alignment statistics (None: the graph's
    defaults, the training population's), the trial offset of each file, and the problems and
    warnings to report first. ``stats``: :func:`participant_stats` for a model with subject
    alignment, None for one without."""
    subject, notes, counts = None, [], {}
    if stats is not None:
        stats, problems, counts = stats
        notes += problems
        if align and stats.n >= MIN_ALIGN_TRIALS:
            subject = stats.result()
        elif stats.n:
            why = f"only {stats.n} good trial{'s' * (stats.n != 1)}" if align else "--no-align"
            notes.append(
                InputError(
                    sources[0].path,
                    f"participant {name!r}: {why}; subject alignment needs "
                    f"≥ {MIN_ALIGN_TRIALS} trials of one participant, so the "
                    "training population's statistics were used (less accurate)",
                    outcome="predicted",
                )
            )
    elif len(sources) > 1:
        counts = {src.path: _n_trials(src.path) for src in sources}
    offsets, total = {}, 0
    for src in sources:
        offsets[src.path] = total
        total += counts.get(src.path, 0)
    return subject, offsets, notes


@dataclass
class Summary:
    n_trials: int
    kept: list  # the first batches, up to ``keep`` trials, for display
    problems: list  # every InputError met on the way


def predict_to(
    decoder: Model,
    paths: list,
    csv_file=None,
    batch_size: int = DEFAULT_BATCH,
    keep: int | None = 60,
    policy: Policy | None = None,
    on_batch=None,
    participant: str | None = None,
    align: bool = True,
    probs: bool = False,
    items=None,
) -> Summary:
    """Run :func:`predict`, streaming every answer to an open CSV file (if given; class
    probabilities too with ``probs``) and keeping the first ``keep`` trials' batches (all with
    ``keep=None``) for display; memory stays bounded.
    ``on_batch(batch)``, if given, is called for every batch (e.g. to stream region weights);
    ``items``: answers computed elsewhere, in :func:`predict`'s order (e.g. by
    :func:`fmri_edge.decoding.cluster.predict`), instead of running :func:`predict` here."""
    from fmri_edge.data import submission

    if csv_file is not None:
        submission.write_header(csv_file, probs=probs)
    summary = Summary(0, [], [])
    if items is None:
        items = predict(decoder, paths, batch_size, policy, participant, align)
    for item in items:
        if isinstance(item, InputError):
            summary.problems.append(item)
            continue
        if csv_file is not None:
            submission.write_rows(
                csv_file,
                item.participant,
                item.trial,
                item.valence_class,
                item.valence_level,
                item.class_probs,
                probs=probs,
            )
        if on_batch is not None:
            on_batch(item)
        if keep is None or summary.n_trials < keep:
            summary.kept.append(item)
        summary.n_trials += len(item)
    return summary
