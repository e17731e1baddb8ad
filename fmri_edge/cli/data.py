"""Commands on data and answers: score, simulate, extract (no model, no torch)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fmri_edge.cli.common import (
    Table,
    app,
    err,
    escape,
    out,
    report_problems as _report_problems,
    user_errors,
)
from fmri_edge.errors import InputError, UsageError

PANEL = "Data and scoring"


# ---- score -----------------------------------------------------------------------------------------


@app.command(rich_help_panel=PANEL)
def score(
    predictions: Annotated[
        Path, typer.Argument(help="Submission CSV (Participant,Trial,CLASS,LEVEL).")
    ],
    labels: Annotated[
        Path, typer.Argument(help="Labels: a CSV in the same format or an ICBHI folder.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
):
    """The challenge score and the paper's metrics (precision, sensitivity, F1, confusion)."""
    from fmri_edge.evaluation import scoring

    with user_errors():
        report = scoring.score(predictions, labels)
    if as_json:
        print(json.dumps(report))
        return
    t = Table(
        title=f"challenge score ({report['n_trials']} trials; lower is better)",
        title_justify="left",
    )
    for c in ("CLASS_error", "LEVEL_error", "Score"):
        t.add_column(c, justify="right")
    t.add_row(*(f"{report[c]:.4f}" for c in ("CLASS_error", "LEVEL_error", "Score")))
    out.print(t)
    m = Table(title="paper metrics (macro over classes)", title_justify="left")
    for c in ("task", "accuracy", "precision", "sensitivity", "F1"):
        m.add_column(c, justify="right")
    for task in ("CLASS", "LEVEL"):
        r = report[task]
        m.add_row(task, *(f"{r[k]:.3f}" for k in ("accuracy", "precision", "sensitivity", "f1")))
    out.print(m)
    for task in ("CLASS", "LEVEL"):
        out.print(_confusion_table(task, report[task]))


def _confusion_table(task: str, r: dict) -> Table:
    t = Table(title=f"{task} confusion (rows: true, columns: predicted)", title_justify="left")
    t.add_column("true \\ pred", justify="right")
    for v in r["values"]:
        t.add_column(f"{v:+d}" if v else "0", justify="right")
    for v, row in zip(r["values"], r["confusion"]):
        t.add_row(f"{v:+d}" if v else "0", *(str(x) if x else "·" for x in row))
    return t


@app.command(rich_help_panel=PANEL)
def simulate(
    out_path: Annotated[
        Optional[Path],
        typer.Argument(
            metavar="OUT",
            help="OUT.npy (trials only) or a folder "
            "(ICBHI layout with labels); not with --scanner.",
        ),
    ] = None,
    trials: Annotated[int, typer.Option(help="Trials per subject.", min=1)] = 30,
    subjects: Annotated[
        int, typer.Option(help="Subjects (folder output: one subject folder each).", min=1)
    ] = 1,
    n_times: Annotated[int, typer.Option(help="Seconds per trial.", min=6)] = 25,
    effect: Annotated[float, typer.Option(help="Planted signal, fraction of BOLD level.")] = 0.02,
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite existing output.")] = False,
    nifti: Annotated[
        bool,
        typer.Option(
            "--nifti",
            help="Write OUT/atlas.nii.gz (246 labels as cubes), OUT/bold.nii.gz "
            "(4-D, TR 2 s) and OUT/events.tsv for `fmri-edge extract` "
            "(needs the nifti extra).",
        ),
    ] = False,
    bids: Annotated[
        bool,
        typer.Option(
            "--bids",
            help="Write OUT/atlas.nii.gz and a tiny BIDS study OUT/study "
            "(raw events, fMRIPrep-named derivatives) of --subjects × "
            "--runs runs (needs the nifti extra).",
        ),
    ] = False,
    runs: Annotated[int, typer.Option(help="Runs per subject with --bids or --study.", min=1)] = 2,
    scanner: Annotated[
        Optional[Path],
        typer.Option(
            "--scanner",
            metavar="WATCH_DIR",
            help="Replay --from into this "
            "folder as a scanner exports it, a file per volume at TR pace, "
            "some written in place in two halves (try `fmri-edge stream` "
            "on it).",
        ),
    ] = None,
    bold: Annotated[
        Optional[Path],
        typer.Option(
            "--from", metavar="BOLD", help="With --scanner: the 4-D run to replay (.nii/.nii.gz)."
        ),
    ] = None,
    tr: Annotated[
        Optional[float],
        typer.Option(
            "--tr",
            help="Seconds between volumes: with --scanner (required) or --study (default 1.5).",
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="With --scanner: replay this many times faster than real time.")
    ] = 1.0,
    volume_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="With --scanner: nii (3-D NIfTI, img-SERIES-VOLUME.nii) "
            "or dicom (Siemens XA enhanced, ideacmdtool's naming).",
        ),
    ] = "nii",
    study: Annotated[
        bool,
        typer.Option(
            "--study",
            help="Write OUT/atlas.nii.gz and a labeled BIDS study OUT/study "
            "(events with a class column trial_type: img_neg/img_neu/"
            "img_pos, ratings 1-9, participants.tsv; subject-specific "
            "baselines and gains) for `extract --class-column` and "
            "`train --data` (needs the nifti extra).",
        ),
    ] = False,
    null: Annotated[
        bool,
        typer.Option(
            "--null",
            help="With --study: no planted signal (labels only): what a "
            "decoder must stay at chance on.",
        ),
    ] = False,
    individual: Annotated[
        bool,
        typer.Option(
            "--individual",
            help="With --study: every participant its own class "
            "pattern (a within-participant signal not shared across "
            "participants).",
        ),
    ] = False,
    confounds: Annotated[
        bool,
        typer.Option(
            "--confounds",
            help="With --study: fMRIPrep-like confounds files beside "
            "each BOLD (motion, FD with a few spikes above 0.5 mm, DVARS, "
            "cosines).",
        ),
    ] = False,
    motion: Annotated[
        Optional[str],
        typer.Option(
            "--motion",
            metavar="TRACE.tsv|drift",
            help="With --scanner: move "
            "the head by this trace, one row per volume (columns trans_x, "
            "trans_y, trans_z in mm, rot_x, rot_y, rot_z in rad, as fMRIPrep "
            "writes them), or 'drift': the built-in drift to 2 mm / 2° with a "
            "2 mm jump at 60 % of the run.",
        ),
    ] = None,
    motion_truth: Annotated[
        Optional[Path],
        typer.Option(
            "--motion-truth",
            help="With --motion: also write the trace replayed (TSV with framewise_displacement).",
        ),
    ] = None,
):
    """Write simulated BOLD-like trials with a planted valence signal (no real data needed);
    with --nifti or --bids, synthetic NIfTI images and events to try `fmri-edge extract` on;
    with --scanner, replay a 4-D run into a folder as a scanner would, for `fmri-edge stream`."""
    import numpy as np

    from fmri_edge.simulation.simulate import simulate as sim

    if scanner is not None:
        _simulate_scanner(scanner, out_path, bold, tr, speed, volume_format, motion, motion_truth)
        return
    if out_path is None:
        with user_errors():
            raise UsageError(
                "give OUT (a .npy file or a folder), or --scanner WATCH_DIR --from BOLD --tr S"
            )
    if nifti or bids or study:
        _simulate_nifti(
            out_path,
            bids,
            trials,
            subjects,
            runs,
            seed,
            force,
            study,
            tr or 1.5,
            null,
            effect,
            individual,
            confounds,
        )
        return
    with user_errors():
        x, y, subj = sim(trials, n_times=n_times, effect=effect, n_subjects=subjects, seed=seed)
        if out_path.suffix == ".npy":
            if out_path.exists() and not force:
                raise InputError(out_path, "exists; use --force to overwrite")
            np.save(out_path, x)
            err.print(f"wrote {len(x)} trials {x.shape} to {out_path}")
            return
        for s in range(subjects):
            folder = out_path / f"S{s + 1:02d}"
            if folder.exists() and not force:
                raise InputError(folder, "exists; use --force to overwrite")
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "fMRI_data.npz", data=x[subj == s].astype(np.float64))
            np.savez(folder / "labels.npz", data=y[subj == s].astype(np.float64))
        err.print(
            f"wrote {subjects} subject folder(s) of {trials} trials with labels to {out_path}/"
        )


def _simulate_scanner(folder: Path, out_path, bold, tr, speed, fmt, motion=None, motion_truth=None):
    with user_errors():
        if out_path is not None:
            raise UsageError(f"{out_path}: --scanner writes into WATCH_DIR; give no OUT")
        if bold is None or tr is None:
            raise UsageError("--scanner needs --from BOLD.nii.gz (a 4-D run) and --tr SECONDS")
        from fmri_edge.imaging.extract import require_nifti
        from fmri_edge.simulation.replay import replay

        require_nifti("simulate")
        trace = None
        if motion is not None:
            from fmri_edge.imaging import motion as mo
            from fmri_edge.imaging.volumes import read_header

            n_volumes = read_header(bold, "BOLD image").n_volumes
            trace = (
                mo.drift_trace(n_volumes) if motion in mo.TRACES else mo.read_trace(Path(motion))
            )
            if motion_truth is not None:
                mo.write_trace(motion_truth, trace[:n_volumes])
        elif motion_truth is not None:
            raise UsageError("--motion-truth needs --motion")
        err.print(
            f"replaying {bold.name} into {folder}/ every {tr / speed:g} s ({fmt})"
            + (f", head moved by {motion}" if motion else ""),
            highlight=False,
        )
        n = replay(bold, folder, tr, speed, fmt, motion=trace)
        err.print(f"wrote {n} volumes to {folder}/")


def _simulate_nifti(
    out_path: Path,
    bids: bool,
    n_events: int,
    subjects: int,
    runs: int,
    seed: int,
    force: bool,
    study: bool = False,
    tr: float = 1.5,
    null: bool = False,
    effect: float = 0.02,
    individual: bool = False,
    confounds: bool = False,
):
    with user_errors():
        from fmri_edge.imaging.extract import require_nifti

        require_nifti("simulate")
        from fmri_edge.simulation import nifti_sim

        if out_path.suffix:
            raise UsageError(f"{out_path}: --nifti and --bids write a folder; give a folder name")
        if out_path.exists() and any(out_path.iterdir()) and not force:
            raise InputError(out_path, "exists and is not empty; use --force to write into it")
        out_path.mkdir(parents=True, exist_ok=True)
        nifti_sim.write_atlas(out_path / "atlas.nii.gz")
        if study:
            written = nifti_sim.write_labeled_study(
                out_path / "study",
                subjects,
                runs,
                n_events,
                tr,
                null,
                seed,
                effect,
                individual=individual,
                confounds=confounds,
            )
            err.print(
                f"wrote {out_path / 'atlas.nii.gz'} and {out_path / 'study'}/: {len(written)} participant(s) × "
                f"{runs} run(s) of {n_events} labeled events (TR {tr:g} s, "
                + (
                    "null: no signal"
                    if null
                    else f"planted signal {effect:g}"
                    + (", each participant its own pattern" if individual else "")
                )
                + (", fMRIPrep-like confounds" if confounds else "")
                + ")",
                highlight=False,
            )
            return
        if bids:
            written = nifti_sim.write_bids(
                out_path / "study", subjects, runs, n_events=n_events, seed=seed
            )
            err.print(
                f"wrote {out_path / 'atlas.nii.gz'} and {out_path / 'study'}/: {len(written)} subject(s) × "
                f"{runs} run(s) of {n_events} events (TR 2 s)"
            )
            return
        run = nifti_sim.write_run(
            out_path / "bold.nii.gz", out_path / "events.tsv", n_events=n_events, seed=seed
        )
        err.print(
            f"wrote {out_path}/atlas.nii.gz, bold.nii.gz ({run.n_volumes} volumes, TR {run.tr:g} s) and "
            f"events.tsv ({n_events} events)"
        )


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


def _window_json(window) -> dict:
    return {
        "n_regions": window.n_regions,
        "n_times": window.n_times,
        "baseline_s": window.baseline_s,
        "baseline_from": window.baseline_from,
    }


def _run_json(r) -> dict:
    return {
        "bold": str(r.bold),
        "events": str(r.events),
        "volumes": r.n_volumes,
        "tr": r.tr,
        "trials": len(r.trials),
        "skipped": len(r.skipped),
    }


def _print_notes(notes) -> None:
    for n in dict.fromkeys(notes):  # each note once
        err.print(f"[yellow]note:[/] {escape(n)}", highlight=False, soft_wrap=True)


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


def _check_atlas_once(atlas, runs) -> None:
    """The atlas against the study's first readable run before any run is extracted: an atlas off the
    brain or out of the field of view is the study's problem, refused once (exit 2), not once per run.
    A problem of that run's own file is left to the run (reported with the others)."""
    from fmri_edge.imaging.space import check_atlas

    for prs in runs.values():
        for r in prs:
            try:
                check_atlas(atlas, r.bold)
            except InputError as e:
                if e.path == str(atlas.path):
                    raise
                continue
            return


def _extract_bids(
    lib,
    root: Path,
    atlas_path: Path,
    out_dir: Path,
    window,
    opts,
    task,
    space,
    force,
    as_json,
    errors_json,
    scheduler=None,
    region_names=None,
):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if out_dir.suffix == ".npz" or out_dir.is_file():
        raise UsageError(
            f"--out {out_dir}: a BIDS folder is written as one folder per participant; give a folder"
        )
    if opts.confounds not in (None, "auto"):
        raise UsageError(
            f"--confounds {opts.confounds}: with a BIDS folder use --confounds auto (fMRIPrep's "
            "*_desc-confounds_timeseries.tsv beside each BOLD)"
        )
    from fmri_edge.imaging import bids

    runs = bids.find_bids_runs(root, task, space, confounds=opts.confounds == "auto")
    if (
        opts.confounds_strategy is not None
    ):  # a file without the strategy's columns: before any image is read
        from fmri_edge.imaging import confounds as strategies

        strategies.check_study(
            [r.bold for prs in runs.values() for r in prs], opts.confounds_strategy
        )
    labeled = (
        lib.label_study(runs, window, opts) if opts.labels else None
    )  # option or study problems: before any image
    atlas = lib.Atlas(
        atlas_path, window.n_regions, region_names=region_names
    )  # a flipped atlas: refused here, once
    _check_atlas_once(atlas, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_runs = sum(len(v) for v in runs.values())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err.rich,
        transient=True,
        disable=as_json or not err.rich.is_terminal,
    ) as bar:
        task_id = bar.add_task("extracting runs", total=n_runs)

        def on_run(run, result):
            bar.update(task_id, advance=1, description=f"extracting {run.bold.name[:48]}")

        if scheduler:
            results = lib.extract_bids_on(
                scheduler,
                root,
                atlas,
                out_dir,
                window,
                opts,
                force=force,
                on_run=on_run,
                runs=runs,
                labeled=labeled,
            )
        else:
            results = lib.extract_bids(
                root,
                atlas,
                out_dir,
                window,
                opts,
                force=force,
                on_run=on_run,
                runs=runs,
                labeled=labeled,
            )
    _print_notes([n for p in results for r in p.runs for n in r.notes])
    problems = [e for p in results for e in (*p.failed, *p.skipped)]
    written = [p for p in results if p.out is not None]
    from fmri_edge.imaging.atlas_refusals import collapse

    # the same atlas refusal on every run of one grid: said once, with how many runs it refused
    shown, repeated = collapse(
        problems, atlas_path, [r.bold.name for prs in runs.values() for r in prs]
    )
    if not written:
        if len(shown) == 1 and shown[0].path == str(
            atlas_path
        ):  # the atlas refused the whole study
            if errors_json is not None:
                _report_problems([], errors_json, [*shown, *repeated], force=force)
            raise shown[0]
        _report_problems(shown, errors_json, repeated, force=force)
        raise UsageError(
            f"{root}: no participant's trials could be extracted ({len(shown)} problem(s) above); "
            "nothing written"
        )
    _report_problems(shown, errors_json, repeated, force=force)
    summary = (
        _write_labels(
            lib, results, opts.labels, window, root, out_dir, force, opts.confounds_strategy, atlas
        )
        if opts.labels
        else None
    )
    if as_json:
        print(
            json.dumps(
                {
                    "window": _window_json(window),
                    "out": str(out_dir),
                    "labels": summary,
                    "participants": [
                        {
                            "participant": p.participant,
                            "out": str(p.out) if p.out else None,
                            "trials": p.n_trials,
                            "runs": [_run_json(r) for r in p.runs],
                            "failed": [e.as_dict() for e in p.failed],
                        }
                        for p in results
                    ],
                    "errors": [e.as_dict() for e in problems],
                }
            )
        )
    else:
        t = Table(
            title=f"extracted {sum(p.n_trials for p in results)} trials of {len(written)} participant(s) "
            f"({window.n_regions} regions × {window.n_times} s)",
            title_justify="left",
        )
        for c in ("participant", "runs", "trials", "skipped events", "written"):
            t.add_column(
                c, justify="right" if c in ("runs", "trials", "skipped events") else "left"
            )
        for p in results:
            why = "; ".join(sorted({_why(s.problem) for s in p.skipped}))
            t.add_row(
                p.participant,
                f"{len(p.runs)}/{p.n_runs}",
                str(p.n_trials),
                f"{len(p.skipped)}" + (f" ({why})" if why else ""),
                str(p.out) if p.out else f"[red]nothing[/] ({len(p.failed)} problem(s) above)",
            )
        out.print(t)
        if summary:
            _print_labels(summary)
    nxt = f"fmri-edge train --data {out_dir}" if summary else f"fmri-edge predict {out_dir}"
    err.print(
        f"wrote {len(written)} participant folder(s) to {out_dir}/ (each participant's runs concatenated in "
        f"run order{'; labels.npz beside each fMRI_data.npz' if summary else ''}) — next: {nxt}",
        highlight=False,
    )


def _write_labels(
    lib, results, spec, window, root: Path, out_dir: Path, force: bool, strategy=None, atlas=None
) -> dict:
    """OUT/labels.json, and the study's participants.tsv copied to OUT (the groups `train --group-by` reads)."""
    import shutil

    from fmri_edge.imaging.events import LABELS_JSON, write_summary

    summary = lib.labels_summary(results, spec, window, root)
    if strategy is not None:  # --confounds-strategy: nilearn's parameters and the scrubbing rule
        summary["confounds_strategy"] = strategy.describe()
    if atlas is not None:  # which atlas made the trials (also in each fMRI_data.npz)
        from fmri_edge.imaging.atlas_provenance import provenance

        summary["atlas"] = provenance(atlas)
    for folder in (root, *list(root.resolve().parents)[:2]):
        tsv = folder / "participants.tsv"
        if tsv.is_file():
            if not (out_dir / tsv.name).exists() or force:
                shutil.copyfile(tsv, out_dir / tsv.name)
            summary["participants_tsv"] = str(tsv)
            break
    write_summary(out_dir / LABELS_JSON, summary)
    return summary


def _print_labels(summary: dict) -> None:
    level = summary["level"]
    t = Table(
        title=f"labels: CLASS from {summary['class_column']!r}, LEVEL "
        + (
            f"from {level['column']!r} (scale {level['scale'][0]:g}…{level['scale'][1]:g} → -4…4)"
            if level["column"]
            else "not rated (class-only rule; a model answers CLASS only)"
        ),
        title_justify="left",
    )
    for c in ("participant", "trials", "CLASS -1", "CLASS 0", "CLASS +1", "rated", "overlapping"):
        t.add_column(c, justify="left" if c == "participant" else "right")
    for p, c in summary["participants"].items():
        t.add_row(
            p,
            *(
                str(c[k])
                for k in ("trials", "CLASS -1", "CLASS 0", "CLASS +1", "rated", "overlapping")
            ),
        )
    out.print(t)
    scrub = {p: c["scrubbing"] for p, c in summary["participants"].items() if "scrubbing" in c}
    if scrub:
        st = summary.get("confounds_strategy", {})
        t = Table(
            title=f"confounds: strategy {st.get('strategy', '?')} (nilearn load_confounds_strategy"
            + "".join(
                f", {k} {st['parameters'][k]:g}"
                for k in ("fd_threshold", "std_dvars_threshold")
                if k in st.get("parameters", {})
            )
            + ")",
            title_justify="left",
        )
        for c in ("participant", "volumes", "censored", "trials dropped", "trials interpolated"):
            t.add_column(c, justify="left" if c == "participant" else "right")
        for p, c in scrub.items():
            t.add_row(
                p,
                *(
                    str(c[k])
                    for k in ("volumes", "censored", "trials_dropped", "trials_interpolated")
                ),
            )
        out.print(t)
    for reason, n in summary["dropped"].items():
        err.print(f"[yellow]dropped:[/] {n} event row(s): {escape(reason)}", highlight=False)
    if summary["overlapping"]["trials"]:
        err.print(
            f"[yellow]warning:[/] {summary['overlapping']['trials']} trial(s) have another labeled event inside "
            "their window (their signals mix); drop them with --min-gap SECONDS",
            highlight=False,
        )
    for p in summary["single_class_participants"]:
        err.print(
            f"[yellow]warning:[/] {p}: every trial has the same CLASS; `train` refuses a participant "
            "without at least two classes",
            highlight=False,
        )


def _why(problem: str) -> str:
    return (
        "past the scan end"
        if "past the end" in problem
        else "before the first volume"
        if "before the first" in problem
        else "other"
    )
