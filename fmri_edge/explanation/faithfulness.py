"""Faithfulness of a model's region explanation: mask a trial's top-k regions (their time courses
set to their baseline) and count how often the answer changes, against k random and k bottom
regions (``fmri-edge explain --faithfulness``). numpy + onnxruntime only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmri_edge.decoding import answers
from fmri_edge.decoding.answers import DEFAULT_BATCH
from fmri_edge.errors import InputError, UsageError
from fmri_edge.explanation.regions import DEFAULT_BASELINE_S, load, require_kind
from fmri_edge.model.runtime import Model


def baseline_seconds(decoder: Model) -> int:
    norm = decoder.info.meta.get("normalization")
    if isinstance(norm, dict) and isinstance(norm.get("baseline_s"), int):
        return norm["baseline_s"]
    return DEFAULT_BASELINE_S


def mask_regions(
    x: np.ndarray, regions: np.ndarray, baseline_s: int = DEFAULT_BASELINE_S
) -> np.ndarray:
    """Copy of trials ``x`` (N, R, T) where, in trial n, every region in ``regions[n]`` is replaced
    by a flat line at the mean of its own first ``baseline_s`` seconds (see the module docstring)."""
    x = np.array(x, dtype=np.float32, copy=True)
    regions = np.asarray(regions, dtype=np.int64).reshape(len(x), -1)
    if regions.shape[1] == 0:
        return x
    rows = np.arange(len(x))[:, None]
    base = x[rows, regions, :baseline_s].astype(np.float64).mean(axis=2, keepdims=True)  # (N, k, 1)
    x[rows, regions, :] = np.broadcast_to(_few_bits(base), (*regions.shape, x.shape[2]))
    return x


def _few_bits(v: np.ndarray, bits: int = 16) -> np.ndarray:
    """``v`` rounded to ``bits`` significant bits (relative change < 2e-5 for 16). Sums of up to
    2**(24 - bits) copies are then exact in float32, so the graph's mean of a flat region equals the
    region and its deviation and standard deviation are exactly 0: a masked region normalizes to
    exactly 0 under ``zscore_region``/``center_region``/``baseline_*`` instead of ±1 rounding noise."""
    m, e = np.frexp(v)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e).astype(np.float32)


@dataclass
class MaskEffect:
    """How much masking changed the predictions of N trials."""

    changed: float  # fraction of trials whose CLASS answer changed
    delta_p: float  # mean |Δ p(originally predicted class)|

    def to_json(self) -> dict:
        return {"changed": round(self.changed, 4), "delta_p": round(self.delta_p, 5)}


def mask_effect(
    decoder: Model,
    x: np.ndarray,
    regions: np.ndarray,
    base_probs: np.ndarray,
    baseline_s: int,
    batch_size: int = DEFAULT_BATCH,
    plan: list | None = None,
) -> MaskEffect:
    """How masking ``regions`` of each trial changes its answer; ``plan``: the trials' alignment
    (:func:`alignment_plan`; None: the graph's defaults)."""
    base_idx = np.argmax(base_probs, axis=1)
    probs = run_planned(decoder, mask_regions(x, regions, baseline_s), plan, batch_size)[
        "class_probs"
    ]
    rows = np.arange(len(x))
    return MaskEffect(
        float(np.mean(np.argmax(probs, axis=1) != base_idx)),
        float(np.mean(np.abs(probs[rows, base_idx] - base_probs[rows, base_idx]))),
    )


@dataclass
class FaithfulnessReport:
    n_trials: int
    baseline_s: int
    draws: int
    seed: int
    rows: list = field(default_factory=list)  # one dict per k
    participants: list = field(default_factory=list)
    held_out: dict = field(default_factory=dict)
    kind: str = "attention"  # what ranks the regions (KINDS)
    aligned: bool = False  # each participant aligned over its own unmasked trials

    def to_json(self) -> dict:
        return {
            "n_trials": self.n_trials,
            "participants": self.participants,
            "held_out": self.held_out,
            "ranked_by": self.kind,
            "aligned_per_participant": self.aligned,
            "baseline_s": self.baseline_s,
            "random_draws": self.draws,
            "seed": self.seed,
            "masking": "region time course → its own fixation-baseline mean "
            f"(first {self.baseline_s} s), per trial",
            "results": self.rows,
        }


def held_out(decoder: Model, participants) -> dict:
    """Are these participants absent from the model's training data (metadata ``training``)?"""
    trained = (decoder.info.meta.get("training") or {}).get("participants")
    if not isinstance(trained, list):
        return {
            "status": "unknown",
            "detail": "the model's metadata lists no training participants",
        }
    overlap = sorted(set(map(str, participants)) & set(map(str, trained)))
    if overlap:
        return {
            "status": "no",
            "detail": f"{len(overlap)} participant(s) were in the training data",
            "overlap": overlap,
        }
    return {"status": "yes", "detail": "no participant was in the training data"}


def alignment_plan(
    decoder: Model, x: np.ndarray, participants, batch_size: int = DEFAULT_BATCH
) -> list | None:
    """[(rows, alignment statistics)] of ``x``: each participant aligned over its own trials, as
    ``predict`` aligns them (:func:`fmri_edge.decoding.answers.participant_batches`); computed once from the
    unmasked trials, so that masking a region in one trial leaves the reference of the others
    alone. None (the graph's defaults) without ``participants`` or for a model without alignment."""
    if participants is None or not decoder.aligned:
        return None
    return list(answers.participant_batches(decoder, x, participants, batch_size))


def run_planned(
    decoder: Model, x: np.ndarray, plan: list | None, batch_size: int = DEFAULT_BATCH
) -> dict[str, np.ndarray]:
    """Model outputs for ``x``, aligned as ``plan`` says (:func:`alignment_plan`)."""
    if plan is None:
        return answers.run_batched(decoder, x, batch_size)
    out: dict[str, np.ndarray] = {}
    for rows, subject in plan:
        for k, v in decoder.run(x[rows], subject).items():
            out.setdefault(k, np.empty((len(x), *v.shape[1:]), v.dtype))[rows] = v
    return out


def faithfulness(
    decoder: Model,
    x: np.ndarray,
    ks=(5, 10, 20),
    draws: int = 10,
    seed: int = 0,
    baseline_s: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    participants=None,
) -> FaithfulnessReport:
    """Mask each trial's top-k regions by its explanation (contribution or attention), its k
    lowest-scoring regions, and k random regions (``draws`` independent draws); report the
    changed-CLASS fraction and mean |Δp| of the originally predicted class for each. The
    explanation is faithful if top-k ≫ random ≥ bottom-k.

    ``x`` must be model-ready trials (see :func:`iter_trials`); ``participants`` (one per trial)
    aligns each participant over its own unmasked trials, as ``predict`` does (:func:`alignment_plan`)."""
    kind = require_kind(decoder)
    x = np.ascontiguousarray(x, dtype=np.float32)
    baseline_s = baseline_seconds(decoder) if baseline_s is None else baseline_s
    plan = alignment_plan(decoder, x, participants, batch_size)
    base = run_planned(decoder, x, plan, batch_size)
    p0 = base["class_probs"]
    w = base["region_contributions" if kind == "contribution" else "region_weights"]
    n, r = w.shape
    rng = np.random.default_rng(seed)
    order = np.argsort(-w, axis=1, kind="stable")
    report = FaithfulnessReport(n, baseline_s, draws, seed, kind=kind, aligned=plan is not None)
    for k in ks:
        k = int(k)
        if not 0 < k <= r:
            raise UsageError(f"--k {k}: outside 1 … {r} (the number of regions)")
        top = mask_effect(decoder, x, order[:, :k], p0, baseline_s, batch_size, plan)
        bottom = mask_effect(decoder, x, order[:, r - k :], p0, baseline_s, batch_size, plan)
        rand = [
            mask_effect(
                decoder,
                x,
                np.argsort(rng.random((n, r)), axis=1)[:, :k],
                p0,
                baseline_s,
                batch_size,
                plan,
            )
            for _ in range(draws)
        ]
        rc, rp = np.array([e.changed for e in rand]), np.array([e.delta_p for e in rand])
        report.rows.append(
            {
                "k": k,
                "top": top.to_json(),
                "bottom": bottom.to_json(),
                "random": {
                    "changed": round(float(rc.mean()), 4),
                    "changed_std": round(float(rc.std()), 4),
                    "delta_p": round(float(rp.mean()), 5),
                    "delta_p_std": round(float(rp.std()), 5),
                    "draws_at_least_top": int(np.sum(rp >= top.delta_p)),
                },
            }
        )
    return report


def faithfulness_paths(
    decoder: Model,
    paths: list,
    ks=(5, 10, 20),
    draws: int = 10,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
) -> tuple[FaithfulnessReport, list[InputError]]:
    """:func:`faithfulness` over the trials of files and folders, all pooled; says whether they
    are held out from the model's training participants."""
    found, problems = load(decoder, paths)
    if not found:
        raise InputError(
            ", ".join(map(str, paths)), f"no trial could be read ({len(problems)} problem(s))"
        )
    who = np.concatenate([np.full(len(t.x), t.participant, dtype=object) for t in found])
    report = faithfulness(
        decoder,
        np.concatenate([t.x for t in found]),
        ks,
        draws,
        seed,
        batch_size=batch_size,
        participants=who,
    )
    report.participants = sorted({t.participant for t in found})
    report.held_out = held_out(decoder, report.participants)
    return report, problems
