"""Training-side commands: train, report, export, bench. Each imports torch (fmri_edge.training)
only when it runs, so the runtime CLI and its --help never load it."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from fmri_edge.cli.common import Table, app, err, out, user_errors
from fmri_edge.errors import UsageError

PANEL = "Train, export, benchmark (torch: pip install 'fmri-edge[train]')"


# ---- train, export (torch, imported lazily) --------------------------------------------------------------


@app.command(rich_help_panel=PANEL)
def train(
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            "-c",
            help="Training recipe (TOML), e.g. train/fmri-edge.toml. Default: the shipped model's "
            "recipe, installed with the package.",
        ),
    ] = None,
    data: Annotated[
        Optional[list[Path]],
        typer.Option(
            help="A folder of participant folders holding fMRI_data.npz + labels.npz (extract --class-column's output, "
            "or ICBHI's Train). Default: the recipe's data. Repeat to pool several studies (participants are "
            "named STUDY/sub-XX; --group-by study holds out one study at a time)."
        ),
    ] = None,
    group_by: Annotated[
        Optional[str],
        typer.Option(
            help="CV groups: auto (leave-one-participant-out up to 20 participants, grouped 10-fold above) or "
            "participants:COL (a column of DATA/participants.tsv), or, with several --data, study "
            "(leave-one-study-out). Default: the recipe's for its own data, else auto."
        ),
    ] = None,
    permutations: Annotated[
        int,
        typer.Option(
            help="Permutation null: shuffle the labels within each participant and rerun the whole CV this many "
            "times (p-value of the CV accuracy). 0 = skip.",
            min=0,
        ),
    ] = 0,
    protocol: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Evaluation protocol(s): subject (cross-subject CV), within (leave-one-run-out inside each "
            "participant, a model per participant and fold; not exportable) and/or random (paper's 8:1:1 trial "
            "split). Default: the recipe's; with --data, subject."
        ),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="Run folder (default runs/<recipe name>, or runs/<data folder name> with --data).",
        ),
    ] = None,
    final: Annotated[
        bool, typer.Option(help="Fit the model on all subjects after evaluation.")
    ] = True,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads (0 = torch's default).", min=0)
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    scheduler: Annotated[
        Optional[str],
        typer.Option(
            help="Run the evaluated protocol's folds and permutations on a Dask cluster: a scheduler's address "
            "(tcp://host:8786) or local:N for N local worker processes (pip install 'fmri-edge[dask]'); the same "
            "numbers as without it (each task seeded, one torch thread). Workers need the package."
        ),
    ] = None,
):
    """Evaluate a recipe (cross-subject CV and/or the paper's split) and fit the model to ship —
    on ICBHI or on a lab's own labeled study (--data)."""
    with user_errors():
        from fmri_edge import training

        results = training.train(
            config,
            data,
            group_by,
            permutations,
            protocol,
            out_dir,
            final,
            threads,
            scheduler,
            on_plan=None if as_json else _print_fold_plan,
            progress=lambda recipe, plan: _phase_bars(recipe, plan, disable=as_json),
        )
    out_dir, recipe_name, data = (
        Path(results["out"]),
        results["recipe"]["name"],
        (data or [None])[0],
    )
    summaries = {p: r["summary"] for p, r in results["protocols"].items()}
    if as_json:
        print(
            json.dumps(
                {
                    "out": str(out_dir),
                    "summaries": summaries,
                    "evaluation": results.get("evaluation"),
                    "final": results.get("final"),
                }
            )
        )
        return
    ev = results.get("evaluation")
    rated = ev is None or ev["level"].get("rated_trials") == ev["n_trials"]
    t = Table(
        title=f"{recipe_name}: held-out metrics"
        + ("" if rated else " (LEVEL: see the rated trials below)"),
        title_justify="left",
    )
    for c in (
        "protocol",
        "CLASS acc",
        "CLASS F1",
        "LEVEL F1",
        "CLASS_error",
        "LEVEL_error",
        "Score",
        "seconds",
    ):
        t.add_column(c, justify="right")
    for p, s in summaries.items():
        level = (
            (f"{s['LEVEL']['f1']:.3f}", f"{s['LEVEL_error']:.4f}", f"{s['Score']:.4f}")
            if rated
            else ("—",) * 3
        )
        t.add_row(
            p,
            f"{s['CLASS']['accuracy']:.3f} ± {s['CLASS']['accuracy_folds_std']:.3f}",
            f"{s['CLASS']['f1']:.3f}",
            level[0],
            f"{s['CLASS_error']:.4f}",
            *level[1:],
            str(results["protocols"][p]["seconds"]),
        )
    out.print(t)
    if ev and data is not None:
        _print_participants(ev["participants"])
    if ev and ev.get("studies"):
        _print_studies(ev["studies"])
    if ev:
        _print_evaluation(ev)
    if results.get(
        "evaluation_within"
    ):  # --protocol subject and within: the within CV's own report
        ew = results["evaluation_within"]
        out.print(
            "\n[bold]within participants[/] (leave-one-run-out; also cv_participants_within.csv)"
        )
        _print_participants(ew["participants"])
        _print_evaluation(ew)
    if results.get("export") == "refused: --protocol within":
        err.print(
            f"run saved in {out_dir}/ (one model per participant and fold; a within run is not exported: "
            "train --protocol subject for a decoder of new participants)",
            highlight=False,
        )
        return
    shipped = Path("models") / f"{recipe_name}.onnx"  # export's default target for this run
    err.print(
        f"run saved in {out_dir}/ — next: fmri-edge export --run {out_dir}"
        + (
            f" --out {out_dir.name}.onnx"
            if data is not None
            else f" (add --force to replace {shipped}, or --out another file)"
            if shipped.exists()
            else ""
        ),
        highlight=False,
    )


def _bars(disable: bool):
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=err.rich,
        transient=True,
        disable=disable or not err.rich.is_terminal,
    )


class _phase_bars:
    """On a terminal, one bar per phase of a run (subject CV fold k of n, random split k of n, final
    fit, permutation null k of n) with the elapsed time and an estimate of what is left; the callback
    ``(stage, epoch, epochs)`` that fmri_edge.training.run.run takes."""

    def __init__(self, recipe, plan=None, disable: bool = False, bar=None):
        from fmri_edge.training.progress import Phases

        folds = ["test " + "+".join(test_p) for _, test_p in plan.folds] if plan is not None else []
        self.phases = Phases(folds, list(recipe.eval.seeds))
        self.own = bar is None
        self.bar = bar or _bars(disable)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.own:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.own:
            self.bar.__exit__(*exc)
        else:
            for t in self.tasks.values():
                self.bar.remove_task(t)

    def __call__(self, stage: str, epoch: int, epochs: int) -> None:
        key, text, done, total = self.phases.locate(stage, epoch, epochs)
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(text, total=total)
        self.bar.update(self.tasks[key], description=text, completed=done)


def _print_studies(rows: list[dict]) -> None:
    t = Table(title="per study (held-out trials of its participants)", title_justify="left")
    for c in ("study", "participants", "trials", "CLASS acc", "chance (binomial)"):
        t.add_column(c, justify="left" if c == "study" else "right")
    for r in rows:
        t.add_row(
            r["study"],
            str(r["participants"]),
            str(r["trials"]),
            f"{r['CLASS_accuracy']:.3f}",
            f"{r['binomial_threshold']:.3f}",
        )
    out.print(t)


def _print_fold_plan(plan) -> None:
    if plan.runs is not None:  # --protocol within: the runs each participant's folds leave out
        ps = sorted(set(plan.ds.participants.tolist()))
        t = Table(
            title=f"within-participant folds ({sum(len(set(plan.runs[plan.ds.participants == p].tolist())) for p in ps)}"
            f"; leave-one-run-out inside each of {len(ps)} participants)",
            title_justify="left",
        )
        for c in ("participant", "runs", "trials per run"):
            t.add_column(c, justify="left" if c == "participant" else "right")
        for p in ps[:60]:
            r = plan.runs[plan.ds.participants == p]
            t.add_row(
                p,
                str(len(set(r.tolist()))),
                " ".join(str(int((r == v).sum())) for v in sorted(set(r.tolist()))),
            )
        err.print(t)
    t = Table(
        title=f"cross-validation folds ({len(plan.folds)}; groups: {plan.groups_how})",
        title_justify="left",
    )
    for c in ("fold", "held out", "trials", "training participants"):
        t.add_column(c, justify="right" if c in ("fold", "trials") else "left")
    for k, (train_p, test_p) in enumerate(plan.folds):
        held = "+".join(test_p)
        if (
            len(held) > 40 and plan.ds.groups is not None
        ):  # leave-one-study-out: the study, not 8 names
            held = (
                "+".join(sorted(set(plan.ds.group_map()[p] for p in test_p)))
                + f" ({len(test_p)} participants)"
            )
        t.add_row(str(k + 1), held, str(int(plan.ds.of(test_p).labels.shape[0])), str(len(train_p)))
    err.print(t)


def _print_participants(rows: list[dict]) -> None:
    t = Table(
        title="per participant (held out; also in cv_participants.csv, per fold in cv_folds.csv)",
        title_justify="left",
    )
    for c in ("participant", "group", "fold", "trials", "CLASS acc"):
        t.add_column(c, justify="right" if c in ("trials", "CLASS acc") else "left")
    for r in rows[:60]:
        fold = (
            r["fold"] if len(r["fold"]) <= 40 else f"test {r['group']}"
        )  # a whole study held out: its name
        t.add_row(
            r["participant"], r["group"], fold, str(r["trials"]), f"{r['CLASS_accuracy']:.3f}"
        )
    out.print(t)


def _print_evaluation(ev: dict) -> None:
    t = Table(
        title=f"what the cross-validation estimates ({ev['n_trials']} held-out trials of "
        f"{ev['n_participants']} participants, {ev['n_folds']} folds)",
        title_justify="left",
    )
    for c in ("metric", "estimate", "95% interval", "chance", "p"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    perm = ev.get("permutation")
    ch = ev["chance"]
    t.add_row(
        ev["metric"],
        f"{ev['estimate']:.3f}",
        f"{ev['interval_95'][0]:.3f} – {ev['interval_95'][1]:.3f}",
        f"{ch['binomial_threshold']:.3f} (binomial, α {ch['alpha']:g})",
        f"{perm['p']:.3g} ({perm['n']} permutations)" if perm else "— (--permutations N)",
    )
    out.print(t)
    level = ev.get("level") or {}
    if level.get("rated_trials"):
        out.print(
            f"LEVEL on the {level['rated_trials']} rated trials: LEVEL_error {level['LEVEL_error']:.4f}, "
            f"Score {level['Score']:.4f}"
        )
    elif level:
        out.print(level["note"])
    out.print(ev["estimates"])
    err.print(
        f"interval: {ev['interval_method']}; chance: {ch['meaning']}"
        + (
            f"; permutation null mean {perm['null_mean']:.3f}, 95th percentile {perm['null_95th']:.3f}"
            if perm
            else ""
        ),
        highlight=False,
    )


@app.command(rich_help_panel=PANEL)
def report(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Report definition (rows of recipes).")
    ] = Path("train/report.toml"),
    runs: Annotated[Path, typer.Option(help="Folder of training runs.")] = Path("runs"),
):
    """Results report (Markdown + PNG): the paper's table with fmri-edge's rows, both protocols.
    Trains the runs that are missing (torch); needs matplotlib (the plot extra)."""
    with user_errors():
        from fmri_edge.training.report import write_report

        with _bars(
            disable=False
        ) as bar:  # on a terminal: recipe k of n (stderr lines) and each run's folds
            previous = []

            def progress(recipe):
                from fmri_edge.training.run import make_plan

                for done in previous:  # the bars of the recipe trained before this one
                    done.__exit__(None, None, None)
                phases = _phase_bars(recipe, None, bar=bar)
                previous[:] = [phases]
                try:
                    phases.phases.fold_names = [
                        "test " + "+".join(t) for _, t in make_plan(recipe).folds
                    ]
                except Exception:  # the run itself names the problem
                    pass
                return phases

            path = write_report(
                config, runs, log=lambda s: err.print(s, highlight=False), progress=progress
            )
    out.print(f"wrote {path}")


@app.command(rich_help_panel=PANEL)
def export(
    run_dir: Annotated[
        Path,
        typer.Option(
            "--run",
            help="Run folder written by `fmri-edge train` (default: train's "
            "default --out, runs/fmri-edge).",
        ),
    ] = Path("runs/fmri-edge"),
    recipe: Annotated[
        Optional[Path],
        typer.Option(
            help="Export recipe (opset, T, parity tolerance). Default: "
            "export/default.toml where present, else opset 20, 25 s, atol "
            "1e-4."
        ),
    ] = None,
    out_path: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            help="ONNX file to write (default models/<name>.onnx; "
            "a run of train --data: RUN/model.onnx).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the export report as JSON.")
    ] = False,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write <name>.int8.onnx (static QDQ int8, calibrated on "
            "the real training trials) and its card: accuracy change on "
            "the run's cross-validation fold models, speed vs fp32.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing --out file and its card.")
    ] = False,
):
    """Checkpoint → ONNX (raw BOLD in, probabilities out), checked against PyTorch on real trials."""
    with user_errors():
        from fmri_edge import training

        report = training.export(run_dir, out_path, recipe, force=force, int8=int8, log=err.print)
    if as_json:
        print(json.dumps(report))
        return
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["parity"]["max_abs_diff"].items())
    out.print(
        f"[green]exported[/] {report['path']} ({report['parity']['bytes'] / 1e6:.1f} MB, "
        f"sha256 {report['parity']['sha256'][:12]}…)"
    )
    out.print(
        f"parity vs PyTorch on {report['parity_source']} (batches {report['parity']['batches']}): "
        f"max |diff| {diffs} ≤ atol {report['parity']['atol']:.0e}"
    )
    if int8:
        q, v = report["int8"], report["int8"]["verdict"]
        cv = q["cv"]
        acc = (
            f"CLASS accuracy {cv['pooled']['fp32']['CLASS_accuracy']:.3f} → {cv['pooled']['int8']['CLASS_accuracy']:.3f} "
            f"({cv['accuracy_change_points']:+.2f} points) on {cv['n_folds']} CV folds"
            if cv
            else "accuracy not measured (no fold models)"
        )
        out.print(
            f"[green]int8[/] {q['path']} ({q['bytes'] / 1e6:.1f} MB): {q['speed']['speedup']:.2f}× fp32 at batch 256, "
            f"{acc}; "
            + (
                "[bold]int8 qualifies as the default[/]"
                if v["default"] == "int8"
                else f"[bold]fp32 stays the default[/] ({'; '.join(v['reasons'])})"
            )
        )
    err.print(
        f"next: fmri-edge info {report['path']} · fmri-edge predict TRIALS.npy --model {report['path']}"
    )


# ---- bench (torch for the PyTorch side, imported lazily) --------------------------------------------


@app.command(rich_help_panel=PANEL)
def bench(
    run_dir: Annotated[
        Path, typer.Option("--run", help="Run folder (model.pt) whose weights are benchmarked.")
    ] = Path("runs/fmri-edge"),
    model: Annotated[
        Optional[Path],
        typer.Option(
            help="fp32 ONNX of the same weights (default models/<name>.onnx; "
            "exported to a temporary file if missing)."
        ),
    ] = None,
    data: Annotated[
        Optional[Path],
        typer.Option(help="Real trials (ICBHI folder; default: the run's training data)."),
    ] = None,
    threads: Annotated[
        int, typer.Option(help="Threads for onnxruntime, PyTorch and numpy (0 = all CPUs).", min=0)
    ] = 0,
    batches: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,32,256,4096",
    seconds: Annotated[
        float, typer.Option(help="Timing budget per engine, batch and round.", min=0)
    ] = 1.0,
    rounds: Annotated[int, typer.Option(help="Interleaved timing rounds.", min=1)] = 3,
    cold_runs: Annotated[
        int, typer.Option(help="Cold-start runs of each path (0 = skip).", min=0)
    ] = 5,
    large_trials: Annotated[
        int, typer.Option(help="Trials in the large-input file (0 = skip).", min=0)
    ] = 100_000,
    gemm_sizes: Annotated[
        str, typer.Option(help="Matrix sizes for the numpy GEMM peak, comma-separated.")
    ] = "2048,4096",
    no_torch: Annotated[
        bool, typer.Option("--no-torch", help="Leave PyTorch eager out of the engines.")
    ] = False,
    sweep: Annotated[
        bool, typer.Option(help="Also time session-option alternatives and batch sizes.")
    ] = True,
    int8_json: Annotated[
        Optional[Path],
        typer.Option(
            help="JSON of `fmri-edge export --int8 --json` whose cross-"
            "validation accuracy change to quote (default: read from "
            "<model>.int8.onnx when it was quantized from --model)."
        ),
    ] = None,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Write all results to this JSON file.")
    ] = None,
    markdown_path: Annotated[
        Optional[Path], typer.Option("--markdown", help="Write a README-ready section here.")
    ] = None,
):
    """Speed of onnxruntime fp32/int8 vs PyTorch eager, vs the CPU's GEMM peak, cold start and memory."""
    import sys

    from fmri_edge.training.bench.render import markdown, tables, write_markdown
    from fmri_edge.training.bench.run import BenchConfig, run_bench

    with user_errors():
        sizes = tuple(int(b) for b in batches.split(",") if b.strip())
        gemm = tuple(int(n) for n in gemm_sizes.split(",") if n.strip())
        if not sizes or min(sizes) < 1 or not gemm or min(gemm) < 1:
            raise UsageError(
                f"--batches {batches!r} / --gemm-sizes {gemm_sizes!r}: give positive whole numbers, "
                "e.g. 1,32,256,4096"
            )
        cv = None
        if int8_json:
            report = json.loads(int8_json.read_text())
            cv = (report.get("int8") or report).get("cv")
        cfg = BenchConfig(
            run=run_dir,
            model=model,
            data=data,
            threads=threads,
            batches=sizes,
            seconds=seconds,
            rounds=rounds,
            cold_runs=cold_runs,
            large_trials=large_trials,
            sweep=sweep,
            int8_cv=cv,
            gemm_sizes=gemm,
            engines=("ort-fp32", "ort-int8")
            if no_torch
            else ("ort-fp32", "ort-int8", "torch", "torch-graph"),
        )
        res = run_bench(cfg, log=lambda s: err.print(s, highlight=False))
        command = "fmri-edge " + " ".join(sys.argv[1:])
        res["command"] = command
        if json_path:
            json_path.write_text(json.dumps(res, indent=1))
            err.print(f"wrote {json_path}")
        if markdown_path:
            write_markdown(markdown_path, markdown(res, command))
            err.print(f"wrote {markdown_path}")
    for t in tables(res):
        out.print(t)
