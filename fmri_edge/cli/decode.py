"""``fmri-edge predict``: valence CLASS and LEVEL for every trial of files and folders (numpy + onnxruntime only)."""

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
        _warn_extracted(decoder, paths)
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


# ---- predict's warnings ---------------------------------------------------------------------------


def _warn_extracted(decoder, paths) -> None:
    """Warn where `extract` made an input's trials unlike the model's training trials, in one pass
    over the inputs: cut with another window (once per file: the shape may fit while the seconds
    mean something else), or with another atlas (once per atlas; both recorded:
    fmri_edge.imaging.atlas_provenance)."""
    from fmri_edge.data import io
    from fmri_edge.imaging import atlas_provenance

    meta = decoder.info.meta
    norm = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
    baseline = meta.get("baseline_s", norm.get("baseline_s"))
    model_atlas = meta.get("atlas")
    if not isinstance(model_atlas, dict) or not model_atlas.get("sha256"):
        model_atlas = None
    if baseline is None and model_atlas is None:
        return
    warned = set()
    for src in io.iter_sources(paths):
        if not isinstance(src, io.Source) or src.path.suffix != ".npz":
            continue
        if baseline is not None:
            _warn_window(decoder, src.path, float(baseline))
        rec = atlas_provenance.read(src.path) if model_atlas is not None else None
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


def _warn_window(decoder, path: Path, baseline: float) -> None:
    from fmri_edge.data import io

    try:
        cut = float(io.read_array(path, "baseline_s"))
        n_times = int(io.read_array(path, "n_times"))
    except (InputError, TypeError, ValueError):
        return  # not written by extract (or older): nothing to compare
    if cut != baseline or n_times != decoder.info.n_times:
        err.print(
            f"[yellow]warning:[/] {escape(str(path))}: its trials were cut as {n_times} s from onset − "
            f"{cut:g} s, the model reads {decoder.info.n_times} s from onset − {baseline:g} s; "
            "extract again with --model this model",
            highlight=False,
            soft_wrap=True,
        )
