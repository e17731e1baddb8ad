"""``fmri-edge extract``: NIfTI BOLD + an atlas (+ BIDS events) → the model's trials (no model run, no torch)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fmri_edge.cli.common import (
    Table,
    app,
    err,
    out,
    report_problems as _report_problems,
    user_errors,
)
from fmri_edge.cli.data import PANEL
from fmri_edge.cli.study import _extract_bids, _print_notes, _run_json, _window_json
from fmri_edge.errors import InputError, UsageError

# ---- extract (nilearn + nibabel, the nifti extra, imported lazily) --------------------------------------


@app.command(rich_help_panel=PANEL)
def extract(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE",
            help="One run's 4-D BOLD (.nii/.nii.gz), or a BIDS "
            "folder holding fMRIPrep derivatives (sub-*/(ses-*/)func/"
            "*_desc-preproc_bold.nii.gz).",
            show_default=False,
        ),
    ],
    atlas: Annotated[
        Path,
        typer.Option(
            help="Label atlas: 3-D NIfTI, labels 1 … 246 (Brainnetome "
            "BN_Atlas_246_2mm.nii.gz), 0 = background.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="trials.npz (one run) or a folder (BIDS: "
            "OUT/sub-XX/fMRI_data.npz, which `fmri-edge predict OUT` reads).",
            show_default=False,
        ),
    ],
    events: Annotated[
        Optional[Path],
        typer.Option(
            help="The run's BIDS events.tsv (onset in seconds; one trial "
            "per row). BIDS folders: found per run."
        ),
    ] = None,
    model: Annotated[
        Optional[Path],
        typer.Option(
            help="ONNX model whose window (n_times, baseline_s) and "
            "region count to cut for (default: the shipped one)."
        ),
    ] = None,
    tr: Annotated[
        Optional[float],
        typer.Option("--tr", help="Repetition time in seconds (default: the NIfTI header's)."),
    ] = None,
    slice_time_ref: Annotated[
        float,
        typer.Option(
            help="Where in its TR each volume is taken: volume k at (k + this) × TR seconds. 0 (default): at the "
            "start of its acquisition, the BIDS onset clock; 0.5 for data slice-time corrected to mid-volume.",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
    trial_type: Annotated[
        Optional[list[str]],
        typer.Option(
            "--trial-type",
            help="Keep only event rows of this trial_type (repeatable; default: every row).",
        ),
    ] = None,
    task: Annotated[
        Optional[str], typer.Option(help="BIDS folders: only runs of this task.")
    ] = None,
    space: Annotated[
        Optional[str],
        typer.Option(
            help="BIDS folders: only BOLD in this space (the atlas's), e.g. MNI152NLin2009cAsym."
        ),
    ] = None,
    confounds: Annotated[
        Optional[str],
        typer.Option(
            help="Regress out confounds: a TSV with one row per volume (fMRIPrep's *_desc-confounds_timeseries.tsv), "
            "or 'auto' for fMRIPrep's file beside each BOLD. Default: none (raw signal)."
        ),
    ] = None,
    confound_columns: Annotated[
        str, typer.Option(help="Columns of the confounds TSV, comma-separated.")
    ] = "trans_x,trans_y,trans_z,rot_x,rot_y,rot_z",
    confounds_strategy: Annotated[
        Optional[str],
        typer.Option(
            help="fMRIPrep denoising through nilearn's load_confounds_strategy: simple, scrubbing, compcor or ica_aroma "
            "(reads *_desc-confounds_timeseries.tsv beside each BOLD). With scrubbing, censored volumes are never "
            "samples of a trial: a trial losing more than a quarter of its window is dropped, the others are "
            "interpolated across the gap and marked."
        ),
    ] = None,
    fd_threshold: Annotated[
        Optional[float],
        typer.Option(
            help="--confounds-strategy scrubbing: framewise displacement threshold in mm (nilearn's default 0.5)."
        ),
    ] = None,
    std_dvars_threshold: Annotated[
        Optional[float],
        typer.Option(
            help="--confounds-strategy scrubbing: standardized DVARS threshold (nilearn's default 1.5)."
        ),
    ] = None,
    detrend: Annotated[
        bool,
        typer.Option(
            help="Remove each region's linear trend and mean (changes the raw level "
            "the model was trained on)."
        ),
    ] = False,
    high_pass: Annotated[
        Optional[float],
        typer.Option(help="High-pass filter cutoff in Hz (nilearn). Default: none."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing output files.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of a table.")
    ] = False,
    errors_json: Annotated[
        Optional[Path],
        typer.Option("--errors", help="Write refused runs and skipped events as JSON."),
    ] = None,
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help="BIDS folders: extract the runs on a Dask cluster, a scheduler's address (tcp://host:8786) or local:N "
            "for N local worker processes (pip install 'fmri-edge[dask]'); workers need the files at the same "
            "paths (a shared file system)."
        ),
    ] = None,
    class_column: Annotated[
        Optional[str],
        typer.Option(
            help="Label the trials (BIDS folders): the events column holding each trial's valence, e.g. trial_type. "
            "Writes OUT/sub-X/labels.npz and OUT/labels.json for `fmri-edge train --data OUT`.",
            rich_help_panel="Labels",
        ),
    ] = None,
    class_map: Annotated[
        Optional[str],
        typer.Option(
            help="VALUE=CLASS,… with CLASS -1, 0, 1 or negative/neutral/positive; several values may map to one "
            "class; rows with other values are dropped and counted.",
            rich_help_panel="Labels",
        ),
    ] = None,
    level_column: Annotated[
        Optional[str],
        typer.Option(
            help="The events column holding the participant's own rating (LEVEL). Without it LEVEL is the "
            "class-only rule -1→-3, 0→0, 1→2 and a trained model answers CLASS only.",
            rich_help_panel="Labels",
        ),
    ] = None,
    level_scale: Annotated[
        Optional[str],
        typer.Option(
            help="The rating scale LO:HI, mapped linearly onto LEVEL -4…4 and rounded (default: ratings are "
            "already -4…4).",
            rich_help_panel="Labels",
        ),
    ] = None,
    level_missing: Annotated[
        Optional[list[str]],
        typer.Option(
            help="A rating value meaning 'no rating' (repeatable; n/a always is), e.g. 0.",
            rich_help_panel="Labels",
        ),
    ] = None,
    min_gap: Annotated[
        Optional[float],
        typer.Option(
            help="Drop labeled events whose onset is closer than this many seconds to another labeled event "
            "(their windows would hold two trials). Default: keep them and count them.",
            min=0.0,
            rich_help_panel="Labels",
        ),
    ] = None,
):
    """Region time series from NIfTI BOLD with an atlas (region means read block by block; nilearn
    for confounds and filtering), resampled to 1 s and cut into one trial per event: the trials
    `fmri-edge predict` reads. Damaged files are refused one line each; a study's good runs always
    come out. Needs pip install 'fmri-edge[nifti]'."""
    with user_errors():
        from fmri_edge.imaging import extract as lib

        lib.require_nifti()
        from fmri_edge.model.runtime import Model

        info = Model(model).info
        window = lib.Window.from_model(info)
        if window.baseline_from.startswith("default"):
            err.print(
                f"[yellow]note:[/] baseline {window.baseline_s:g} s: {window.baseline_from}",
                highlight=False,
            )
        from fmri_edge.imaging import confounds as strategies

        strategy = strategies.parse(confounds_strategy, fd_threshold, std_dvars_threshold)
        if strategy is not None and confounds is not None:
            raise UsageError(
                f"--confounds {confounds} and --confounds-strategy {confounds_strategy}: choose one "
                "(the strategy reads fMRIPrep's confounds file itself)"
            )
        opts = lib.ExtractOptions(
            tr=tr,
            slice_time_ref=slice_time_ref,
            trial_types=tuple(trial_type or ()),
            confounds=confounds,
            confound_columns=tuple(c.strip() for c in confound_columns.split(",") if c.strip()),
            detrend=detrend,
            high_pass=high_pass,
            labels=_label_spec(
                class_column, class_map, level_column, level_scale, level_missing, min_gap
            ),
            confounds_strategy=strategy,
        )
        if errors_json:
            from fmri_edge.data.submission import check_new

            check_new(errors_json, force)
        if source.is_dir() and source.name.endswith(lib.NIFTI_SUFFIXES):
            raise InputError(source, "BOLD image is a folder, not a NIfTI file")
        try:
            if source.is_dir():
                _extract_bids(
                    lib,
                    source,
                    atlas,
                    out,
                    window,
                    opts,
                    task,
                    space,
                    force,
                    as_json,
                    errors_json,
                    scheduler,
                    region_names=info.region_names,
                )
            elif scheduler:
                raise UsageError(
                    f"--scheduler {scheduler}: distributes the runs of a BIDS folder; {source} is one run"
                )
            else:
                _extract_one(
                    lib,
                    source,
                    atlas,
                    out,
                    events,
                    window,
                    opts,
                    force,
                    as_json,
                    errors_json,
                    region_names=info.region_names,
                )
        except (
            EOFError,
            OSError,
        ) as e:  # never click's bare "Aborted!" nor a traceback: one line naming the file
            raise InputError(
                getattr(e, "filename", None) or source,
                f"{getattr(e, 'strerror', None) or type(e).__name__}: {str(e)[:120]}",
            ) from None


def _label_spec(class_column, class_map, level_column, level_scale, level_missing, min_gap):
    """The --class-* and --level-* options → a LabelSpec (None without --class-column)."""
    from fmri_edge.imaging import events

    if class_column is None:
        given = [
            n
            for n, v in (
                ("--class-map", class_map),
                ("--level-column", level_column),
                ("--level-scale", level_scale),
                ("--level-missing", level_missing),
                ("--min-gap", min_gap),
            )
            if v
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} label(s) trials only with --class-column COLUMN --class-map VALUE=CLASS,…"
            )
        return None
    if not class_map:
        raise UsageError(
            f"--class-column {class_column}: give --class-map VALUE=CLASS,… too, e.g. "
            "--class-map negative=-1,neutral=0,positive=1"
        )
    if (level_scale or level_missing) and not level_column:
        raise UsageError(
            "--level-scale and --level-missing describe the rating column: give --level-column COLUMN"
        )
    return events.LabelSpec(
        class_column,
        events.parse_class_map(class_map),
        level_column,
        events.parse_level_scale(level_scale) if level_scale else None,
        tuple(dict.fromkeys([*events.MISSING, *(level_missing or [])])),
        min_gap,
    )


def _extract_one(
    lib,
    bold: Path,
    atlas_path: Path,
    out_path: Path,
    events: Path | None,
    window,
    opts,
    force,
    as_json,
    errors_json,
    region_names=None,
):
    if events is None:
        raise UsageError(
            f"{bold}: give the run's events with --events EVENTS.tsv (or point at a BIDS folder)"
        )
    if opts.labels is not None:
        raise UsageError(
            f"{bold}: --class-column labels a BIDS folder's participants (OUT/sub-X/labels.npz); point "
            "extract at the study folder"
        )
    if out_path.suffix != ".npz":
        raise UsageError(
            f"--out {out_path}: give an .npz file name for one run (a folder is for BIDS input)"
        )
    from fmri_edge.data.submission import check_new

    check_new(out_path, force)
    conf = opts.confounds
    if conf == "auto":
        from fmri_edge.imaging import bids

        conf = bids.confounds_beside(bold)
    atlas = lib.Atlas(atlas_path, window.n_regions, region_names=region_names)
    r = lib.extract_run(bold, atlas, events, window, opts, conf)
    _print_notes(r.notes)
    if not len(r.trials):
        _report_problems(r.skipped, errors_json, force=force)
        raise InputError(
            r.events,
            f"no event's {window.n_times}-s window fits inside the scan ({len(r.skipped)} "
            "skipped above); nothing written",
        )
    lib.save_trials(out_path, [r], force, window, atlas=atlas)
    _report_problems(r.skipped, errors_json, force=force)
    if as_json:
        print(
            json.dumps(
                {
                    "window": _window_json(window),
                    "out": str(out_path),
                    "runs": [_run_json(r)],
                    "errors": [p.as_dict() for p in r.skipped],
                }
            )
        )
    else:
        t = Table(
            title=f"extracted {len(r.trials)} trials ({window.n_regions} regions × {window.n_times} s, "
            f"from onset − {window.baseline_s:g} s)",
            title_justify="left",
        )
        for c in ("run", "volumes", "TR", "events", "trials", "skipped"):
            t.add_column(c, justify="left" if c == "run" else "right")
        t.add_row(
            bold.name,
            str(r.n_volumes),
            f"{r.tr:g} s",
            str(len(r.trials) + len(r.skipped)),
            str(len(r.trials)),
            str(len(r.skipped)),
        )
        out.print(t)
    err.print(
        f"wrote {len(r.trials)} trials {tuple(r.trials.shape)} float32 to {out_path} — next: "
        f"fmri-edge predict {out_path}",
        highlight=False,
    )
