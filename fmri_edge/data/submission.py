"""The challenge's CSV format: ``Participant,Trial,CLASS,LEVEL`` (class probabilities on request).

Writing is atomic (a temporary file in the same folder, renamed when complete), so an
interrupted run leaves either the old file or a complete new one. Reading checks every row.
"""

from __future__ import annotations

import csv
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmri_edge.files import check_new, replace_atomically
from fmri_edge.data.io import LABEL_FILE, declared_shape, discover, load_labels
from fmri_edge.errors import InputError

HEADER = ["Participant", "Trial", "CLASS", "LEVEL"]
PROB_COLUMNS = ["p_negative", "p_neutral", "p_positive"]
CHALLENGE_PARTICIPANT = re.compile(r"P\d+")


@contextmanager
def atomic_write(path: str | Path, force: bool = False):
    """Open ``path`` for writing text (refused if it exists, unless ``force``); it appears only
    when the block completes (:func:`fmri_edge.files.replace_atomically`)."""
    with replace_atomically(check_new(path, force)) as f:
        yield f


@dataclass
class Answers:
    """Per-trial CLASS and LEVEL keyed by (participant, trial)."""

    participant: np.ndarray
    trial: np.ndarray
    valence_class: np.ndarray
    valence_level: np.ndarray | None  # None: read without LEVEL (labels for `adapt`)
    line: np.ndarray | None = None  # the CSV line of every row, for messages

    def keys(self) -> list[tuple[str, int]]:
        return list(zip(self.participant.tolist(), self.trial.tolist()))


def read_answers(path: str | Path, level: bool = True) -> Answers:
    """Read a submission-format CSV by column name: ``Participant``, ``Trial``, ``CLASS`` and
    ``LEVEL`` in any order (names matched without regard to case or surrounding spaces), other
    columns ignored, UTF-8 with or without BOM, LF or CRLF line ends. Every row and value is
    checked; problems name the file and line. ``level=False``: LEVEL is not read (CLASS labels)."""
    path = Path(path)
    wanted = HEADER if level else HEADER[:3]
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(
            path,
            f"not a readable CSV ({str(e)[:100]}); expected a text file with header "
            f"{','.join(HEADER)}",
        ) from None
    if not rows:
        raise InputError(
            path, f"empty file; expected a header {','.join(wanted)} and one row per trial"
        )
    columns = _columns(path, rows[0], wanted)
    parts, trials, classes, levels, lines = [], [], [], [], []
    seen: dict[tuple[str, int], int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(rows[0]):
            raise InputError(
                path,
                f"line {n}: {len(row)} field(s), the header has {len(rows[0])}; expected "
                f"{','.join(HEADER)}, got {','.join(row[:6])!r}",
            )
        p, t, c, lv = _parse_row(path, n, [row[i] for i in columns], wanted)
        if (p, t) in seen:
            raise InputError(
                path,
                f"line {n}: duplicate row for participant {p}, trial {t} (first on line "
                f"{seen[p, t]}); keep one row per trial",
            )
        seen[p, t] = n
        parts.append(p), trials.append(t), classes.append(c), levels.append(lv), lines.append(n)
    if not parts:
        raise InputError(path, "no rows after the header; expected one row per trial")
    return Answers(
        np.array(parts),
        np.array(trials),
        np.array(classes),
        np.array(levels) if level else None,
        np.array(lines),
    )


def _columns(path: Path, header: list[str], wanted=HEADER) -> list[int]:
    """Indices of the ``wanted`` columns (Participant, Trial, CLASS[, LEVEL]) in a header row (any
    order, any extra columns)."""
    names = [h.strip().lower() for h in header]
    found = []
    for want in wanted:
        at = [i for i, h in enumerate(names) if h == want.lower()]
        if len(at) != 1:
            problem = f"column {want} appears {len(at)} times" if at else f"no {want} column"
            raise InputError(
                path,
                f"line 1: {problem} (header: {','.join(header)[:120]!r}); expected the columns "
                f"{','.join(wanted)}, in any order",
            )
        found.append(at[0])
    return found


def _parse_row(
    path: Path, n: int, row: list[str], wanted=HEADER
) -> tuple[str, int, int, int | None]:
    """One row's Participant, Trial, CLASS[, LEVEL] fields → values, every one checked (LEVEL None
    when not ``wanted``)."""
    for name, text in zip(wanted, row):
        if not text.strip():
            raise InputError(path, f"line {n}: {name} is blank; every row needs {','.join(wanted)}")
    values = [_whole_number(x) for x in row[1:]]
    for name, value, text in zip(wanted[1:], values, row[1:]):
        if value is None:
            raise InputError(path, f"line {n}: {name} {text.strip()!r} is not a whole number")
    t, c, *lv = values
    if t < 1:
        raise InputError(path, f"line {n}: Trial {t}; trials are counted from 1")
    if c not in (-1, 0, 1):
        raise InputError(path, f"line {n}: CLASS {c} outside {{-1, 0, 1}}")
    if lv and not -4 <= lv[0] <= 4:
        raise InputError(path, f"line {n}: LEVEL {lv[0]} outside {{-4 … 4}}")
    return row[0].strip(), t, c, lv[0] if lv else None


def _whole_number(text: str) -> int | None:
    """``"3"``, ``" -1 "`` or ``"2.0"`` → int; anything else (``"0.5"``, ``"nan"``, ``"x"``) → None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if math.isfinite(v) and v == int(v) else None


def read_labels(path: str | Path) -> Answers:
    """Labels from a submission-format CSV or an ICBHI folder (subject folders with labels.npz)."""
    path = Path(path)
    if path.is_dir():
        parts, trials, classes, levels = [], [], [], []
        for src in discover([path]):
            label_path = src.path.parent / LABEL_FILE
            if not label_path.is_file():
                raise InputError(
                    label_path, "missing: every subject folder needs labels.npz to be scored"
                )
            shape = declared_shape(
                src.path
            )  # one label row per trial of the subject's fMRI_data.npz
            lab = load_labels(
                label_path, shape[0] if shape is not None and len(shape) == 3 else None
            )
            parts += [src.participant] * len(lab)
            trials += list(range(1, len(lab) + 1))
            classes += lab[:, 0].tolist()
            levels += lab[:, 1].tolist()
        return Answers(np.array(parts), np.array(trials), np.array(classes), np.array(levels))
    return read_answers(path)


def align(pred: Answers, truth: Answers, pred_path, truth_path) -> tuple[np.ndarray, np.ndarray]:
    """Indices into pred and truth of the same (participant, trial); every mismatch is an error."""
    pk, tk = pred.keys(), truth.keys()
    tindex = {k: i for i, k in enumerate(tk)}
    pset, tset = set(pk), set(tk)
    if {p for p, _ in pk} != {p for p, _ in tk}:
        only_p = sorted({p for p, _ in pk} - {p for p, _ in tk})
        only_t = sorted({p for p, _ in tk} - {p for p, _ in pk})
        raise InputError(
            pred_path,
            f"participants differ from {truth_path}: "
            f"only in predictions {only_p or '-'}, only in labels {only_t or '-'}; "
            "score predictions against the labels of the same participants",
        )
    missing = [k for k in tk if k not in pset]
    if missing:
        raise InputError(
            pred_path,
            f"{len(missing)} labeled trial(s) have no prediction, first {missing[0][0]} "
            f"trial {missing[0][1]}; predict every labeled trial (a partial score "
            "would not be the challenge score)",
        )
    extra = [k for k in pk if k not in tset]
    if extra:
        raise InputError(
            pred_path,
            f"{len(extra)} predicted trial(s) have no label, first {extra[0][0]} "
            f"trial {extra[0][1]}; check that both files describe the same trials",
        )
    return np.arange(len(pk)), np.array([tindex[k] for k in pk])


def write_rows(
    f, participant: str, trial, valence_class, valence_level, class_probs=None, probs: bool = False
) -> None:
    """Append submission rows (one per trial) to an open CSV file; with ``probs``, the class
    probabilities after them (as :func:`write_header` announced)."""
    w = csv.writer(f, lineterminator="\n")
    rows = zip(
        np.asarray(trial).tolist(),
        np.asarray(valence_class).tolist(),
        np.asarray(valence_level).tolist(),
    )
    if not probs:
        w.writerows([participant, *r] for r in rows)
        return
    for r, p in zip(rows, np.asarray(class_probs).tolist()):
        w.writerow([participant, *r, *(f"{x:.4f}" for x in p)])


def write_header(f, probs: bool = False) -> None:
    """The challenge's header ``Participant,Trial,CLASS,LEVEL`` (+ probability columns with ``probs``)."""
    csv.writer(f, lineterminator="\n").writerow(HEADER + (PROB_COLUMNS if probs else []))


def unlike_challenge(participants) -> list[str]:
    """Participant names that do not look like the challenge's (``P17``), sorted."""
    return sorted({p for p in participants if not CHALLENGE_PARTICIPANT.fullmatch(p)})
