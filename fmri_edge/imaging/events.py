"""BIDS events: which file belongs to a run, reading it (pandas), and the labels a lab's study gives
its trials (``extract --class-column … --class-map … --level-column …``).

Finding. A run's events file is found by the BIDS inheritance rule: any ``*_events.tsv`` whose
entities are a subset of the run's (``sub``, ``ses``, ``task``, ``run``, …) applies to it, at the
study root, in ``sub-X/``, ``sub-X/ses-Y/`` or ``…/func/``; the one at the lowest level wins (at
one level, the one with more entities). Some datasets keep run-specific files at the root
(ds000205, ds003548): they apply too.

Labels. ``CLASS`` comes from a column through a map (``negative=-1,neutral=0,positive=1``; several
values may map to one class; a row whose value is not in the map is dropped and counted, never
guessed). ``LEVEL`` is the participant's own rating from another column, mapped linearly from
``LO:HI`` onto −4 … 4 and rounded; ``n/a`` (or ``--level-missing``) is missing. A trial without a
rating keeps its CLASS, its LEVEL in ``labels.npz`` is the class-only rule (−1 → −3, 0 → 0, 1 → 2)
and ``level_rated`` says so; without a rating column no LEVEL is rated and a model trained on the
labels answers CLASS only.

Needs pandas (it comes with nilearn, the ``nifti`` extra), imported when a table is read.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError, UsageError

LABEL_FILE = "labels.npz"
LABELS_JSON = "labels.json"
CLASS_NAMES = {"negative": -1, "neutral": 0, "positive": 1, "-1": -1, "0": 0, "1": 1, "+1": 1}
CLASS_RULE = {-1: -3, 0: 0, 1: 2}  # LEVEL of a trial without a rating (the class-only rule)
LEVEL_RANGE = (-4, 4)
MISSING = ("n/a",)
CLASS_ONLY = "class-only rule −1 → −3, 0 → 0, 1 → 2 (no rating)"
ENTITY = re.compile(r"(?:^|_)([a-zA-Z]+)-([a-zA-Z0-9]+)")


def entities(name: str) -> dict[str, str]:
    """BIDS entities of a file name: ``sub-01_task-x_run-2_bold.nii.gz`` → {sub: 01, task: x, run: 2}."""
    return {k: v for k, v in ENTITY.findall(name.split(".")[0])}


# ---- reading ----------------------------------------------------------------------------------------------


@dataclass
class Events:
    path: Path
    onset: np.ndarray  # (n,) float64 seconds
    trial_type: np.ndarray  # (n,) unicode
    row: np.ndarray  # (n,) 1-based row numbers in the file (after the header)
    columns: dict = field(default_factory=dict)  # every column of the kept rows, as text

    def take(self, keep: np.ndarray) -> "Events":
        return Events(
            self.path,
            self.onset[keep],
            self.trial_type[keep],
            self.row[keep],
            {k: v[keep] for k, v in self.columns.items()},
        )


def read_table(path: Path):
    """A BIDS tab-separated table as text (pandas; ``n/a`` stays the string ``n/a``)."""
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                sep="\t",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                encoding="utf-8-sig",
                skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError:
        raise InputError(
            path,
            "empty events file; expected a header with onset, duration, trial_type and "
            "one row per event",
        ) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        raise InputError(path, f"malformed events file: {_uneven_row(path)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(
            path,
            f"unreadable events file ({type(e).__name__}); expected a UTF-8 tab-separated table",
        ) from None


def _uneven_row(path: Path) -> str:
    lines = [
        ln
        for ln in path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        if ln.strip()
    ]
    width = len(lines[0].split("\t"))
    for n, line in enumerate(lines[1:], start=1):
        if len(line.split("\t")) != width:
            return f"row {n} has {len(line.split(chr(9)))} fields, the header {width}"
    return "rows of uneven width"


def read_events(path: str | Path, trial_types=None) -> Events:
    """A BIDS ``*_events.tsv``: tab-separated, a header with ``onset`` (seconds, numbers) and
    usually ``duration`` and ``trial_type``. ``trial_types`` keeps only those rows."""
    path = Path(path)
    if path.is_dir():
        raise InputError(
            path,
            "is a folder, not an events file; give the run's BIDS *_events.tsv (columns "
            "onset, duration, trial_type)",
        )
    if not path.is_file():
        raise InputError(
            path,
            "events file not found; give the run's BIDS *_events.tsv (columns onset, "
            "duration, trial_type)",
        )
    table = read_table(path)
    header = [str(c).strip() for c in table.columns]
    table.columns = header
    if "onset" not in header:
        sep = (
            " (it looks comma-separated; BIDS events are tab-separated)"
            if any("," in h for h in header)
            else ""
        )
        raise InputError(
            path,
            f"malformed events file: no 'onset' column in its header ({', '.join(header[:6])}){sep}",
        )
    if not len(table):
        raise InputError(path, "events file has a header but no event rows")
    onsets = np.empty(len(table))
    for n, value in enumerate(table["onset"], start=1):
        try:
            onsets[n - 1] = float(value)
        except ValueError:
            raise InputError(
                path, f"malformed events file: row {n} onset {value!r} is not a number (seconds)"
            ) from None
        if not math.isfinite(onsets[n - 1]):
            raise InputError(path, f"malformed events file: row {n} onset {value!r} is not finite")
    columns = {c: np.asarray([v.strip() for v in table[c]], dtype=str) for c in header}
    for n, value in enumerate(
        columns.get("duration", ()), start=1
    ):  # not used (the window is fixed), but a
        try:  # negative one is a damaged file
            bad = float(value) < 0
        except ValueError:
            bad = value.lower() not in ("n/a", "na", "")
        if bad:
            raise InputError(
                path,
                f"malformed events file: row {n} duration {str(value)!r} is not a duration in seconds "
                "(a number ≥ 0, or n/a)",
            )
    tt = columns.get("trial_type", np.full(len(table), "n/a"))
    ev = Events(path, onsets, tt, np.arange(1, len(table) + 1, dtype=np.int64), columns)
    if trial_types:
        wanted = list(trial_types)
        keep = np.isin(ev.trial_type, wanted)
        if not keep.any():
            raise InputError(
                path,
                f"no event of trial_type {', '.join(map(repr, wanted))} (found: "
                f"{', '.join(sorted(set(ev.trial_type.tolist())))[:200]})",
            )
        ev = ev.take(keep)
    return ev


# ---- finding: the BIDS inheritance rule ------------------------------------------------------------------


def find_events(bold: Path, root: Path, raw_roots: int = 2) -> tuple[Path | None, list[Path]]:
    """The events file of a run: the applicable ``*_events.tsv`` at the lowest level of the tree
    (the BOLD's own folder first, then ``…/func``, ``ses-Y``, ``sub-X`` and the study root of
    ``root`` and of each folder up to ``raw_roots`` levels above it: a derivatives folder such as
    study/derivatives/fmriprep lies inside the raw tree). Returns (file or None, folders searched)."""
    e = entities(bold.name)
    sub = f"sub-{e.get('sub', '')}"
    levels = [sub] + ([f"ses-{e['ses']}"] if "ses" in e else []) + ["func"]
    folders = [bold.parent]
    base = Path(root).resolve()
    for up in (base, *list(base.parents)[:raw_roots]):
        folders += [up.joinpath(*levels[:k]) for k in range(len(levels), -1, -1)]
    searched: list[Path] = []
    for folder in folders:
        if folder in searched:
            continue
        searched.append(folder)
        if not folder.is_dir():
            continue
        best = None
        for f in folder.glob("*_events.tsv"):
            fe = entities(f.name)
            if (
                fe
                and all(e.get(k) == v for k, v in fe.items())
                and (best is None or len(fe) > len(best[0]))
            ):
                best = (fe, f)
        if best is not None:
            return best[1], searched
    return None, searched


# ---- labelling ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpec:
    """How a study's events give its trials CLASS and LEVEL (the ``extract`` options)."""

    class_column: str
    class_map: dict  # event value → CLASS (−1, 0, 1)
    level_column: str | None = None
    level_scale: tuple[float, float] | None = None  # the rating scale LO:HI, mapped onto −4 … 4
    level_missing: tuple[str, ...] = MISSING
    min_gap: float | None = None  # drop events closer than this to another kept one

    def level_of(self, value: float) -> int:
        if self.level_scale is None:
            return int(value)
        lo, hi = self.level_scale
        return int(
            np.floor(
                LEVEL_RANGE[0] + (LEVEL_RANGE[1] - LEVEL_RANGE[0]) * (value - lo) / (hi - lo) + 0.5
            )
        )

    def describe(self) -> dict:
        level = (
            {
                "column": None,
                "LEVEL": "no rating column: LEVEL in labels.npz is the "
                + CLASS_ONLY
                + "; a model trained on these labels answers CLASS only",
            }
            if self.level_column is None
            else {
                "column": self.level_column,
                "scale": list(self.level_scale) if self.level_scale else list(LEVEL_RANGE),
                "maps_to": list(LEVEL_RANGE),
                "rounding": "nearest whole number (halves up)",
                "missing": list(self.level_missing),
                "LEVEL": "the participant's rating; a trial without one keeps its CLASS and gets the "
                + CLASS_ONLY,
            }
        )
        return {
            "class_column": self.class_column,
            "class_map": self.class_map,
            "level": level,
            "min_gap_s": self.min_gap,
        }


def parse_class_map(text: str) -> dict[str, int]:
    """``negative=-1,neutral=0,positive=1`` (CLASS as −1/0/1 or negative/neutral/positive)."""
    out: dict[str, int] = {}
    for item in (t for t in text.split(",") if t.strip()):
        value, sep, cls = item.rpartition("=")
        value, cls = value.strip(), cls.strip().lower()
        if not sep or not value or cls not in CLASS_NAMES:
            raise UsageError(
                f"--class-map {text!r}: give VALUE=CLASS pairs, CLASS one of -1, 0, 1 or negative, "
                f"neutral, positive (e.g. negative=-1,neutral=0,positive=1); {item.strip()!r} is not one"
            )
        if value in out and out[value] != CLASS_NAMES[cls]:
            raise UsageError(f"--class-map: {value!r} is mapped to two classes")
        out[value] = CLASS_NAMES[cls]
    if not out:
        raise UsageError(
            "--class-map is empty; give VALUE=CLASS pairs, e.g. negative=-1,neutral=0,positive=1"
        )
    return out


def parse_level_scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(
            f"--level-scale {text!r}: give the rating scale as LO:HI, e.g. 1:9"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UsageError(f"--level-scale {text!r}: LO must be below HI, e.g. 1:9")
    return lo, hi


@dataclass
class Labeled:
    """One events file's labeled rows: the events kept (mapped to a class, not too close to
    another), their CLASS and LEVEL, and what was dropped or flagged."""

    events: Events
    valence_class: np.ndarray  # (n,) int
    valence_level: np.ndarray  # (n,) int: the rating, or the class-only rule where unrated
    level_rated: np.ndarray  # (n,) bool
    dropped: Counter = field(default_factory=Counter)  # reason → rows
    overlapping: np.ndarray | None = None  # (n,) bool: another kept event inside the window
    values: frozenset = frozenset()  # every value of the class column in the file

    def take(self, keep: np.ndarray) -> "Labeled":
        return Labeled(
            self.events.take(keep),
            self.valence_class[keep],
            self.valence_level[keep],
            self.level_rated[keep],
            self.dropped,
            None if self.overlapping is None else self.overlapping[keep],
            self.values,
        )


def check_columns(ev: Events, spec: LabelSpec) -> None:
    for col in filter(None, (spec.class_column, spec.level_column)):
        if col not in ev.columns:
            raise InputError(
                ev.path, f"no column {col!r} (the columns there are: {', '.join(ev.columns)})"
            )


def label_events(ev: Events, spec: LabelSpec, window_offsets: tuple[float, float]) -> Labeled:
    """Map the class column, read the ratings, flag overlapping windows and apply ``min_gap``.
    ``window_offsets``: the window's first and last second relative to the onset."""
    check_columns(ev, spec)
    values = ev.columns[spec.class_column]
    mapped = np.isin(values, list(spec.class_map))
    dropped = Counter(
        {
            f"{spec.class_column} {str(v)!r} not in the class map": int(n)
            for v, n in zip(*np.unique(values[~mapped], return_counts=True))
        }
    )
    ev = ev.take(mapped)
    cls = np.asarray([spec.class_map[v] for v in ev.columns[spec.class_column]], dtype=np.int64)
    level = np.asarray([CLASS_RULE[int(c)] for c in cls], dtype=np.int64)
    rated = np.zeros(len(cls), dtype=bool)
    if spec.level_column is not None:
        for i, raw in enumerate(ev.columns[spec.level_column]):
            if raw in spec.level_missing or raw == "":
                continue
            try:
                value = float(raw)
            except ValueError:
                comma = (
                    " (a decimal comma? write 5.5, with a point)"
                    if "," in str(raw) and _is_number(str(raw).replace(",", "."))
                    else ""
                )
                raise InputError(
                    ev.path,
                    f"row {ev.row[i]}: {spec.level_column} {str(raw)!r} is not a number"
                    f"{comma}; missing ratings: {', '.join(spec.level_missing)} (add a code "
                    "with --level-missing)",
                ) from None
            lo, hi = spec.level_scale or LEVEL_RANGE
            if not (math.isfinite(value) and lo <= value <= hi):
                hint = (
                    "give the rating scale with --level-scale LO:HI"
                    if spec.level_scale is None
                    else "check --level-scale (or mark no-response codes with --level-missing)"
                )
                raise InputError(
                    ev.path,
                    f"row {ev.row[i]}: rating {spec.level_column} {raw} outside the scale "
                    f"{lo:g} … {hi:g}; {hint}",
                )
            if spec.level_scale is None and value != round(value):
                raise InputError(
                    ev.path,
                    f"row {ev.row[i]}: rating {raw} is not a whole number on −4 … 4; give "
                    "the rating scale with --level-scale LO:HI",
                )
            level[i], rated[i] = spec.level_of(value), True
    lab = Labeled(ev, cls, level, rated, dropped, values=frozenset(values.tolist()))
    if spec.min_gap is not None and len(ev.onset) > 1:
        gaps = np.diff(np.sort(ev.onset))
        order = np.argsort(ev.onset, kind="stable")
        close = np.zeros(len(ev.onset), dtype=bool)
        close[order[1:]] |= gaps < spec.min_gap
        close[order[:-1]] |= gaps < spec.min_gap
        if close.any():
            lab = lab.take(~close)
            lab.dropped[f"onset within --min-gap {spec.min_gap:g} s of another kept event"] += int(
                close.sum()
            )
    t0, t1 = window_offsets
    on = lab.events.onset
    inside = (on[None, :] > on[:, None] + t0) & (on[None, :] <= on[:, None] + t1)
    np.fill_diagonal(inside, False)
    lab.overlapping = inside.any(axis=1)
    return lab


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def check_study(labeled: dict[Path, Labeled | InputError], spec: LabelSpec) -> list[str]:
    """Study-wide checks before any image is read: every class-map value occurs somewhere in the
    class column (else the map has a typo). Returns warnings (a participant-level problem is found
    later, when its trials are known)."""
    ok = [lab for lab in labeled.values() if isinstance(lab, Labeled)]
    if not ok:
        first = next(iter(labeled.values()), None)
        if isinstance(first, InputError):
            raise first
        raise UsageError("no events file to label")
    seen = set().union(*(lab.values for lab in ok))
    absent = [v for v in spec.class_map if v not in seen]
    if absent:
        raise UsageError(
            f"--class-map value(s) {', '.join(map(repr, absent))} never occur in column "
            f"{spec.class_column!r} of the {len(ok)} events file(s) (values there: "
            f"{', '.join(sorted(map(repr, seen)))[:300]})"
        )
    return []


# ---- writing ------------------------------------------------------------------------------------------------


def save_labels(
    path: Path, valence_class: np.ndarray, valence_level: np.ndarray, level_rated: np.ndarray
) -> Path:
    """``labels.npz`` in the ICBHI layout that ``train`` and ``score`` read: ``data`` (N, 2) float64
    [CLASS, LEVEL], plus ``level_rated`` (N,) int8 (0: LEVEL is the class-only rule). Atomic."""
    from fmri_edge.files import replace_atomically

    with replace_atomically(path, binary=True) as f:
        np.savez(
            f,
            data=np.stack([valence_class, valence_level], axis=1).astype(np.float64),
            level_rated=np.asarray(level_rated, dtype=np.int8),
        )
    return path


def level_rated(label_path: Path, n: int) -> np.ndarray:
    """Which LEVELs of a labels.npz are real ratings (a file without ``level_rated``: all of them)."""
    from fmri_edge.data.io import read_array

    try:
        rated = np.asarray(read_array(label_path, "level_rated"), dtype=bool)
    except InputError:
        return np.ones(n, dtype=bool)
    return rated if rated.shape == (n,) else np.ones(n, dtype=bool)


def write_summary(path: Path, summary: dict) -> Path:
    from fmri_edge.data.submission import atomic_write

    with atomic_write(path, force=True) as f:
        f.write(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return path
