"""Commands about one model file: adapt (a participant's own model from a few labeled trials) and
info (what the file says about itself). numpy + onnxruntime only."""

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from fmri_edge.cli.common import NoVerify, Table, app, err, out, user_errors
from fmri_edge.cli.common import report_problems as _report_problems
from fmri_edge.cli.decode import PANEL
from fmri_edge.errors import InputError


@app.command(rich_help_panel=PANEL)
def adapt(
    trials: Annotated[
        list[Path],
        typer.Argument(
            help="One participant's trials: .npy/.npz files or an ICBHI subject "
            "folder (all of them are aligned together, as predict does).",
            show_default=False,
        ),
    ],
    labels: Annotated[
        Path,
        typer.Option(
            help="Labels of some of these trials: ICBHI labels.npz (rows = trials 1, "
            "2, … in order) or a CSV with columns Participant,Trial,CLASS[,LEVEL].",
            show_default=False,
        ),
    ],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The adapted model (.onnx); its model card is written beside it (.md).",
            show_default=False,
        ),
    ],
    model: Annotated[
        Optional[Path], typer.Option(help="Base ONNX model (default: the shipped one).")
    ] = None,
    method: Annotated[
        Literal["bias", "scale_bias", "features"],
        typer.Option(
            help="bias: one offset per class on the log probabilities; scale_bias: also a temperature; features: a new "
            "final layer on the model's features (all shrunk toward the shipped model)."
        ),
    ] = "features",
    # defaults: fmri_edge.decoding.adapt.DEFAULT_METHOD / DEFAULT_SHRINKAGE (chosen by train/research/adapt_cv.py)
    shrinkage: Annotated[
        Optional[float],
        typer.Option(
            help="L2 pull toward the shipped model, in labeled trials (larger: closer to the base model). Default: "
            "10 for models with subject alignment, 0.3 without (chosen by cross-validation, docs/results.md).",
            min=1e-6,
            show_default=False,
        ),
    ] = None,
    participant: Annotated[
        Optional[str],
        typer.Option(
            help="Treat every input as this one participant's trials (several files of one person)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file and card.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of a table.")
    ] = False,
    threads: Annotated[
        int, typer.Option(help="onnxruntime threads (0 = one per core).", min=0)
    ] = 0,
):
    """Adapt a model to one participant from a few of its labeled trials (no torch): writes a new
    self-describing ONNX for that participant, which predict --model uses like any model."""
    from fmri_edge.decoding import adapt as lib

    with user_errors():
        r = lib.adapt(
            trials, labels, model, out_path, method, shrinkage, participant, force, threads=threads
        )
    _report_problems([p for p in r.problems if p.outcome != "predicted"], None)
    a = r.correction.summary()
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(r.out),
                    "card": str(r.card),
                    "participant": r.participant,
                    "k": r.k,
                    "n_trials": r.n_trials,
                    "correction": a,
                    "changed": r.changed,
                    "answers_before": r.before.tolist(),
                    "answers_after": r.after.tolist(),
                    "labeled_accuracy": list(r.fit_accuracy),
                    "seconds": round(r.seconds, 3),
                }
            )
        )
        return
    t = Table(
        title=f"adapted to {r.participant} from K = {r.k} labeled trials ({r.n_trials} trials seen)",
        title_justify="left",
        show_header=False,
    )
    t.add_column(style="bold")
    t.add_column()
    t.add_row("method", f"{a['method']}, shrinkage λ = {a['shrinkage']:g}")
    t.add_row(
        "log-probability offsets",
        "  ".join(
            f"{c:+d}: {b:+.3f}" if c else f"0: {b:+.3f}" for c, b in zip((-1, 0, 1), a["bias"])
        ),
    )
    if "scale" in a:
        t.add_row("temperature term", f"{a['scale']:+.3f} · log p")
    if "weight_norm" in a:
        t.add_row("feature weights", f"‖ΔW‖ = {a['weight_norm']:.4f}")
    t.add_row(
        "answers changed",
        f"{r.changed} of {r.n_trials} trials; CLASS −1/0/+1: "
        f"{'/'.join(map(str, r.before))} → {'/'.join(map(str, r.after))}",
    )
    t.add_row(
        "labeled trials right",
        f"{r.fit_accuracy[0]:.2f} → {r.fit_accuracy[1]:.2f} (the trials it was "
        "fitted on: not a measure of benefit, see docs/results.md)",
    )
    t.add_row(
        "checked",
        f"adapted ONNX vs its numpy definition on the {r.n_trials} trials: max |diff| "
        f"{r.max_check_diff:.1e}; {r.seconds:.2f} s",
    )
    out.print(t)
    err.print(
        f"wrote {r.out} and {r.card} — next: fmri-edge predict {' '.join(map(str, trials))} "
        f"--model {r.out}",
        highlight=False,
    )


# ---- info, simulate ------------------------------------------------------------------------------------


@app.command(rich_help_panel=PANEL)
def info(
    model: Annotated[
        Optional[Path], typer.Argument(help="ONNX model (default: the shipped one).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full metadata as JSON.")
    ] = False,
    no_verify: NoVerify = False,
):
    """What an fmri-edge ONNX file says about itself."""
    from fmri_edge.model.runtime import Model

    from fmri_edge.model.metadata_types import check_types

    with user_errors():
        d = Model(model, verify=not no_verify)
        meta = d.info.meta
        if not as_json:
            check_types(d.path, meta)  # a field of an unexpected type: one line, not a traceback
    if as_json:
        print(json.dumps(meta))
        return
    t = Table(title=str(d.path), title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row(
        "input",
        f"trials: (batch, {d.info.n_regions} regions, {d.info.n_times} s) raw BOLD, float32",
    )
    if d.aligned:
        t.add_row(
            "optional inputs",
            f"subject_mean, subject_scale {d.align_shape}: one participant's alignment "
            "statistics (default: the training population's)",
        )
    t.add_row("outputs", ", ".join(meta.get("outputs", [])))
    t.add_row("CLASS / LEVEL", f"{list(d.info.class_values)} / {list(d.info.level_values)}")
    heads = meta.get("heads", {})
    t.add_row(
        "LEVEL",
        f"LEVEL head, {d.info.level_rule}"
        if "level" in heads or not heads
        else f"from CLASS: {meta.get('level_from_class') or 'the class-only rule −1 → −3, 0 → 0, 1 → 2'} "
        "(no LEVEL head)",
    )
    with user_errors():
        try:
            described = _describe(meta)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
            raise InputError(
                d.path,
                f"its metadata has a field of an unexpected shape ({type(e).__name__}: "
                f"{str(e)[:80]}); `fmri-edge info --json` prints it as stored; re-export the "
                "model",
            ) from None
    for key, v in described.items():
        t.add_row(key, v)
    if "explanation" not in meta:  # exported before the key existed: what the outputs say
        from fmri_edge.explanation.regions import KINDS

        t.add_row(
            "explanation",
            f"{d.explanation} per region: {KINDS[d.explanation].what}"
            if d.explanation
            else "none (neither region contributions nor region attention)",
        )
    t.add_row("weights", _integrity_row(d.integrity))
    names = d.info.region_names
    t.add_row("regions", f"{len(names)}: {', '.join(names[:4])} … {names[-1]}")
    out.print(t)


def _integrity_row(status: str) -> str:
    from fmri_edge.model import integrity

    return {
        integrity.VERIFIED: f"{integrity.DIGEST_KEY} verified: weights and graph as exported",
        integrity.UNVERIFIABLE: f"not verifiable: exported without a {integrity.DIGEST_KEY} (export it again "
        "to add one)",
        integrity.NOT_CHECKED: "not checked (--no-verify)",
    }[status]


def _study_rows(study: dict | None) -> dict[str, str]:
    """A lab's own decoder (``train --data``): its labels, window and what its CV estimates."""
    if not study:
        return {}
    rows = {}
    lab = study.get("labels")
    if lab:
        level = lab.get("level") or {}
        rows["study labels"] = (
            f"CLASS from column {lab.get('class_column')!r}: "
            + ", ".join(
                f"{k} → {v:+d}" if v else f"{k} → 0"
                for k, v in (lab.get("class_map") or {}).items()
            )
            + "; LEVEL "
            + (
                f"from {level['column']!r}, scale {level['scale'][0]:g}…{level['scale'][1]:g} "
                "→ −4…4"
                if level.get("column")
                else "not rated: the class-only rule (this model answers CLASS only)"
            )
        )
    w = study.get("window")
    if w:
        rows["study window"] = (
            f"{w['n_times']} s per trial from onset − {w['baseline_s']:g} s, {w['n_regions']} regions"
        )
    ps = study.get("participants") or []
    rows["study data"] = (
        f"{study.get('data')}: {len(ps)} participants"
        + (f" ({ps[0]}…{ps[-1]})" if ps else "")
        + f", {study.get('n_trials')} trials; CV groups: {study.get('groups')}"
    )
    cv = study.get("cv")
    if cv:
        perm = cv.get("permutation")
        rows["study CV"] = (
            f"{cv['metric']} {cv['estimate']:.3f} (95% interval {cv['interval_95'][0]:.3f}–"
            f"{cv['interval_95'][1]:.3f}, {cv['n_trials']} trials, {cv['n_folds']} folds); chance "
            f"{cv['chance']['binomial_threshold']:.3f} (binomial, α {cv['chance']['alpha']:g})"
            + (f"; permutation p {perm['p']:.3g} ({perm['n']})" if perm else "")
            + ". "
            + cv.get("estimates", "")
        )
    return rows


def _describe(meta: dict) -> dict[str, str]:
    """Readable one-line summaries of the model's metadata for `info`."""
    rows = {k: str(meta[k]) for k in ("model_version", "architecture") if k in meta}
    norm = meta.get("normalization") or {}
    if norm:
        rows["normalization"] = (
            f"{norm.get('per_trial')} per trial, inside the graph"
            + (
                ", plus each region's sustained level (log mean raw BOLD)"
                if norm.get("trial_level")
                else ""
            )
            + (
                f"; {meta['subject_normalization']} per subject before it"
                if meta.get("subject_normalization")
                else ""
            )
        )
    align = meta.get("subject_alignment")
    rows["subject alignment"] = (
        f"{align['mode']} of each participant's representation over its own trials, inside the graph; predict "
        f"aligns every participant with ≥ {align['min_trials']} trials (subject folder, file, or --participant); "
        "fewer trials or --no-align: the training population's statistics"
        + ("; the sustained-level step neutral" if norm.get("trial_level") else "")
        if align
        else "none (every trial is answered on its own)"
    )
    expl = meta.get("explanation") or {}
    if expl.get("kind"):
        rows["explanation"] = (
            f"{expl['kind']} per region (output {expl.get('output')}): {expl.get('what')}"
        )
    if meta.get("recipe"):
        rerun = (
            f"--data {meta['study']['data']}"
            if (meta.get("study") or {}).get("data")
            else f"--config {meta['recipe']}"
        )
        rows["recipe"] = (
            f"{meta['recipe']} (re-run its CV: fmri-edge train {rerun} --protocol subject --no-final)"
        )
    tr = meta.get("training") or {}
    if tr:
        ps = tr.get("participants") or []
        fitted = (
            f"L-BFGS to convergence, C = {tr.get('C')}"
            if tr.get("solver") == "lbfgs"
            else f"{tr.get('epochs')} epochs"
        )
        rows["training"] = (
            f"{tr.get('recipe')}, {len(ps)} subjects ({ps[0]}…{ps[-1]}), {fitted}"
            + (", ensemble of fold models" if tr.get("ensemble_of_folds") else "")
            + f", commit {tr.get('git_commit')}"
            if ps
            else json.dumps(tr)
        )
    from fmri_edge.evaluation.splits import PROTOCOL_LABEL

    for protocol, m in (meta.get("metrics") or {}).items():
        rows[f"measured: {PROTOCOL_LABEL.get(protocol, protocol)}"] = (
            f"CLASS acc {m['CLASS_accuracy']:.3f} ± {m['CLASS_accuracy_folds_std']:.3f}, F1 {m['CLASS_f1']:.3f}, "
            f"LEVEL_error {m['LEVEL_error']:.4f}, Score {m['Score']:.4f} "
            f"({m['n_folds']} {'seeds' if protocol == 'random' else 'folds'})"
        )
    rows.update(_study_rows(meta.get("study")))
    a = meta.get("adaptation")
    if a:
        extra = "".join(f", {k} {a[k]}" for k in ("scale", "weight_norm") if k in a)
        rows["adapted to"] = (
            f"participant {a.get('participant')} from K = {a.get('k')} labeled trials "
            f"({a.get('labels')}), {a.get('method')}, shrinkage {a.get('shrinkage')}, "
            f"bias {a.get('bias')}{extra}; {a.get('adapted')}"
        )
        rows["base model"] = (
            f"{a.get('base_model')} ({a.get('base_model_version')}), sha256 {a.get('base_sha256')}"
        )
    if meta.get("atlas"):
        from fmri_edge.imaging.atlas_provenance import describe

        rows["atlas"] = describe(meta["atlas"]) + " (the atlas that made the training trials)"
    for k in ("members", "fmri_edge_version", "exported", "opset"):
        if k in meta:
            rows[k] = str(meta[k])
    return rows
