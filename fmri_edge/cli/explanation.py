"""``fmri-edge explain``: which brain regions drive a model's answers, over a set of trials, with
an optional figure, brain map and faithfulness check (numpy + onnxruntime; maps need [nifti,plot])."""

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from fmri_edge.cli.common import (
    NoVerify,
    Table,
    app,
    err,
    out,
    report_problems as _report_problems,
    user_errors,
)
from fmri_edge.errors import UsageError

from fmri_edge.cli.decode import PANEL, _explanation_json, _explanation_note


# ---- explain ---------------------------------------------------------------------------------------


@app.command(rich_help_panel=PANEL)
def explain(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="[MODEL.onnx] then trials: .npy/.npz files, ICBHI subject folders, "
            "or folders of them (a first .onnx argument is the model, like "
            "--model).",
            show_default=False,
        ),
    ],
    model: Annotated[
        Optional[Path], typer.Option(help="ONNX model (default: the shipped one).")
    ] = None,
    rows: Annotated[
        int, typer.Option(help="Regions to list (table) and to draw per class (--plot).", min=1)
    ] = 20,
    top_k: Annotated[
        int,
        typer.Option(
            "--top-k",
            help="k of the 'in top-k' column: how often a region is among a "
            "trial's k highest-scoring.",
            min=1,
        ),
    ] = 10,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            help="Draw the region figure to this PNG (needs matplotlib: pip install 'fmri-edge[plot]')."
        ),
    ] = None,
    atlas: Annotated[
        Optional[Path],
        typer.Option(
            help="Atlas label image (NIfTI) of the model's regions, for --brain-map/--map-nifti: label v is region v "
            "(BN_atlas.txt order, from 1), 0 or NaN outside; any voxel size or MNI grid."
        ),
    ] = None,
    brain_map: Annotated[
        Optional[Path],
        typer.Option(
            "--brain-map",
            help="Paint the mean region scores on the atlas and draw them to this PNG (needs "
            "pip install 'fmri-edge[nifti,plot]').",
        ),
    ] = None,
    map_nifti: Annotated[
        Optional[Path],
        typer.Option(
            "--map-nifti",
            help="Write the same map as a NIfTI on the atlas grid (.nii or .nii.gz): each region's value "
            "in each of its voxels, 0 outside; for FSLeyes, MRIcroGL, nilearn.",
        ),
    ] = None,
    valence_class: Annotated[
        Optional[int],
        typer.Option(
            "--class",
            help="Explain only the trials answered as this CLASS (-1, 0 or 1): the table and the map; "
            "default: every trial, each for its answered class.",
            show_default=False,
        ),
    ] = None,
    view: Annotated[
        Literal["glass", "slices"],
        typer.Option(
            help="--brain-map: a glass brain (every region seen through the brain) or orthogonal slices."
        ),
    ] = "glass",
    force: Annotated[
        bool, typer.Option(help="Overwrite existing --plot, --brain-map and --map-nifti files.")
    ] = False,
    faithfulness: Annotated[
        bool,
        typer.Option(
            "--faithfulness",
            help="Also mask each trial's top-k regions vs k "
            "random ones and report how much the predictions change.",
        ),
    ] = False,
    k: Annotated[
        Optional[list[int]],
        typer.Option("--k", help="k for --faithfulness (repeatable; default 5, 10, 20).", min=1),
    ] = None,
    draws: Annotated[int, typer.Option(help="Random draws per k for --faithfulness.", min=1)] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the random regions for --faithfulness.")] = 0,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document (every region) instead of tables."),
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Trials per onnxruntime call.", min=1)] = 256,
    threads: Annotated[
        int, typer.Option(help="onnxruntime threads (0 = one per core).", min=0)
    ] = 0,
    no_verify: NoVerify = False,
):
    """Which brain regions drive the answers: per region, the mean contribution to the answered
    class's logit (linear models) or the mean input-SE attention (the SE CNN) over your trials,
    overall and per predicted CLASS, ranked; optionally a figure, a brain map on an atlas, and a
    faithfulness check."""
    from fmri_edge.explanation import regions
    from fmri_edge.explanation import faithfulness
    from fmri_edge.model.runtime import Model

    if model is None and len(paths) > 1 and paths[0].suffix == ".onnx":  # explain MODEL DATA …
        model, paths = paths[0], paths[1:]
    label_image = None
    with user_errors():
        decoder = Model(model, threads=threads, verify=not no_verify)
        kind = regions.require_kind(decoder)
        if valence_class is not None and valence_class not in decoder.info.class_values:
            raise UsageError(
                f"--class {valence_class}: not one of the model's classes "
                f"{', '.join(map(str, decoder.info.class_values))}"
            )
        if (brain_map or map_nifti) and atlas is None:
            raise UsageError(
                "--brain-map and --map-nifti paint the regions on an atlas: give --atlas ATLAS.nii.gz "
                "(e.g. ../shared/data/icbhi2024/BN_Atlas_246_1mm.nii.gz)"
            )
        if atlas is not None and not (brain_map or map_nifti):
            raise UsageError(
                "--atlas is for --brain-map PNG and/or --map-nifti NIFTI: give one of them"
            )
        from fmri_edge.data.submission import check_new
        from fmri_edge.files import check_suffix

        for target, option in (
            (plot, "--plot"),
            (brain_map, "--brain-map"),
            (map_nifti, "--map-nifti"),
        ):
            if target is not None:
                check_suffix(
                    target, option
                )  # before any work: what is written is what the name says
                check_new(target, force)
        if atlas is not None:
            from fmri_edge.explanation import brainmap

            label_image = _needs_extra(
                lambda: brainmap.load_label_image(atlas, decoder.info.n_regions)
            )
        try:  # with --class, the table and the map both cover the trials answered that class
            summary, problems = regions.summarize(
                decoder, paths, top_k, batch_size, only_class=valence_class
            )
        except regions.NoTrialOfClass:
            raise UsageError(
                f"--class {valence_class}: no trial was answered {valence_class:+d}, so there is nothing "
                "to show; leave --class out, or give other trials"
            ) from None
        faith = (
            faithfulness.faithfulness_paths(
                decoder, paths, tuple(k or (5, 10, 20)), draws, seed, batch_size
            )[0]
            if faithfulness
            else None
        )
    _report_problems(problems, None)
    if kind == "attention" and summary.uniform:
        err.print(
            "[yellow]warning:[/] every region has the same weight: this model has no input attention "
            "(a vanilla model?), so there is nothing to rank"
        )
    elif kind == "attention" and summary.static:
        err.print(
            "[yellow]note:[/] every trial gets the same region weights (the SE gate does not depend on the "
            "input with this model's per-trial normalization): the ranking is global, not per trial or class",
            highlight=False,
        )
    version = decoder.info.meta.get("model_version", decoder.path.name)
    if plot is not None:
        from fmri_edge.explanation.plot import plot_attention

        _needs_extra(
            lambda: plot_attention(
                summary, plot, top=rows, title=f"{version}: {_shown(kind)} per brain region"
            )
        )
        err.print(f"wrote {plot}")
    maps = (
        _brain_maps(label_image, summary, valence_class, brain_map, map_nifti, view, version, paths)
        if label_image is not None
        else None
    )
    if as_json:
        print(
            json.dumps(
                {
                    "model": str(decoder.path),
                    "model_version": version,
                    "explanation": _explanation_json(decoder, kind),
                    "summary": summary.to_json(),
                    "faithfulness": faith.to_json() if faith else None,
                    "brain_map": maps,
                    "errors": [p.as_dict() for p in problems],
                }
            )
        )
        return
    out.print(_attention_table(summary, rows, valence_class))
    ref = summary.reference()
    if ref:
        out.print(
            "literature regions (rank of "
            + str(len(summary.region_names))
            + "): "
            + ", ".join(f"{r['region']} #{r['rank']}" for r in ref),
            highlight=False,
        )
    if faith:
        out.print(_faithfulness_table(faith))
    err.print(_explanation_note(decoder, kind), highlight=False, soft_wrap=True)


def _needs_extra(make):
    """Run ``make()``; a missing optional extra (ImportError) is one line and exit 1."""
    try:
        return make()
    except ImportError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from None


def _shown(kind: str) -> str:
    return {
        "contribution": "contribution to the answered class's logit",
        "attention": "input SE attention",
    }[kind]


def _brain_maps(
    label_image, summary, valence_class, brain_map, map_nifti, view, version, paths
) -> dict:
    """Paint the summary's mean scores (all trials, or those answered ``valence_class``) on the
    atlas; write the NIfTI and/or the figure; say what was written."""
    import numpy as np

    from fmri_edge.explanation import brainmap
    from fmri_edge.explanation.regions import KINDS
    from fmri_edge.explanation.plot import CLASS_NAMES

    kind = KINDS[summary.kind]
    values = summary.values(valence_class)
    if valence_class is None:
        n, which = summary.n_trials, "every trial, each for its answered class"
    else:
        n = int(summary.class_counts[list(summary.class_values).index(valence_class)])
        which = (
            f"the trials answered {valence_class:+d} ({CLASS_NAMES[valence_class]})"
            if valence_class
            else f"the trials answered 0 ({CLASS_NAMES[0]})"
        )
    data = ", ".join(p.name or str(p) for p in paths[:3]) + (" …" if len(paths) > 3 else "")
    shown = f"mean {_shown(summary.kind)}, {which}"
    volume = brainmap.paint(label_image, values)
    err.print(f"note: {label_image.note()}", highlight=False, soft_wrap=True)
    doc = {
        "atlas": str(label_image.path),
        "grid": label_image.grid,
        "notes": label_image.notes,
        "shown": shown,
        "units": kind.units,
        "class": valence_class,
        "n_trials": n,
        "range": [round(float(np.nanmin(values)), 6), round(float(np.nanmax(values)), 6)],
    }
    if map_nifti is not None:
        brainmap.write_map(
            map_nifti, label_image, volume, f"fmri-edge {version}: mean {summary.kind}"
        )
        err.print(f"wrote {map_nifti} (region values on the atlas grid, 0 outside)")
        doc["nifti"] = str(map_nifti)
    if brain_map is not None:
        title = f"{version} on {data} ({n} trials): {shown}"
        _needs_extra(
            lambda: brainmap.plot_map(
                label_image,
                volume,
                brain_map,
                title,
                kind.units,
                kind.signed,
                view,
                region_names=list(summary.region_names),
                values=values,
            )
        )
        err.print(f"wrote {brain_map}")
        doc["png"] = str(brain_map)
    return doc


def _attention_table(s, rows: int, valence_class: int | None = None) -> Table:
    from fmri_edge.explanation.regions import KINDS

    which = f"{s.n_trials} trials" + (
        "" if valence_class is None else f" answered {valence_class:+d}"
    )
    t = Table(
        title=f"{_shown(s.kind)} per region ({which}), ranked by mean {KINDS[s.kind].key}",
        title_justify="left",
        caption=f"top-{s.top_k}: share of trials with the region among their {s.top_k} "
        "highest-scoring; -1/0/+1: mean over the trials predicted as that class; "
        "lit.: the paper's EBR regions, amygdala; units: " + KINDS[s.kind].units,
    )
    for col in ("rank", "region", "lit.", "mean", "sd", f"top-{s.top_k}"):
        t.add_column(col, justify="left" if col in ("region", "lit.") else "right", no_wrap=True)
    shown = [c for c, n in zip(s.class_values, s.class_counts) if n]
    for c in shown:
        t.add_column(f"{c:+d}" if c else "0", justify="right", no_wrap=True)
    fmt = "{:+.3f}" if s.kind == "contribution" else "{:.3f}"
    for r in s.rows(rows):
        t.add_row(
            str(r["rank"]),
            r["region"],
            {"amygdala": "amyg"}.get(r["reference"], r["reference"] or ""),
            fmt.format(r["mean"]),
            f"{r['std']:.3f}",
            f"{100 * r['top_k_rate']:.0f}%",
            *(fmt.format(r["by_class"][str(c)]) for c in shown),
        )
    return t


def _faithfulness_table(f) -> Table:
    held = {"yes": "held out from training", "no": "NOT held out", "unknown": "held out: unknown"}[
        f.held_out["status"]
    ]
    t = Table(
        title=f"faithfulness ({f.n_trials} trials, {held}): mask k regions per trial (flat at their "
        f"first-{f.baseline_s}-s mean)",
        title_justify="left",
        caption=f"chg: % of CLASS answers that change; |dp|: mean change of the predicted class's "
        f"probability; masked regions: the trial's top-k by {f.kind}, k random (mean±sd over "
        f"{f.draws} draws), or its bottom-k",
    )
    for col in (
        "k",
        "chg top",
        "chg random",
        "chg bottom",
        "|dp| top",
        "|dp| random",
        "|dp| bottom",
    ):
        t.add_column(col, justify="right", overflow="fold")
    for r in f.rows:
        top, rnd, bot = r["top"], r["random"], r["bottom"]
        t.add_row(
            str(r["k"]),
            f"{100 * top['changed']:.1f}",
            f"{100 * rnd['changed']:.1f}±{100 * rnd['changed_std']:.1f}",
            f"{100 * bot['changed']:.1f}",
            f"{top['delta_p']:.4f}",
            f"{rnd['delta_p']:.4f}±{rnd['delta_p_std']:.4f}",
            f"{bot['delta_p']:.4f}",
        )
    return t
