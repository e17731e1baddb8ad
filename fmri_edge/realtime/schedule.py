"""The live run's bookkeeping, before any volume: which volumes each trial's window needs (the
schedule, cut exactly as ``extract`` cuts), and subject alignment without the future (running
statistics, a model session's, or none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmri_edge.data import io
from fmri_edge.decoding.answers import MIN_ALIGN_TRIALS
from fmri_edge.errors import InputError, UsageError
from fmri_edge.imaging.events import Events
from fmri_edge.imaging.window import Window, cut_trials, volume_times
from fmri_edge.model.runtime import Model

ALIGN_MODES = ("running", "stats", "none")
EPS = 1e-6


# ---- the schedule: which volumes each trial needs, and the cut -------------------------------------------


@dataclass
class Trial:
    i: int  # index into the events
    row: int  # 1-based row of the events file
    onset: float
    trial_type: str
    lo: int  # first and last volume (0-based) its window reads
    hi: int


class Schedule:
    """The events file's trials on the volume clock: ``extract``'s window and cut, one trial at a time."""

    def __init__(self, events: Events, window: Window, tr: float, slice_time_ref: float = 0.0):
        self.events, self.window, self.tr, self.ref = (
            events,
            window,
            float(tr),
            float(slice_time_ref),
        )
        offsets = window.offsets()
        self.trials: list[Trial] = []
        for i, onset in enumerate(events.onset):
            t0, t1 = onset + offsets[0], onset + offsets[-1]
            lo = max(0, math.floor(t0 / self.tr - self.ref + EPS))
            hi = max(lo + 1, math.ceil(t1 / self.tr - self.ref - EPS))
            self.trials.append(
                Trial(i, int(events.row[i]), float(onset), str(events.trial_type[i]), lo, hi)
            )
        # windows that start before the first volume: extract's own check and message
        n = max(t.hi for t in self.trials) + 2
        _, keep, self.skipped = cut_trials(
            volume_times(n, self.tr, self.ref), np.zeros((n, 1)), events, window, "the scan"
        )
        kept = set(keep.tolist())
        self.trials = [t for t in self.trials if t.i in kept]

    def cut(self, trial: Trial, signals: np.ndarray) -> np.ndarray:
        """(1, n_regions, n_times) float32 from region signals (≥ trial.hi + 1, n_regions) (rows
        before ``trial.lo`` are not read), exactly as ``extract`` cuts it."""
        ev = self.events
        one = Events(
            ev.path,
            ev.onset[trial.i : trial.i + 1],
            ev.trial_type[trial.i : trial.i + 1],
            ev.row[trial.i : trial.i + 1],
        )
        n = trial.hi + 1
        trials, _, skipped = cut_trials(
            volume_times(n, self.tr, self.ref), signals[:n], one, self.window, "the scan"
        )
        if skipped:  # cannot happen for a trial the schedule kept; never answer a padded window
            raise skipped[0]
        return trials

    def window_text(self, trial: Trial) -> str:
        o = self.window.offsets()
        return f"{self.window.n_times}-s window {trial.onset + o[0]:g} … {trial.onset + o[-1]:g} s"


# ---- subject alignment without the future --------------------------------------------------------------


class Alignment:
    """Which statistics align each live trial: see the module's docstring."""

    def __init__(
        self,
        decoder: Model,
        mode: str = "running",
        stats_from: list[Path] | None = None,
        min_trials: int = MIN_ALIGN_TRIALS,
    ):
        from fmri_edge.model.normalize import AlignStats

        if mode not in ALIGN_MODES:
            raise UsageError(f"unknown alignment {mode!r}; choose from {', '.join(ALIGN_MODES)}")
        self.decoder, self.mode, self.min_trials = decoder, mode, min_trials
        self.subject = None
        self.running = AlignStats()
        if not decoder.aligned:
            self.mode = "none"
        elif mode == "stats":
            self.subject = stats_from_trials(decoder, stats_from or [], min_trials)

    def __call__(self, x: np.ndarray) -> tuple[tuple | None, str]:
        """The statistics to answer trial ``x`` (1, R, T) with, and a word on them; ``running`` first
        adds ``x`` to the trials seen."""
        if self.mode == "running":
            from fmri_edge.model.normalize import AlignStats

            self.running.merge(AlignStats.of(self.decoder.represent(x)))
            if self.running.n >= self.min_trials:
                return self.running.result(), f"running ({self.running.n} trials)"
            return None, f"population ({self.running.n} < {self.min_trials} trials)"
        if self.mode == "stats":
            return self.subject, "stats-from"
        return None, "population"


def stats_from_trials(
    decoder: Model, paths: list[Path], min_trials: int = MIN_ALIGN_TRIALS
) -> tuple:
    """One participant's alignment statistics from trial files of an earlier run (``extract``'s
    ``.npz``, ``.npy``, an ICBHI subject folder), as ``predict`` computes them."""
    from fmri_edge.decoding.answers import participant_stats

    sources = [s for p in paths for s in io.discover([Path(p)])]
    if not sources:
        raise UsageError("--stats-from: give the trials of an earlier run of the same participant")
    stats, problems, _ = participant_stats(decoder, sources)
    if problems and not stats.n:
        raise problems[0]
    if stats.n < min_trials:
        raise InputError(
            sources[0].path,
            f"--stats-from holds {stats.n} good trial(s); alignment statistics need "
            f"≥ {min_trials} trials of the participant",
        )
    return stats.result()
