"""Checkpoint(s) → one self-describing ONNX file: raw BOLD in, probabilities out.

The graph holds everything between the file and the answer: per-trial normalization, every
member network (a CLASS net, a LEVEL net, a multi-head net or the models of several folds,
averaged), and the input SE block's region weights. The metadata (key ``fmri_edge``, JSON)
says what predict needs: shape, label values, normalization, region names, provenance.

Models whose CLASS logits are linear in per-region features (``LinearNet``, ``LowRankNet``) also
answer ``region_contributions`` (N, n_regions): each region's exact share of the answered class's
centred logit (:func:`fmri_edge.training.model.contribution_weights`); the metadata's
``explanation`` says which kind of per-region explanation a model gives and what its numbers mean.
"""

from __future__ import annotations

import contextlib
import logging
import datetime as dt
import io
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fmri_edge import valence
import fmri_edge
from fmri_edge.model.runtime import (
    ADAPT_INPUTS,
    ALIGN_INPUTS,
    CONTRIBUTION_OUTPUT,
    EXTRA_OUTPUTS,
    METADATA_KEY,
    OUTPUT_NAMES,
    Model,
    file_sha256,
)
from fmri_edge.training.model import ValenceNet, class_rule_matrix, contribution_weights


@dataclass
class ExportRecipe:
    opset: int = 20
    n_times: int = 25
    atol: float = 1e-4  # largest |onnxruntime − torch| allowed on any output
    parity_batches: list = field(default_factory=lambda: [1, 7, 256])
    source: str = ""


def load_export_recipe(path: str | Path | None) -> ExportRecipe:
    if path is None:
        return ExportRecipe()
    raw = tomllib.loads(Path(path).read_text())
    return ExportRecipe(**raw, source=str(path))


CONTRIBUTING_KINDS = ("LinearNet", "LowRankNet")


def contributing(members) -> bool:
    """Can the members' CLASS logits be split exactly into per-region contributions? True when
    every member's last step is linear in per-region features (``forward_features`` laid out
    region-major, (B, regions · k)) and it has a CLASS head."""
    return all(type(m).__name__ in CONTRIBUTING_KINDS and "class" in m.cfg.heads for m in members)


def explanation_metadata(members) -> dict:
    """What a model's per-region explanation is (metadata ``explanation``), by the members' kind."""
    if contributing(members):
        const = torch.stack([contribution_weights(m)[1] for m in members]).mean(0)
        return {
            "kind": "contribution",
            "output": CONTRIBUTION_OUTPUT,
            "units": "logit (log-odds)",
            "what": "each region's contribution to the answered CLASS's logit, centred over the classes "
            "(log p(answer) − mean over classes of log p); with the constant they sum exactly to it"
            + (" (an ensemble: to the members' mean centred logit)" if len(members) > 1 else ""),
            "reference": "a representation of 0: with subject alignment, the participant's own average trial "
            "(its regions all contribute 0)",
            "constant": [round(float(c), 7) for c in const],
        }
    if any(getattr(m, "input_se", None) is not None for m in members):
        return {
            "kind": "attention",
            "output": "region_weights",
            "units": "SE gate weight in (0, 1)",
            "what": "the input squeeze-and-excitation block's weight per region: the gain by which the network "
            "multiplies the region's time course (attention, not a share of the answer)",
        }
    return {
        "kind": None,
        "what": "no per-region explanation: the networks are neither linear in per-region "
        "features nor have an input SE block",
    }


class Ensemble(nn.Module):
    """Average of member networks per task; always answers both CLASS and LEVEL.

    A task no member predicts is derived: CLASS from LEVEL probabilities (sign of the level),
    LEVEL from CLASS probabilities (the class-only baseline −1 → −3, 0 → 0, 1 → 2).
    """

    def __init__(
        self, members: list[ValenceNet], n_regions: int = 246, level_from_class: str = "class_rule"
    ):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.n_regions = n_regions
        sign = torch.tensor(np.sign(valence.LEVEL_VALUES))
        self.register_buffer(
            "level_to_class", torch.stack([(sign == v) for v in (-1, 0, 1)], 1).float()
        )
        # a class-only model's LEVEL probabilities: the class-only rule's one-hot map, or
        # ("frequencies") the training labels' P(LEVEL | CLASS), for Score-optimal answers
        if level_from_class == "frequencies":
            base = torch.stack([m.level_given_class for m in members]).mean(0)
        else:
            base = class_rule_matrix()
        self.register_buffer("class_to_level", base)
        self.contributing = contributing(members)

    @property
    def aligned(self) -> bool:
        return self.members[0].cfg.subject_align != "none"

    def population_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph's default alignment statistics: the members' training-population averages."""
        return (
            torch.stack([m.pop_mean for m in self.members]).mean(0),
            torch.stack([m.pop_scale for m in self.members]).mean(0),
        )

    def forward(
        self,
        trials: torch.Tensor,
        subject_mean: torch.Tensor | None = None,
        subject_scale: torch.Tensor | None = None,
    ):
        """Outputs: class_probs, level_probs, region_weights, then ``features`` (what the members'
        final layers read, side by side; once for linear members, which all read the aligned representation) and ``normalized`` (the per-trial representation before
        subject alignment, from which ``predict`` computes a participant's statistics); for
        :func:`contributing` members also ``region_contributions`` (see :func:`contribution_weights`;
        the members' mean, for the answered class, zero for regions the members do not read)."""
        probs: dict[str, list] = {"class": [], "level": []}
        weights, features, contributions = [], [], []
        x0 = self.members[0].normalize(
            trials
        )  # members share the representation (checked at export)
        if self.aligned and subject_mean is None:  # one default for all members, as in the graph
            subject_mean, subject_scale = self.population_stats()
        for m in self.members:
            z = m.align(x0, subject_mean, subject_scale)
            f = m.forward_features(z)
            features.append(f)
            if self.contributing:  # (B, C, regions seen)
                w, _ = contribution_weights(m)
                contributions.append((f.reshape(f.shape[0], 1, *w.shape[1:]) * w).sum(dim=3))
            for task, logits in m.split_heads(m.final_layer(f)).items():
                probs[task].append(torch.softmax(logits, dim=1))
            if m.input_se is not None:
                w = m.input_se.weights(z)
                if m.cfg.region_idx is not None:  # EBR: scatter into the 246 regions
                    full = torch.zeros(w.shape[0], self.n_regions, dtype=w.dtype)
                    w = full.index_copy(1, m.region_idx, w)
                weights.append(w)
        cls = torch.stack(probs["class"]).mean(0) if probs["class"] else None
        lvl = torch.stack(probs["level"]).mean(0) if probs["level"] else None
        if cls is None:
            cls = lvl @ self.level_to_class
        if lvl is None:
            lvl = cls @ self.class_to_level
        if weights:
            region_weights = torch.stack(weights).mean(0)
        else:  # models without input attention: uniform weights
            region_weights = trials.new_ones(
                (trials.shape[0], trials.shape[1])
            )  # no slicing: a Gather on
            # the last axis is slow in onnxruntime
        if all(
            type(m).__name__ == "LinearNet" for m in self.members
        ):  # they all read the same z: once
            features = features[:1]
        if not self.contributing:
            return cls, lvl, region_weights, torch.cat(features, dim=1), x0
        c = torch.stack(contributions).mean(0)
        c = c[torch.arange(c.shape[0]), cls.argmax(dim=1)]  # (B, regions seen): the answered class
        if self.members[0].cfg.region_idx is not None:
            c = c.new_zeros(c.shape[0], self.n_regions).index_copy(1, self.members[0].region_idx, c)
        return cls, lvl, region_weights, torch.cat(features, dim=1), x0, c


class AdaptationHead(nn.Module):
    """The graph's last step: a participant's correction δ of the class probabilities p, with its
    parameters as graph inputs (``adapt_bias`` (1, 3), ``adapt_scale`` (1,), ``adapt_weight``
    (F, 3) on the ``features`` output) whose defaults, all zero, make it the identity, bit for bit:

        δ = adapt_bias + adapt_scale · log max(p, ε) + features @ adapt_weight
        r = e^δ · Σp / Σ(p e^δ)          (δ = 0: r = 1 exactly)
        class_probs = p · r              (∝ p e^δ)

    and LEVEL follows: a class-only graph (``level_given_class`` M, its P(LEVEL | CLASS)) answers
    ``(p · r) @ M``, the same product as without the head; a graph with a LEVEL head l reweights
    every level by its class's r (the sign of the level), l · (r @ SIGN) · Σl / Σ(l · (r @ SIGN)).
    :meth:`fmri_edge.decoding.adapt.Correction.apply` is the numpy definition; ``fmri-edge adapt`` only
    replaces the defaults (no ``torch`` or ``onnx`` at run time). Sums are computed on both sides
    with the same operation so that at δ = 0 their ratio is exactly 1, not 1 ± rounding."""

    def __init__(self, graph: nn.Module, level_given_class: torch.Tensor | None):
        super().__init__()
        from fmri_edge.decoding.adapt import EPS_PROB, SIGN_OF_LEVEL

        self.inner, self.eps = graph, EPS_PROB  # not `graph`: torch.export's modules have a .graph
        self.register_buffer("class_of_level", torch.as_tensor(SIGN_OF_LEVEL))
        self.register_buffer("level_given_class", level_given_class)

    def corrected(self, outputs, adapt_bias, adapt_scale, adapt_weight):
        p, lvl, region_weights, features, *rest = outputs
        delta = (
            adapt_bias
            + adapt_scale * torch.log(torch.clamp_min(p, self.eps))
            + features @ adapt_weight
        )
        e = torch.exp(delta)
        r = e * (p.sum(dim=1, keepdim=True) / (p * e).sum(dim=1, keepdim=True))
        cls = p * r
        if self.level_given_class is not None:
            return (cls, cls @ self.level_given_class, region_weights, features, *rest)
        v = lvl * (r @ self.class_of_level)
        return (
            cls,
            v * (lvl.sum(dim=1, keepdim=True) / v.sum(dim=1, keepdim=True)),
            region_weights,
            features,
            *rest,
        )


class AlignedHead(AdaptationHead):
    def forward(self, trials, subject_mean, subject_scale, adapt_bias, adapt_scale, adapt_weight):
        return self.corrected(
            self.inner(trials, subject_mean, subject_scale), adapt_bias, adapt_scale, adapt_weight
        )


class UnalignedHead(AdaptationHead):
    def forward(self, trials, adapt_bias, adapt_scale, adapt_weight):
        return self.corrected(self.inner(trials), adapt_bias, adapt_scale, adapt_weight)


def adaptation_defaults(n_features: int) -> dict[str, np.ndarray]:
    """The head's inputs at the identity: every parameter zero."""
    shapes = {"adapt_bias": (1, 3), "adapt_scale": (1,), "adapt_weight": (n_features, 3)}
    return {name: np.zeros(shapes[name], dtype=np.float32) for name in ADAPT_INPUTS}


def graph_module(members: list[ValenceNet], level_from: str, trials: np.ndarray) -> nn.Module:
    """The module that :func:`export_onnx` turns into the graph: the members' Ensemble, rewritten
    for onnxruntime's kernels where a rewrite exists and answers like the original on ``trials``
    (:mod:`fmri_edge.training.fused`: CNNs channels-last, linear ensembles fused). The same
    function as ``Ensemble(members)``; ``fmri-edge bench`` also times it in PyTorch, like for like."""
    from fmri_edge.training.fused import for_inference, fused_ensemble

    n_regions = members[0].cfg.n_regions
    ens = Ensemble([m.eval() for m in for_inference(members, trials)], n_regions, level_from).eval()
    return fused_ensemble(ens, trials)


def level_from_class(members: list[ValenceNet], level_rule: str | None) -> str:
    """How a class-only ensemble's LEVEL probabilities are made (see :class:`Ensemble`)."""
    return (
        "frequencies"
        if level_rule == "min_expected_error" and all("level" not in m.cfg.heads for m in members)
        else "class_rule"
    )


def _shared_representation(members: list[ValenceNet]) -> None:
    keys = (
        "normalization",
        "baseline_s",
        "time_window",
        "time_bins",
        "region_idx",
        "subject_align",
        "n_times",
    )
    first = {k: getattr(members[0].cfg, k) for k in keys}
    for m in members[1:]:
        other = {k: getattr(m.cfg, k) for k in keys}
        if other != first:
            raise ValueError(
                f"ensemble members disagree on their representation: {first} vs {other}"
            )


def _with_default_inputs(path: Path, defaults: dict[str, np.ndarray]) -> None:
    """Give graph inputs default values: an initializer of the same name (ONNX IR ≥ 4), which
    onnxruntime uses when the input is not fed — a caller that passes only ``trials`` gets the
    training population's alignment statistics."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    have = {i.name for i in model.graph.initializer}
    for name, value in defaults.items():
        if name not in have:
            model.graph.initializer.append(
                numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
            )
    onnx.save(model, str(path))


def export_onnx(
    members: list[ValenceNet],
    out: str | Path,
    metadata: dict,
    parity_trials: np.ndarray,
    recipe: ExportRecipe | None = None,
    channels_last: bool = True,
    adaptation_head: bool = True,
) -> dict:
    """Export, check with onnx.checker, verify onnxruntime against PyTorch, embed metadata.
    Returns a report with the largest difference per output; raises if above tolerance.

    With ``channels_last`` (the default) the graph is :func:`graph_module`'s rewrite of the same
    function for onnxruntime's kernels; parity is always checked against the original networks.
    With ``adaptation_head`` (the default) the graph ends with :class:`AdaptationHead`, the identity
    at its default inputs (``False``: the graphs exported before it, for tests)."""
    import onnx

    level_from = level_from_class(members, metadata.get("level_rule"))
    recipe = recipe or ExportRecipe()
    out = Path(out)
    n_regions = members[0].cfg.n_regions
    _shared_representation(members)
    reference = Ensemble([m.eval() for m in members], n_regions, level_from).eval()
    aligned = reference.aligned
    ens = graph_module(members, level_from, parity_trials) if channels_last else reference
    example = torch.as_tensor(parity_trials[:2], dtype=torch.float32)
    pop = [t.detach().clone() for t in reference.population_stats()]
    # the graph may lay its representation out its own way (LinearEnsemble: time × regions)
    to_graph = getattr(ens, "from_reference", lambda name, value: value)
    graph_pop = [to_graph(n, t).contiguous() for n, t in zip(ALIGN_INPUTS, pop)]
    args = (example, *graph_pop) if aligned else (example,)
    input_names = ["trials", *ALIGN_INPUTS] if aligned else ["trials"]
    defaults = dict(zip(ALIGN_INPUTS, (t.numpy() for t in graph_pop))) if aligned else {}
    module = ens
    if adaptation_head:
        with torch.inference_mode():
            n_features = ens(*args)[3].shape[1]
        head = adaptation_defaults(n_features)
        # a class-only graph's LEVEL probabilities are class_probs @ its class_to_level
        level_map = (
            ens.class_to_level.detach().clone()
            if all("level" not in m.cfg.heads for m in members)
            else None
        )
        module = (AlignedHead if aligned else UnalignedHead)(ens, level_map).eval()
        args, input_names, defaults = (
            (*args, *map(torch.as_tensor, head.values())),
            [*input_names, *head],
            {**defaults, **head},
        )
    names = [
        *OUTPUT_NAMES,
        *EXTRA_OUTPUTS,
        *([CONTRIBUTION_OUTPUT] if reference.contributing else []),
    ]
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=recipe.opset,
            input_names=input_names,
            output_names=names,
            dynamic_shapes=({0: "batch"}, *([None] * (len(args) - 1))),
        )
    meta = {
        **metadata,
        "n_regions": n_regions,
        "n_times": recipe.n_times,
        "outputs": names,
        "inputs": input_names,
        "explanation": explanation_metadata(members),
        "normalized_axes": list(getattr(ens, "NORMALIZED_AXES", ("batch", "regions", "time"))),
        "fmri_edge_version": fmri_edge.__version__,
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "opset": recipe.opset,
    }
    if (
        adaptation_head
    ):  # what `fmri-edge adapt` needs to check the adapted graph against its numpy definition
        meta["adaptation_head"] = {
            "inputs": list(head),
            "level_given_class": None
            if level_map is None
            else level_map.numpy().astype(float).tolist(),
        }
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.model.producer_name = "fmri-edge"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    program.save(str(tmp), external_data=False)
    if defaults:
        _with_default_inputs(tmp, defaults)
    onnx.checker.check_model(str(tmp), full_check=True)
    from fmri_edge.model.integrity import stamp

    stamp(
        tmp
    )  # the last change to the file: metadata weights_sha256, checked whenever the model is opened

    decoder = Model(tmp)
    report = {"max_abs_diff": {}, "batches": recipe.parity_batches, "atol": recipe.atol}
    with torch.inference_mode():
        for b in recipe.parity_batches:
            x = np.ascontiguousarray(
                np.resize(parity_trials, (b, *parity_trials.shape[1:])), dtype=np.float32
            )
            # the graph's default alignment, and (aligned models) a participant's statistics fed in
            cases = [None]
            if aligned:
                cases.append(((pop[0] + 0.1 * pop[1]).numpy(), (1.5 * pop[1]).numpy()))
            for stats in cases:
                extra = [torch.as_tensor(v) for v in stats] if stats else []
                ref = [
                    to_graph(n, t.numpy())
                    for n, t in zip(names, reference(torch.as_tensor(x), *extra))
                ]
                fed = (
                    tuple(np.ascontiguousarray(to_graph(n, v)) for n, v in zip(ALIGN_INPUTS, stats))
                    if stats
                    else None
                )
                got = decoder.run(x, subject=fed, outputs=names)
                for name, r in zip(names, ref):
                    # features and representations are checked relative to their own scale
                    d = float(np.max(np.abs(got[name] - r))) / max(1.0, float(np.max(np.abs(r))))
                    report["max_abs_diff"][name] = max(d, report["max_abs_diff"].get(name, 0.0))
    worst = max(report["max_abs_diff"].values())
    report["ok"] = worst <= recipe.atol
    if not report["ok"]:
        tmp.unlink()
        raise RuntimeError(
            f"onnxruntime differs from PyTorch by {worst:.2e} > atol {recipe.atol:.0e} "
            f"({report['max_abs_diff']})"
        )
    tmp.replace(out)
    report["sha256"] = file_sha256(out)
    report["bytes"] = out.stat().st_size
    return report
