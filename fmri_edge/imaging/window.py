"""The trial window and its cut: which seconds make a trial, and cutting them from region signals.

Shared by batch extraction (:mod:`fmri_edge.imaging.extract`) and the live stream
(:mod:`fmri_edge.realtime.stream`). Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError
from fmri_edge.imaging.events import Events

DEFAULT_BASELINE_S = 5  # ICBHI trials: 5 s fixation, 15 s video, 5 s after
TR_RANGE = (0.1, 30.0)  # plausible repetition times, seconds


# ---- the window, from the model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Which seconds make a trial: samples ``onset − baseline_s + j``, ``j < n_times``."""

    n_regions: int
    n_times: int
    baseline_s: float
    baseline_from: str = "model metadata"

    def offsets(self) -> np.ndarray:
        return np.arange(self.n_times, dtype=np.float64) - self.baseline_s

    @classmethod
    def from_model(cls, info) -> "Window":
        """From a :class:`~fmri_edge.model.runtime.ModelInfo`: ``baseline_s`` at the metadata's top level,
        else in its ``normalization`` block, else 5 s (the ICBHI layout), which is said."""
        meta = info.meta
        norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
        if "baseline_s" in meta:
            value, source = meta["baseline_s"], "model metadata (baseline_s)"
        elif "baseline_s" in norm:
            value, source = norm["baseline_s"], "model metadata (normalization.baseline_s)"
        else:
            value, source = (
                DEFAULT_BASELINE_S,
                f"default {DEFAULT_BASELINE_S} s: the model's metadata has no baseline_s",
            )
        try:
            baseline = float(value)
        except (TypeError, ValueError):
            baseline = float("nan")
        if not 0 <= baseline < info.n_times:
            raise InputError(
                info.path,
                f"metadata baseline_s {value!r} is not a number of seconds within the "
                f"model's {info.n_times}-s window",
            )
        return cls(info.n_regions, info.n_times, baseline, source)


# ---- cutting trials (numpy only) ---------------------------------------------------------------------


def volume_times(n_volumes: int, tr: float, slice_time_ref: float = 0.0) -> np.ndarray:
    """Seconds of each volume from the start of the scan: ``(k + slice_time_ref) · tr``."""
    return (np.arange(n_volumes, dtype=np.float64) + slice_time_ref) * tr


def cut_trials(
    times: np.ndarray, signals: np.ndarray, events: Events, window: Window, source: str | Path
) -> tuple[np.ndarray, np.ndarray, list[InputError]]:
    """Region signals (V, R) at volume ``times`` → (trials (N, R, n_times) float32, indices of the
    events kept, one :class:`InputError` per event skipped because its window leaves the scan)."""
    offsets = window.offsets()
    keep, skipped = [], []
    first, last = times[0], times[-1]
    eps = 1e-6
    for i, onset in enumerate(events.onset):
        t0, t1 = onset + offsets[0], onset + offsets[-1]
        if t0 < first - eps or t1 > last + eps:
            where = (
                f"starts before the first volume ({first:g} s)"
                if t0 < first - eps
                else f"runs past the end of the scan (last volume at {last:g} s)"
            )
            skipped.append(
                InputError(
                    events.path,
                    f"event row {events.row[i]} (onset {onset:g} s, {events.trial_type[i]}): its "
                    f"{window.n_times}-s window {t0:g} … {t1:g} s {where} in {Path(source).name}; "
                    "windows are never padded",
                    outcome="skipped",
                )
            )
        else:
            keep.append(i)
    keep = np.asarray(keep, dtype=np.int64)
    trials = np.empty((len(keep), signals.shape[1], window.n_times), dtype=np.float32)
    sig = np.asarray(signals, dtype=np.float64)
    for n, i in enumerate(keep):
        t = np.clip(events.onset[i] + offsets, first, last)  # clip only absorbs rounding (≤ eps)
        # linear interpolation of every region at once: the two volumes around each sample
        k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
        w = (t - times[k]) / (times[k + 1] - times[k])
        trials[n] = (sig[k] * (1 - w)[:, None] + sig[k + 1] * w[:, None]).T
    return trials, keep, skipped
