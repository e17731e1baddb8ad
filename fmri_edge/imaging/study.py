"""A BIDS study through extraction: every participant's runs (:mod:`fmri_edge.imaging.bids`), each
cut by :func:`fmri_edge.imaging.extract.extract_run`, here or on a Dask cluster, written per
participant (``OUT/<participant>/fMRI_data.npz``, ``labels.npz``); the labels checked for the whole
study before any image is read, and their summary (``labels.json``).

A run that fails is reported and the participant's other runs, and the other participants, still
come out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.data.io import DATA_FILE
from fmri_edge.errors import InputError
from fmri_edge.imaging.atlas import Atlas
from fmri_edge.imaging.bids import BidsRun, events_name, find_bids_runs
from fmri_edge.imaging.events import (
    LABEL_FILE,
    Events,
    Labeled,
    LabelSpec,
    check_columns,
    check_study,
    read_events,
    save_labels,
)
from fmri_edge.imaging.extract import (
    ExtractOptions,
    RunResult,
    extract_run,
    run_labels,
    save_trials,
)
from fmri_edge.imaging.window import Window


@dataclass
class ParticipantResult:
    participant: str
    out: Path | None
    runs: list[RunResult]
    failed: list[InputError]
    n_runs: int = 0

    @property
    def n_trials(self) -> int:
        return sum(len(r.trials) for r in self.runs)

    @property
    def skipped(self) -> list[InputError]:
        return [s for r in self.runs for s in r.skipped]


def extract_bids(
    root: str | Path,
    atlas: Atlas,
    out_dir: str | Path,
    window: Window,
    opts: ExtractOptions | None = None,
    task: str | None = None,
    space: str | None = None,
    force: bool = False,
    on_run: Callable[[BidsRun, RunResult | InputError], None] | None = None,
    runs: dict[str, list[BidsRun]] | None = None,
    labeled: dict[Path, Labeled | InputError] | None = None,
    extract: Callable[[BidsRun, Events | Labeled | Path], RunResult] | None = None,
) -> list[ParticipantResult]:
    """Every participant's runs → ``out_dir/<participant>/fMRI_data.npz`` (runs concatenated in run
    order). A run that fails is reported and the participant's other runs, and the other
    participants, still come out. With ``opts.labels``, ``labels.npz`` beside it (one row per
    trial, same order), from ``labeled`` (:func:`label_study`) or the events read here.
    ``extract(run, events)`` gives a run's result (default: here, now; :func:`extract_bids_on`
    collects them from a Dask cluster)."""
    opts = opts or ExtractOptions()
    out_dir = Path(out_dir)
    runs = (
        runs
        if runs is not None
        else find_bids_runs(root, task, space, confounds=opts.confounds == "auto")
    )
    if opts.labels is not None and labeled is None:
        labeled = label_study(runs, window, opts)
    extract = extract or (
        lambda r, events: extract_run(r.bold, atlas, events, window, opts, r.confounds)
    )
    results = []
    for participant, prs in runs.items():
        target = out_dir / participant / DATA_FILE
        done, failed = [], []
        if target.exists() and not force:
            failed.append(InputError(target, "exists; use --force to overwrite"))
            for r in prs:
                on_run and on_run(r, failed[-1])
            results.append(ParticipantResult(participant, None, [], failed, len(prs)))
            continue
        for r in prs:
            if r.duplicate_of is not None:  # never the same run twice in a participant's trials
                failed.append(
                    InputError(
                        r.bold,
                        f"the same run as {r.duplicate_of.name}, which is read; this "
                        "copy is not (remove one of them)",
                        outcome="ignored",
                    )
                )
                on_run and on_run(r, failed[-1])
                continue

            def one(r=r):
                if r.events is None:
                    raise InputError(
                        r.bold,
                        f"no events file {events_name(r.bold)} found (looked in "
                        f"{', '.join(str(p) for p in r.searched[:3])} …)",
                    )
                return extract(r, run_events(r, labeled))

            res = _attempt(r.bold, one)
            (failed if isinstance(res, InputError) else done).append(res)
            on_run and on_run(r, res)
        written = None
        if any(len(x.trials) for x in done):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                written = save_trials(
                    target,
                    [x for x in done if len(x.trials)],
                    force=force,
                    window=window,
                    atlas=atlas,
                )
                if opts.labels is not None:
                    labs = [x.labels for x in done if len(x.trials)]
                    save_labels(
                        target.parent / LABEL_FILE,
                        *(
                            np.concatenate([getattr(lab, a) for lab in labs])
                            for a in ("valence_class", "valence_level", "level_rated")
                        ),
                    )
            except OSError as e:  # a file where the folder goes, a full disk: this participant only
                failed.append(
                    InputError(target, f"cannot be written ({e.strerror or type(e).__name__})")
                )
        elif done:
            failed.append(InputError(out_dir / participant, _nothing_kept(done)))
        results.append(ParticipantResult(participant, written, done, failed, len(prs)))
    return results


def _nothing_kept(done: list[RunResult]) -> str:
    """Why a participant whose runs were all read has no trial: its events left the scan, or (labeled)
    the class map (or --min-gap) dropped every one of them."""
    labs = [x.labels for x in done if getattr(x, "labels", None) is not None]
    if labs and not any(len(x.skipped) for x in done):
        reasons: Counter = Counter()
        for lab in labs:
            reasons.update(lab.dropped)
        why = "; ".join(f"{n} × {k}" for k, n in reasons.most_common(3)) or "no event row"
        return (
            f"every event of its runs was dropped before cutting ({why}); nothing written for this "
            "participant (check --class-map and --min-gap)"
        )
    return "no event of any run fits inside its scan; nothing written for this participant"


def run_events(run: BidsRun, labeled: dict[Path, Labeled | InputError] | None) -> Path | Labeled:
    """What :func:`extract_run` reads a run's trials from: its events file, or its labeled events
    (raises the :class:`InputError` that refused its labels)."""
    events = run.events if labeled is None else labeled[run.bold]
    if isinstance(events, InputError):
        raise events
    return events


def to_write(
    runs: dict[str, list[BidsRun]],
    out_dir: str | Path,
    force: bool,
    labeled: dict[Path, Labeled | InputError] | None = None,
) -> list[BidsRun]:
    """The runs :func:`extract_bids` will extract: those of participants whose output may be
    written, that have an events file (and labels, when asked)."""
    return [
        r
        for participant, prs in runs.items()
        if force or not (Path(out_dir) / participant / DATA_FILE).exists()
        for r in prs
        if r.events is not None
        and r.duplicate_of is None
        and not (labeled is not None and isinstance(labeled.get(r.bold), InputError))
    ]


# ---- on a Dask cluster (the dask extra) -------------------------------------------------------------------

_worker_atlases: dict[tuple, Atlas] = {}


def run_task(
    run: BidsRun,
    events: Path | Labeled,
    atlas_path: str,
    n_regions: int,
    window: Window,
    opts: ExtractOptions,
) -> RunResult | InputError:
    """One run on a Dask worker: its result, or the :class:`InputError` saying why it cannot be used
    (returned, not raised: a bad run is reported, never retried). The worker reads the atlas
    itself, once per process (workers need the inputs at the same paths as the client)."""

    def one():
        path = Path(atlas_path)
        key = (
            str(path),
            n_regions,
            *((path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else ()),
        )
        if key not in _worker_atlases:
            _worker_atlases[key] = Atlas(path, n_regions)
        return extract_run(run.bold, _worker_atlases[key], events, window, opts, run.confounds)

    return _attempt(run.bold, one)


def extract_bids_on(
    address: str,
    root: str | Path,
    atlas: Atlas,
    out_dir: str | Path,
    window: Window,
    opts: ExtractOptions | None = None,
    force: bool = False,
    on_run: Callable[[BidsRun, RunResult | InputError], None] | None = None,
    runs: dict[str, list[BidsRun]] | None = None,
    labeled: dict[Path, Labeled | InputError] | None = None,
) -> list[ParticipantResult]:
    """:func:`extract_bids` with the runs extracted by the workers of a Dask scheduler
    (``tcp://host:8786``) or of a local cluster of N processes (``local:N``): every run is submitted
    at once, the client collects the results in run order and writes each participant's file as
    :func:`extract_bids` does (the same files, the same reports)."""
    from fmri_edge import scheduler

    opts = opts or ExtractOptions()
    runs = runs if runs is not None else find_bids_runs(root, confounds=opts.confounds == "auto")
    if opts.labels is not None and labeled is None:
        labeled = label_study(runs, window, opts)
    distributed = scheduler.load_distributed()
    with scheduler.connect(address) as (client, _):
        futures = {
            r.bold: client.submit(
                run_task,
                r,
                run_events(r, labeled),
                str(atlas.path.resolve()),
                atlas.n_regions,
                window,
                opts,
                pure=False,
            )
            for r in to_write(runs, out_dir, force, labeled)
        }

        def collect(run: BidsRun, events) -> RunResult:
            result = scheduler.result(futures.pop(run.bold), address, distributed)
            if isinstance(result, InputError):
                raise result
            return result

        return extract_bids(
            root,
            atlas,
            out_dir,
            window,
            opts,
            force=force,
            on_run=on_run,
            runs=runs,
            labeled=labeled,
            extract=collect,
        )


def label_study(
    runs: dict[str, list[BidsRun]], window: Window, opts: ExtractOptions
) -> dict[Path, Labeled | InputError]:
    """Every run's events labeled before any image is read: {BOLD: labeled events, or the
    :class:`InputError` that refuses that run (its events file lacks a column)}. A problem that is
    the study's (a class-map value that occurs nowhere, a column no file has, a rating outside the
    scale) raises, so nothing is extracted under a wrong option."""
    out: dict[Path, Labeled | InputError] = {}
    for prs in runs.values():
        for r in prs:
            if r.events is None:
                continue
            try:  # a damaged events file (empty, header only, malformed) refuses its run only
                ev = read_events(r.events, opts.trial_types)
                check_columns(ev, opts.labels)
            except InputError as e:
                out[r.bold] = e
                continue
            out[r.bold] = run_labels(ev, window, opts)
    if (
        not out
    ):  # no run has an events file: say where they were looked for (as the unlabeled path does)
        first = next((r for prs in runs.values() for r in prs), None)
        if first is not None:
            raise InputError(
                first.bold,
                f"no events file {events_name(first.bold)} found for any run (looked in "
                f"{', '.join(str(p) for p in first.searched[:3])} …); labels come from "
                "each run's BIDS *_events.tsv",
            )
    check_study(out, opts.labels)
    return out


def labels_summary(
    results: list[ParticipantResult], spec: LabelSpec, window: Window, root: Path
) -> dict:
    """What ``OUT/labels.json`` records: the options, the events files used, per-participant ×
    class counts, rows dropped by reason, trials whose window holds another kept event."""
    dropped: Counter = Counter()
    participants, overlapping = {}, 0
    for p in results:
        kept = [r for r in p.runs if len(r.trials)]
        for r in p.runs:
            dropped.update(r.labels.dropped)
        n_outside = sum(len(r.skipped) for r in p.runs)
        if n_outside:
            dropped["window outside the scan"] += n_outside
        if not kept:
            continue
        cls = np.concatenate([r.labels.valence_class for r in kept])
        over = int(sum(r.labels.overlapping.sum() for r in kept))
        overlapping += over
        participants[p.participant] = {
            "trials": int(len(cls)),
            **{f"CLASS {c:+d}" if c else "CLASS 0": int((cls == c).sum()) for c in (-1, 0, 1)},
            "rated": int(sum(r.labels.level_rated.sum() for r in kept)),
            "overlapping": over,
            "runs": [
                {"bold": str(r.bold), "events": str(r.events), "trials": len(r.trials)}
                for r in kept
            ],
        }
        scrub = [r.scrubbed for r in p.runs if r.scrubbed]
        if scrub:  # --confounds-strategy: what was censored and what it cost this participant
            participants[p.participant]["scrubbing"] = {
                k: sum(x[k] for x in scrub)
                for k in ("volumes", "censored", "trials_dropped", "trials_interpolated")
            }
            n_scrubbed = participants[p.participant]["scrubbing"]["trials_dropped"]
            if n_scrubbed:
                dropped["window lost more than a quarter of its volumes to scrubbing"] += n_scrubbed
    single = [
        p
        for p, c in participants.items()
        if sum(c[k] > 0 for k in ("CLASS -1", "CLASS 0", "CLASS +1")) < 2
    ]
    return {
        "study": str(root),
        **spec.describe(),
        "window": {
            "n_regions": window.n_regions,
            "n_times": window.n_times,
            "baseline_s": window.baseline_s,
        },
        "participants": participants,
        "dropped": dict(dropped),
        "overlapping": {
            "trials": overlapping,
            "meaning": "trials whose window holds the onset of another kept "
            "event (fast event-related designs); drop them with --min-gap SECONDS",
        },
        "single_class_participants": single,
    }


def _attempt(bold: Path, work: Callable[[], RunResult]) -> RunResult | InputError:
    """``work()``, or the :class:`InputError` saying why the run cannot be used: whatever the reader
    did not name (an OS or decompression error, memory) is still one line about this run."""
    try:
        return work()
    except InputError as e:
        return e
    except (OSError, EOFError, MemoryError) as e:
        return InputError(bold, f"cannot be read ({type(e).__name__}: {_short(e)})")


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__
