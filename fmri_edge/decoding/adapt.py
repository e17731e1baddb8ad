"""Adapt a model to one participant from a few of its labeled trials (numpy + onnxruntime only).

The shipped model answers p(CLASS | trial). Adaptation learns a correction δ of its log
class probabilities from the participant's K labeled trials:

    p'(c | x) ∝ p(c | x) · exp(δ_c(x))

- ``bias``: δ = b, one offset per class (3 numbers): the participant's prior shift;
- ``scale_bias``: δ = τ · log p + b: also sharpens (τ > 0) or flattens (τ < 0) the answers;
- ``features``: δ = W f(x) + b, a new final layer on the graph's ``features`` output (what the
  member networks' final layers read). For one network this is exactly a refit of its final
  layer, started from and shrunk toward the shipped weights (softmax ignores the per-trial
  constant that separates log p from the logits); for an ensemble it is the same correction
  on top of the ensemble's answer.

Every parameter is shrunk toward 0 — toward the shipped model — by an L2 penalty:
minimize Σ_k w_k · CE(p'_k, y_k) + λ · ‖θ‖², with class-balanced weights w (an unbalanced
calibration block does not become a prior) and λ (``shrinkage``) in units of labeled trials.
As λ grows the adapted model becomes the shipped one. ``features`` are divided by their RMS
norm over the participant's trials, so λ means the same for every model; its weights are
fitted in the span of the K labeled trials (representer theorem: 3 + 3K unknowns, Newton).

LEVEL follows the adapted CLASS. A class-only model's LEVEL probabilities are
``class_probs @ P(LEVEL | CLASS)`` inside its graph: the adapted graph computes the same product
with the adapted class probabilities, so the model's ``level_rule`` (argmax or least expected
LEVEL_error) applies unchanged. A model with a LEVEL head has every level's probability
reweighted by the change of its class's (the sign of the level) and renormalized.

Every exported graph ends with an adaptation head that computes this correction from graph inputs
(``adapt_bias``, ``adapt_scale``, ``adapt_weight``) whose default values are zero, the identity
(:class:`fmri_edge.training.onnx_export.AdaptationHead`). The adapted model is the shipped ONNX file with
those defaults replaced by the fitted correction (:mod:`fmri_edge.model.onnx_edit`, no ``onnx``
package), the participant's alignment statistics as its new alignment defaults, metadata
(``adaptation``) recording the base model's sha256, the participant, K, the method and λ, and its
own weights digest. Models exported before the head existed are refused (export them again).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmri_edge.errors import InputError
from fmri_edge import valence
from fmri_edge.model import integrity, onnx_edit
from fmri_edge.data import io
from fmri_edge.decoding.answers import (
    DEFAULT_BATCH,
    MIN_ALIGN_TRIALS,
    Policy,
    group_sources,
    model_ready,
    participant_stats,
)
from fmri_edge.model.runtime import ADAPT_INPUTS, ALIGN_INPUTS, METADATA_KEY, Model, file_sha256
from fmri_edge.data.submission import HEADER, read_answers

METHODS = ("bias", "scale_bias", "features")
# the best mean inner-CV accuracy gain at K = 9, pooled over the 9 outer folds of
# train/research/adapt_cv.py (training subjects only; docs/results.md, "Subject adaptation"),
# for models with and without in-graph subject alignment. With alignment every candidate's gain
# is within ±0.2 points of none; without it, features λ = 0.3 gained most (+2.3 points inner).
DEFAULT_METHOD = "features"
DEFAULT_SHRINKAGE = {"aligned": 10.0, "unaligned": 0.3}
# fewer labeled trials than this: the correction cannot even see every class once
MIN_LABELS = 3
EPS_PROB = 1e-12
SIGN_OF_LEVEL = np.stack([np.sign(valence.LEVEL_VALUES) == c for c in valence.CLASS_VALUES]).astype(
    np.float32
)


# ---- the correction ---------------------------------------------------------------------------------


@dataclass
class Correction:
    """δ(x) = scale · log p(x) + f(x) @ weight + bias; zero parameters are the identity."""

    method: str
    shrinkage: float
    bias: np.ndarray  # (3,)
    scale: float = 0.0
    weight: np.ndarray | None = None  # (F, 3), in raw feature units

    def delta(self, class_probs: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        d = np.broadcast_to(self.bias, class_probs.shape).astype(np.float64)
        if self.scale:
            d = d + self.scale * np.log(np.maximum(class_probs, EPS_PROB))
        if self.weight is not None:
            d = d + np.asarray(features, dtype=np.float64) @ self.weight
        return d

    def apply(
        self,
        class_probs: np.ndarray,
        level_probs: np.ndarray,
        features: np.ndarray | None = None,
        level_map: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the adapted graph computes (numpy, float64). ``level_map``: the (3, 9)
        P(LEVEL | CLASS) of a class-only model (:func:`level_map`); None: LEVEL probabilities are
        reweighted by the change of their class's (the sign of the level)."""
        e = np.exp(self.delta(class_probs, features))
        u = class_probs * e
        z = u.sum(axis=1, keepdims=True)
        if level_map is not None:
            return u / z, (u / z) @ level_map
        v = level_probs * ((e / z) @ SIGN_OF_LEVEL)
        return u / z, v / v.sum(axis=1, keepdims=True)

    def summary(self) -> dict:
        out = {
            "method": self.method,
            "shrinkage": self.shrinkage,
            "bias": [round(float(b), 4) for b in self.bias],
        }
        if self.method == "scale_bias":
            out["scale"] = round(float(self.scale), 4)
        if self.weight is not None:
            out["weight_norm"] = round(float(np.linalg.norm(self.weight)), 4)
        return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_weights(y: np.ndarray) -> np.ndarray:
    """Per-trial weights that give every present class the same total (summing to K)."""
    classes, counts = np.unique(y, return_counts=True)
    per = {c: len(y) / (len(classes) * n) for c, n in zip(classes, counts)}
    return np.array([per[c] for c in y])


def fit_correction(
    class_probs: np.ndarray,
    y: np.ndarray,
    method: str = DEFAULT_METHOD,
    shrinkage: float = DEFAULT_SHRINKAGE["aligned"],
    features: np.ndarray | None = None,
    feature_scale: float | None = None,
    iters: int = 50,
) -> Correction:
    """Fit δ on K labeled trials: ``class_probs`` (K, 3) of the shipped model, ``y`` (K,) class
    indices 0, 1, 2 (CLASS −1, 0, 1), ``features`` (K, F) for ``features``; ``feature_scale``: the
    RMS feature norm over all of the participant's trials (default: over the K)."""
    if method not in METHODS:
        raise ValueError(f"unknown adaptation method {method!r} ({', '.join(METHODS)})")
    if not shrinkage > 0:
        raise ValueError(f"shrinkage must be > 0, got {shrinkage}")
    k = len(y)
    logp = np.log(np.maximum(np.asarray(class_probs, dtype=np.float64), EPS_PROB))
    # δ_i = Φ_i θ, Φ_i (3 × P); penalty λ θᵀ R θ
    blocks = [np.broadcast_to(np.eye(3), (k, 3, 3))]
    penalty = [np.eye(3)]
    gram = None
    if method == "scale_bias":
        blocks.append(logp[:, :, None])
        penalty.append(np.eye(1))
    if method == "features":
        f = np.asarray(features, dtype=np.float64)
        s = feature_scale or float(np.sqrt(np.mean(np.sum(f**2, axis=1)))) or 1.0
        gram = (f / s) @ (f / s).T  # (K, K)
        # δ_i += Σ_j G_ij α_j (α_j ∈ R³): Φ_i[:, 3j + c] = G_ij [c == row]
        blocks.append(np.einsum("ij,ab->iajb", gram, np.eye(3)).reshape(k, 3, 3 * k))
        penalty.append(np.kron(gram, np.eye(3)) + 1e-9 * np.eye(3 * k))
    phi = np.concatenate(blocks, axis=2)  # (K, 3, P)
    p_dim = phi.shape[2]
    r = np.zeros((p_dim, p_dim))
    at = 0
    for b in penalty:
        r[at : at + len(b), at : at + len(b)] = b
        at += len(b)
    w = class_weights(y)
    onehot = np.eye(3)[y]

    def objective(theta):
        z = logp + phi @ theta
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        return float(np.sum(w * (lse - z[np.arange(k), y])) + shrinkage * theta @ r @ theta)

    theta = np.zeros(p_dim)
    value = objective(theta)
    for _ in range(iters):
        q = _softmax(logp + phi @ theta)
        wphi = (w[:, None, None] * phi).reshape(3 * k, p_dim)
        grad = wphi.T @ (q - onehot).reshape(-1) + 2 * shrinkage * r @ theta
        cov = q[:, :, None] * np.eye(3) - q[:, :, None] * q[:, None, :]  # (K, 3, 3)
        hess = wphi.T @ (cov @ phi).reshape(3 * k, p_dim) + 2 * shrinkage * r
        step = np.linalg.solve(hess + 1e-12 * np.eye(p_dim), grad)
        t = 1.0
        while t > 1e-6:
            new = objective(theta - t * step)
            if new <= value:
                break
            t /= 2
        theta, done = theta - t * step, value - new < 1e-10
        value = min(value, new)
        if done:
            break
    corr = Correction(method, float(shrinkage), theta[:3].copy())
    if method == "scale_bias":
        corr.scale = float(theta[3])
    if method == "features":
        alpha = theta[3:].reshape(k, 3)
        corr.weight = (f / s).T @ alpha / s  # raw units: δ = f @ weight
    return corr


# ---- labels -----------------------------------------------------------------------------------------


@dataclass
class Labels:
    trial: np.ndarray  # (K,) 1-based trial numbers
    valence_class: np.ndarray  # (K,) in {−1, 0, 1}
    participant: str | None  # as written in a CSV; None for labels.npz (no names inside)
    path: Path
    lines: dict = field(default_factory=dict)  # trial → CSV line, for messages


def read_participant_labels(path: str | Path) -> Labels:
    """One participant's CLASS labels: ICBHI ``labels.npz`` (rows are trials 1, 2, … in order;
    fewer rows than trials label the first ones) or a CSV read as the challenge's format is
    (:func:`fmri_edge.data.submission.read_answers`: ``Participant,Trial,CLASS`` by name, LEVEL and
    other columns ignored), of one participant. Every problem names the file (and line)."""
    path = Path(path)
    if path.suffix == ".npz":
        lab = io.load_labels(path)
        return Labels(np.arange(1, len(lab) + 1), lab[:, 0], None, path)
    if path.suffix != ".csv":
        raise InputError(
            path,
            f"labels must be an ICBHI labels.npz or a .csv with columns "
            f"{','.join(HEADER[:3])}[,LEVEL] (got {path.suffix or 'no suffix'!r})",
        )
    rows = read_answers(path, level=False)
    other = np.flatnonzero(rows.participant != rows.participant[0])
    if len(other):
        raise InputError(
            path,
            f"line {rows.line[other[0]]}: participant {rows.participant[other[0]]!r}, but line "
            f"{rows.line[0]} is {rows.participant[0]!r}; adapt one participant at a time "
            "(one labels file each)",
        )
    return Labels(
        rows.trial,
        rows.valence_class,
        str(rows.participant[0]),
        path,
        dict(zip(rows.trial.tolist(), rows.line.tolist())),
    )


# ---- the participant's trials through the base model --------------------------------------------------


@dataclass
class BaseOutputs:
    """The base model's outputs on one participant's trials."""

    participant: str
    trial: np.ndarray  # (N,) 1-based trial numbers of the good trials
    class_probs: np.ndarray  # (N, 3)
    level_probs: np.ndarray  # (N, 9)
    features: np.ndarray  # (N, F)
    subject: tuple | None  # alignment statistics used (None: the population's)
    problems: list
    paths: list


def base_outputs(
    decoder: Model,
    paths: list,
    participant: str | None = None,
    policy: Policy | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> BaseOutputs:
    """The base model's outputs on one participant's trials, aligned exactly as ``predict``
    aligns them (over all of the participant's good trials in ``paths``)."""
    groups, problems = [], []
    for item in group_sources(paths, participant):
        (problems if isinstance(item, InputError) else groups).append(item)
    for p in problems:
        if p.outcome == "refused":
            raise p
    if len(groups) != 1:
        names = ", ".join(g[0] for g in groups)
        raise InputError(
            paths[0],
            f"TRIALS hold {len(groups)} participants ({names}); adapt one participant "
            "at a time, or give --participant to treat every file as one person's",
        )
    name, sources = groups[0]
    subject, offsets = None, {}
    if decoder.aligned:
        stats, found, counts = participant_stats(decoder, sources, batch_size, policy)
        problems += found
        if stats.n >= MIN_ALIGN_TRIALS:
            subject = stats.result()
        total = 0
        for src in sources:
            offsets[src.path] = total
            total += counts[src.path]
    outs = {"class_probs": [], "level_probs": [], "features": []}
    trials = []
    for src in sources:
        for item in model_ready(decoder, src, batch_size, policy):
            if isinstance(item, InputError):
                if not decoder.aligned:
                    problems.append(item)
                continue
            got = decoder.run(item[1], subject, outputs=tuple(outs))
            for k in outs:
                outs[k].append(got[k])
            trials.append(item[0] + offsets.get(src.path, 0))
    for p in problems:
        if p.outcome == "refused":
            raise p
    if not trials:
        raise InputError(sources[0].path, "no trial of this participant could be read")
    return BaseOutputs(
        name,
        np.concatenate(trials),
        *(np.concatenate(outs[k]).astype(np.float64) for k in outs),
        subject,
        problems,
        [s.path for s in sources],
    )


def match_labels(seen: BaseOutputs, labels: Labels) -> np.ndarray:
    """Indices into ``seen`` of the labeled trials; refuses labels for trials not in TRIALS."""
    where = {int(t): i for i, t in enumerate(seen.trial)}
    if labels.participant is not None and labels.participant != seen.participant:
        raise InputError(
            labels.path,
            f"line {labels.lines.get(int(labels.trial[0]), 2)}: labels are for "
            f"participant {labels.participant!r}, TRIALS hold "
            f"{seen.participant!r}; give the labels of the same participant (or "
            f"--participant {labels.participant})",
        )
    skipped = {p.trial: p for p in seen.problems if p.trial is not None and p.outcome == "skipped"}
    idx = []
    for t in labels.trial.tolist():
        if t not in where:
            line = f"line {labels.lines[t]}: " if t in labels.lines else f"row {t}: "
            why = (
                f"it was skipped ({skipped[t].problem.split(';')[0]})"
                if t in skipped
                else f"{seen.participant} has {int(seen.trial.max())} trials in TRIALS"
            )
            raise InputError(
                labels.path, f"{line}label for trial {t}, which is not in TRIALS: {why}"
            )
        idx.append(where[t])
    return np.array(idx, dtype=np.int64)


def check_labels(labels: Labels, minimum: int = MIN_LABELS) -> None:
    k = len(labels.trial)
    present = sorted(set(labels.valence_class.tolist()))
    if k < minimum:
        raise InputError(
            labels.path,
            f"only {k} labeled trial(s); adaptation needs at least {minimum} "
            f"(one of each CLASS −1, 0, 1 at best; the CV in docs/results.md "
            "measured K = 3 … 15)",
        )
    if len(present) < 2:
        raise InputError(
            labels.path,
            f"every one of the {k} labeled trials is CLASS {present[0]:+d}; adaptation "
            "needs labeled trials of at least two classes (ideally all three, "
            "e.g. 3 trials of each)",
        )


# ---- the adapted ONNX --------------------------------------------------------------------------------


def level_map(meta: dict) -> np.ndarray | None:
    """A class-only model's P(LEVEL | CLASS) (3, 9), as its export wrote it in the metadata
    (``adaptation_head``); None for a model with a LEVEL head."""
    m = (meta.get("adaptation_head") or {}).get("level_given_class")
    return None if m is None else np.asarray(m, dtype=np.float64)


def write_adapted(
    model: onnx_edit.ModelProto, out: Path, corr: Correction, meta: dict, subject: tuple | None
) -> None:
    """The base graph with the correction as its adaptation head's defaults (``adapt_*``, see
    :class:`fmri_edge.training.onnx_export.AdaptationHead`) and ``subject`` statistics as the alignment
    defaults; new metadata and its own weights digest. No node is added or changed."""
    model.replace_initializer("adapt_bias", corr.bias.reshape(1, 3))
    model.replace_initializer("adapt_scale", np.array([corr.scale]))
    if corr.weight is not None:
        model.replace_initializer("adapt_weight", corr.weight)
    if subject is not None:
        for name, value in zip(ALIGN_INPUTS, subject):
            model.replace_initializer(name, value)
    model.set_metadata(METADATA_KEY, json.dumps(meta))
    model.save(out)
    integrity.stamp(out)  # the weights changed: the adapted graph gets its own digest


@dataclass
class Result:
    out: Path
    card: Path
    participant: str
    k: int
    n_trials: int
    correction: Correction
    changed: int  # CLASS answers that differ on the participant's N trials
    before: np.ndarray  # (3,) answers per CLASS before
    after: np.ndarray  # (3,) and after
    fit_accuracy: tuple  # on the K labeled trials (in-sample): before, after
    seconds: float
    max_check_diff: float  # |adapted ONNX − numpy| on the participant's trials
    problems: list


def adapt(
    trials: list,
    labels_path: str | Path,
    model: str | Path | None,
    out: str | Path,
    method: str = DEFAULT_METHOD,
    shrinkage: float | None = None,
    participant: str | None = None,
    force: bool = False,
    policy: Policy | None = None,
    threads: int = 0,
) -> Result:
    from fmri_edge.data.submission import check_new

    start = time.perf_counter()
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(
            out, "give the adapted model an .onnx name (its model card is written beside it)"
        )
    check_new(out, force)
    check_new(out.with_suffix(".md"), force)
    labels = read_participant_labels(labels_path)
    decoder = Model(model, threads=threads)
    if "features" not in decoder.outputs:
        raise InputError(
            decoder.path,
            f"model has no `features` output (outputs: {', '.join(decoder.outputs)}); "
            "adaptation needs a model exported by this version of fmri-edge "
            "(`fmri-edge export`)",
        )
    if not decoder.adaptable:
        raise InputError(
            decoder.path,
            f"model has no adaptation inputs ({', '.join(ADAPT_INPUTS)}): it was "
            "exported before models carried an adaptation head; export it again with "
            "`fmri-edge export` to adapt it (predict still runs it)",
        )
    if decoder.info.meta.get("adaptation"):
        a = decoder.info.meta["adaptation"]
        raise InputError(
            decoder.path,
            f"already adapted to {a.get('participant')!r}; adapt the base model "
            f"(sha256 {str(a.get('base_sha256'))[:16]}…)",
        )
    check_labels(labels)
    if shrinkage is None:
        shrinkage = DEFAULT_SHRINKAGE["aligned" if decoder.aligned else "unaligned"]
    seen = base_outputs(decoder, trials, participant, policy)
    idx = match_labels(seen, labels)
    y = np.searchsorted(valence.CLASS_VALUES, labels.valence_class)
    scale = float(np.sqrt(np.mean(np.sum(seen.features**2, axis=1)))) or 1.0
    corr = fit_correction(seen.class_probs[idx], y, method, shrinkage, seen.features[idx], scale)
    new_c, new_l = corr.apply(
        seen.class_probs, seen.level_probs, seen.features, level_map(decoder.info.meta)
    )
    base_sha = file_sha256(decoder.path)
    meta = dict(decoder.info.meta)
    base_version = meta.get("model_version", decoder.path.stem)
    meta["model_version"] = f"{base_version}+{seen.participant}"
    meta["adaptation"] = {
        "participant": seen.participant,
        "k": int(len(idx)),
        "labeled_trials": [int(t) for t in labels.trial],
        "class_counts": {
            str(c): int(np.sum(labels.valence_class == c)) for c in valence.CLASS_VALUES
        },
        **corr.summary(),
        "base_sha256": base_sha,
        "base_model": decoder.path.name,
        "base_model_version": base_version,
        "labels": Path(labels_path).name,
        "trials_seen": int(len(seen.trial)),
        "alignment_defaults": "this participant's statistics"
        if seen.subject is not None
        else "the training population's (fewer than the minimum trials to align)",
        "feature_scale": round(scale, 6) if method == "features" else None,
        "adapted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if out.resolve() == decoder.path.resolve():
        raise InputError(out, "is the base model itself; give the adapted model another name")
    out.with_suffix(".md").unlink(
        missing_ok=True
    )  # an old card (--force) would not match the new file
    write_adapted(onnx_edit.ModelProto.load(decoder.path), out, corr, meta, seen.subject)
    check = Model(out, threads=threads)
    # the adapted file is opened and checked against the numpy definition on the participant's trials
    got = base_outputs(check, trials, seen.participant, policy)
    diff = float(max(np.abs(got.class_probs - new_c).max(), np.abs(got.level_probs - new_l).max()))
    if diff > 1e-4:
        out.unlink()
        raise RuntimeError(
            f"the adapted model differs from its numpy definition by {diff:.2e}; nothing written"
        )
    card = write_card(out, meta, base_sha, file_sha256(out))
    before, after = valence.decide_class(seen.class_probs), valence.decide_class(new_c)
    yl = labels.valence_class
    return Result(
        out,
        card,
        seen.participant,
        len(idx),
        len(seen.trial),
        corr,
        int(np.sum(before != after)),
        np.array([np.sum(before == c) for c in valence.CLASS_VALUES]),
        np.array([np.sum(after == c) for c in valence.CLASS_VALUES]),
        (float(np.mean(before[idx] == yl)), float(np.mean(after[idx] == yl))),
        time.perf_counter() - start,
        diff,
        seen.problems,
    )


def other_participants(meta: dict, paths: list, participant: str | None = None) -> list[str]:
    """Participants in ``paths`` that an adapted model was not adapted to (empty for base models)."""
    a = meta.get("adaptation")
    if not a:
        return []
    names = (
        {participant}
        if participant
        else {s.participant for s in io.iter_sources(paths) if isinstance(s, io.Source)}
    )
    return sorted(n for n in names if n != a.get("participant"))


def write_card(out: Path, meta: dict, base_sha: str, sha: str) -> Path:
    a = meta["adaptation"]
    card = out.with_suffix(".md")
    lines = [
        f"# {out.stem}",
        "",
        f"`{a['base_model']}` adapted to participant {a['participant']} from {a['k']} labeled trials "
        f"(`fmri-edge adapt`). Use it for this participant only.",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{out.name}` |",
        f"| sha256 | `{sha}` |",
        f"| base model | `{a['base_model']}` ({a['base_model_version']}), sha256 `{base_sha}` |",
        f"| participant | {a['participant']} ({a['trials_seen']} trials seen; alignment defaults: "
        f"{a['alignment_defaults']}) |",
        f"| labeled trials | K = {a['k']}: trials {', '.join(map(str, a['labeled_trials']))} "
        f"(CLASS −1/0/+1: {a['class_counts']['-1']}/{a['class_counts']['0']}/{a['class_counts']['1']}), "
        f"from `{a['labels']}` |",
        f"| method | {a['method']}, shrinkage λ = {a['shrinkage']:g}; bias {a['bias']}"
        + (f", scale {a['scale']}" if "scale" in a else "")
        + (f", ‖weight‖ {a['weight_norm']}" if "weight_norm" in a else "")
        + " |",
        f"| adapted | {a['adapted']} |",
        "",
        'Measured benefit of adaptation (cross-subject CV): docs/results.md, section "Subject adaptation".',
        "",
    ]
    with open(card, "w") as f:
        f.write("\n".join(lines))
    return card
