"""``fmri-edge extract`` on a BIDS study: every participant's runs, the table of what came out, and
the labels' summary (``labels.json``); the JSON pieces shared with one run's extraction."""

import json
from pathlib import Path

from fmri_edge.cli.common import Table, err, escape, out
from fmri_edge.cli.common import report_problems as _report_problems
from fmri_edge.errors import InputError, UsageError


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
    from fmri_edge.imaging import study

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
        study.label_study(runs, window, opts) if opts.labels else None
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

        args = (root, atlas, out_dir, window, opts)
        options = dict(force=force, on_run=on_run, runs=runs, labeled=labeled)
        if scheduler:
            results = study.extract_bids_on(scheduler, *args, **options)
        else:
            results = study.extract_bids(*args, **options)
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
    from fmri_edge.imaging import study

    import shutil

    from fmri_edge.imaging.events import LABELS_JSON, write_summary

    summary = study.labels_summary(results, spec, window, root)
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
