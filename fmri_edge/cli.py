"""The ``fmri-edge`` command line. Commands are thin: the work is in library functions.

Results go to stdout (a table, or one JSON document with ``--json``); progress, warnings and
errors go to stderr. A bad input is a one-line error naming the file, exit code 2.
torch is imported only by ``train`` and ``export``, lazily.
"""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fmri_edge import __version__
from fmri_edge.io import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Decode emotional valence from region-wise fMRI with an SE residual CNN, on CPU.")
err = Console(stderr=True)
out = Console()
EXIT_BAD_INPUT = 2
MAX_TABLE_ROWS = 60

_state = {"debug": False}


def _version(value: bool):
    if value:
        print(f"fmri-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """fmri-edge: valence CLASS (-1, 0, 1) and LEVEL (-4 … 4) per fMRI trial, with ONNX Runtime."""
    _state["debug"] = debug


@contextmanager
def user_errors():
    """Turn expected problems into one red line on stderr and exit code 2 (traceback with --debug)."""
    try:
        yield
    except (InputError, ValueError, FileNotFoundError) as e:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _report_problems(problems: list[InputError], errors_json: Path | None,
                     unprinted: list[InputError] = ()) -> None:
    """Print each problem as a 'skipped:' line; write all of them to ``errors_json`` if given."""
    for p in problems:
        err.print(f"[yellow]skipped:[/] {p}", highlight=False, soft_wrap=True)
    if errors_json is not None:
        errors_json.write_text(json.dumps([{"file": p.path, "problem": p.problem}
                                           for p in [*problems, *unprinted]], indent=1))


# ---- predict -------------------------------------------------------------------------------------

@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help=".npy/.npz files (N, 246, T) or (246, T), ICBHI subject "
                                                     "folders, or folders of them.", show_default=False)],
    model: Annotated[Optional[Path], typer.Option(help="ONNX model (default: the shipped one).")] = None,
    out_csv: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the submission CSV here.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
    errors_json: Annotated[Optional[Path], typer.Option("--errors", help="Write skipped files/trials as JSON.")] = None,
    batch_size: Annotated[int, typer.Option(help="Trials per onnxruntime call.", min=1)] = 256,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = one per core).", min=0)] = 0,
):
    """Predict valence CLASS and LEVEL for every trial."""
    from fmri_edge import predict as lib, submission
    from fmri_edge.runtime import Decoder

    with user_errors():
        decoder = Decoder(model, threads=threads)
        with submission.atomic_write(out_csv, force) if out_csv else nullcontext() as f:
            result = lib.predict_to(decoder, paths, f, batch_size, keep=None if as_json else MAX_TABLE_ROWS)
    if result.n_trials == 0 and len(result.problems) == 1:  # one bad input: one error line
        _report_problems([], errors_json, result.problems)
        err.print(f"[red]error:[/] {result.problems[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    _report_problems(result.problems, errors_json)
    if result.n_trials == 0:
        err.print(f"[red]error:[/] no trial could be predicted ({len(result.problems)} problems above)")
        raise typer.Exit(EXIT_BAD_INPUT)
    if as_json:
        print(json.dumps({"model": str(decoder.path), "n_trials": result.n_trials,
                          "predictions": [r for b in result.kept for r in _rows_json(b)],
                          "errors": [{"file": p.path, "problem": p.problem} for p in result.problems]}))
    else:
        out.print(_predictions_table(result.kept, result.n_trials))
    if out_csv:
        err.print(f"wrote {result.n_trials} rows to {out_csv}")


def _rows_json(b) -> list[dict]:
    return [{"participant": b.participant, "trial": int(t), "CLASS": int(c), "LEVEL": int(lv),
             "class_probs": [round(float(x), 4) for x in p]}
            for t, c, lv, p in zip(b.trial, b.valence_class, b.valence_level, b.class_probs)]


def _predictions_table(batches, n_trials: int) -> Table:
    table = Table(title=f"fmri-edge predictions ({n_trials} trials)", title_justify="left")
    for col in ("Participant", "Trial", "CLASS", "LEVEL", "p(-1)", "p(0)", "p(+1)"):
        table.add_column(col, justify="left" if col == "Participant" else "right")
    rows = 0
    for b in batches:
        for t, c, lv, p in zip(b.trial, b.valence_class, b.valence_level, b.class_probs):
            if rows == MAX_TABLE_ROWS:
                table.caption = f"… {n_trials - rows} more rows: use --out FILE.csv or --json"
                return table
            table.add_row(b.participant, str(t), f"{c:+d}" if c else "0", f"{lv:+d}" if lv else "0",
                          *(f"{x:.2f}" for x in p))
            rows += 1
    return table


# ---- score -----------------------------------------------------------------------------------------

@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="Submission CSV (Participant,Trial,CLASS,LEVEL).")],
    labels: Annotated[Path, typer.Argument(help="Labels: a CSV in the same format or an ICBHI folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
):
    """The challenge score and the paper's metrics (precision, sensitivity, F1, confusion)."""
    from fmri_edge import scoring, submission

    with user_errors():
        pred = submission.read_answers(predictions)
        truth = submission.read_labels(labels)
        pi, ti = submission.align(pred, truth, predictions, labels)
        report = scoring.full_report(pred.valence_class[pi], truth.valence_class[ti],
                                     pred.valence_level[pi], truth.valence_level[ti])
    if as_json:
        print(json.dumps(report))
        return
    t = Table(title=f"challenge score ({report['n_trials']} trials; lower is better)", title_justify="left")
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


# ---- info, simulate ------------------------------------------------------------------------------------

@app.command()
def info(
    model: Annotated[Optional[Path], typer.Argument(help="ONNX model (default: the shipped one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full metadata as JSON.")] = False,
):
    """What an fmri-edge ONNX file says about itself."""
    from fmri_edge.runtime import Decoder

    with user_errors():
        d = Decoder(model)
    meta = d.info.meta
    if as_json:
        print(json.dumps(meta))
        return
    t = Table(title=str(d.path), title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("input", f"trials: (batch, {d.info.n_regions} regions, {d.info.n_times} s) raw BOLD, float32")
    t.add_row("outputs", ", ".join(meta.get("outputs", [])))
    t.add_row("CLASS / LEVEL", f"{list(d.info.class_values)} / {list(d.info.level_values)}")
    t.add_row("LEVEL rule", d.info.level_rule)
    for key in ("model_version", "architecture", "normalization", "subject_normalization", "members",
                "training", "metrics", "fmri_edge_version", "exported", "opset"):
        if key in meta:
            v = meta[key]
            t.add_row(key, v if isinstance(v, str) else json.dumps(v))
    names = d.info.region_names
    t.add_row("regions", f"{len(names)}: {', '.join(names[:4])} … {names[-1]}")
    out.print(t)


@app.command()
def simulate(
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="OUT.npy (trials only) or a folder "
                                                                  "(ICBHI layout with labels).")],
    trials: Annotated[int, typer.Option(help="Trials per subject.", min=1)] = 30,
    subjects: Annotated[int, typer.Option(help="Subjects (folder output: one subject folder each).", min=1)] = 1,
    n_times: Annotated[int, typer.Option(help="Seconds per trial.", min=6)] = 25,
    effect: Annotated[float, typer.Option(help="Planted signal, fraction of BOLD level.")] = 0.02,
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite existing output.")] = False,
):
    """Write simulated BOLD-like trials with a planted valence signal (no real data needed)."""
    import numpy as np

    from fmri_edge.simulate import simulate as sim

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
        err.print(f"wrote {subjects} subject folder(s) of {trials} trials with labels to {out_path}/")


# ---- train, export (torch, imported lazily) --------------------------------------------------------------

@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Training recipe (TOML), e.g. train/fmri-edge-se.toml.")],
    protocol: Annotated[Optional[list[str]], typer.Option(
        help="Evaluation protocol(s): subject (cross-subject CV) and/or random (paper's 8:1:1 trial split). "
             "Default: the recipe's.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe name>).")] = None,
    final: Annotated[bool, typer.Option(help="Fit the model on all subjects after evaluation.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
):
    """Evaluate a recipe (cross-subject CV and/or the paper's split) and fit the model to ship."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with user_errors():
        from fmri_edge.training.recipe import load_recipe
        from fmri_edge.training.run import run

        recipe = load_recipe(config)
        protocols = protocol or recipe.eval.protocols
        bad = set(protocols) - {"subject", "random"}
        if bad:
            raise ValueError(f"unknown protocol(s) {sorted(bad)}: use subject and/or random")
        out_dir = out_dir or Path("runs") / recipe.name
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=as_json, disable=as_json) as bar:
            tasks: dict[str, int] = {}

            def progress(stage: str, epoch: int, epochs: int):
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=epochs)
                bar.update(tasks[stage], completed=epoch)

            results = run(recipe, protocols, out_dir, fit_final=final, progress=progress)
    summaries = {p: r["summary"] for p, r in results["protocols"].items()}
    if as_json:
        print(json.dumps({"out": str(out_dir), "summaries": summaries, "final": results.get("final")}))
        return
    t = Table(title=f"{recipe.name}: held-out metrics", title_justify="left")
    for c in ("protocol", "CLASS acc", "CLASS F1", "LEVEL F1", "CLASS_error", "LEVEL_error", "Score", "seconds"):
        t.add_column(c, justify="right")
    for p, s in summaries.items():
        t.add_row(p, f"{s['CLASS']['accuracy']:.3f} ± {s['CLASS']['accuracy_folds_std']:.3f}",
                  f"{s['CLASS']['f1']:.3f}", f"{s['LEVEL']['f1']:.3f}", f"{s['CLASS_error']:.4f}",
                  f"{s['LEVEL_error']:.4f}", f"{s['Score']:.4f}", str(results["protocols"][p]["seconds"]))
    out.print(t)
    err.print(f"run saved in {out_dir}/ — next: fmri-edge export --run {out_dir}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Option("--run", help="Run folder written by `fmri-edge train`.")] = Path("runs/fmri-edge-se"),
    recipe: Annotated[Path, typer.Option(help="Export recipe (opset, T, parity tolerance).")] = Path("export/default.toml"),
    out_path: Annotated[Optional[Path], typer.Option("--out", help="ONNX file to write (default models/<name>.onnx).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the export report as JSON.")] = False,
):
    """Checkpoint → ONNX (raw BOLD in, probabilities out), checked against PyTorch on real trials."""
    with user_errors():
        from fmri_edge.training.packaging import export_run

        report = export_run(run_dir, recipe, out_path, log=err.print)
    if as_json:
        print(json.dumps(report))
        return
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["parity"]["max_abs_diff"].items())
    out.print(f"[green]exported[/] {report['path']} ({report['parity']['bytes'] / 1e6:.1f} MB, "
              f"sha256 {report['parity']['sha256'][:12]}…)")
    out.print(f"parity vs PyTorch on {report['parity_source']} (batches {report['parity']['batches']}): "
              f"max |diff| {diffs} ≤ atol {report['parity']['atol']:.0e}")
    err.print(f"next: fmri-edge info {report['path']} · fmri-edge predict TRIALS.npy --model {report['path']}")


if __name__ == "__main__":
    app()
