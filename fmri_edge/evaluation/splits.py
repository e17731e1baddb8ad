"""Evaluation splits: the paper's random 8:1:1 trial split and subject-independent folds.

The cross-validation groups are a property of the data, not of the tool (:func:`study_groups`):
one group per participant (leave-one-participant-out) up to :data:`LOPO_MAX` participants, grouped
k-fold above, or a column of the study's ``participants.tsv`` (``participants:COL``). Participants
of a group always stay on the same side of a split. The ICBHI order-mates (subjects who watched
the videos in the same order) are such a column, ``order_group`` of ``Train/participants.tsv``,
which the ICBHI recipes name; :data:`ORDER_MATES` is the same pairing for code given no groups
(the research drivers).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError, UsageError

PROTOCOL_LABEL = {"random": "random 8:1:1 trials (optimistic)", "subject": "cross-subject (honest)"}

ORDER_MATES = {
    "P01": "P10",
    "P02": "P11",
    "P03": "P12",
    "P04": "P13",
    "P05": "P14",
    "P06": "P15",
    "P07": "P16",
}


LOPO_MAX = 20  # up to this many participants: leave-one-participant-out
K_FOLDS = 10  # above: grouped k-fold
MIN_GROUPS = 3
PARTICIPANTS_TSV = "participants.tsv"


def _natural(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def study_groups(
    participants: list[str], by: str, data_dir: str | Path
) -> tuple[dict[str, str], str]:
    """The CV group of every participant, and a sentence saying where the groups come from.

    ``by``: ``auto`` (one group per participant up to :data:`LOPO_MAX`, else :data:`K_FOLDS`
    groups dealt in sorted order) or ``participants:COL`` (the column COL of ``participants.tsv``
    in ``data_dir``; ``participant_id`` matches the folder name, with or without ``sub-``)."""
    participants = sorted(participants)
    if by == "auto":
        if len(participants) <= LOPO_MAX:
            groups, how = {p: p for p in participants}, "leave-one-participant-out"
        else:
            groups = {p: f"fold{i % K_FOLDS + 1}" for i, p in enumerate(participants)}
            how = (
                f"grouped {K_FOLDS}-fold (more than {LOPO_MAX} participants; dealt in sorted order)"
            )
    elif by.startswith("participants:") and by.split(":", 1)[1]:
        column = by.split(":", 1)[1]
        groups = _groups_from_tsv(Path(data_dir) / PARTICIPANTS_TSV, column, participants)
        how = f"column {column!r} of {Path(data_dir) / PARTICIPANTS_TSV} (one fold per value)"
    else:
        raise UsageError(
            f"--group-by {by!r}: give auto or participants:COLUMN (a column of the study's "
            f"{PARTICIPANTS_TSV})"
        )
    n = len(set(groups.values()))
    if n < MIN_GROUPS:
        raise UsageError(
            f"{data_dir}: {len(participants)} participant(s) in {n} CV group(s) ({how}); an honest "
            f"cross-validation needs at least {MIN_GROUPS} groups"
        )
    return groups, how


def _groups_from_tsv(path: Path, column: str, participants: list[str]) -> dict[str, str]:
    if not path.is_file():
        raise InputError(
            path,
            f"not found: --group-by participants:{column} reads the study's {PARTICIPANTS_TSV} "
            "beside the participant folders (extract copies it there)",
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
    except UnicodeDecodeError as e:
        raise InputError(
            path,
            f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}; a spreadsheet's "
            "Latin-1 export?); save it as UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from None
    header = list(rows[0]) if rows else []
    if "participant_id" not in header or column not in header:
        missing = "participant_id" if "participant_id" not in header else column
        raise InputError(
            path, f"no column {missing!r} (the columns there are: {', '.join(header) or 'none'})"
        )
    by_id = {r["participant_id"].strip(): (r[column] or "").strip() for r in rows}
    out = {}
    for p in participants:
        value = by_id.get(p, by_id.get(p.removeprefix("sub-"), by_id.get(f"sub-{p}")))
        if value is None:
            raise InputError(path, f"participant {p} has no row (participant_id) here")
        if value in ("", "n/a"):
            raise InputError(path, f"participant {p} has no value in column {column!r}")
        out[p] = value
    return out


def subject_group(participant: str, groups: dict[str, str] | None = None) -> str:
    """The group a participant belongs to: ``groups[participant]`` where groups are given, else
    its ICBHI order-mate pair, or itself."""
    if groups is not None:
        return groups[participant]
    for a, b in ORDER_MATES.items():
        if participant in (a, b):
            return f"{a}+{b}"
    return participant


def groups_of(
    participants: list[str], groups: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """{group: its participants}, groups in the order of their first participant (given groups: in
    the natural order of their values)."""
    out: dict[str, list[str]] = {}
    for p in sorted(participants):
        out.setdefault(subject_group(p, groups), []).append(p)
    if groups is not None:
        out = dict(sorted(out.items(), key=lambda kv: _natural(kv[0])))
    return out


def subject_folds(
    participants: list[str], groups: dict[str, str] | None = None
) -> list[tuple[list[str], list[str]]]:
    """Leave-one-group-out folds: [(train participants, test participants)], one per group."""
    groups = groups_of(participants, groups)
    folds = []
    for g, test in groups.items():
        train = [p for h, ps in groups.items() if h != g for p in ps]
        folds.append((train, test))
    return folds


def inner_validation(
    train_participants: list[str], n_groups: int, seed: int, groups: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Hold ``n_groups`` whole groups out of the training participants for validation
    (epoch and checkpoint choice), chosen by ``seed``; returns (fit, validation)."""
    names = sorted({subject_group(p, groups) for p in train_participants})
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(names, size=min(n_groups, len(names) - 1), replace=False).tolist())
    fit = [p for p in train_participants if subject_group(p, groups) not in val_groups]
    val = [p for p in train_participants if subject_group(p, groups) in val_groups]
    return fit, val


def random_split(
    strata: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)
) -> tuple[np.ndarray, ...]:
    """Stratified random split of trial indices into train / validation / test (paper protocol)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for value in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == value))
        cuts = np.round(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)
