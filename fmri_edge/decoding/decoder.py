"""The Python front door: :class:`Decoder` answers trials as ``fmri-edge predict`` does.

``Decoder()`` opens the shipped model, ``Decoder("my.onnx")`` another export. :meth:`Decoder.predict`
takes an array of trials (and, optionally, whose trial each is) or the files and folders the command
takes, aligns each participant over its own trials where the model aligns (the command's rule: at
least :data:`~fmri_edge.decoding.answers.MIN_ALIGN_TRIALS` trials, else the training population's
statistics), and returns :class:`Predictions`: CLASS, LEVEL, the class probabilities and each
region's share in the answer, the same numbers the command prints and writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.data import io
from fmri_edge.decoding.answers import (
    DEFAULT_BATCH,
    Batch,
    Policy,
    answer,
    participant_batches,
    predict,
)
from fmri_edge.errors import InputError
from fmri_edge.model.normalize import SubjectStats
from fmri_edge.model.runtime import Model, ModelInfo

ARRAY = Path("<array>")  # the source named in problems with trials given as an array


@dataclass
class Predictions:
    """One answer per trial, in input order (files: in the command's order).

    Attributes
    ----------
    participant, trial : (N,) arrays
        Whose trial it is, and its 1-based number within that participant.
    valence_class : (N,) int array
        CLASS −1, 0 or 1.
    valence_level : (N,) int array
        LEVEL −4 … 4.
    class_probs : (N, 3) float32 array
        p(CLASS = −1, 0, 1).
    region_scores : (N, n_regions) float32 array
        Each region's share in the answer: exact contributions to the answered class's logit
        (``explanation == "contribution"``) or the input SE attention (``"attention"``).
    region_names : tuple of str
        The model's regions, in the order of ``region_scores``' columns.
    problems : list of InputError
        Every trial or file skipped, repaired or refused, as the command reports them.
    """

    participant: np.ndarray
    trial: np.ndarray
    valence_class: np.ndarray
    valence_level: np.ndarray
    class_probs: np.ndarray
    level_probs: np.ndarray
    region_scores: np.ndarray
    explanation: str | None
    region_names: tuple
    problems: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.trial)

    def __repr__(self) -> str:
        counts = {int(c): int((self.valence_class == c).sum()) for c in (-1, 0, 1)}
        return (
            f"Predictions({len(self)} trials of {len(dict.fromkeys(self.participant.tolist()))} participant(s); "
            f"CLASS -1/0/+1: {counts[-1]}/{counts[0]}/{counts[1]}; {len(self.problems)} problem(s))"
        )

    def top_regions(self, k: int = 5) -> list[list[str]]:
        """The ``k`` regions with the largest score, per trial (names, largest first)."""
        order = np.argsort(-self.region_scores, axis=1, kind="stable")[:, :k]
        return [[self.region_names[i] for i in row] for row in order]

    def to_frame(self):
        """The answers as a pandas DataFrame: the submission's columns and the class probabilities
        (``Participant, Trial, CLASS, LEVEL, p(-1), p(0), p(+1)``). Needs pandas."""
        import pandas as pd

        return pd.DataFrame(
            {
                "Participant": self.participant,
                "Trial": self.trial,
                "CLASS": self.valence_class,
                "LEVEL": self.valence_level,
                "p(-1)": self.class_probs[:, 0],
                "p(0)": self.class_probs[:, 1],
                "p(+1)": self.class_probs[:, 2],
            }
        )

    @classmethod
    def from_batches(cls, batches: list[Batch], problems: list, model: Model) -> "Predictions":
        r = model.info.n_regions
        kind = model.explanation
        if not batches:
            empty = np.empty(0)
            return cls(
                empty.astype(str),
                empty.astype(int),
                empty.astype(int),
                empty.astype(int),
                np.empty((0, 3), np.float32),
                np.empty((0, 9), np.float32),
                np.empty((0, r), np.float32),
                kind,
                model.info.region_names,
                problems,
            )
        cat = np.concatenate
        return cls(
            cat([np.full(len(b), b.participant) for b in batches]),
            cat([b.trial for b in batches]),
            cat([b.valence_class for b in batches]),
            cat([b.valence_level for b in batches]),
            cat([b.class_probs for b in batches]),
            cat([b.level_probs for b in batches]),
            cat([b.region_scores(kind or "attention") for b in batches]),
            kind,
            model.info.region_names,
            problems,
        )


class Decoder:
    """A valence decoder: an exported fmri-edge ONNX model, answering as ``fmri-edge predict``.

    Parameters
    ----------
    model : str or Path, optional
        The ``.onnx`` file; default: the shipped model (``models/fmri-edge.onnx``).
    threads : int
        onnxruntime threads (0: one per physical core).
    verify : bool
        Check the weights digest written at export (a model edited on purpose needs ``False``).

    Examples
    --------
    >>> import numpy as np
    >>> from fmri_edge import Decoder
    >>> from fmri_edge.simulation.simulate import simulate
    >>> trials, labels, subject = simulate(12, seed=0)
    >>> answers = Decoder().predict(trials)          # one participant, aligned over its 12 trials
    >>> len(answers), answers.class_probs.shape, answers.explanation
    (12, (12, 3), 'contribution')
    >>> answers.to_frame().columns.tolist()
    ['Participant', 'Trial', 'CLASS', 'LEVEL', 'p(-1)', 'p(0)', 'p(+1)']
    """

    def __init__(self, model: str | Path | None = None, threads: int = 0, verify: bool = True):
        self.model = Model(model, threads=threads, verify=verify)

    @property
    def info(self) -> ModelInfo:
        """What the model file says about itself: ``n_regions``, ``n_times``, ``region_names``, metadata."""
        return self.model.info

    @property
    def path(self) -> Path:
        return self.model.path

    def __repr__(self) -> str:
        i = self.info
        return (
            f"Decoder({str(self.path)!r}: {i.n_regions} regions × {i.n_times} s, "
            f"{'aligned per participant' if self.model.aligned else 'no alignment'}, "
            f"explanation {self.model.explanation})"
        )

    def predict(
        self, trials, participants=None, align: bool = True, batch_size: int = DEFAULT_BATCH
    ) -> Predictions:
        """Answer trials.

        Parameters
        ----------
        trials : array (N, n_regions, n_times) or (n_regions, n_times), or paths
            Raw BOLD trials, or the files and folders ``fmri-edge predict`` takes (``.npy``, ``.npz``,
            ICBHI subject folders, study trees).
        participants : sequence of str, optional
            Whose trial each row is (arrays only); default: all one participant. Each participant is
            aligned over its own trials, as the command aligns a subject folder or file.
        align : bool
            ``False`` answers with the training population's statistics (``--no-align``).

        Returns
        -------
        Predictions
            Raises :class:`~fmri_edge.errors.InputError` for an array of the wrong shape or values;
            for files, a bad file or trial is listed in ``problems`` and the others are answered.
        """
        paths = as_paths(trials)
        if paths is not None:
            if participants is not None:
                raise ValueError(
                    "participants= is for arrays; files are named by their folder or file"
                )
            return self.predict_files(
                paths,
                align=align,
                batch_size=batch_size,
            )
        x = self.model.as_input(trials if np.ndim(trials) == 3 else np.asarray(trials)[None])
        who = (
            np.full(len(x), "participant", dtype=object)
            if participants is None
            else np.asarray(participants, dtype=object)
        )
        if who.shape != (len(x),):
            raise ValueError(
                f"participants: {who.shape[0] if who.ndim else 'one'} name(s) for {len(x)} trials"
            )
        bad = io.nonfinite_trials(x)
        if len(bad):
            raise InputError(
                ARRAY,
                f"trial {int(bad[0]) + 1} holds NaN or Inf values ({len(bad)} trial(s)); "
                "fill or drop them first (the command's --nan interpolate does)",
            )
        x = self._subject_normalized(x, who)
        batches, problems, rows_of, numbers = [], [], [], {}
        for rows, subject in participant_batches(self.model, x, who, batch_size):
            name = str(who[rows[0]])
            start = numbers.get(name, 0)
            numbers[name] = start + len(rows)
            for item in answer(
                self.model,
                io.Source(name, ARRAY),
                np.arange(start + 1, start + len(rows) + 1),
                x[rows],
                subject if align else None,
            ):
                if isinstance(item, InputError):
                    problems.append(item)
                else:
                    batches.append(item)
                    rows_of.append(rows[item.trial - start - 1])
        out = Predictions.from_batches(batches, problems, self.model)
        return _reorder(
            out, np.argsort(np.concatenate(rows_of), kind="stable") if rows_of else None
        )

    def predict_files(
        self,
        paths: list,
        participant: str | None = None,
        align: bool = True,
        policy: Policy | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> Predictions:
        """:meth:`predict` on files and folders, exactly as the command reads them (``participant``:
        several files of one person, ``--participant``; ``policy``: ``--nan``, ``--crop``, ``--pad``)."""
        batches, problems = [], []
        for item in predict(
            self.model, [Path(p) for p in paths], batch_size, policy, participant, align
        ):
            (problems if isinstance(item, InputError) else batches).append(item)
        return Predictions.from_batches(batches, problems, self.model)

    def _subject_normalized(self, x: np.ndarray, who: np.ndarray) -> np.ndarray:
        """Models trained on subject-wise normalized trials get each participant's trials normalized
        together, as ``predict`` normalizes a file."""
        mode = self.info.subject_normalization or "none"
        if mode == "none":
            return x
        x = x.copy()
        for p in dict.fromkeys(who.tolist()):
            rows = np.flatnonzero(who == p)
            stats = SubjectStats(mode)
            stats.add(x[rows])
            x[rows] = stats.apply(x[rows])
        return x


def as_paths(trials) -> list[Path] | None:
    """The files and folders ``trials`` names (one path, or a list of them), or None for an array."""
    if isinstance(trials, (str, Path)):
        return [Path(trials)]
    if isinstance(trials, (list, tuple)) and trials and isinstance(trials[0], (str, Path)):
        return [Path(x) for x in trials]
    return None


def _reorder(p: Predictions, order) -> Predictions:
    """Rows back in the order of the input trials (participants are answered one after another)."""
    if order is None or np.array_equal(order, np.arange(len(order))):
        return p
    return Predictions(
        p.participant[order],
        p.trial[order],
        p.valence_class[order],
        p.valence_level[order],
        p.class_probs[order],
        p.level_probs[order],
        p.region_scores[order],
        p.explanation,
        p.region_names,
        p.problems,
    )
