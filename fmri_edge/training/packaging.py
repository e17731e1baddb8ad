"""A training run folder → the shipped artefacts: ONNX model (with metadata) and its model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


from fmri_edge.errors import InputError
from fmri_edge.decoding.answers import MIN_ALIGN_TRIALS
from fmri_edge.evaluation.splits import PROTOCOL_LABEL
from fmri_edge.training.onnx_export import explanation_metadata, export_onnx, load_export_recipe
from fmri_edge.training.checkpoints import graph_trials, load_members


def _metrics(results: dict) -> dict:
    """The headline numbers per protocol, for metadata and the card."""
    out = {}
    for protocol, r in results.get("protocols", {}).items():
        s = r["summary"]
        out[protocol] = {
            "CLASS_accuracy": round(s["CLASS"]["accuracy"], 4),
            "CLASS_f1": round(s["CLASS"]["f1"], 4),
            "CLASS_accuracy_folds_std": round(s["CLASS"]["accuracy_folds_std"], 4),
            "LEVEL_f1": round(s["LEVEL"]["f1"], 4),
            "CLASS_error": s["CLASS_error"],
            "LEVEL_error": s["LEVEL_error"],
            "Score": s["Score"],
            "n_folds": len(r["folds"]),
        }
    return out


def study_provenance(results: dict) -> dict | None:
    """What a lab's own decoder carries about its study: the data, participants, CV groups, label map,
    rating scale, window, and the CV's estimate with its interval, chance level and permutation p."""
    ev, labels = results.get("evaluation"), results.get("study_labels")
    if not ev and not labels:
        return None
    out = {
        "data": results.get("data"),
        "participants": results.get("participants"),
        "groups": results.get("groups"),
        "n_trials": results.get("n_trials"),
    }
    if labels:
        out["labels"] = {
            k: labels.get(k) for k in ("class_column", "class_map", "level", "min_gap_s")
        }
        out["window"] = labels.get("window")
    if ev:
        out["cv"] = {
            k: ev.get(k)
            for k in (
                "metric",
                "estimate",
                "interval_95",
                "interval_method",
                "n_trials",
                "n_participants",
                "n_folds",
                "chance",
                "permutation",
                "estimates",
            )
        }
        out["cv"]["level"] = ev.get("level")
        if ev.get("studies"):
            out["cv"]["studies"] = ev["studies"]
    if results.get("studies"):  # train --data A --data B: the pooled studies
        out["studies"] = results["studies"]
    return out


def export_run(
    run_dir: str | Path,
    export_recipe: str | Path | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    force: bool = False,
    int8: bool = False,
) -> dict:
    """``force``: overwrite an existing ONNX file and its card (else refused before any work, like
    every other writer)."""
    from fmri_edge.training.checkpoint_errors import read_results

    run_dir = Path(run_dir)
    ckpt_path = run_dir / "model.pt"
    if not run_dir.is_dir():
        raise InputError(
            run_dir,
            "no such run folder; run `fmri-edge train` first (it writes runs/<recipe name>/), "
            "or give --run RUN_FOLDER",
        )
    if (
        (run_dir / "results.json").is_file()
        and not ckpt_path.is_file()
        and json.loads((run_dir / "results.json").read_text()).get("export")
        == "refused: --protocol within"
    ):
        from fmri_edge.training.within import EXPORT_REFUSED

        raise InputError(run_dir, EXPORT_REFUSED)
    if not ckpt_path.is_file():
        raise InputError(
            ckpt_path, "no checkpoint; run `fmri-edge train --config train/<recipe>.toml` first"
        )
    results = read_results(run_dir / "results.json")
    members, ckpt, recipe = load_members(
        run_dir
    )  # model.pt (and member<j>.pt: one network per subject group)
    model = members[0]
    default = Path("export/default.toml")
    er = load_export_recipe(export_recipe or (default if default.is_file() else None))
    if (
        export_recipe is None
    ):  # the default recipe's opset and tolerance, the trained model's trial length
        er.n_times = model.cfg.n_times
    if er.n_times != model.cfg.n_times:
        raise InputError(
            er.source or "export recipe",
            f"n_times={er.n_times} but the model was trained with {model.cfg.n_times}",
        )
    name = recipe["name"]
    # a lab's own run (train --data) never lands on the shipped model's file by default
    out = (
        Path(out)
        if out
        else run_dir / "model.onnx"
        if results.get("own_data")
        else Path("models") / f"{name}.onnx"
    )
    targets = [out, out.with_suffix(".md")]  # the ONNX file and its model card beside it
    if int8:  # and export --int8's file and card
        q = out.with_name(out.stem + ".int8.onnx")
        targets += [q, q.with_suffix(".md")]
    for target in targets:
        if target.is_dir():
            raise InputError(target, "is a folder; give a file name for --out")
        if target.exists() and not force:
            raise InputError(target, "exists; use --force to overwrite (or --out another file)")
    trials, parity_source = graph_trials(recipe["data"], er.n_times, model.cfg.subject_norm)
    cfg = model.cfg
    kind = (
        "linear model (multinomial logistic regression) on the representation"
        if cfg.kind == "linear"
        else "SE residual 1-D CNN (Lin & Lee, ICBHI 2024)" + ("" if cfg.se else ", vanilla (no SE)")
    )
    metadata = {
        "model_version": f"{name}@{results.get('git_commit') or 'unknown'}",
        "architecture": kind
        + (f", EBR regions {recipe.get('regions')}" if cfg.region_idx else "")
        + (
            f", ensemble of {len(members)} networks (one per subject group)"
            if len(members) > 1
            else ""
        ),
        "recipe": recipe.get("source") or name,
        "baseline_s": cfg.baseline_s,
        "normalization": {
            "per_trial": cfg.normalization,
            "baseline_s": cfg.baseline_s,
            "inside_graph": True,
            "time_window": cfg.time_window,
            "time_bins": cfg.time_bins,
            "trial_level": cfg.trial_level,
        },
        # the recipe keeps it as [model] subject_norm ("none" | "zscore" | "center")
        "subject_normalization": None
        if getattr(cfg, "subject_norm", "none") == "none"
        else cfg.subject_norm,
        "subject_alignment": None
        if cfg.subject_align == "none"
        else {
            "mode": cfg.subject_align,
            "inside_graph": True,
            "inputs": ["subject_mean", "subject_scale"],
            "statistics_of": "output `normalized`, over all of one participant's trials",
            "min_trials": MIN_ALIGN_TRIALS,
            "default": "the training participants' average statistics (fewer trials, or --no-align)"
            + ("; the sustained-level step neutral (its z-score 0)" if cfg.trial_level else ""),
        },
        "class_values": [-1, 0, 1],
        "level_values": list(range(-4, 5)),
        "level_rule": recipe["eval"]["level_rule"],
        "level_from_class": None
        if "level" in cfg.heads
        else (
            "P(LEVEL | CLASS) of the training labels; LEVEL = least expected LEVEL_error (Score-optimal)"
            if recipe["eval"]["level_rule"] == "min_expected_error"
            else "class-only rule −1 → −3, 0 → 0, 1 → 2"
        ),
        "heads": cfg.heads,
        "members": len(members),
        "region_attention": any(getattr(m, "input_se", None) is not None for m in members),
        "explanation": explanation_metadata(members),
        "region_names": list(ckpt["region_names"]),
        "training": {
            "recipe": recipe.get("source") or name,
            "data": recipe["data"],
            "participants": list(ckpt["participants"]),
            "epochs": int(ckpt["epochs"]),
            "solver": recipe.get("optim", {}).get("solver", "radam"),
            "C": recipe.get("optim", {}).get("C"),
            "ensemble_of_folds": len(members) > 1,
            "git_commit": results.get("git_commit"),
            "started": results.get("started"),
        },
        "metrics": _metrics(results),
    }
    study = study_provenance(results)
    if study:
        metadata["study"] = study
    atlas = results.get("atlas") or (results.get("study_labels") or {}).get("atlas")
    if isinstance(
        atlas, dict
    ):  # the atlas that made the training trials: predict warns on trials of another
        metadata["atlas"] = atlas
    log(f"exporting {len(members)} network(s) from {run_dir} …")
    parity = export_onnx(members, out, metadata, trials, er)
    card = write_model_card(
        out, metadata, parity, parity_source, results, er.source or "export/default.toml"
    )
    return {"path": str(out), "card": str(card), "parity": parity, "parity_source": parity_source}


def _study_lines(study: dict) -> list[str]:
    """The card's account of a lab's own decoder (train --data): what the CV estimates, and how sure."""
    cv = study.get("cv") or {}
    lines = [
        f"Every number comes from `fmri-edge train --data {study.get('data')}` (results in the run folder's "
        f"`results.json`, per fold and per participant in `cv_folds.csv` and `cv_participants.csv`). CV groups: "
        f"{study.get('groups')}; every held-out participant was answered by a model that never saw it.",
        "",
    ]
    if cv:
        perm = cv.get("permutation")
        lines += [
            f"**{cv['metric']} {cv['estimate']:.3f}**, 95 % interval {cv['interval_95'][0]:.3f}–"
            f"{cv['interval_95'][1]:.3f} ({cv['interval_method']}), over {cv['n_trials']} held-out trials; "
            f"chance: {cv['chance']['binomial_threshold']:.3f} ({cv['chance']['meaning']})"
            + (
                f"; permutation p = {perm['p']:.3g} ({perm['n']} permutations, {perm['method']})"
                if perm
                else ""
            )
            + ". "
            + cv.get("estimates", ""),
            "",
        ]
    if study.get("studies"):
        lines += [
            "Pooled studies: "
            + "; ".join(
                f"`{s['name']}` ({s['path']}: {s['participants']} participants, "
                f"{s['trials']} trials)"
                for s in study["studies"]
            )
            + ". Participants are named STUDY/participant.",
            "",
        ]
    lab = study.get("labels")
    if lab:
        lines += [
            f"Labels: CLASS from column `{lab['class_column']}` ({', '.join(f'{k} → {v}' for k, v in lab['class_map'].items())}); "
            f"LEVEL: {lab['level']['LEVEL']}.",
            "",
        ]
    return lines


def write_model_card(
    onnx_path: Path, meta: dict, parity: dict, parity_source: str, results: dict, export_recipe: str
) -> Path:
    t = meta["training"]
    lines = [
        f"# {onnx_path.stem}",
        "",
        f"{meta['architecture']}. Raw BOLD in (batch × regions × seconds), CLASS and LEVEL probabilities"
        + (" and per-region SE attention" if meta.get("region_attention") else "")
        + (
            " and each region's exact contribution to the answered class's logit (`region_contributions`)"
            if (meta.get("explanation") or {}).get("kind") == "contribution"
            else ""
        )
        + " out"
        + (
            ", with the participant's alignment statistics as optional inputs"
            if meta.get("subject_alignment")
            else ""
        )
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{onnx_path.name}`, {parity['bytes'] / 1e6:.1f} MB |",
        f"| sha256 | `{parity['sha256']}` |",
        f"| version | `{meta['model_version']}` |",
        f"| training data | {t['data']}, {len(t['participants'])} labeled participants "
        f"({', '.join(t['participants'])}), {results.get('n_trials', '?')} trials |",
        f"| recipe | `{t['recipe']}`, "
        + (
            f"{meta['members']} networks, one validated on each subject group and "
            f"trained on the others (median {t['epochs']} epochs), probabilities averaged in the graph"
            if t["ensemble_of_folds"]
            else f"L-BFGS to convergence of the logistic-regression objective (C = {t['C']:g}) "
            "on all subjects, from zero weights (deterministic)"
            if t.get("solver") == "lbfgs"
            else f"{t['epochs']} epochs on all subjects"
        )
        + " |",
        f"| normalization | {meta['normalization']['per_trial']} per trial, inside the graph"
        + (
            ", plus each region's sustained level (log mean raw BOLD over the time window) as one more step"
            if meta["normalization"].get("trial_level")
            else ""
        )
        + (
            f"; {meta['subject_normalization']} per subject before the graph"
            if meta.get("subject_normalization")
            else ""
        )
        + (
            f"; subject alignment ({meta['subject_alignment']['mode']} of the representation over each participant's "
            f"own trials, inside the graph; fewer than {meta['subject_alignment']['min_trials']} trials: the training "
            "population's statistics"
            + (
                ", the sustained-level step neutral"
                if meta["normalization"].get("trial_level")
                else ""
            )
            + ")"
            if meta.get("subject_alignment")
            else ""
        )
        + " |",
        "| LEVEL | "
        + (
            f"LEVEL head, {meta['level_rule']}"
            if "level" in meta["heads"]
            else f"from CLASS: {meta['level_from_class']} (no LEVEL head)"
        )
        + " |",
        *(
            [
                f"| atlas | `{meta['atlas'].get('file')}`, sha256 `{meta['atlas'].get('sha256')}`, grid "
                f"{meta['atlas'].get('grid')}, voxel {'×'.join(f'{v:g}' for v in meta['atlas'].get('voxel_mm') or [])} mm, "
                f"space {meta['atlas'].get('space')} |"
            ]
            if isinstance(meta.get("atlas"), dict)
            else []
        ),
        f"| export | `{export_recipe}`, opset {meta.get('opset', 20)}; parity vs PyTorch on {parity_source}: "
        f"max abs diff "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity["max_abs_diff"].items())
        + f" (atol {parity['atol']:.0e}) |",
        "",
        "## Measured",
        "",
        *(
            _study_lines(meta["study"])
            if meta.get("study") and results.get("own_data")
            else [
                "Every number comes from `fmri-edge train --config "
                + str(t["recipe"])
                + "` (results in "
                "`runs/<name>/results.json`). The random split puts the same subjects in training and test and is "
                "**optimistic**; the subject protocol holds out whole groups ("
                + str(results.get("groups") or "order-mate groups")
                + ") and chooses any checkpoint on an inner validation group, never on the held-out "
                "subjects.",
                "",
                "How the recipe was chosen: `docs/research.md`; every variant and the paper's table: `docs/results.md`. "
                "A recipe picked among candidates reads a little better on its own CV below than the picking did: "
                "`docs/research.md` gives the nested estimate, choice included.",
                "",
            ]
        ),
        "| protocol | folds | CLASS acc (± fold std) | CLASS F1 | LEVEL F1 | CLASS_error | LEVEL_error | Score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for protocol, m in meta["metrics"].items():
        label = PROTOCOL_LABEL.get(protocol, protocol)
        lines.append(
            f"| {label} | {m['n_folds']} | {m['CLASS_accuracy']:.3f} ± {m['CLASS_accuracy_folds_std']:.3f} "
            f"| {m['CLASS_f1']:.3f} | {m['LEVEL_f1']:.3f} | {m['CLASS_error']:.4f} | {m['LEVEL_error']:.4f} "
            f"| {m['Score']:.4f} |"
        )
    card = onnx_path.with_suffix(".md")
    card.write_text("\n".join(lines) + "\n")
    return card
