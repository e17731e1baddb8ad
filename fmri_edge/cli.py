"""The ``fmri-edge`` command line. Commands are thin: the work is in library functions.

Results go to stdout (a table, or one JSON document with ``--json``); progress, warnings and
errors go to stderr. A bad input is a one-line error naming the file, exit code 2.
torch is imported only by ``train`` and ``export``, lazily.
"""
from __future__ import annotations

import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fmri_edge import __version__
from fmri_edge.io import InputError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Decode emotional valence from region-wise fMRI with an SE residual CNN, on CPU.")
err = Console(stderr=True)
out = Console()
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3     # predict --out: some files or trials were refused or skipped (their rows are missing)
MAX_TABLE_ROWS = 60

_state = {"debug": False}
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Open a model even if its weights digest disagrees with "
                                        "its metadata (for models edited on purpose).")]


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
    except (InputError, UsageError, FileNotFoundError) as e:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # text, not markup
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        err.print("[red]interrupted:[/] output files are either unchanged or not created")
        raise typer.Exit(130) from None


def _report_problems(problems: list[InputError], errors_json: Path | None,
                     unprinted: list[InputError] = (), force: bool = False) -> None:
    """Print each problem with its outcome (refused, skipped, repaired, predicted); write all of
    them to ``errors_json`` (atomically) if given."""
    from fmri_edge.submission import atomic_write

    for p in problems:
        err.print(f"[yellow]{p.outcome}:[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    if errors_json is not None:
        with atomic_write(errors_json, force) as f:
            json.dump([p.as_dict() for p in [*problems, *unprinted]], f, indent=1)


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
    nan: Annotated[Literal["skip", "error", "interpolate"], typer.Option(
        help="Trials with NaN/Inf: skip them (reported; the others are predicted), stop with an error, or "
             "interpolate gaps linearly over time (a region missing over half its seconds is still skipped).")] = "skip",
    crop: Annotated[bool, typer.Option(help="Accept trials longer than the model's T: keep their first T seconds.")] = False,
    pad: Annotated[bool, typer.Option(help="Accept trials shorter than the model's T: repeat their last second.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Add each trial's most attended brain regions (input SE "
                                          "weights) to the table and JSON, and to OUT.regions.csv beside --out.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", help="Regions per trial with --explain.", min=1)] = 5,
    batch_size: Annotated[int, typer.Option(help="Trials per onnxruntime call (capped at 512: larger batches "
                                                 "only cost memory and run slower).", min=1)] = 256,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = one per core; with --scheduler, per task: "
                                              "0 = 1, or the cores shared among local:N's workers).", min=0)] = 0,
    participant: Annotated[Optional[str], typer.Option(
        help="Treat every input as trials of this one participant (e.g. several runs of one person): aligned "
             "together, trials numbered on from file to file.")] = None,
    align: Annotated[bool, typer.Option(
        "--align/--no-align", help="Subject alignment (models that have it): align each participant over all of "
        "its trials. --no-align uses the training population's statistics for every trial.")] = True,
    no_verify: NoVerify = False,
    probs: Annotated[bool, typer.Option("--probs", help="Add the class probabilities (p_negative, p_neutral, "
                                        "p_positive) to --out; the challenge format has only "
                                        "Participant,Trial,CLASS,LEVEL.")] = False,
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Exit 0 even when some files or trials "
                                                "were refused or skipped and their rows are missing from --out "
                                                f"(otherwise exit {EXIT_PARTIAL}).")] = False,
    scheduler: Annotated[Optional[str], typer.Option(
        help="Score on a Dask cluster: a scheduler's address (tcp://host:8786) or local:N for N local worker "
             "processes; same output as without. Needs pip install 'fmri-edge\\[dask]'; see the README.")] = None,
):
    """Predict valence CLASS and LEVEL for every trial."""
    from fmri_edge import io, predict as lib, submission
    from fmri_edge.runtime import Decoder

    participants: set[str] = set()
    with user_errors():
        decoder = Decoder(model, threads=threads, verify=not no_verify)
        if explain:
            _require_attention(decoder)
        if errors_json:
            submission.check_new(errors_json, force)
        _warn_adapted(decoder, paths, participant)
        with submission.atomic_write(out_csv, force) if out_csv else nullcontext() as f, \
                _regions_sidecar(out_csv if explain else None, force, decoder.info.region_names, top_k) as regions:
            def on_batch(b):
                participants.add(b.participant)
                if regions is not None:
                    regions(b)
            run = dict(keep=None if as_json else MAX_TABLE_ROWS, policy=lib.Policy(nan, crop, pad),
                       on_batch=on_batch, participant=participant, align=align, probs=probs)
            if scheduler is None:
                result = lib.predict_to(decoder, paths, f, batch_size, **run)
            else:
                from fmri_edge import cluster

                result = cluster.predict_to(scheduler, decoder, paths, f, batch_size, threads=threads,
                                            weights=explain, console=err, **run)
            if result.n_trials == 0:  # nothing is written; one bad input gives one error line
                one = len(result.problems) == 1
                _report_problems([] if one else result.problems, errors_json, result.problems if one else (), force)
                raise result.problems[0] if one else UsageError(
                    f"no trial could be predicted ({len(result.problems)} problems above); nothing written")
        _report_problems(result.problems, errors_json, force=force)
    refused_paths = [p.path for p in result.problems if p.outcome == "refused"]
    found = io.survey(paths, refused_paths)   # headers only: what the inputs hold, for the summary
    missing, refused = max(0, found.trials - result.n_trials), len(refused_paths)
    n_participants = 1 if participant else found.participants
    names = decoder.info.region_names if explain else None
    if as_json:
        print(json.dumps({"model": str(decoder.path), "n_trials": result.n_trials,
                          "found": {"files": found.files, "participants": n_participants, "trials": found.trials},
                          "missing_rows": missing, "refused": refused,
                          "predictions": [r for b in result.kept for r in _rows_json(b, names, top_k)],
                          "errors": [p.as_dict() for p in result.problems]}))
    else:
        out.print(_predictions_table(result.kept, result.n_trials, names, top_k))
    err.print(f"found {found.files} file(s) of {n_participants} participant(s) holding {found.trials} trial(s); "
              f"predicted {result.n_trials}" + (f", {missing} missing" if missing else "")
              + (f"; {refused} input(s) refused" if refused else ""), highlight=False, soft_wrap=True)
    if out_csv:
        err.print(f"wrote {result.n_trials} rows to {out_csv}")
        odd = submission.unlike_challenge(participants)
        if odd:
            err.print(f"[yellow]warning:[/] participant name(s) {', '.join(map(repr, odd[:5]))}"
                      f"{' …' if len(odd) > 5 else ''} do not look like the challenge's (P17): the Participant "
                      "column is the subject folder or file name; rename the inputs before submitting",
                      highlight=False, soft_wrap=True)
    if out_csv and explain:
        from fmri_edge.explain import regions_csv_path

        err.print(f"wrote the top {top_k} regions of each trial to {regions_csv_path(out_csv)}")
    if out_csv and (missing or refused) and not allow_partial:
        lacks = " and ".join(([f"{missing} row(s) of the trials found"] if missing else [])
                             + ([f"every trial of {refused} refused input(s)"] if refused else []))
        err.print(f"[red]partial:[/] {out_csv} lacks {lacks} (problems above); the rows written are good; "
                  f"exit {EXIT_PARTIAL} (--allow-partial accepts a partial submission)", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_PARTIAL)


def _require_attention(decoder) -> None:
    """--explain and `explain` read the input SE attention: refuse models that have none."""
    if decoder.info.meta.get("region_attention") is False:
        raise UsageError(f"{decoder.path}: this model has no region attention (its networks have no input SE "
                         "block, e.g. the linear default); use the SE CNN: --model "
                         f"{decoder.path.with_name('fmri-edge-se.onnx')}")


def _warn_adapted(decoder, paths, participant) -> None:
    """An adapted model answers other participants too, but was fitted to one: say so."""
    from fmri_edge.adapt import other_participants

    others = other_participants(decoder.info.meta, paths, participant)
    if others:
        who = decoder.info.meta["adaptation"].get("participant")
        err.print(f"[yellow]warning:[/] {escape(decoder.path.name)} was adapted to participant {escape(str(who))}; "
                  f"it also answers {escape(', '.join(others[:5]))}{' …' if len(others) > 5 else ''} (use the base "
                  f"model for other participants)", highlight=False, soft_wrap=True)


def _rows_json(b, region_names=None, top_k: int = 5) -> list[dict]:
    rows = [{"participant": b.participant, "trial": int(t), "CLASS": int(c), "LEVEL": int(lv),
             "class_probs": [round(float(x), 4) for x in p]}
            for t, c, lv, p in zip(b.trial, b.valence_class, b.valence_level, b.class_probs)]
    if region_names is not None:  # --explain
        from fmri_edge.explain import top_regions

        for row, regions in zip(rows, top_regions(b.region_weights, region_names, top_k)):
            row["regions"] = [{k: r[k] for k in ("region", "hemisphere", "weight", "index")} for r in regions]
    return rows


@contextmanager
def _regions_sidecar(out_csv: Path | None, force: bool, region_names, top_k: int):
    """With --explain and --out: stream each trial's top regions to OUT.regions.csv (atomically);
    yields the per-batch callback for predict_to, or None (no extra work without --explain)."""
    if out_csv is None:
        yield None
        return
    from fmri_edge import explain, submission

    with submission.atomic_write(explain.regions_csv_path(out_csv), force) as f:
        explain.write_regions_header(f)
        yield lambda b: explain.write_regions_rows(f, b.participant, b.trial, b.region_weights, region_names, top_k)


def _predictions_table(batches, n_trials: int, region_names=None, top_k: int = 5) -> Table:
    table = Table(title=f"fmri-edge predictions ({n_trials} trials)", title_justify="left")
    for col in ("Participant", "Trial", "CLASS", "LEVEL", "p(-1)", "p(0)", "p(+1)"):
        table.add_column(col, justify="left" if col == "Participant" else "right")
    if region_names is not None:  # --explain
        from fmri_edge.explain import top_regions

        table.add_column(f"top {top_k} regions (SE weight)", justify="left")
    rows = 0
    for b in batches:
        regions = top_regions(b.region_weights, region_names, top_k) if region_names is not None else None
        for n, (t, c, lv, p) in enumerate(zip(b.trial, b.valence_class, b.valence_level, b.class_probs)):
            if rows == MAX_TABLE_ROWS:
                table.caption = f"… {n_trials - rows} more rows: use --out FILE.csv or --json"
                return table
            table.add_row(b.participant, str(t), f"{c:+d}" if c else "0", f"{lv:+d}" if lv else "0",
                          *(f"{x:.2f}" for x in p),
                          *([", ".join(f"{r['region']} {r['weight']:.2f}" for r in regions[n])] if regions else []))
            rows += 1
    return table


# ---- explain ---------------------------------------------------------------------------------------

@app.command()
def explain(
    paths: Annotated[list[Path], typer.Argument(help="Trials: .npy/.npz files, ICBHI subject folders, or folders "
                                                     "of them.", show_default=False)],
    model: Annotated[Optional[Path], typer.Option(help="ONNX model (default: the shipped one).")] = None,
    rows: Annotated[int, typer.Option(help="Regions to list (table) and to draw per class (--plot).", min=1)] = 20,
    top_k: Annotated[int, typer.Option("--top-k", help="k of the 'in top-k' column: how often a region is among a "
                                                       "trial's k most attended.", min=1)] = 10,
    plot: Annotated[Optional[Path], typer.Option(
        help="Draw the figure to this PNG (needs matplotlib: pip install 'fmri-edge\\[plot]').")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --plot file.")] = False,
    faithfulness: Annotated[bool, typer.Option("--faithfulness", help="Also mask each trial's top-k regions vs k "
                                               "random ones and report how much the predictions change.")] = False,
    k: Annotated[Optional[list[int]], typer.Option("--k", help="k for --faithfulness (repeatable; default 5, 10, 20).",
                                                   min=1)] = None,
    draws: Annotated[int, typer.Option(help="Random draws per k for --faithfulness.", min=1)] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the random regions for --faithfulness.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (every region) instead of "
                                                         "tables.")] = False,
    batch_size: Annotated[int, typer.Option(help="Trials per onnxruntime call.", min=1)] = 256,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = one per core).", min=0)] = 0,
    no_verify: NoVerify = False,
):
    """Which brain regions the model attends to: mean input-SE weight per region over your trials,
    overall and per predicted CLASS, ranked; optionally a figure and a faithfulness check."""
    from fmri_edge import explain as lib
    from fmri_edge.runtime import Decoder

    with user_errors():
        decoder = Decoder(model, threads=threads, verify=not no_verify)
        _require_attention(decoder)
        if plot is not None:
            from fmri_edge.submission import check_new

            check_new(plot, force)
        summary, problems = lib.summarize(decoder, paths, top_k, batch_size)
        faith = lib.faithfulness_paths(decoder, paths, tuple(k or (5, 10, 20)), draws, seed, batch_size)[0] \
            if faithfulness else None
    _report_problems(problems, None)
    if summary.uniform:
        err.print("[yellow]warning:[/] every region has the same weight: this model has no input attention "
                  "(a vanilla model?), so there is nothing to rank")
    elif summary.static:
        err.print("[yellow]note:[/] every trial gets the same region weights (the SE gate does not depend on the "
                  "input with this model's per-trial normalization): the ranking is global, not per trial or class",
                  highlight=False)
    if plot is not None:
        from fmri_edge.plot import plot_attention

        try:
            version = decoder.info.meta.get("model_version", decoder.path.name)
            plot_attention(summary, plot, top=rows, title=f"{version}: input SE attention per brain region")
        except ImportError as e:
            err.print(f"[red]error:[/] {e}")
            raise typer.Exit(1) from None
        err.print(f"wrote {plot}")
    if as_json:
        print(json.dumps({"model": str(decoder.path), "model_version": decoder.info.meta.get("model_version"),
                          "summary": summary.to_json(),
                          "faithfulness": faith.to_json() if faith else None,
                          "errors": [p.as_dict() for p in problems]}))
        return
    out.print(_attention_table(summary, rows))
    ref = summary.reference()
    if ref:
        out.print("literature regions (rank of " + str(len(summary.region_names)) + "): "
                  + ", ".join(f"{r['region']} #{r['rank']}" for r in ref), highlight=False)
    if faith:
        out.print(_faithfulness_table(faith))


def _attention_table(s, rows: int) -> Table:
    t = Table(title=f"input SE attention per region ({s.n_trials} trials), ranked by mean weight",
              title_justify="left", caption=f"top-{s.top_k}: share of trials with the region among their {s.top_k} "
                                            "most attended; -1/0/+1: mean over the trials predicted as that class; "
                                            "lit.: the paper's EBR regions, amygdala")
    for col in ("rank", "region", "lit.", "mean", "sd", f"top-{s.top_k}"):
        t.add_column(col, justify="left" if col in ("region", "lit.") else "right", no_wrap=True)
    shown = [c for c, n in zip(s.class_values, s.class_counts) if n]
    for c in shown:
        t.add_column(f"{c:+d}" if c else "0", justify="right", no_wrap=True)
    for r in s.rows(rows):
        t.add_row(str(r["rank"]), r["region"], {"amygdala": "amyg"}.get(r["reference"], r["reference"] or ""),
                  f"{r['mean']:.3f}", f"{r['std']:.3f}", f"{100 * r['top_k_rate']:.0f}%",
                  *(f"{r['by_class'][str(c)]:.3f}" for c in shown))
    return t


def _faithfulness_table(f) -> Table:
    held = {"yes": "held out from training", "no": "NOT held out", "unknown": "held out: unknown"}[f.held_out["status"]]
    t = Table(title=f"faithfulness ({f.n_trials} trials, {held}): mask k regions per trial (flat at their "
                    f"first-{f.baseline_s}-s mean)", title_justify="left",
              caption=f"chg: % of CLASS answers that change; |dp|: mean change of the predicted class's "
                      f"probability; masked regions: the trial's top-k by attention, k random (mean±sd over "
                      f"{f.draws} draws), or its bottom-k")
    for col in ("k", "chg top", "chg random", "chg bottom", "|dp| top", "|dp| random", "|dp| bottom"):
        t.add_column(col, justify="right", overflow="fold")
    for r in f.rows:
        top, rnd, bot = r["top"], r["random"], r["bottom"]
        t.add_row(str(r["k"]), f"{100 * top['changed']:.1f}",
                  f"{100 * rnd['changed']:.1f}±{100 * rnd['changed_std']:.1f}", f"{100 * bot['changed']:.1f}",
                  f"{top['delta_p']:.4f}", f"{rnd['delta_p']:.4f}±{rnd['delta_p_std']:.4f}", f"{bot['delta_p']:.4f}")
    return t


# ---- adapt -----------------------------------------------------------------------------------------

@app.command()
def adapt(
    trials: Annotated[list[Path], typer.Argument(help="One participant's trials: .npy/.npz files or an ICBHI subject "
                                                      "folder (all of them are aligned together, as predict does).",
                                                 show_default=False)],
    labels: Annotated[Path, typer.Option(help="Labels of some of these trials: ICBHI labels.npz (rows = trials 1, "
                                              "2, … in order) or a CSV with columns Participant,Trial,CLASS[,LEVEL].",
                                         show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The adapted model (.onnx); its model card is written "
                                                               "beside it (.md).", show_default=False)],
    model: Annotated[Optional[Path], typer.Option(help="Base ONNX model (default: the shipped one).")] = None,
    method: Annotated[Literal["bias", "scale_bias", "features"], typer.Option(
        help="bias: one offset per class on the log probabilities; scale_bias: also a temperature; features: a new "
             "final layer on the model's features (all shrunk toward the shipped model).")] = "features",
    # defaults: fmri_edge.adapt.DEFAULT_METHOD / DEFAULT_SHRINKAGE (chosen by train/research/adapt_cv.py)
    shrinkage: Annotated[Optional[float], typer.Option(
        help="L2 pull toward the shipped model, in labeled trials (larger: closer to the base model). Default: "
             "10 for models with subject alignment, 0.3 without (chosen by cross-validation, docs/results.md).",
        min=1e-6, show_default=False)] = None,
    participant: Annotated[Optional[str], typer.Option(
        help="Treat every input as this one participant's trials (several files of one person).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out file and card.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0 = one per core).", min=0)] = 0,
):
    """Adapt a model to one participant from a few of its labeled trials (no torch): writes a new
    self-describing ONNX for that participant, which predict --model uses like any model."""
    from fmri_edge import adapt as lib

    with user_errors():
        r = lib.adapt(trials, labels, model, out_path, method, shrinkage, participant, force, threads=threads)
    _report_problems([p for p in r.problems if p.outcome != "predicted"], None)
    a = r.correction.summary()
    if as_json:
        print(json.dumps({"out": str(r.out), "card": str(r.card), "participant": r.participant, "k": r.k,
                          "n_trials": r.n_trials, "correction": a, "changed": r.changed,
                          "answers_before": r.before.tolist(), "answers_after": r.after.tolist(),
                          "labeled_accuracy": list(r.fit_accuracy), "seconds": round(r.seconds, 3)}))
        return
    t = Table(title=f"adapted to {r.participant} from K = {r.k} labeled trials ({r.n_trials} trials seen)",
              title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("method", f"{a['method']}, shrinkage λ = {a['shrinkage']:g}")
    t.add_row("log-probability offsets", "  ".join(f"{c:+d}: {b:+.3f}" if c else f"0: {b:+.3f}"
                                                   for c, b in zip((-1, 0, 1), a["bias"])))
    if "scale" in a:
        t.add_row("temperature term", f"{a['scale']:+.3f} · log p")
    if "weight_norm" in a:
        t.add_row("feature weights", f"‖ΔW‖ = {a['weight_norm']:.4f}")
    t.add_row("answers changed", f"{r.changed} of {r.n_trials} trials; CLASS −1/0/+1: "
                                 f"{'/'.join(map(str, r.before))} → {'/'.join(map(str, r.after))}")
    t.add_row("labeled trials right", f"{r.fit_accuracy[0]:.2f} → {r.fit_accuracy[1]:.2f} (the trials it was "
                                      "fitted on: not a measure of benefit, see docs/results.md)")
    t.add_row("checked", f"adapted ONNX vs its numpy definition on the {r.n_trials} trials: max |diff| "
                         f"{r.max_check_diff:.1e}; {r.seconds:.2f} s")
    out.print(t)
    err.print(f"wrote {r.out} and {r.card} — next: fmri-edge predict {' '.join(map(str, trials))} "
              f"--model {r.out}", highlight=False)


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
    no_verify: NoVerify = False,
):
    """What an fmri-edge ONNX file says about itself."""
    from fmri_edge.runtime import Decoder

    with user_errors():
        d = Decoder(model, verify=not no_verify)
    meta = d.info.meta
    if as_json:
        print(json.dumps(meta))
        return
    t = Table(title=str(d.path), title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("input", f"trials: (batch, {d.info.n_regions} regions, {d.info.n_times} s) raw BOLD, float32")
    if d.aligned:
        t.add_row("optional inputs", f"subject_mean, subject_scale {d.align_shape}: one participant's alignment "
                                     "statistics (default: the training population's)")
    t.add_row("outputs", ", ".join(meta.get("outputs", [])))
    t.add_row("CLASS / LEVEL", f"{list(d.info.class_values)} / {list(d.info.level_values)}")
    heads = meta.get("heads", {})
    t.add_row("LEVEL", f"LEVEL head, {d.info.level_rule}" if "level" in heads or not heads else
              f"from CLASS: {meta.get('level_from_class') or 'the class-only rule −1 → −3, 0 → 0, 1 → 2'} "
              "(no LEVEL head)")
    for key, v in _describe(meta).items():
        t.add_row(key, v)
    t.add_row("weights", _integrity_row(d.integrity))
    names = d.info.region_names
    t.add_row("regions", f"{len(names)}: {', '.join(names[:4])} … {names[-1]}")
    out.print(t)


def _integrity_row(status: str) -> str:
    from fmri_edge import integrity

    return {integrity.VERIFIED: f"{integrity.DIGEST_KEY} verified: weights and graph as exported",
            integrity.UNVERIFIABLE: f"not verifiable: exported without a {integrity.DIGEST_KEY} (export it again "
                                    "to add one)",
            integrity.NOT_CHECKED: "not checked (--no-verify)"}[status]


def _describe(meta: dict) -> dict[str, str]:
    """Readable one-line summaries of the model's metadata for `info`."""
    rows = {k: str(meta[k]) for k in ("model_version", "architecture") if k in meta}
    norm = meta.get("normalization") or {}
    if norm:
        rows["normalization"] = f"{norm.get('per_trial')} per trial, inside the graph" + (
            f"; {meta['subject_normalization']} per subject before it" if meta.get("subject_normalization") else "")
    align = meta.get("subject_alignment")
    rows["subject alignment"] = (
        f"{align['mode']} of each participant's representation over its own trials, inside the graph; predict "
        f"aligns every participant with ≥ {align['min_trials']} trials (subject folder, file, or --participant); "
        "fewer trials or --no-align: the training population's statistics" if align else
        "none (every trial is answered on its own)")
    if meta.get("recipe"):
        rows["recipe"] = f"{meta['recipe']} (re-run its CV: fmri-edge train --config {meta['recipe']} " \
                         "--protocol subject --no-final)"
    tr = meta.get("training") or {}
    if tr:
        ps = tr.get("participants") or []
        rows["training"] = (f"{tr.get('recipe')}, {len(ps)} subjects ({ps[0]}…{ps[-1]}), {tr.get('epochs')} epochs"
                            + (", ensemble of fold models" if tr.get("ensemble_of_folds") else "")
                            + f", commit {tr.get('git_commit')}" if ps else json.dumps(tr))
    from fmri_edge.splits import PROTOCOL_LABEL
    for protocol, m in (meta.get("metrics") or {}).items():
        rows[f"measured: {PROTOCOL_LABEL.get(protocol, protocol)}"] = (
            f"CLASS acc {m['CLASS_accuracy']:.3f} ± {m['CLASS_accuracy_folds_std']:.3f}, F1 {m['CLASS_f1']:.3f}, "
            f"LEVEL_error {m['LEVEL_error']:.4f}, Score {m['Score']:.4f} "
            f"({m['n_folds']} {'seeds' if protocol == 'random' else 'folds'})")
    a = meta.get("adaptation")
    if a:
        extra = "".join(f", {k} {a[k]}" for k in ("scale", "weight_norm") if k in a)
        rows["adapted to"] = (f"participant {a.get('participant')} from K = {a.get('k')} labeled trials "
                              f"({a.get('labels')}), {a.get('method')}, shrinkage {a.get('shrinkage')}, "
                              f"bias {a.get('bias')}{extra}; {a.get('adapted')}")
        rows["base model"] = f"{a.get('base_model')} ({a.get('base_model_version')}), sha256 {a.get('base_sha256')}"
    for k in ("members", "fmri_edge_version", "exported", "opset"):
        if k in meta:
            rows[k] = str(meta[k])
    return rows


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
    nifti: Annotated[bool, typer.Option("--nifti", help="Write OUT/atlas.nii.gz (246 labels as cubes), OUT/bold.nii.gz "
                                                        "(4-D, TR 2 s) and OUT/events.tsv for `fmri-edge extract` "
                                                        "(needs the nifti extra).")] = False,
    bids: Annotated[bool, typer.Option("--bids", help="Write OUT/atlas.nii.gz and a tiny BIDS study OUT/study "
                                                      "(raw events, fMRIPrep-named derivatives) of --subjects × "
                                                      "--runs runs (needs the nifti extra).")] = False,
    runs: Annotated[int, typer.Option(help="Runs per subject with --bids.", min=1)] = 2,
):
    """Write simulated BOLD-like trials with a planted valence signal (no real data needed);
    with --nifti or --bids, synthetic NIfTI images and events to try `fmri-edge extract` on."""
    import numpy as np

    from fmri_edge.simulate import simulate as sim

    if nifti or bids:
        _simulate_nifti(out_path, bids, trials, subjects, runs, seed, force)
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
        err.print(f"wrote {subjects} subject folder(s) of {trials} trials with labels to {out_path}/")


def _simulate_nifti(out_path: Path, bids: bool, n_events: int, subjects: int, runs: int, seed: int, force: bool):
    with user_errors():
        from fmri_edge.extract import require_nifti

        require_nifti()
        from fmri_edge import nifti_sim

        if out_path.suffix:
            raise UsageError(f"{out_path}: --nifti and --bids write a folder; give a folder name")
        if out_path.exists() and any(out_path.iterdir()) and not force:
            raise InputError(out_path, "exists and is not empty; use --force to write into it")
        out_path.mkdir(parents=True, exist_ok=True)
        nifti_sim.write_atlas(out_path / "atlas.nii.gz")
        if bids:
            written = nifti_sim.write_bids(out_path / "study", subjects, runs, n_events=n_events, seed=seed)
            err.print(f"wrote {out_path / 'atlas.nii.gz'} and {out_path / 'study'}/: {len(written)} subject(s) × "
                      f"{runs} run(s) of {n_events} events (TR 2 s)")
            return
        run = nifti_sim.write_run(out_path / "bold.nii.gz", out_path / "events.tsv", n_events=n_events, seed=seed)
        err.print(f"wrote {out_path}/atlas.nii.gz, bold.nii.gz ({run.n_volumes} volumes, TR {run.tr:g} s) and "
                  f"events.tsv ({n_events} events)")


# ---- extract (nilearn + nibabel, the nifti extra, imported lazily) --------------------------------------

@app.command()
def extract(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="One run's 4-D BOLD (.nii/.nii.gz), or a BIDS "
                                           "folder holding fMRIPrep derivatives (sub-*/(ses-*/)func/"
                                           "*_desc-preproc_bold.nii.gz).", show_default=False)],
    atlas: Annotated[Path, typer.Option(help="Label atlas: 3-D NIfTI, labels 1 … 246 (Brainnetome "
                                        "BN_Atlas_246_2mm.nii.gz), 0 = background.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="trials.npz (one run) or a folder (BIDS: "
                                      "OUT/sub-XX/fMRI_data.npz, which `fmri-edge predict OUT` reads).",
                                      show_default=False)],
    events: Annotated[Optional[Path], typer.Option(help="The run's BIDS events.tsv (onset in seconds; one trial "
                                                   "per row). BIDS folders: found per run.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="ONNX model whose window (n_times, baseline_s) and "
                                                  "region count to cut for (default: the shipped one).")] = None,
    tr: Annotated[Optional[float], typer.Option("--tr", help="Repetition time in seconds (default: the NIfTI "
                                                "header's).")] = None,
    slice_time_ref: Annotated[float, typer.Option(
        help="Where in its TR each volume is taken: volume k at (k + this) × TR seconds. 0 (default): at the "
             "start of its acquisition, the BIDS onset clock; 0.5 for data slice-time corrected to mid-volume.",
        min=0.0, max=1.0)] = 0.0,
    trial_type: Annotated[Optional[list[str]], typer.Option(
        "--trial-type", help="Keep only event rows of this trial_type (repeatable; default: every row).")] = None,
    task: Annotated[Optional[str], typer.Option(help="BIDS folders: only runs of this task.")] = None,
    space: Annotated[Optional[str], typer.Option(help="BIDS folders: only BOLD in this space (the atlas's), e.g. "
                                                 "MNI152NLin2009cAsym.")] = None,
    confounds: Annotated[Optional[str], typer.Option(
        help="Regress out confounds: a TSV with one row per volume (fMRIPrep's *_desc-confounds_timeseries.tsv), "
             "or 'auto' for fMRIPrep's file beside each BOLD. Default: none (raw signal).")] = None,
    confound_columns: Annotated[str, typer.Option(help="Columns of the confounds TSV, comma-separated.")]
        = "trans_x,trans_y,trans_z,rot_x,rot_y,rot_z",
    detrend: Annotated[bool, typer.Option(help="Remove each region's linear trend and mean (changes the raw level "
                                               "the model was trained on).")] = False,
    high_pass: Annotated[Optional[float], typer.Option(help="High-pass filter cutoff in Hz (nilearn). Default: "
                                                       "none.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing output files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
    errors_json: Annotated[Optional[Path], typer.Option("--errors", help="Write refused runs and skipped events "
                                                        "as JSON.")] = None,
):
    """Region time series from NIfTI BOLD with an atlas (nilearn), resampled to 1 s and cut into one
    trial per event: the trials `fmri-edge predict` reads. Needs pip install 'fmri-edge\\[nifti]'."""
    with user_errors():
        from fmri_edge import extract as lib

        lib.require_nifti()
        from fmri_edge.runtime import Decoder

        info = Decoder(model).info
        window = lib.Window.from_model(info)
        if window.baseline_from.startswith("default"):
            err.print(f"[yellow]note:[/] baseline {window.baseline_s:g} s: {window.baseline_from}", highlight=False)
        opts = lib.Options(tr=tr, slice_time_ref=slice_time_ref, trial_types=tuple(trial_type or ()),
                           confounds=confounds, confound_columns=tuple(c.strip() for c in confound_columns.split(",")
                                                                       if c.strip()),
                           detrend=detrend, high_pass=high_pass)
        if errors_json:
            from fmri_edge.submission import check_new

            check_new(errors_json, force)
        if source.is_dir():
            _extract_bids(lib, source, atlas, out, window, opts, task, space, force, as_json, errors_json)
        else:
            _extract_one(lib, source, atlas, out, events, window, opts, force, as_json, errors_json)


def _window_json(window) -> dict:
    return {"n_regions": window.n_regions, "n_times": window.n_times, "baseline_s": window.baseline_s,
            "baseline_from": window.baseline_from}


def _run_json(r) -> dict:
    return {"bold": str(r.bold), "events": str(r.events), "volumes": r.n_volumes, "tr": r.tr,
            "trials": len(r.trials), "skipped": len(r.skipped)}


def _print_notes(notes) -> None:
    for n in dict.fromkeys(notes):  # each note once
        err.print(f"[yellow]note:[/] {escape(n)}", highlight=False, soft_wrap=True)


def _extract_one(lib, bold: Path, atlas_path: Path, out_path: Path, events: Path | None, window, opts, force,
                 as_json, errors_json):
    if events is None:
        raise UsageError(f"{bold}: give the run's events with --events EVENTS.tsv (or point at a BIDS folder)")
    if out_path.suffix != ".npz":
        raise UsageError(f"--out {out_path}: give an .npz file name for one run (a folder is for BIDS input)")
    from fmri_edge.submission import check_new

    check_new(out_path, force)
    conf = opts.confounds
    if conf == "auto":
        conf = lib.confounds_beside(bold)
    atlas = lib.Atlas(atlas_path, window.n_regions)
    r = lib.extract_run(bold, atlas, events, window, opts, conf)
    _print_notes(r.notes)
    if not len(r.trials):
        _report_problems(r.skipped, errors_json, force=force)
        raise InputError(r.events, f"no event's {window.n_times}-s window fits inside the scan ({len(r.skipped)} "
                                   "skipped above); nothing written")
    lib.save_trials(out_path, [r], force)
    _report_problems(r.skipped, errors_json, force=force)
    if as_json:
        print(json.dumps({"window": _window_json(window), "out": str(out_path), "runs": [_run_json(r)],
                          "errors": [p.as_dict() for p in r.skipped]}))
    else:
        t = Table(title=f"extracted {len(r.trials)} trials ({window.n_regions} regions × {window.n_times} s, "
                        f"from onset − {window.baseline_s:g} s)", title_justify="left")
        for c in ("run", "volumes", "TR", "events", "trials", "skipped"):
            t.add_column(c, justify="left" if c == "run" else "right")
        t.add_row(bold.name, str(r.n_volumes), f"{r.tr:g} s", str(len(r.trials) + len(r.skipped)),
                  str(len(r.trials)), str(len(r.skipped)))
        out.print(t)
    err.print(f"wrote {len(r.trials)} trials {tuple(r.trials.shape)} float32 to {out_path} — next: "
              f"fmri-edge predict {out_path}", highlight=False)


def _extract_bids(lib, root: Path, atlas_path: Path, out_dir: Path, window, opts, task, space, force, as_json,
                  errors_json):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if out_dir.suffix == ".npz" or out_dir.is_file():
        raise UsageError(f"--out {out_dir}: a BIDS folder is written as one folder per participant; give a folder")
    if opts.confounds not in (None, "auto"):
        raise UsageError(f"--confounds {opts.confounds}: with a BIDS folder use --confounds auto (fMRIPrep's "
                         "*_desc-confounds_timeseries.tsv beside each BOLD)")
    runs = lib.find_bids_runs(root, task, space, confounds=opts.confounds == "auto")
    atlas = lib.Atlas(atlas_path, window.n_regions)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_runs = sum(len(v) for v in runs.values())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=as_json or not err.is_terminal) as bar:
        task_id = bar.add_task("extracting runs", total=n_runs)

        def on_run(run, result):
            bar.update(task_id, advance=1, description=f"extracting {run.bold.name[:48]}")

        results = lib.extract_bids(root, atlas, out_dir, window, opts, force=force, on_run=on_run, runs=runs)
    _print_notes([n for p in results for r in p.runs for n in r.notes])
    problems = [e for p in results for e in (*p.failed, *p.skipped)]
    written = [p for p in results if p.out is not None]
    if not written:
        _report_problems(problems, errors_json, force=force)
        raise UsageError(f"{root}: no participant's trials could be extracted ({len(problems)} problem(s) above); "
                         "nothing written")
    _report_problems(problems, errors_json, force=force)
    if as_json:
        print(json.dumps({"window": _window_json(window), "out": str(out_dir), "participants": [
            {"participant": p.participant, "out": str(p.out) if p.out else None, "trials": p.n_trials,
             "runs": [_run_json(r) for r in p.runs], "failed": [e.as_dict() for e in p.failed]} for p in results],
            "errors": [e.as_dict() for e in problems]}))
    else:
        t = Table(title=f"extracted {sum(p.n_trials for p in results)} trials of {len(written)} participant(s) "
                        f"({window.n_regions} regions × {window.n_times} s)", title_justify="left")
        for c in ("participant", "runs", "trials", "skipped events", "written"):
            t.add_column(c, justify="right" if c in ("runs", "trials", "skipped events") else "left")
        for p in results:
            why = "; ".join(sorted({_why(s.problem) for s in p.skipped}))
            t.add_row(p.participant, f"{len(p.runs)}/{p.n_runs}",
                      str(p.n_trials), f"{len(p.skipped)}" + (f" ({why})" if why else ""),
                      str(p.out) if p.out else f"[red]nothing[/] ({len(p.failed)} problem(s) above)")
        out.print(t)
    err.print(f"wrote {len(written)} participant folder(s) to {out_dir}/ (each participant's runs concatenated in "
              f"run order) — next: fmri-edge predict {out_dir}", highlight=False)


def _why(problem: str) -> str:
    return "past the scan end" if "past the end" in problem else "before the first volume" \
        if "before the first" in problem else "other"


# ---- train, export (torch, imported lazily) --------------------------------------------------------------

@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Training recipe (TOML), e.g. train/fmri-edge.toml.")],
    protocol: Annotated[Optional[list[str]], typer.Option(
        help="Evaluation protocol(s): subject (cross-subject CV) and/or random (paper's 8:1:1 trial split). "
             "Default: the recipe's.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe name>).")] = None,
    final: Annotated[bool, typer.Option(help="Fit the model on all subjects after evaluation.")] = True,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0 = torch's default).", min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
):
    """Evaluate a recipe (cross-subject CV and/or the paper's split) and fit the model to ship."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with user_errors():
        from fmri_edge.training.recipe import load_recipe
        from fmri_edge.training.run import run

        if threads:
            import torch

            torch.set_num_threads(threads)
        recipe = load_recipe(config)
        protocols = protocol or recipe.eval.protocols
        bad = set(protocols) - {"subject", "random"}
        if bad:
            raise UsageError(f"unknown protocol(s) {sorted(bad)}: use subject and/or random")
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
def report(
    config: Annotated[Path, typer.Option("--config", "-c", help="Report definition (rows of recipes).")] = Path("train/report.toml"),
    runs: Annotated[Path, typer.Option(help="Folder of training runs.")] = Path("runs"),
):
    """Results report (Markdown + PNG): the paper's table with fmri-edge's rows, both protocols.
    Trains the runs that are missing (torch); needs matplotlib (the plot extra)."""
    with user_errors():
        from fmri_edge.report import write_report

        path = write_report(config, runs, log=err.print)
    out.print(f"wrote {path}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Option("--run", help="Run folder written by `fmri-edge train`.")] = Path("runs/fmri-edge-se"),
    recipe: Annotated[Path, typer.Option(help="Export recipe (opset, T, parity tolerance).")] = Path("export/default.toml"),
    out_path: Annotated[Optional[Path], typer.Option("--out", help="ONNX file to write (default models/<name>.onnx).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the export report as JSON.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write <name>.int8.onnx (static QDQ int8, calibrated on "
                                                      "the real training trials) and its card: accuracy change on "
                                                      "the run's cross-validation fold models, speed vs fp32.")] = False,
):
    """Checkpoint → ONNX (raw BOLD in, probabilities out), checked against PyTorch on real trials."""
    with user_errors():
        from fmri_edge.training.packaging import export_run

        report = export_run(run_dir, recipe, out_path, log=err.print)
        if int8:
            from fmri_edge.training.quantize import export_int8

            report["int8"] = export_int8(run_dir, report["path"], log=err.print)
    if as_json:
        print(json.dumps(report))
        return
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["parity"]["max_abs_diff"].items())
    out.print(f"[green]exported[/] {report['path']} ({report['parity']['bytes'] / 1e6:.1f} MB, "
              f"sha256 {report['parity']['sha256'][:12]}…)")
    out.print(f"parity vs PyTorch on {report['parity_source']} (batches {report['parity']['batches']}): "
              f"max |diff| {diffs} ≤ atol {report['parity']['atol']:.0e}")
    if int8:
        q, v = report["int8"], report["int8"]["verdict"]
        cv = q["cv"]
        acc = (f"CLASS accuracy {cv['pooled']['fp32']['CLASS_accuracy']:.3f} → {cv['pooled']['int8']['CLASS_accuracy']:.3f} "
               f"({cv['accuracy_change_points']:+.2f} points) on {cv['n_folds']} CV folds" if cv else "accuracy not measured (no fold models)")
        out.print(f"[green]int8[/] {q['path']} ({q['bytes'] / 1e6:.1f} MB): {q['speed']['speedup']:.2f}× fp32 at batch 256, "
                  f"{acc}; " + ("[bold]int8 qualifies as the default[/]" if v["default"] == "int8" else
                                f"[bold]fp32 stays the default[/] ({'; '.join(v['reasons'])})"))
    err.print(f"next: fmri-edge info {report['path']} · fmri-edge predict TRIALS.npy --model {report['path']}")


# ---- bench (torch for the PyTorch side, imported lazily) --------------------------------------------

@app.command()
def bench(
    run_dir: Annotated[Path, typer.Option("--run", help="Run folder (model.pt) whose weights are benchmarked.")] = Path("runs/fmri-edge-se"),
    model: Annotated[Optional[Path], typer.Option(help="fp32 ONNX of the same weights (default models/<name>.onnx; "
                                                       "exported to a temporary file if missing).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Real trials (ICBHI folder; default: the run's training data).")] = None,
    threads: Annotated[int, typer.Option(help="Threads for onnxruntime, PyTorch and numpy (0 = all CPUs).", min=0)] = 0,
    batches: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,32,256,4096",
    seconds: Annotated[float, typer.Option(help="Timing budget per engine, batch and round.", min=0)] = 1.0,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds.", min=1)] = 3,
    cold_runs: Annotated[int, typer.Option(help="Cold-start runs of each path (0 = skip).", min=0)] = 5,
    large_trials: Annotated[int, typer.Option(help="Trials in the large-input file (0 = skip).", min=0)] = 100_000,
    gemm_sizes: Annotated[str, typer.Option(help="Matrix sizes for the numpy GEMM peak, comma-separated.")] = "2048,4096",
    no_torch: Annotated[bool, typer.Option("--no-torch", help="Leave PyTorch eager out of the engines.")] = False,
    sweep: Annotated[bool, typer.Option(help="Also time session-option alternatives and batch sizes.")] = True,
    int8_json: Annotated[Optional[Path], typer.Option(help="JSON of `fmri-edge export --int8 --json` whose cross-"
                                                           "validation accuracy change to quote (default: read from "
                                                           "<model>.int8.onnx when it was quantized from --model).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write all results to this JSON file.")] = None,
    markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="Write a README-ready section here.")] = None,
):
    """Speed of onnxruntime fp32/int8 vs PyTorch eager, vs the CPU's GEMM peak, cold start and memory."""
    import sys

    from fmri_edge.bench import BenchConfig, markdown, run_bench, tables

    with user_errors():
        sizes = tuple(int(b) for b in batches.split(",") if b.strip())
        gemm = tuple(int(n) for n in gemm_sizes.split(",") if n.strip())
        if not sizes or min(sizes) < 1 or not gemm or min(gemm) < 1:
            raise UsageError(f"--batches {batches!r} / --gemm-sizes {gemm_sizes!r}: give positive whole numbers, "
                             "e.g. 1,32,256,4096")
        cv = None
        if int8_json:
            report = json.loads(int8_json.read_text())
            cv = (report.get("int8") or report).get("cv")
        cfg = BenchConfig(run=run_dir, model=model, data=data, threads=threads, batches=sizes, seconds=seconds,
                          rounds=rounds, cold_runs=cold_runs, large_trials=large_trials, sweep=sweep, int8_cv=cv,
                          gemm_sizes=gemm,
                          engines=("ort-fp32", "ort-int8") if no_torch else ("ort-fp32", "ort-int8", "torch"))
        res = run_bench(cfg, log=lambda s: err.print(s, highlight=False))
        command = "fmri-edge " + " ".join(sys.argv[1:])
        res["command"] = command
        if json_path:
            json_path.write_text(json.dumps(res, indent=1))
            err.print(f"wrote {json_path}")
        if markdown_path:
            from fmri_edge.bench import write_markdown

            write_markdown(markdown_path, markdown(res, command))
            err.print(f"wrote {markdown_path}")
    for t in tables(res):
        out.print(t)


if __name__ == "__main__":
    app()
