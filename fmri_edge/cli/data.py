"""Commands on data and answers: score and simulate (no model, no torch)."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fmri_edge.cli.common import (
    Table,
    app,
    err,
    out,
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
