"""Predict valence for trials in files and folders, chunk by chunk (numpy + onnxruntime only).

``predict(decoder, paths)`` yields a :class:`Batch` of answers per chunk of good trials and an
:class:`~fmri_edge.io.InputError` per problem (a bad file, or a bad trial inside a good file);
one problem never stops the others. Large ``.npy`` files are memory-mapped and streamed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmri_edge import io, scoring
from fmri_edge.runtime import Decoder

DEFAULT_BATCH = 256


@dataclass
class Batch:
    participant: str
    path: Path
    trial: np.ndarray            # (n,) 1-based trial numbers within the file
    class_probs: np.ndarray      # (n, 3) over CLASS −1, 0, 1
    level_probs: np.ndarray      # (n, 9) over LEVEL −4 … 4
    region_weights: np.ndarray   # (n, n_regions) input SE attention
    valence_class: np.ndarray    # (n,) in {−1, 0, 1}
    valence_level: np.ndarray    # (n,) in {−4 … 4}

    def __len__(self) -> int:
        return len(self.trial)


def run_batched(decoder: Decoder, trials: np.ndarray, batch_size: int = DEFAULT_BATCH) -> dict[str, np.ndarray]:
    """Model outputs for validated float32 trials, ``batch_size`` trials per onnxruntime call."""
    parts = [decoder.run(trials[i:i + batch_size]) for i in range(0, len(trials), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def predict_source(decoder: Decoder, source: io.Source, batch_size: int = DEFAULT_BATCH,
                   ) -> Iterator[Batch | io.InputError]:
    """Answers for one file; trials with NaN/Inf are reported and skipped, the rest predicted."""
    info = decoder.info
    try:
        arr = io.check_trials(io.read_array(source.path), source.path, info.n_regions, info.n_times)
    except io.InputError as e:
        yield e
        return
    for start in range(0, len(arr), batch_size):
        chunk = io.to_float32(arr[start:start + batch_size])
        bad = io.nonfinite_trials(chunk)
        for b in bad:
            yield io.InputError(source.path, f"trial {start + b + 1}: NaN or Inf values; trial skipped")
        keep = np.setdiff1d(np.arange(len(chunk)), bad)
        if keep.size == 0:
            continue
        out = decoder.run(np.ascontiguousarray(chunk[keep]) if bad.size else chunk)
        yield Batch(source.participant, source.path, start + keep + 1,
                    out["class_probs"], out["level_probs"], out["region_weights"],
                    scoring.decide_class(out["class_probs"]),
                    scoring.decide_level(out["level_probs"], info.level_rule))


def predict(decoder: Decoder, paths: list, batch_size: int = DEFAULT_BATCH) -> Iterator[Batch | io.InputError]:
    """Answers for every file and folder in ``paths`` (see :func:`fmri_edge.io.discover`)."""
    for p in paths:
        try:
            sources = io.discover([Path(p)])
        except io.InputError as e:
            yield e
            continue
        for src in sources:
            yield from predict_source(decoder, src, batch_size)


@dataclass
class Summary:
    n_trials: int
    kept: list                   # the first batches, up to ``keep`` trials, for display
    problems: list               # every InputError met on the way


def predict_to(decoder: Decoder, paths: list, csv_file=None, batch_size: int = DEFAULT_BATCH,
               keep: int | None = 60) -> Summary:
    """Run :func:`predict`, streaming every answer to an open CSV file (if given) and keeping the
    first ``keep`` trials' batches (all with ``keep=None``) for display; memory stays bounded."""
    from fmri_edge import submission

    if csv_file is not None:
        submission.write_header(csv_file)
    summary = Summary(0, [], [])
    for item in predict(decoder, paths, batch_size):
        if isinstance(item, io.InputError):
            summary.problems.append(item)
            continue
        if csv_file is not None:
            submission.write_rows(csv_file, item.participant, item.trial, item.valence_class,
                                  item.valence_level, item.class_probs)
        if keep is None or summary.n_trials < keep:
            summary.kept.append(item)
        summary.n_trials += len(item)
    return summary
