"""Which brain regions drove the predictions, per region and trial (numpy only). Two kinds, one per
kind of model (:attr:`fmri_edge.model.runtime.Model.explanation`, described by :data:`KINDS`):

- ``contribution`` (linear models, output ``region_contributions`` (N, n_regions)): each region's
  exact share of the answered class's logit, centred over the classes; with the constant in the
  metadata (``explanation.constant``) the shares sum to log p(answer) − mean over classes of log p.
  Reference: a representation of 0, i.e. the participant's own average trial under subject alignment;
- ``attention`` (the SE CNN, output ``region_weights``): the excitation of the squeeze-and-excitation
  block on the input, one weight in (0, 1) per region and trial, by which that region's
  (normalized) time course is multiplied before the CNN sees it.

Both are computed in the forward pass anyway, so explaining costs nothing extra at prediction time.

- :func:`top_regions` — the k highest-scoring regions of each trial (name, hemisphere, score);
- :func:`summarize` — mean score per region over a data set, overall and per predicted CLASS,
  ranked (:class:`AttentionSummary`);
- :func:`faithfulness` — do the scores point at regions the prediction depends on? Masks the
  top-k regions of each trial and compares the change in predictions with masking k random
  (and the k lowest-scoring) regions.

Masking (defined once, here): a masked region's time course is replaced, in that trial only, by
the mean of its own first ``baseline_s`` seconds (the fixation baseline), so it becomes a flat
line at its baseline level and carries no stimulus-locked signal. The level is rounded to 16
significant bits so that float32 arithmetic in the graph sees an exactly flat line: after the
per-trial normalizations ``baseline_z``, ``baseline_sub``, ``zscore_region`` and
``center_region`` a masked region is exactly zero (``minmax_trial``: a constant). Masking is
applied to the array the graph receives, i.e. after any subject-wise normalization (a per-region
affine map, so a flat region stays flat).

Plotting lives in :mod:`fmri_edge.explanation.plot` (matplotlib, imported lazily, optional extra ``[plot]``);
brain maps on an atlas in :mod:`fmri_edge.explanation.brainmap` (nibabel and nilearn, ``[nifti]`` and ``[plot]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from fmri_edge.errors import InputError, UsageError
from fmri_edge.data import io
from fmri_edge.decoding import answers
from fmri_edge.decoding.answers import DEFAULT_BATCH
from fmri_edge.model.runtime import Model

DEFAULT_BASELINE_S = 5
STATIC_SD = 1e-4  # below this standard deviation over trials, attention is input-independent


@dataclass(frozen=True)
class Kind:
    """What one kind of per-region explanation is, in words for tables, figures and JSON."""

    name: str  # "contribution" | "attention"
    key: str  # its field in per-trial JSON and the sidecar CSV
    short: str  # column headers
    units: str  # colour bars and axes
    what: str  # one sentence for the user
    signed: bool  # can be negative (diverging colours, bars from 0)


KINDS = {
    "contribution": Kind(
        "contribution",
        "contribution",
        "contribution",
        "contribution to the logit (log-odds)",
        "each region's contribution to the answered class's logit (log-odds, centred over the "
        "classes; relative to the participant's average trial); with the model's constant they "
        "sum exactly to that logit. Positive: pushed toward the answer",
        True,
    ),
    "attention": Kind(
        "attention",
        "weight",
        "SE weight",
        "input SE weight (0-1)",
        "the input SE block's attention weight per region, in (0, 1): the gain the network gives the "
        "region's time course; it is not a share of the answer",
        False,
    ),
}

# Regions the literature links to emotional valence, by Brainnetome name. The first four are the
# regions of the paper's EBR ("emotion-related brain regions") ablation (Lin & Lee, after Lee et
# al. 2023); the amygdala is the classic emotion region.
REFERENCE_REGIONS = {
    "A9/46d_L": "EBR",
    "A9/46d_R": "EBR",
    "aSTS_L": "EBR",
    "aSTS_R": "EBR",
    "mAmyg_L": "amygdala",
    "mAmyg_R": "amygdala",
    "lAmyg_L": "amygdala",
    "lAmyg_R": "amygdala",
}

# Brainnetome 246 lobes as [start, stop) index ranges (Fan et al. 2016), valid only when the
# model's region names are the Brainnetome atlas (checked by :func:`brainnetome_lobes`).
_BN_LOBES = (
    ("frontal", 0, 68),
    ("temporal", 68, 124),
    ("parietal", 124, 162),
    ("insula", 162, 174),
    ("limbic", 174, 188),
    ("occipital", 188, 210),
    ("subcortical", 210, 246),
)
_BN_CHECK = {
    0: "A8m_L",
    14: "A9/46d_L",
    68: "A38m_L",
    124: "A7r_L",
    162: "G_L",
    174: "A23d_L",
    188: "cLinG_L",
    210: "mAmyg_L",
    245: "lPFtha_R",
}


def hemisphere(name: str) -> str:
    """``L`` or ``R`` from the Brainnetome ``_L``/``_R`` suffix; ``""`` when there is none."""
    if name.endswith("_L"):
        return "L"
    if name.endswith("_R"):
        return "R"
    return ""


def brainnetome_lobes(region_names) -> list[tuple[str, int, int]]:
    """Lobe index ranges when ``region_names`` are the Brainnetome 246 atlas, else ``[]``."""
    names = list(region_names)
    if len(names) != 246 or any(names[i] != n for i, n in _BN_CHECK.items()):
        return []
    return list(_BN_LOBES)


def top_k_indices(weights: np.ndarray, k: int) -> np.ndarray:
    """(N, R) weights → (N, min(k, R)) region indices, most attended first (ties: lower index)."""
    weights = np.asarray(weights)
    k = max(0, min(int(k), weights.shape[1]))
    order = np.argsort(-weights, axis=1, kind="stable")
    return order[:, :k]


def top_regions(
    weights: np.ndarray, region_names, k: int = 5, key: str = "weight"
) -> list[list[dict]]:
    """Per trial, its ``k`` highest-scoring regions: [{rank, index, region, hemisphere, <key>}]
    (``key``: ``weight`` for attention, ``contribution`` for contributions, :data:`KINDS`)."""
    idx = top_k_indices(weights, k)
    w = np.take_along_axis(np.asarray(weights), idx, axis=1)
    names = list(region_names)
    return [
        [
            {
                "rank": r + 1,
                "index": int(i),
                "region": names[i],
                "hemisphere": hemisphere(names[i]),
                key: round(float(x), 4),
            }
            for r, (i, x) in enumerate(zip(row_i, row_w))
        ]
        for row_i, row_w in zip(idx, w)
    ]


REGIONS_CSV_HEADER = ["Participant", "Trial", "Rank", "Region", "Hemisphere", "Weight", "Index"]


def regions_csv_header(key: str = "weight") -> list[str]:
    """The sidecar's columns; the score column is named after the kind (``Weight``, ``Contribution``)."""
    return [key.capitalize() if c == "Weight" else c for c in REGIONS_CSV_HEADER]


def regions_csv_path(out: str | Path) -> Path:
    """The sidecar of a submission CSV: ``sub.csv`` → ``sub.regions.csv`` (the submission itself
    keeps the challenge format)."""
    out = Path(out)
    return (
        out.with_suffix(".regions.csv")
        if out.suffix == ".csv"
        else out.with_name(out.name + ".regions.csv")
    )


def write_regions_header(f, key: str = "weight") -> None:
    import csv

    csv.writer(f, lineterminator="\n").writerow(regions_csv_header(key))


def write_regions_rows(
    f, participant: str, trial, weights: np.ndarray, region_names, k: int, key: str = "weight"
) -> None:
    """Append one row per (trial, top-k region), long format, to an open CSV file."""
    import csv

    w = csv.writer(f, lineterminator="\n")
    for t, regions in zip(np.asarray(trial).tolist(), top_regions(weights, region_names, k, key)):
        for r in regions:
            w.writerow(
                [
                    participant,
                    t,
                    r["rank"],
                    r["region"],
                    r["hemisphere"],
                    f"{r[key]:.4f}",
                    r["index"],
                ]
            )


# ---- loading trials as the graph receives them ------------------------------------------------------


@dataclass
class Trials:
    """Model-ready trials of one participant/file (float32, subject-normalized if the model asks)."""

    participant: str
    path: Path
    trial: np.ndarray  # (n,) 1-based trial numbers within the file
    x: np.ndarray  # (n, n_regions, n_times) float32


def iter_trials(decoder: Model, paths: list) -> Iterator[Trials | InputError]:
    """Every readable file's model-ready trials, one participant/file at a time, exactly as
    ``predict`` prepares them (:func:`fmri_edge.decoding.answers.model_ready` under its default policy,
    subject normalization included); a problem is yielded as an :class:`~fmri_edge.data.InputError`."""
    for src in io.iter_sources(paths):
        if isinstance(src, InputError):
            yield src
            continue
        trials, xs = [], []
        for item in answers.model_ready(decoder, src):
            if isinstance(item, InputError):
                yield item
            else:
                trials.append(item[0])
                xs.append(item[1])
        if xs:
            yield Trials(src.participant, src.path, np.concatenate(trials), np.concatenate(xs))


def load(decoder: Model, paths: list) -> tuple[list[Trials], list[InputError]]:
    """All of :func:`iter_trials` in memory: (trials per file, problems)."""
    found, problems = [], []
    for item in iter_trials(decoder, paths):
        (problems if isinstance(item, InputError) else found).append(item)
    return found, problems


# ---- data-set summary ---------------------------------------------------------------------------


@dataclass
class AttentionSummary:
    """Mean score per region over a data set (input-SE attention, or contributions to the answered
    class's logit: ``kind``), overall and per predicted CLASS."""

    region_names: tuple
    class_values: tuple
    top_k: int  # k of ``top_k_rate``
    n_trials: int
    mean: np.ndarray  # (R,) mean weight over all trials
    std: np.ndarray  # (R,) standard deviation over trials
    top_k_rate: np.ndarray  # (R,) fraction of trials with the region in their top-k
    class_counts: np.ndarray  # (C,) trials predicted as each class
    class_mean: np.ndarray  # (C, R) mean weight over trials predicted as each class (NaN if none)
    kind: str = "attention"  # see KINDS

    def values(self, cls: int | None = None) -> np.ndarray:
        """(R,) mean score over all trials, or over the trials answered ``cls`` (NaN where none was)."""
        return self.mean if cls is None else self.class_mean[list(self.class_values).index(cls)]

    @property
    def uniform(self) -> bool:
        """True when attention carries no information (a vanilla model: all weights equal)."""
        return bool(np.ptp(self.mean) < 1e-7 and np.max(self.std) < 1e-7)

    @property
    def static(self) -> bool:
        """True when every trial gets the same weights: the gate does not depend on the input, e.g.
        because the per-trial normalization (``zscore_region``, ``center_region``) makes each
        region's time mean — the SE block's only input — zero. Per-trial top regions are then one
        global ranking, the same for every trial and class."""
        return bool(self.n_trials > 1 and np.max(self.std) < STATIC_SD)

    def ranking(self, cls: int | None = None) -> np.ndarray:
        """Region indices by mean weight, highest first (overall, or for one predicted class)."""
        return np.argsort(-np.nan_to_num(self.values(cls), nan=-np.inf), kind="stable")

    def ranks(self, cls: int | None = None) -> np.ndarray:
        """(R,) 1-based rank of every region (1 = most attended)."""
        r = np.empty(len(self.region_names), dtype=np.int64)
        r[self.ranking(cls)] = np.arange(1, len(r) + 1)
        return r

    def reference(self) -> list[dict]:
        """Where the literature's emotion regions (:data:`REFERENCE_REGIONS`) rank."""
        names = list(self.region_names)
        ranks = self.ranks()
        return [
            {
                "region": n,
                "group": g,
                "index": names.index(n),
                "rank": int(ranks[names.index(n)]),
                "mean": round(float(self.mean[names.index(n)]), 4),
                "percentile": round(100.0 * (1 - (int(ranks[names.index(n)]) - 1) / len(names)), 1),
            }
            for n, g in REFERENCE_REGIONS.items()
            if n in names
        ]

    def rows(self, top: int | None = None) -> list[dict]:
        """Regions ranked by overall mean weight, with per-class means and ranks."""
        names = list(self.region_names)
        class_ranks = {c: self.ranks(c) for c, n in zip(self.class_values, self.class_counts) if n}
        out = []
        for r, i in enumerate(self.ranking()[:top], start=1):
            out.append(
                {
                    "rank": r,
                    "index": int(i),
                    "region": names[i],
                    "hemisphere": hemisphere(names[i]),
                    "reference": REFERENCE_REGIONS.get(names[i]),
                    "mean": round(float(self.mean[i]), 5),
                    "std": round(float(self.std[i]), 5),
                    "top_k_rate": round(float(self.top_k_rate[i]), 4),
                    "by_class": {
                        str(c): (None if not n else round(float(self.class_mean[j, i]), 5))
                        for j, (c, n) in enumerate(zip(self.class_values, self.class_counts))
                    },
                    "rank_by_class": {str(c): int(rk[i]) for c, rk in class_ranks.items()},
                }
            )
        return out

    def to_json(self, top: int | None = None) -> dict:
        names = list(self.region_names)
        return {
            "kind": self.kind,
            "what": KINDS[self.kind].what,
            "n_trials": self.n_trials,
            "top_k": self.top_k,
            "uniform": self.uniform,
            "static": self.static,
            "max_sd_over_trials": float(np.max(self.std)),
            "classes": [
                {
                    "class": int(c),
                    "n_trials": int(n),
                    "top": [names[i] for i in self.ranking(c)[: top or 20]] if n else [],
                }
                for c, n in zip(self.class_values, self.class_counts)
            ],
            "reference_regions": self.reference(),
            "regions": self.rows(top),
        }


class AttentionAccumulator:
    """Streaming sums for :class:`AttentionSummary` (memory independent of the number of trials)."""

    def __init__(
        self, region_names, class_values=(-1, 0, 1), top_k: int = 10, kind: str = "attention"
    ):
        self.region_names, self.class_values, self.top_k = (
            tuple(region_names),
            tuple(class_values),
            top_k,
        )
        self.kind = kind
        r, c = len(self.region_names), len(self.class_values)
        self.n = 0
        self.s1, self.s2, self.in_top = np.zeros(r), np.zeros(r), np.zeros(r)
        self.class_n, self.class_s1 = np.zeros(c, dtype=np.int64), np.zeros((c, r))

    def add(self, weights: np.ndarray, classes: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        classes = np.asarray(classes)
        self.n += len(w)
        self.s1 += w.sum(0)
        self.s2 += (w**2).sum(0)
        np.add.at(self.in_top, top_k_indices(w, self.top_k).ravel(), 1)
        for j, c in enumerate(self.class_values):
            m = classes == c
            self.class_n[j] += int(m.sum())
            self.class_s1[j] += w[m].sum(0)

    def result(self) -> AttentionSummary:
        if self.n == 0:
            raise ValueError("no trials to summarize")
        mean = self.s1 / self.n
        std = np.sqrt(np.maximum(self.s2 / self.n - mean**2, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            class_mean = self.class_s1 / self.class_n[:, None]
        return AttentionSummary(
            self.region_names,
            self.class_values,
            self.top_k,
            self.n,
            mean,
            std,
            self.in_top / self.n,
            self.class_n.copy(),
            class_mean,
            self.kind,
        )


def require_kind(decoder: Model) -> str:
    """The model's kind of explanation, or a one-line refusal that says why it has none."""
    kind = decoder.explanation
    if kind is not None:
        return kind
    if decoder.info.meta.get("adaptation"):
        why = (
            "it was adapted to one participant, and its region contributions are its base model's; explain the "
            f"base model ({decoder.info.meta['adaptation'].get('base_model')})"
        )
    else:
        why = (
            "it has neither region contributions nor region attention (exported before contributions "
            "existed?); export it again with `fmri-edge export`, or use the SE CNN: --model "
            f"{decoder.path.with_name('fmri-edge-se.onnx')}"
        )
    raise UsageError(f"{decoder.path}: this model cannot explain its answers per region: {why}")


class NoTrialOfClass(ValueError):
    """:func:`summarize` with ``only_class``: trials were read, but none was answered that class."""


def summarize(
    decoder: Model,
    paths: list,
    top_k: int = 10,
    batch_size: int = DEFAULT_BATCH,
    only_class: int | None = None,
) -> tuple[AttentionSummary, list[InputError]]:
    """Run the model over ``paths`` (as ``predict`` does, streamed) and summarize its per-region
    explanation (contributions or attention, :func:`require_kind`); with ``only_class``, over the
    trials answered that class only."""
    kind = require_kind(decoder)
    acc = AttentionAccumulator(decoder.info.region_names, decoder.info.class_values, top_k, kind)
    problems, read = [], 0
    for item in answers.predict(decoder, paths, batch_size):
        if isinstance(item, InputError):
            problems.append(item)
        else:
            scores, classes = item.region_scores(kind), np.asarray(item.valence_class)
            read += len(classes)
            if only_class is not None:
                keep = classes == only_class
                scores, classes = scores[keep], classes[keep]
            if len(classes):
                acc.add(scores, classes)
    if acc.n == 0 and read and only_class is not None:
        raise NoTrialOfClass(only_class)
    if acc.n == 0:
        raise InputError(
            ", ".join(map(str, paths)), f"no trial could be read ({len(problems)} problem(s))"
        )
    return acc.result(), problems


def explain(trials, model=None, participants=None, top_k: int = 10) -> AttentionSummary:
    """Which brain regions drive a model's answers, over a set of trials (``fmri-edge explain``).

    Parameters
    ----------
    trials : array (N, n_regions, n_times), or paths
        Trials, or the files and folders ``fmri-edge predict`` takes.
    model : fmri_edge.Decoder or str or Path, optional
        The model to explain; default: the shipped model (exact contributions of its linear decoder).
    participants : sequence of str, optional
        Whose trial each row is (arrays only), for the per-participant alignment.
    top_k : int
        The k of each region's top-k rate.

    Returns
    -------
    AttentionSummary
        Mean score per region overall and per answered CLASS (``.rows(top)`` ranks them;
        ``.to_json()`` is what ``fmri-edge explain --json`` prints).

    Examples
    --------
    >>> from fmri_edge.simulation.simulate import simulate
    >>> trials, _, _ = simulate(12, seed=0)
    >>> summary = explain(trials)
    >>> summary.kind, summary.n_trials, len(summary.rows(top=3))
    ('contribution', 12, 3)
    """
    from fmri_edge.decoding import decoder as face

    decoder = model if isinstance(model, face.Decoder) else face.Decoder(model)
    kind = require_kind(decoder.model)
    paths = face.as_paths(trials)
    if paths is not None:
        summary, _ = summarize(decoder.model, paths, top_k)
        return summary
    answers = decoder.predict(trials, participants)
    acc = AttentionAccumulator(decoder.info.region_names, decoder.info.class_values, top_k, kind)
    acc.add(answers.region_scores, answers.valence_class)
    return acc.result()
