"""int8 models: static QDQ quantization calibrated on real trials, and its honest accuracy check.

- :func:`quantize_int8` — fp32 ONNX → int8 ONNX (``quant_pre_process`` first, then static
  quantization in QDQ format: int8 weights, symmetric per output channel; uint8 activations,
  asymmetric, calibrated with min/max on trials exactly as the graph receives them). Only Conv,
  Gemm and MatMul are quantized (in a graph without convolutions only the Gemm, :func:`quantized_ops`):
  the in-graph per-trial normalization works on raw BOLD (≈ 1e2 … 1e5) and softmax on
  probabilities, both of which stay float32. The fmri-edge metadata is carried over with
  ``precision: int8`` and the calibration recipe added.

  Why uint8 activations (measured in docs/speed.md, "int8"): with signed int8 activations the
  convolutions whose input feeds several convolutions stay unfused — onnxruntime's s8→u8 rewrite
  for x86 does not apply to shared Q/DQ pairs — and the "int8" model is no faster than fp32; with
  uint8 activations every Conv becomes a QLinearConv (U8S8).
- :func:`cv_accuracy_change` — the accuracy cost of int8, measured on the honest
  cross-validation predictions: every fold model (``fold<k>.pt``, or an ensemble's
  ``fold<k>/member<j>.pt``) of a run folder is exported fp32
  and int8 (calibrated on that fold's *training* participants only), both predict the fold's
  held-out participants, and CLASS accuracy (and LEVEL_error, Score) are compared pooled over
  folds.
- :func:`export_int8` — both, for ``fmri-edge export --int8``: writes ``<name>.int8.onnx`` and its
  model card ``<name>.int8.md`` (sha256, accuracy change, speed against fp32, verdict).

Needs onnx and onnxruntime (training extra); torch only for :func:`cv_accuracy_change`.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge import valence
from fmri_edge.evaluation import scoring
from fmri_edge.errors import InputError
from fmri_edge.decoding.answers import participant_batches, run_by_participant
from fmri_edge.model import integrity
from fmri_edge.model.runtime import ALIGN_INPUTS, METADATA_KEY, Model, file_sha256

# What int8 must deliver to replace fp32 as the default: speed at batch 256 and accuracy (docs/speed.md).
INT8_MIN_SPEEDUP = 1.5
INT8_MAX_ACC_DROP = 0.01  # CLASS accuracy, as a fraction (1 point)
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]
# a graph without convolutions (the fused linear ensemble): only its final Gemm. Its one MatMul
# projects raw BOLD (≈ 1e2 … 1e5) over time; quantizing it (and so the input) was slower than fp32
# (docs/speed.md).
LINEAR_QUANTIZED_OPS = ["Gemm"]
CALIBRATION_BATCH = 64


def quantized_ops(model) -> list[str]:
    """The op types :func:`quantize_int8` quantizes in an ONNX ``model``."""
    return (
        QUANTIZED_OPS
        if any(n.op_type == "Conv" for n in model.graph.node)
        else LINEAR_QUANTIZED_OPS
    )


class _Trials:
    """onnxruntime CalibrationDataReader over float32 trials, a batch at a time. With
    ``participants``, each batch holds one participant's trials and, for a graph with subject
    alignment, that participant's own statistics as its alignment inputs — the activations are
    calibrated on the ranges ``predict`` feeds, not on the population defaults (for a model whose
    representation differs a lot between participants, e.g. the sustained level, the two differ
    by an order of magnitude)."""

    def __init__(
        self,
        model: Path,
        input_name: str,
        trials: np.ndarray,
        participants: np.ndarray | None = None,
        batch: int = CALIBRATION_BATCH,
    ):
        self.input_name, self.trials = input_name, trials
        if participants is None:
            self.batches = [
                (np.arange(i, min(i + batch, len(trials))), None)
                for i in range(0, len(trials), batch)
            ]
        else:
            self.batches = list(
                participant_batches(Model(model, verify=False), trials, participants, batch)
            )
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        rows, subject = self.batches[self.i]
        self.i += 1
        feeds = {self.input_name: np.ascontiguousarray(self.trials[rows], dtype=np.float32)}
        if subject is not None:
            feeds.update(
                {
                    n: np.ascontiguousarray(v, dtype=np.float32)
                    for n, v in zip(ALIGN_INPUTS, subject)
                }
            )
        return feeds

    def rewind(self):
        self.i = 0


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    calibration_source: str = "",
    per_channel: bool = True,
    fp32_model: str | Path | None = None,
    participants: np.ndarray | None = None,
) -> dict:
    """Static QDQ int8 quantization of an fmri-edge model; returns the quantization recipe.

    ``calibration``: float32 (N, regions, T) trials as the graph receives them (after any
    subject-wise normalization), e.g. all labeled training trials. ``fp32_model``: the shipped
    fp32 file this int8 model stands for, when ``fp32_path`` is another export of the same
    networks (see :func:`quantize_members`); its metadata is the one carried over.
    ``participants`` (one id per calibration trial): calibrate each participant aligned over its
    own trials, as predict runs it (see :class:`_Trials`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    src = onnx.load(str(fp32_path))
    meta = {
        p.key: p.value for p in (onnx.load(str(fp32_model)) if fp32_model else src).metadata_props
    }
    if METADATA_KEY not in meta:
        raise InputError(
            fp32_path, "no fmri-edge metadata; quantize a model written by `fmri-edge export`"
        )
    input_name = src.graph.input[0].name
    ops = quantized_ops(src)
    recipe = {
        "format": "QDQ",
        "weights": "int8, symmetric, per output channel" if per_channel else "int8, per tensor",
        "activations": "uint8, asymmetric, min/max calibration",
        "ops": ops,
        "calibration": calibration_source or f"{len(calibration)} trials",
        "calibration_trials": int(len(calibration)),
        "quant_pre_process": True,
        "source_sha256": file_sha256(fp32_path),
        "fp32_model_sha256": file_sha256(fp32_model) if fp32_model else file_sha256(fp32_path),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        contextlib.redirect_stdout(_io.StringIO()),
        contextlib.redirect_stderr(_io.StringIO()),
    ):
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        except (
            Exception
        ):  # onnxruntime's symbolic shape inference fails on some graphs (e.g. ReduceMin over
            # two axes of a dynamic batch); onnx's own shape inference is enough for these graphs
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            recipe["quant_pre_process"] = "without symbolic shape inference"
        q = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(q),
            _Trials(fp32_path, input_name, calibration, participants),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=ops,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
        model = onnx.load(str(q))
    info = json.loads(meta[METADATA_KEY])
    info["precision"] = "int8"
    info["quantization"] = recipe
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, (json.dumps(info) if k == METADATA_KEY else v)
    model.producer_name = "fmri-edge"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp_out))
    integrity.stamp(tmp_out)  # replaces the fp32 model's digest carried over with the metadata
    Model(tmp_out)  # opens and checks like predict will
    tmp_out.replace(out_path)
    return recipe


def quantize_members(
    members,
    fp32_model: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    calibration_source: str = "",
    participants: np.ndarray | None = None,
) -> dict:
    """int8 for the networks behind the shipped ``fp32_model``. Convolutional networks are quantized
    from their plain Conv export (``channels_last=False``): onnxruntime's QLinearConv runs that
    form faster than the quantized channels-last MatMuls of the fp32 export, with the same answers
    (docs/speed.md). Networks without
    convolutions (the linear ensemble) are quantized from ``fp32_model`` itself, the fused graph:
    the same graph, so also the same representation layout as its metadata says. The metadata is
    ``fp32_model``'s."""
    import torch

    from fmri_edge.training.onnx_export import export_onnx

    if not any(isinstance(mod, torch.nn.Conv1d) for m in members for mod in m.modules()):
        recipe = quantize_int8(
            fp32_model, out_path, calibration, calibration_source, participants=participants
        )
        recipe["graph"] = "quantized from the shipped fp32 graph itself"
        return recipe
    meta = Model(fp32_model).info.meta
    with tempfile.TemporaryDirectory() as tmp:
        conv = Path(tmp) / "conv.onnx"
        export_onnx(members, conv, dict(meta), calibration[:256], channels_last=False)
        recipe = quantize_int8(
            conv,
            out_path,
            calibration,
            calibration_source,
            fp32_model=fp32_model,
            participants=participants,
        )
    recipe["graph"] = "quantized from the Conv form of the same networks (fp32 ships channels-last)"
    return recipe


def _answers(out: dict, level_rule: str) -> tuple[np.ndarray, np.ndarray]:
    return valence.decide_class(out["class_probs"]), valence.decide_level(
        out["level_probs"], level_rule
    )


# ---- honest accuracy change ------------------------------------------------------------------------


def cv_accuracy_change(
    run_dir: str | Path,
    data: str | Path,
    workdir: str | Path | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """Export every fold model of ``run_dir`` fp32 and int8 and compare them on its held-out
    participants. int8 calibration uses only the fold's training participants."""
    from fmri_edge.data.io import load_icbhi
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.checkpoints import fold_models, graph_inputs

    run_dir = Path(run_dir)
    folds = fold_models(run_dir)
    if not folds:
        raise FileNotFoundError(
            f"no fold models (fold<k>.pt or fold<k>/member<j>.pt) in {run_dir}; train with "
            "the subject protocol"
        )
    subjects = load_icbhi(data)
    stored = _stored_cv_probs(run_dir / "results.json")
    own = tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(str(workdir))
    rows, pooled, inputs = [], {"fp32": [], "int8": [], "truth": []}, {}
    with own as wd:
        wd = Path(wd)
        for k, (name, members, test_p) in enumerate(folds):
            if not test_p or any(p not in subjects for p in test_p):
                raise InputError(
                    run_dir / name, f"held-out participants {test_p} not all in {data}"
                )
            cfg = members[0].cfg
            if cfg.subject_norm not in inputs:  # the same for every fold of a run: built once
                inputs[cfg.subject_norm] = graph_inputs(subjects, cfg.subject_norm)
            x, y, who = inputs[cfg.subject_norm]
            test = np.isin(who, test_p)
            meta = {
                "model_version": f"{run_dir.name}/{name}",
                "level_rule": "argmax",
                "subject_normalization": cfg.subject_norm,
            }
            fp32 = wd / f"{name}.onnx"
            int8 = wd / f"{name}.int8.onnx"
            log(
                f"{name}: export fp32, quantize int8 (calibrated on {len(set(who[~test]))} training "
                f"participants), predict {', '.join(test_p)} …"
            )
            export_onnx(members, fp32, meta, x[~test][:64])
            quantize_members(
                members,
                fp32,
                int8,
                x[~test],
                f"{int((~test).sum())} training trials of fold {k}",
                participants=who[~test],
            )
            level_rule = "argmax"
            # each held-out participant aligned over its own trials, as predict does
            f_out, q_out = (run_by_participant(Model(f), x[test], who[test]) for f in (fp32, int8))
            fc, fl = _answers(f_out, level_rule)
            qc, ql = _answers(q_out, level_rule)
            truth = y[test]
            trial_no = np.concatenate(
                [np.arange(1, len(subjects[p][0]) + 1) for p in sorted(subjects)]
            )[test]
            ref = [stored.get((w, int(t))) for w, t in zip(who[test], trial_no)]
            if stored and all(r is not None for r in ref):
                pooled.setdefault("vs_training", []).append(
                    float(np.abs(f_out["class_probs"] - np.array(ref)).max())
                )
            rows.append(
                {
                    "fold": name,
                    "test_participants": test_p,
                    "n_trials": int(test.sum()),
                    "fp32_accuracy": float(np.mean(fc == truth[:, 0])),
                    "int8_accuracy": float(np.mean(qc == truth[:, 0])),
                    "class_agreement": float(np.mean(fc == qc)),
                    "max_abs_diff_class_probs": float(
                        np.abs(f_out["class_probs"] - q_out["class_probs"]).max()
                    ),
                }
            )
            pooled["fp32"].append((fc, fl, f_out["class_probs"]))
            pooled["int8"].append((qc, ql, q_out["class_probs"]))
            pooled["truth"].append(truth)
    truth = np.concatenate(pooled["truth"])
    summary = {}
    for name in ("fp32", "int8"):
        c = np.concatenate([a for a, _, _ in pooled[name]])
        lv = np.concatenate([b for _, b, _ in pooled[name]])
        s = scoring.challenge_score(c, truth[:, 0], lv, truth[:, 1])
        summary[name] = {"CLASS_accuracy": float(np.mean(c == truth[:, 0])), **s}
    fc = np.concatenate([a for a, _, _ in pooled["fp32"]])
    qc = np.concatenate([a for a, _, _ in pooled["int8"]])
    fp = np.concatenate([p for _, _, p in pooled["fp32"]])
    qp = np.concatenate([p for _, _, p in pooled["int8"]])
    change = summary["int8"]["CLASS_accuracy"] - summary["fp32"]["CLASS_accuracy"]
    return {
        "run": str(run_dir),
        "n_folds": len(folds),
        "n_trials": int(len(truth)),
        "folds": rows,
        "pooled": summary,
        "accuracy_change_points": round(100 * change, 2),
        "class_agreement": float(np.mean(fc == qc)),
        "max_abs_diff_class_probs": float(np.abs(fp - qp).max()),
        # fp32 ONNX fold predictions against the CV predictions PyTorch stored in results.json
        "fp32_vs_training_predictions_max_abs_diff": max(pooled["vs_training"])
        if pooled.get("vs_training") and len(pooled["vs_training"]) == len(folds)
        else None,
        "accuracy_ok": bool(-change <= INT8_MAX_ACC_DROP + 1e-12),
    }


def _stored_cv_probs(results: Path) -> dict:
    """{(participant, trial): class probabilities} of the subject-CV predictions in results.json."""
    try:
        r = json.loads(results.read_text())
        preds = r["protocols"]["subject"]["predictions"]
        return {
            (p["participant"], int(p["trial"])): p["class_probs"]
            for p in preds
            if "class_probs" in p
        }
    except (OSError, KeyError, TypeError, ValueError):
        return {}


# ---- speed ----------------------------------------------------------------------------------------


def speedup(
    fp32: str | Path,
    int8: str | Path,
    trials: np.ndarray,
    batch: int = 256,
    seconds: float = 2.0,
    threads: int = 0,
) -> dict:
    """int8 vs fp32 trials/s at one batch size: interleaved rounds, median call time each."""
    x = np.ascontiguousarray(np.resize(trials, (batch, *trials.shape[1:])), dtype=np.float32)
    decs = {"fp32": Model(fp32, threads=threads), "int8": Model(int8, threads=threads)}
    times = {k: [] for k in decs}
    for d in decs.values():
        d.run(x)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or min(len(v) for v in times.values()) < 3:
        for k, d in decs.items():
            t = time.perf_counter()
            d.run(x)
            times[k].append(time.perf_counter() - t)
    tps = {k: batch / float(np.median(v)) for k, v in times.items()}
    return {
        "batch": batch,
        "fp32_trials_per_s": round(tps["fp32"], 1),
        "int8_trials_per_s": round(tps["int8"], 1),
        "speedup": round(tps["int8"] / tps["fp32"], 3),
        "calls": {k: len(v) for k, v in times.items()},
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


# ---- fmri-edge export --int8 -------------------------------------------------------------------------


def int8_path(fp32_path: str | Path) -> Path:
    p = Path(fp32_path)
    return p.with_name(p.stem + ".int8.onnx")


def export_int8(
    run_dir: str | Path,
    fp32_path: str | Path,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """The shipped fp32 model → ``<name>.int8.onnx`` calibrated on all labeled trials, with the
    accuracy change on the run's cross-validation fold models and its speed against fp32 in its card."""
    from fmri_edge.data.io import load_icbhi
    from fmri_edge.training.checkpoints import graph_inputs, load_members

    run_dir, fp32_path = Path(run_dir), Path(fp32_path)
    out = Path(out) if out else int8_path(fp32_path)
    members, _, recipe = load_members(run_dir)  # the networks `fmri-edge export` put in fp32_path
    model = members[0]
    data = Path(recipe.get("data", "../shared/data/icbhi2024/Train"))
    if not data.is_dir():
        raise FileNotFoundError(
            f"calibration needs the labeled trials the model was trained on ({data})"
        )
    x, _, who = graph_inputs(load_icbhi(data, n_times=model.cfg.n_times), model.cfg.subject_norm)
    log(f"quantizing {fp32_path} to int8, calibrated on {len(x)} real trials ({data}) …")
    out.with_suffix(".md").unlink(
        missing_ok=True
    )  # a card from an earlier export would not match the new file
    qrecipe = quantize_members(
        members,
        fp32_path,
        out,
        x,
        f"{len(x)} labeled trials ({data}), each participant aligned over its own",
        participants=who,
    )
    cv = None
    if any(run_dir.glob("fold*")):
        log("accuracy change on the cross-validation fold models (fp32 and int8 each) …")
        cv = cv_accuracy_change(run_dir, data, log=log)
    log("speed against fp32 at batch 256 …")
    speed = speedup(fp32_path, out, x)
    verdict = int8_verdict(speed, cv)
    check = {"verdict": verdict, "speed_batch_256": speed}
    if cv:
        check["cv"] = {
            k: cv[k]
            for k in (
                "run",
                "n_folds",
                "n_trials",
                "pooled",
                "accuracy_change_points",
                "class_agreement",
                "accuracy_ok",
            )
        }
    set_metadata(
        out, {"int8_check": check}
    )  # self-describing: `fmri-edge info` and `bench` read it back
    card = write_int8_card(out, fp32_path, qrecipe, cv, speed, verdict)
    return {
        "path": str(out),
        "card": str(card),
        "bytes": out.stat().st_size,
        "sha256": file_sha256(out),
        "fp32_bytes": fp32_path.stat().st_size,
        "quantization": qrecipe,
        "cv": cv,
        "speed": speed,
        "verdict": verdict,
    }


def set_metadata(path: Path, extra: dict) -> None:
    """Merge ``extra`` into an ONNX file's fmri-edge metadata, in place (atomically)."""
    import onnx

    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            p.value = json.dumps({**json.loads(p.value), **extra})
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def int8_verdict(speed: dict, cv: dict | None) -> dict:
    fast = speed["speedup"] >= INT8_MIN_SPEEDUP
    accurate = cv is not None and cv["accuracy_ok"]
    reasons = []
    if not fast:
        reasons.append(f"{speed['speedup']:.2f}× fp32 at batch 256 < {INT8_MIN_SPEEDUP}×")
    if cv is None:
        reasons.append("no cross-validation fold models to measure the accuracy change")
    elif not accurate:
        reasons.append(
            f"CLASS accuracy change {cv['accuracy_change_points']:+.2f} points < −{100 * INT8_MAX_ACC_DROP:.0f}"
        )
    return {
        "default": "int8" if fast and accurate else "fp32",
        "fast_enough": fast,
        "accurate_enough": accurate,
        "reasons": reasons,
    }


def write_int8_card(
    path: Path, fp32_path: Path, qrecipe: dict, cv: dict | None, speed: dict, verdict: dict
) -> Path:
    size, fp32_size = path.stat().st_size, fp32_path.stat().st_size
    lines = [
        f"# {path.stem}",
        "",
        f"int8 version of `{fp32_path.name}` (static quantization, QDQ format). Same inputs, outputs and "
        f"metadata; only {', '.join(qrecipe['ops'])} run{'s' * (len(qrecipe['ops']) == 1)} in int8 (normalization"
        + (
            ", the projection of raw BOLD over time"
            if qrecipe["ops"] == LINEAR_QUANTIZED_OPS
            else ""
        )
        + " and softmax stay float32).",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{path.name}`, {size / 1e6:.1f} MB ({fp32_size / size:.1f}× smaller than fp32) |",
        f"| sha256 | `{file_sha256(path)}` |",
        f"| fp32 model | `{fp32_path.name}`, sha256 `{qrecipe['fp32_model_sha256'][:16]}…`"
        + (f"; {qrecipe['graph']}" if qrecipe.get("graph") else "")
        + " |",
        f"| quantization | {qrecipe['format']}; weights {qrecipe['weights']}; activations {qrecipe['activations']}; "
        f"`quant_pre_process` first; calibrated on {qrecipe['calibration']} |",
        f"| speed | {speed['int8_trials_per_s']:.0f} vs {speed['fp32_trials_per_s']:.0f} trials/s at batch "
        f"{speed['batch']} (**{speed['speedup']:.2f}×** fp32; load average {speed['load_average'][0]:.1f} "
        "while measured; `fmri-edge bench` for the full comparison) |",
        (
            "| verdict | **int8 qualifies as the default model**: ≥ "
            f"{INT8_MIN_SPEEDUP}× fp32 at batch 256 and a CLASS accuracy change ≥ −{100 * INT8_MAX_ACC_DROP:.0f} point |"
            if verdict["default"] == "int8"
            else f"| verdict | **fp32 stays the default**; int8 is optional: {'; '.join(verdict['reasons'])} |"
        ),
        "",
        "## Accuracy change, measured on the honest cross-validation predictions",
        "",
    ]
    if cv is None:
        lines.append(
            "Not measured: the run folder holds no fold models (`fold<k>.pt` or `fold<k>/member<j>.pt`)."
        )
    else:
        f, q = cv["pooled"]["fp32"], cv["pooled"]["int8"]
        lines += [
            f"Every cross-subject fold model of `{cv['run']}` ({cv['n_folds']} folds) was exported fp32 and int8 "
            "(int8 calibrated on that fold's training participants only); both predicted the fold's held-out "
            f"participants ({cv['n_trials']} trials pooled).",
            "",
            "| | CLASS accuracy | CLASS_error | LEVEL_error | Score |",
            "|---|---|---|---|---|",
            f"| fp32 | {f['CLASS_accuracy']:.4f} | {f['CLASS_error']:.4f} | {f['LEVEL_error']:.4f} | {f['Score']:.4f} |",
            f"| int8 | {q['CLASS_accuracy']:.4f} | {q['CLASS_error']:.4f} | {q['LEVEL_error']:.4f} | {q['Score']:.4f} |",
            "",
            f"CLASS accuracy change **{cv['accuracy_change_points']:+.2f} points** (allowed: ≥ −{100 * INT8_MAX_ACC_DROP:.0f}); "
            f"int8 and fp32 give the same CLASS on {100 * cv['class_agreement']:.1f} % of trials; largest "
            f"|Δ class probability| {cv['max_abs_diff_class_probs']:.3f}."
            + (
                f" The fp32 exports reproduce the cross-validation predictions PyTorch stored in results.json "
                f"(max |Δ| {cv['fp32_vs_training_predictions_max_abs_diff']:.1e})."
                if cv.get("fp32_vs_training_predictions_max_abs_diff") is not None
                else ""
            ),
            "",
            "| fold | held out | trials | fp32 acc | int8 acc | same CLASS |",
            "|---|---|---|---|---|---|",
        ]
        for r in cv["folds"]:
            lines.append(
                f"| {r['fold']} | {', '.join(r['test_participants'])} | {r['n_trials']} | "
                f"{r['fp32_accuracy']:.3f} | {r['int8_accuracy']:.3f} | {100 * r['class_agreement']:.0f} % |"
            )
    card = path.with_suffix(".md")
    card.write_text("\n".join(lines) + "\n")
    return card
