"""Commands that run a model over trials: predict and explain (numpy + onnxruntime only)."""

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from fmri_edge.cli.common import (
    EXIT_PARTIAL,
    MAX_TABLE_ROWS,
    NoVerify,
    Table,
    app,
    err,
    escape,
    out,
    report_problems as _report_problems,
    user_errors,
)
from fmri_edge.errors import InputError, UsageError

PANEL = "Decode (numpy + onnxruntime)"


# ---- predict -------------------------------------------------------------------------------------


@app.command(rich_help_panel=PANEL)
def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help=".npy/.npz files (N, 246, T) or (246, T), ICBHI subject "
            "folders, or folders of them.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Optional[Path], typer.Option(help="ONNX model (default: the shipped one).")
    ] = None,
    out_csv: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the submission CSV here.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of a table.")
    ] = False,
    errors_json: Annotated[
        Optional[Path], typer.Option("--errors", help="Write skipped files/trials as JSON.")
    ] = None,
    nan: Annotated[
        Literal["skip", "error", "interpolate"],
        typer.Option(
            help="Trials with NaN/Inf: skip them (reported; the others are predicted), stop with an error, or "
            "interpolate gaps linearly over time (a region missing over half its seconds is still skipped)."
        ),
    ] = "skip",
    crop: Annotated[
        bool,
        typer.Option(help="Accept trials longer than the model's T: keep their first T seconds."),
    ] = False,
    pad: Annotated[
        bool,
        typer.Option(help="Accept trials shorter than the model's T: repeat their last second."),
    ] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Add each trial's top brain regions to the table and JSON, "
            "and to OUT.regions.csv beside --out: contributions to the answered class's "
            "logit (linear models) or input SE attention (the SE CNN).",
        ),
    ] = False,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Regions per trial with --explain.", min=1)
    ] = 5,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Trials per onnxruntime call (capped at 512: larger batches "
            "only cost memory and run slower).",
            min=1,
        ),
    ] = 256,
    threads: Annotated[
        int,
        typer.Option(
            help="onnxruntime threads (0 = one per core; with --scheduler, per task: "
            "0 = 1, or the cores shared among local:N's workers).",
            min=0,
        ),
    ] = 0,
    participant: Annotated[
        Optional[str],
        typer.Option(
            help="Treat every input as trials of this one participant (e.g. several runs of one person): aligned "
            "together, trials numbered on from file to file."
        ),
    ] = None,
    align: Annotated[
        bool,
        typer.Option(
            "--align/--no-align",
            help="Subject alignment (models that have it): align each participant over all of "
            "its trials. --no-align uses the training population's statistics for every trial.",
        ),
    ] = True,
    no_verify: NoVerify = False,
    probs: Annotated[
        bool,
        typer.Option(
            "--probs",
            help="Add the class probabilities (p_negative, p_neutral, "
            "p_positive) to --out; the challenge format has only "
            "Participant,Trial,CLASS,LEVEL.",
        ),
    ] = False,
    allow_partial: Annotated[
        bool,
        typer.Option(
            "--allow-partial",
            help="Exit 0 even when some files or trials "
            "were refused or skipped and their rows are missing from --out "
            f"(otherwise exit {EXIT_PARTIAL}).",
        ),
    ] = False,
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help="Score on a Dask cluster: a scheduler's address (tcp://host:8786) or local:N for N local worker "
            "processes; same output as without. Needs pip install 'fmri-edge[dask]'; see the README."
        ),
    ] = None,
):
    """Predict valence CLASS and LEVEL for every trial."""
    from fmri_edge.data import io, submission
    from fmri_edge.decoding import answers
    from fmri_edge.model.runtime import Model

    participants: set[str] = set()
    kind = None
    with user_errors():
        decoder = Model(model, threads=threads, verify=not no_verify)
        if explain:
            from fmri_edge.explanation.regions import require_kind

            kind = require_kind(decoder)
        if errors_json:
            submission.check_new(errors_json, force)
        _warn_adapted(decoder, paths, participant)
        _warn_window(decoder, paths)
        _warn_atlas(decoder, paths)
        with (
            submission.atomic_write(out_csv, force) if out_csv else nullcontext() as f,
            _regions_sidecar(
                out_csv if explain else None, force, decoder.info.region_names, top_k, kind
            ) as regions,
        ):

            def on_batch(b):
                participants.add(b.participant)
                if regions is not None:
                    regions(b)

            run = dict(
                keep=None if as_json else MAX_TABLE_ROWS,
                policy=answers.Policy(nan, crop, pad),
                on_batch=on_batch,
                participant=participant,
                align=align,
                probs=probs,
            )
            if scheduler is None:
                result = answers.predict_to(decoder, paths, f, batch_size, **run)
            else:
                from fmri_edge.decoding import cluster

                result = cluster.predict_to(
                    scheduler,
                    decoder,
                    paths,
                    f,
                    batch_size,
                    threads=threads,
                    weights=explain,
                    console=err.rich,
                    **run,
                )
            if result.n_trials == 0:  # nothing is written; one bad input gives one error line
                one = len(result.problems) == 1
                _report_problems(
                    [] if one else result.problems,
                    errors_json,
                    result.problems if one else (),
                    force,
                )
                raise (
                    result.problems[0]
                    if one
                    else UsageError(
                        f"no trial could be predicted ({len(result.problems)} problems above); nothing written"
                    )
                )
        _report_problems(result.problems, errors_json, force=force)
    refused_paths = [p.path for p in result.problems if p.outcome == "refused"]
    found = io.survey(paths, refused_paths)  # headers only: what the inputs hold, for the summary
    missing, refused = max(0, found.trials - result.n_trials), len(refused_paths)
    n_participants = 1 if participant else found.participants
    names = decoder.info.region_names if explain else None
    if as_json:
        print(
            json.dumps(
                {
                    "model": str(decoder.path),
                    "n_trials": result.n_trials,
                    "found": {
                        "files": found.files,
                        "participants": n_participants,
                        "trials": found.trials,
                    },
                    "missing_rows": missing,
                    "refused": refused,
                    **({"explanation": _explanation_json(decoder, kind)} if explain else {}),
                    "predictions": [
                        r for b in result.kept for r in _rows_json(b, names, top_k, kind)
                    ],
                    "errors": [p.as_dict() for p in result.problems],
                }
            )
        )
    else:
        out.print(_predictions_table(result.kept, result.n_trials, names, top_k, kind))
        if explain:
            err.print(_explanation_note(decoder, kind), highlight=False, soft_wrap=True)
    err.print(
        f"found {found.files} file(s) of {n_participants} participant(s) holding {found.trials} trial(s); "
        f"predicted {result.n_trials}"
        + (f", {missing} missing" if missing else "")
        + (f"; {refused} input(s) refused" if refused else ""),
        highlight=False,
        soft_wrap=True,
    )
    if out_csv:
        err.print(f"wrote {result.n_trials} rows to {out_csv}")
        odd = [] if decoder.info.meta.get("study") else submission.unlike_challenge(participants)
        if odd:
            err.print(
                f"[yellow]warning:[/] participant name(s) {', '.join(map(repr, odd[:5]))}"
                f"{' …' if len(odd) > 5 else ''} do not look like the challenge's (P17): the Participant "
                "column is the subject folder or file name; rename the inputs before submitting",
                highlight=False,
                soft_wrap=True,
            )
    if out_csv and explain:
        from fmri_edge.explanation.regions import regions_csv_path

        err.print(f"wrote the top {top_k} regions of each trial to {regions_csv_path(out_csv)}")
    if out_csv and (missing or refused) and not allow_partial:
        lacks = " and ".join(
            ([f"{missing} row(s) of the trials found"] if missing else [])
            + ([f"every trial of {refused} refused input(s)"] if refused else [])
        )
        err.print(
            f"[red]partial:[/] {out_csv} lacks {lacks} (problems above); the rows written are good; "
            f"exit {EXIT_PARTIAL} (--allow-partial accepts a partial submission)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_PARTIAL)


def _constant(decoder) -> list | None:
    """The contributions' constant per class (metadata ``explanation.constant``), if any."""
    c = (decoder.info.meta.get("explanation") or {}).get("constant")
    return c if isinstance(c, list) and len(c) == len(decoder.info.class_values) else None


def _explanation_json(decoder, kind: str) -> dict:
    from fmri_edge.explanation.regions import KINDS

    doc = {"kind": kind, "units": KINDS[kind].units, "what": KINDS[kind].what}
    if kind == "contribution" and _constant(decoder):
        doc["constant"] = dict(zip(map(str, decoder.info.class_values), _constant(decoder)))
    return doc


def _explanation_note(decoder, kind: str) -> str:
    """One line on stderr: what the region numbers are."""
    from fmri_edge.explanation.regions import KINDS

    note = f"regions: {KINDS[kind].what}"
    if kind == "contribution" and _constant(decoder):
        note += "; constant per class " + ", ".join(
            f"{c:+d}: {v:+.4f}" if c else f"0: {v:+.4f}"
            for c, v in zip(decoder.info.class_values, _constant(decoder))
        )
    return note


def _warn_adapted(decoder, paths, participant) -> None:
    """An adapted model answers other participants too, but was fitted to one: say so."""
    if not decoder.info.meta.get("adaptation"):
        return
    from fmri_edge.decoding.adapt import other_participants

    others = other_participants(decoder.info.meta, paths, participant)
    if others:
        who = decoder.info.meta["adaptation"].get("participant")
        err.print(
            f"[yellow]warning:[/] {escape(decoder.path.name)} was adapted to participant {escape(str(who))}; "
            f"it also answers {escape(', '.join(others[:5]))}{' …' if len(others) > 5 else ''} (use the base "
            f"model for other participants)",
            highlight=False,
            soft_wrap=True,
        )


def _rows_json(b, region_names=None, top_k: int = 5, kind: str | None = None) -> list[dict]:
    rows = [
        {
            "participant": b.participant,
            "trial": int(t),
            "CLASS": int(c),
            "LEVEL": int(lv),
            "class_probs": [round(float(x), 4) for x in p],
        }
        for t, c, lv, p in zip(b.trial, b.valence_class, b.valence_level, b.class_probs)
    ]
    if region_names is not None:  # --explain
        from fmri_edge.explanation.regions import KINDS, top_regions

        key = KINDS[kind].key
        for row, regions in zip(rows, top_regions(b.region_scores(kind), region_names, top_k, key)):
            row["regions"] = [
                {k: r[k] for k in ("region", "hemisphere", key, "index")} for r in regions
            ]
    return rows


@contextmanager
def _regions_sidecar(out_csv: Path | None, force: bool, region_names, top_k: int, kind: str | None):
    """With --explain and --out: stream each trial's top regions to OUT.regions.csv (atomically);
    yields the per-batch callback for predict_to, or None (no extra work without --explain)."""
    if out_csv is None:
        yield None
        return
    from fmri_edge.explanation import regions as explain
    from fmri_edge.data import submission

    key = explain.KINDS[kind].key
    with submission.atomic_write(explain.regions_csv_path(out_csv), force) as f:
        explain.write_regions_header(f, key)
        yield lambda b: explain.write_regions_rows(
            f, b.participant, b.trial, b.region_scores(kind), region_names, top_k, key
        )


def _predictions_table(
    batches, n_trials: int, region_names=None, top_k: int = 5, kind: str | None = None
) -> Table:
    shown = min(n_trials, MAX_TABLE_ROWS)
    table = Table(
        title=f"fmri-edge predictions ({n_trials} trials"
        + (f", the first {shown} shown)" if shown < n_trials else ")"),
        title_justify="left",
    )
    for col in ("Participant", "Trial", "CLASS", "LEVEL", "p(-1)", "p(0)", "p(+1)"):
        table.add_column(col, justify="left" if col == "Participant" else "right")
    if region_names is not None:  # --explain
        from fmri_edge.explanation.regions import KINDS, top_regions

        key = KINDS[kind].key
        table.add_column(f"top {top_k} regions ({KINDS[kind].short})", justify="left")
    rows = 0
    for b in batches:
        regions = (
            top_regions(b.region_scores(kind), region_names, top_k, key)
            if region_names is not None
            else None
        )
        for n, (t, c, lv, p) in enumerate(
            zip(b.trial, b.valence_class, b.valence_level, b.class_probs)
        ):
            if rows == MAX_TABLE_ROWS:
                table.caption = f"… {n_trials - rows} more rows: use --out FILE.csv or --json"
                return table
            table.add_row(
                b.participant,
                str(t),
                f"{c:+d}" if c else "0",
                f"{lv:+d}" if lv else "0",
                *(f"{x:.2f}" for x in p),
                *(
                    [
                        ", ".join(
                            f"{r['region']} {r[key]:+.2f}"
                            if kind == "contribution"
                            else f"{r['region']} {r[key]:.2f}"
                            for r in regions[n]
                        )
                    ]
                    if regions
                    else []
                ),
            )
            rows += 1
    if rows < n_trials:  # the kept batches end at the table's limit: say what is not shown
        table.caption = f"… {n_trials - rows} more rows: use --out FILE.csv or --json"
    return table


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
            regions.faithfulness_paths(
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


# ---- adapt -----------------------------------------------------------------------------------------


def _warn_window(decoder, paths) -> None:
    """Warn (once per file) where `extract` cut an input's trials with another window than the model's:
    the shape may fit while the seconds mean something else."""
    from fmri_edge.data import io

    meta = decoder.info.meta
    norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
    baseline = meta.get("baseline_s", norm.get("baseline_s"))
    if baseline is None:
        return
    for src in io.iter_sources(paths):
        if not isinstance(src, io.Source) or src.path.suffix != ".npz":
            continue
        try:
            cut = float(io.read_array(src.path, "baseline_s"))
            n_times = int(io.read_array(src.path, "n_times"))
        except (InputError, TypeError, ValueError):
            continue  # not written by extract (or older): nothing to compare
        if cut != float(baseline) or n_times != decoder.info.n_times:
            err.print(
                f"[yellow]warning:[/] {escape(str(src.path))}: its trials were cut as {n_times} s from onset − "
                f"{cut:g} s, the model reads {decoder.info.n_times} s from onset − {float(baseline):g} s; "
                "extract again with --model this model",
                highlight=False,
                soft_wrap=True,
            )


def _warn_atlas(decoder, paths) -> None:
    """Warn (once per atlas) where extract made an input's trials with another atlas than the one that
    made the model's training trials (both recorded: fmri_edge.imaging.atlas_provenance)."""
    from fmri_edge.imaging import atlas_provenance
    from fmri_edge.data import io

    model_atlas = decoder.info.meta.get("atlas")
    if not isinstance(model_atlas, dict) or not model_atlas.get("sha256"):
        return
    warned = set()
    for src in io.iter_sources(paths):
        if not isinstance(src, io.Source) or src.path.suffix != ".npz":
            continue
        rec = atlas_provenance.read(src.path)
        if rec is None or rec["sha256"] == model_atlas["sha256"] or rec["sha256"] in warned:
            continue
        warned.add(rec["sha256"])
        err.print(
            f"[yellow]warning:[/] {escape(str(src.path))}: its trials were made with atlas "
            f"{escape(atlas_provenance.describe(rec))}, the model was trained on trials of atlas "
            f"{escape(atlas_provenance.describe(model_atlas))}; region i may not be the same region: extract "
            "again with the model's atlas",
            highlight=False,
            soft_wrap=True,
        )
