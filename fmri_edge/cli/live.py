"""The real-time command: stream (numpy + nibabel + onnxruntime; DICOM with the realtime extra)."""

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from fmri_edge.cli.common import EXIT_PARTIAL, NoVerify, app, err, escape, user_errors
from fmri_edge.errors import UsageError

PANEL = "Decode (numpy + onnxruntime)"
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


@app.command(rich_help_panel=PANEL)
def stream(
    watch_dir: Annotated[
        Path,
        typer.Argument(
            metavar="WATCH_DIR",
            help="The folder the scanner (or a converter) "
            "writes one volume file into per TR: 3-D NIfTI (.nii, .nii.gz) or "
            "DICOM (Siemens mosaic, XA enhanced).",
            show_default=False,
        ),
    ],
    atlas: Annotated[
        Path,
        typer.Option(
            help="Label atlas (labels 1 … 246) already in the volumes' space (warp it "
            "to the participant's functional space beforehand; docs/realtime.md).",
            show_default=False,
        ),
    ],
    events: Annotated[
        Path,
        typer.Option(
            help="The run's schedule: BIDS events.tsv (onset in seconds from the "
            "start of the first volume).",
            show_default=False,
        ),
    ],
    tr: Annotated[
        float, typer.Option("--tr", help="Repetition time in seconds.", show_default=False)
    ],
    model: Annotated[
        Optional[Path], typer.Option(help="ONNX model (default: the shipped one).")
    ] = None,
    out_csv: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="Also write each answer as a submission "
            "row with the class probabilities, whole on disk before the "
            "next volume is read.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    participant: Annotated[
        Optional[str],
        typer.Option(help="The Participant of the answers (default: the watch folder's name)."),
    ] = None,
    no_align: Annotated[
        bool,
        typer.Option(
            "--no-align",
            help="Answer every trial with the training "
            "population's statistics (no subject alignment).",
        ),
    ] = False,
    stats_from: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--stats-from",
            help="Align with the statistics of an earlier run of the same participant (its trials, "
            "e.g. extract's .npz of a calibration run; repeatable). Default: running statistics of this run's "
            "answered trials once there are 10.",
        ),
    ] = None,
    send: Annotated[
        Optional[str],
        typer.Option(
            help="Also send each answer (one JSON line) to udp://HOST:PORT or "
            "tcp://HOST:PORT (PsychoPy, Psychtoolbox)."
        ),
    ] = None,
    volume_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for a volume still being written (or "
            "missing) before declaring it lost."
        ),
    ] = 10.0,
    poll: Annotated[
        Optional[float],
        typer.Option(
            help="List the folder every this many seconds instead of using "
            "file events (network mounts give none)."
        ),
    ] = None,
    first_volume: Annotated[
        int, typer.Option(help="The number in the file name of the run's first volume.", min=0)
    ] = 1,
    slice_time_ref: Annotated[
        float,
        typer.Option(
            help="Volume k is at (k + this) × TR seconds, as in extract.", min=0.0, max=1.0
        ),
    ] = 0.0,
    trial_type: Annotated[
        Optional[list[str]],
        typer.Option(
            "--trial-type", help="Answer only event rows of this trial_type (repeatable)."
        ),
    ] = None,
    include_existing: Annotated[
        bool,
        typer.Option(
            help="Also use volume files already in the folder at start "
            "(default: reported and ignored)."
        ),
    ] = False,
    no_realign: Annotated[
        bool,
        typer.Option(
            "--no-realign",
            help="Do not realign: for volumes the scanner "
            "already motion-corrected (default: each volume is realigned to "
            "the reference and the atlas follows the head).",
        ),
    ] = False,
    reference: Annotated[
        Optional[Path],
        typer.Option(
            help="The session's reference volume (3-D NIfTI or DICOM, "
            "e.g. the first volume of a short reference scan; the atlas "
            "must be in its space). Default: the run's first volume after "
            "--dummy-scans."
        ),
    ] = None,
    dummy_scans: Annotated[
        int,
        typer.Option(
            help="Volumes at the start of the run not used as the reference "
            "(not yet at steady state).",
            min=0,
        ),
    ] = 0,
    motion_out: Annotated[
        Optional[Path],
        typer.Option(
            "--motion-out",
            help="Write each volume's motion as it "
            "arrives: TSV with volume, file, trans_x/y/z (mm), "
            "rot_x/y/z (rad), framewise_displacement (mm).",
        ),
    ] = None,
    fd_threshold: Annotated[
        float,
        typer.Option(
            help="Framewise displacement (mm, Power 2012) above which an "
            "answer's window is flagged (motion_flag)."
        ),
    ] = 0.5,
    series: Annotated[
        Optional[str],
        typer.Option(
            help="Follow this series: its number (13 for "
            "001_000013_000001.dcm) or its file name with the volume number "
            "as # (default: the series of the run's first volume)."
        ),
    ] = None,
    no_verify: NoVerify = False,
):
    """Decode each trial live, as soon as the volumes of its window have arrived: one JSON line per
    answer on stdout. Exits when every trial of the schedule is answered (0) or declared incomplete
    (3). Needs pip install 'fmri-edge[realtime]'."""
    from fmri_edge.imaging.extract import require_nifti
    from fmri_edge.model.runtime import Model
    from fmri_edge.realtime.stream import Stream

    def problem(p):
        err.print(
            f"[yellow]{getattr(p, 'outcome', 'error')}:[/] {escape(str(p))}",
            highlight=False,
            soft_wrap=True,
        )

    def answer(line, state={"stdout": True}):
        if state["stdout"]:
            try:
                print(line, flush=True)
            except (
                BrokenPipeError
            ):  # the reader of stdout went away (`| head`): --out and --send go on
                state["stdout"] = False
                sys.stdout = open(os.devnull, "w")

    from fmri_edge.cli.console import is_terminal

    view = None
    if is_terminal(sys.stdout):  # an operator's terminal: the live view; in a pipe, JSON lines
        from fmri_edge.cli.liveview import LiveView

        view = LiveView(fd_threshold)
    with user_errors():
        require_nifti("stream", "realtime")
        if no_align and stats_from:
            raise UsageError("--no-align and --stats-from exclude each other")
        if (
            out_csv is not None
        ):  # at start, exit 2 (docs/realtime.md), never a traceback at the first answer
            from fmri_edge.files import check_writable

            check_writable(out_csv)
        decoder = Model(
            model, threads=1, verify=not no_verify
        )  # one trial per call: no thread hand-offs
        live = Stream(
            watch_dir,
            atlas,
            events,
            tr,
            decoder,
            participant=participant,
            out=out_csv,
            force=force,
            align="none" if no_align else "stats" if stats_from else "running",
            stats_from=stats_from,
            send=send,
            volume_timeout=volume_timeout,
            poll=poll,
            first_volume=first_volume,
            slice_time_ref=slice_time_ref,
            trial_types=tuple(trial_type or ()),
            include_existing=include_existing,
            on_answer=answer,
            on_problem=problem,
            realign=not no_realign,
            reference=reference,
            dummy_scans=dummy_scans,
            motion_out=motion_out,
            fd_threshold=fd_threshold,
            series=series,
        )
        target = (
            escape(str(reference))
            if reference
            else "the run's first volume"
            + (f" after {dummy_scans} dummy scan(s)" if dummy_scans else "")
        )
        err.print(
            f"waiting for volumes in {escape(str(watch_dir))} ({'polling every ' + f'{poll:g} s' if poll else 'file events'}): "
            f"{len(live.waiting)} trial(s) to answer"
            + ("" if no_realign else f"; realigning to {target}"),
            highlight=False,
        )
        if view is not None:
            live.on_answer, live.on_problem, live.on_volume = view.answer, view.problem, view.volume
            with view:
                result = live.run()
        else:
            result = live.run()
    lat = sorted(result.timing.latency_ms)
    speed = f"; latency median {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms" if lat else ""
    err.print(
        f"answered {result.answered} of {result.n_trials} trial(s)"
        + (f", {len(result.incomplete)} incomplete" if result.incomplete else "")
        + (
            f", {result.flagged} flagged for motion (FD > {fd_threshold:g} mm)"
            if not no_realign
            else ""
        )
        + speed
        + (
            f"; {result.answered if result.out_error is None else live.rows.rows} row(s) in {out_csv}"
            if out_csv
            else ""
        ),
        highlight=False,
    )
    if result.interrupted:
        err.print(
            f"[red]interrupted ({result.interrupted}):[/] the answers so far are written, whole rows only"
        )
        raise typer.Exit(EXIT_SIGNAL[result.interrupted])
    if not result.complete:
        raise typer.Exit(EXIT_PARTIAL)
