"""Checkpoint(s) → one self-describing ONNX file: raw BOLD in, probabilities out.

The graph holds everything between the file and the answer: per-trial normalization, every
member network (a CLASS net, a LEVEL net, a multi-head net or the models of several folds,
averaged), and the input SE block's region weights. The metadata (key ``fmri_edge``, JSON)
says what predict needs: shape, label values, normalization, region names, provenance.
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

import fmri_edge
from fmri_edge import scoring
from fmri_edge.runtime import METADATA_KEY, OUTPUT_NAMES, Decoder, file_sha256
from fmri_edge.training.model import SEResCNN


@dataclass
class ExportRecipe:
    opset: int = 20
    n_times: int = 25
    atol: float = 1e-4            # largest |onnxruntime − torch| allowed on any output
    parity_batches: list = field(default_factory=lambda: [1, 7, 256])
    source: str = ""


def load_export_recipe(path: str | Path | None) -> ExportRecipe:
    if path is None:
        return ExportRecipe()
    raw = tomllib.loads(Path(path).read_text())
    return ExportRecipe(**raw, source=str(path))


class Ensemble(nn.Module):
    """Average of member networks per task; always answers both CLASS and LEVEL.

    A task no member predicts is derived: CLASS from LEVEL probabilities (sign of the level),
    LEVEL from CLASS probabilities (the class-only baseline −1 → −3, 0 → 0, 1 → 2).
    """

    def __init__(self, members: list[SEResCNN], n_regions: int = 246):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.n_regions = n_regions
        sign = torch.tensor(np.sign(scoring.LEVEL_VALUES))
        self.register_buffer("level_to_class", torch.stack([(sign == v) for v in (-1, 0, 1)], 1).float())
        base = torch.zeros(3, 9)
        for c, lvl in enumerate((-3, 0, 2)):
            base[c, lvl + 4] = 1.0
        self.register_buffer("class_to_level", base)

    def forward(self, trials: torch.Tensor):
        probs: dict[str, list] = {"class": [], "level": []}
        weights = []
        for m in self.members:
            x0 = m.normalize(trials)
            for task, logits in m.split_heads(m.forward_normalized(x0)).items():
                probs[task].append(torch.softmax(logits, dim=1))
            if m.input_se is not None:
                w = m.input_se.weights(x0)
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
        else:  # vanilla models have no attention: uniform weights
            region_weights = torch.ones_like(trials[:, :, 0])
        return cls, lvl, region_weights


def export_onnx(members: list[SEResCNN], out: str | Path, metadata: dict, parity_trials: np.ndarray,
                recipe: ExportRecipe | None = None, channels_last: bool = True) -> dict:
    """Export, check with onnx.checker, verify onnxruntime against PyTorch, embed metadata.
    Returns a report with the largest difference per output; raises if above tolerance.

    With ``channels_last`` the graph computes the same function with GEMM-shaped convolutions
    (:mod:`fmri_edge.training.fastgraph`, ≈ 2× faster in onnxruntime); parity is always checked
    against the original networks."""
    import onnx

    recipe = recipe or ExportRecipe()
    out = Path(out)
    n_regions = members[0].cfg.n_regions
    reference = Ensemble([m.eval() for m in members], n_regions).eval()
    if channels_last:
        from fmri_edge.training.fastgraph import for_inference

        members = for_inference(members, parity_trials)
    ens = Ensemble([m.eval() for m in members], n_regions).eval()
    example = torch.as_tensor(parity_trials[:2], dtype=torch.float32)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(
            ens, (example,), dynamo=True, opset_version=recipe.opset,
            input_names=["trials"], output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: "batch"},),
        )
    meta = {**metadata, "n_regions": n_regions, "n_times": recipe.n_times,
            "outputs": list(OUTPUT_NAMES), "fmri_edge_version": fmri_edge.__version__,
            "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "opset": recipe.opset}
    program.model.metadata_props[METADATA_KEY] = json.dumps(meta)
    program.model.producer_name = "fmri-edge"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    program.save(str(tmp), external_data=False)
    onnx.checker.check_model(str(tmp), full_check=True)
    from fmri_edge.integrity import stamp
    stamp(tmp)  # the last change to the file: metadata weights_sha256, checked whenever the model is opened

    decoder = Decoder(tmp)
    report = {"max_abs_diff": {}, "batches": recipe.parity_batches, "atol": recipe.atol}
    with torch.inference_mode():
        for b in recipe.parity_batches:
            x = np.ascontiguousarray(np.resize(parity_trials, (b, *parity_trials.shape[1:])), dtype=np.float32)
            ref = [t.numpy() for t in reference(torch.as_tensor(x))]
            got = decoder.run(x)
            for name, r in zip(OUTPUT_NAMES, ref):
                d = float(np.max(np.abs(got[name] - r)))
                report["max_abs_diff"][name] = max(d, report["max_abs_diff"].get(name, 0.0))
    worst = max(report["max_abs_diff"].values())
    report["ok"] = worst <= recipe.atol
    if not report["ok"]:
        tmp.unlink()
        raise RuntimeError(f"onnxruntime differs from PyTorch by {worst:.2e} > atol {recipe.atol:.0e}")
    tmp.replace(out)
    report["sha256"] = file_sha256(out)
    report["bytes"] = out.stat().st_size
    return report

