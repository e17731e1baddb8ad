"""fMRIPrep's denoising strategies and scrubbing for ``extract --confounds-strategy``.

The confounds and the volumes kept come from nilearn's
:func:`nilearn.interfaces.fmriprep.load_confounds_strategy` (``simple``, ``scrubbing``, ``compcor``,
``ica_aroma``; ``fd_threshold`` and ``std_dvars_threshold`` passed through for ``scrubbing``): it reads
fMRIPrep's ``*_desc-confounds_timeseries.tsv`` beside the BOLD, fills fMRIPrep's leading ``n/a``
of derivatives the way nilearn does, takes the high-pass from the ``cosine*`` regressors and, with
scrubbing, returns the sample mask: the volumes whose framewise displacement exceeds
``fd_threshold`` mm (or standardized DVARS ``std_dvars_threshold``) are censored, plus nilearn's
neighbour rule (segments shorter than ``scrub`` = 5 volumes between censored volumes, or at the
run's ends, go too). Nothing of that is re-implemented here.

What fmri-edge adds: a censored volume is never a sample of a trial. The region signals are
computed on the kept volumes only (nilearn's masker with ``sample_mask``: confounds regressed on
them), and each trial's 1-s samples are interpolated between the kept volumes around them. A trial
whose window loses more than :data:`MAX_SCRUBBED_SHARE` of its volumes is dropped (counted per
participant); the others are kept, interpolated across the gap, and marked (``scrubbed_volumes`` in
``fMRI_data.npz``, per trial).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError, UsageError

STRATEGIES = ("simple", "scrubbing", "compcor", "ica_aroma")
MAX_SCRUBBED_SHARE = 0.25  # a trial losing more of its window's volumes than this is dropped


@dataclass(frozen=True)
class Strategy:
    name: str
    fd_threshold: float | None = None
    std_dvars_threshold: float | None = None

    def kwargs(self) -> dict:
        return {
            k: v
            for k, v in (
                ("fd_threshold", self.fd_threshold),
                ("std_dvars_threshold", self.std_dvars_threshold),
            )
            if v is not None
        }

    def describe(self) -> dict:
        from nilearn.interfaces.fmriprep.load_confounds_strategy import preset_strategies

        preset = dict(preset_strategies[self.name])
        preset.update(self.kwargs())
        return {
            "strategy": self.name,
            "via": "nilearn.interfaces.fmriprep.load_confounds_strategy",
            "parameters": {k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()},
            "max_scrubbed_share": MAX_SCRUBBED_SHARE,
        }


def parse(
    name: str | None, fd_threshold: float | None, std_dvars_threshold: float | None
) -> Strategy | None:
    """The options → a :class:`Strategy` (None without ``--confounds-strategy``), or one line."""
    if name is None:
        if fd_threshold is not None or std_dvars_threshold is not None:
            raise UsageError(
                "--fd-threshold and --std-dvars-threshold set scrubbing: give --confounds-strategy "
                "scrubbing"
            )
        return None
    if name not in STRATEGIES:
        raise UsageError(
            f"--confounds-strategy {name!r}: choose one of {', '.join(STRATEGIES)} "
            "(nilearn's load_confounds_strategy)"
        )
    if (fd_threshold is not None or std_dvars_threshold is not None) and name != "scrubbing":
        raise UsageError(
            f"--fd-threshold and --std-dvars-threshold apply to --confounds-strategy scrubbing, not {name}"
        )
    for opt, v in (
        ("--fd-threshold", fd_threshold),
        ("--std-dvars-threshold", std_dvars_threshold),
    ):
        if v is not None and not v > 0:
            raise UsageError(f"{opt} {v:g}: give a positive threshold")
    return Strategy(name, fd_threshold, std_dvars_threshold)


def load(
    bold: str | Path, strategy: Strategy, n_volumes: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(confounds (V, C), sample mask: indices of the kept volumes, or None = all) for one run,
    from nilearn; a missing file or column is one :class:`InputError` naming the confounds file."""
    import warnings

    from nilearn.interfaces.fmriprep import load_confounds_strategy

    from fmri_edge.imaging.bids import confounds_beside

    bold = Path(bold)
    tsv = confounds_beside(bold)
    if not tsv.is_file():
        raise InputError(
            tsv,
            f"not found: --confounds-strategy {strategy.name} reads fMRIPrep's confounds file "
            f"beside {bold.name}",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conf, mask = load_confounds_strategy(str(bold), strategy.name, **strategy.kwargs())
    except (
        ValueError,
        KeyError,
    ) as e:  # nilearn's "The following keys are missing …", a broken file
        msg = (
            f"the file lacks column {e.args[0]!r}"
            if isinstance(e, KeyError)
            else " ".join(str(e).split())
        )
        raise InputError(
            tsv, f"cannot give the confounds of strategy {strategy.name!r}: {msg[:200]}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(tsv, f"cannot be read ({type(e).__name__})") from None
    values = (
        np.asarray(conf, dtype=np.float64) if conf is not None else np.zeros((n_volumes or 0, 0))
    )
    if n_volumes is None:  # a check before any image is read (:func:`check_study`)
        return values, mask
    if values.shape[0] != n_volumes:
        raise InputError(
            tsv,
            f"{values.shape[0]} confound rows for {n_volumes} volumes; it must have one row per volume",
        )
    if mask is not None:
        mask = np.asarray(mask, dtype=np.int64)
        if len(mask) < 2:
            raise InputError(
                tsv,
                f"strategy {strategy.name!r} censors {n_volumes - len(mask)} of {n_volumes} "
                "volumes: fewer than 2 left",
            )
        if len(mask) == n_volumes:
            mask = None
    return values, mask


def scrub_trials(
    times_all: np.ndarray, kept: np.ndarray, onsets: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each trial (onset): how many volumes inside its window were censored, and whether it
    is dropped (more than :data:`MAX_SCRUBBED_SHARE` of the window's volumes lost)."""
    censored = np.ones(len(times_all), dtype=bool)
    censored[kept] = False
    lost, drop = np.zeros(len(onsets), np.int64), np.zeros(len(onsets), bool)
    for i, onset in enumerate(onsets):
        inside = (times_all >= onset + offsets[0] - 1e-6) & (
            times_all <= onset + offsets[-1] + 1e-6
        )
        lost[i] = int((inside & censored).sum())
        drop[i] = inside.any() and lost[i] / inside.sum() > MAX_SCRUBBED_SHARE
    return lost, drop


def check_study(bolds, strategy: Strategy) -> None:
    """Every run's confounds give the strategy's columns, checked before any image is read: a
    missing file or column refuses the study (one line naming the file), nothing is written."""
    for bold in bolds:
        load(bold, strategy, None)


# ---- explicit columns (--confounds, --confound-columns) ---------------------------------------------


def read_confounds(path: str | Path, columns: Iterable[str], n_volumes: int) -> np.ndarray:
    """Columns of an fMRIPrep ``*_desc-confounds_timeseries.tsv`` (one row per volume) → (V, C).
    A leading 'n/a' (first row of derivative columns) becomes 0."""
    path, columns = Path(path), list(columns)
    if not path.is_file():
        raise InputError(path, "confounds file not found")
    lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if not lines:
        raise InputError(path, "empty confounds file")
    header = lines[0].split("\t")
    absent = [c for c in columns if c not in header]
    if absent:
        raise InputError(
            path,
            f"confounds file lacks column(s) {', '.join(absent)} (has {', '.join(header[:8])}"
            f"{' …' if len(header) > 8 else ''}); choose with --confound-columns",
        )
    idx = [header.index(c) for c in columns]
    rows = [ln.split("\t") for ln in lines[1:]]
    if len(rows) != n_volumes:
        raise InputError(
            path,
            f"{len(rows)} confound rows for {n_volumes} volumes; it must have one row per volume",
        )
    out = np.zeros((n_volumes, len(idx)))
    for r, row in enumerate(rows):
        for c, i in enumerate(idx):
            v = row[i].strip() if i < len(row) else ""
            if v in ("n/a", "") and r == 0:
                continue
            try:
                out[r, c] = float(v)
            except ValueError:
                raise InputError(
                    path, f"row {r + 1} column {columns[c]}: {v!r} is not a number"
                ) from None
    if not np.isfinite(out).all():
        raise InputError(path, "confounds hold NaN or Inf values")
    return out
