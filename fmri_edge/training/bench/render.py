"""A benchmark result for people: the terminal's rich tables (:func:`tables`) and a README-ready
Markdown section (:func:`markdown`, :func:`write_markdown`). Both draw the same table models
(:class:`Grid`): engines × batches, targets, the other measurements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fmri_edge.training.bench.schema import BenchResult
from fmri_edge.training.bench.timing import ENGINE_LABELS

MD_START, MD_END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Column:
    name: str
    right: bool = True  # right-aligned (numbers)
    verdict: bool = (
        False  # cells are yes / no / —: coloured on a terminal, "no" in bold in Markdown
    )


@dataclass
class Grid:
    """One table, whatever draws it. A row whose ``derived`` flag is set is computed from the rows
    above (ratios): dim on a terminal, its first cell in italics in Markdown."""

    columns: list[Column]
    title: str = ""
    rows: list[tuple[list[str], bool]] = field(default_factory=list)
    show_header: bool = True

    def add(self, *cells: str, derived: bool = False) -> None:
        self.rows.append((list(cells), derived))


def _tps(v: float) -> str:
    return f"{v:,.0f}"


def _ratio_name(name: str) -> str:
    return name.replace("_", " ").replace("ort", "onnxruntime")


def _gemm_shape(product: dict) -> str:
    return f"{product['m']}×{product['k']}×{product['n']}"


def engine_grid(res: BenchResult, policy: str | None = None, title: str = "") -> Grid:
    """Engines × batches under one thread policy (default: the headline one): latency at batch 1,
    trials/s at the others, then the ratios between engines. The headline table also has each
    engine's best achieved GFLOP/s against the GEMM peak."""
    headline = policy is None or policy == res.get("policy")
    engines = res["engines"] if headline else res["engines_by_policy"][policy]
    ratios = res.get("ratios", {}) if headline else res["ratios_by_policy"][policy]
    batches = list(next(iter(engines.values())).keys()) if engines else []
    digits = 2 if headline else 3
    g = Grid(
        [
            Column("engine", right=False),
            *(Column("batch 1 latency" if b == "1" else f"batch {b}") for b in batches),
        ]
        + ([Column("best GFLOP/s (% of GEMM peak)")] if headline else []),
        title=title,
    )
    for k, per in engines.items():
        cells = [
            f"{per[b]['ms_per_call']:.{digits}f} ms ({_tps(per[b]['trials_per_s'])}/s)"
            if b == "1"
            else f"{_tps(per[b]['trials_per_s'])}/s"
            for b in batches
        ]
        if headline:
            eff = res["efficiency"][k]
            bb = max(eff, key=lambda b: eff[b]["gflops"])
            cells.append(
                f"{eff[bb]['gflops']:.1f} ({eff[bb]['pct_of_gemm_peak']:.0f} %) at batch {bb}"
            )
        g.add(ENGINE_LABELS.get(k, k), *cells)
    for name, per in ratios.items():
        g.add(
            _ratio_name(name),
            *(f"{per[b]:.2f}×" for b in batches),
            *([""] if headline else []),
            derived=True,
        )
    return g


def targets_grid(res: BenchResult) -> Grid:
    g = Grid(
        [
            Column("target", right=False),
            Column("measured"),
            Column("goal"),
            Column("met", verdict=True),
        ],
        title="targets",
    )
    for row in res["targets"]:
        v = row["value"]
        g.add(
            row["target"],
            "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)),
            row["goal"],
            "—" if row["met"] is None else ("yes" if row["met"] else "no"),
        )
    return g


def summary_grid(res: BenchResult) -> Grid:
    g = Grid(
        [Column("", right=False), Column("", right=False)],
        title="other measurements",
        show_header=False,
    )
    for k, v in summary_rows(res):
        g.add(k, v)
    return g


def profile_grid(res: BenchResult) -> Grid:
    g = Grid(
        [
            Column("node (after onnxruntime's graph optimizations)", right=False),
            Column("op", right=False),
            Column("output", right=False),
            Column("µs per call"),
            Column("share"),
        ]
    )
    for nd in res["profile"]["nodes"][:12]:
        g.add(
            nd["node"][:48],
            nd["op"],
            " ".join(map(str, nd["output_shapes"])),
            f"{nd['us_per_call']:.1f}",
            f"{100 * nd['share']:.1f} %",
        )
    return g


def summary_rows(res: BenchResult) -> list[tuple[str, str]]:
    rows = []
    cold = res.get("cold_start")
    if cold:
        med = cold["median_s"]
        rows.append(
            (
                "cold start, 30 trials",
                f"fmri-edge predict {med['fmri-edge predict']:.3f} s · PyTorch script "
                f"{med['pytorch script']:.3f} s ({cold['ratio_fmri_edge_vs_torch']:.2f}×) · fmri-edge --help "
                f"{med['fmri-edge --help']:.3f} s · same answers {cold['same_answers']}",
            )
        )
    for what, imp in (res.get("import_time") or {}).items():
        rows.append(
            (
                f"imports of `{what}` (-X importtime)",
                f"{imp['total_s']:.3f} s: "
                + ", ".join(f"{m['module']} {m['cumulative_s']:.3f}" for m in imp["top"][:6])
                + f"; heavy modules imported: "
                f"{imp['heavy_modules_imported'] or 'none'}",
            )
        )
    prof = res.get("profile")
    if prof:
        rows.append(
            (
                f"per-op profile, batch {prof['batch']}",
                f"{prof['kernel_ms_per_call']:.2f} ms of kernels per call "
                f"({prof['wall_ms_per_call']:.2f} ms wall): "
                + ", ".join(f"{k} {100 * v:.0f} %" for k, v in list(prof["by_op"].items())[:6]),
            )
        )
    for policy, r in (res.get("ratios_by_policy") or {}).items():
        if policy != res.get("policy"):
            rows.append(
                (
                    f"ratios, threads {policy}",
                    " · ".join(
                        f"{_ratio_name(name)}: " + "/".join(f"{v:.2f}" for v in per.values())
                        for name, per in r.items()
                    )
                    + " (batches "
                    + "/".join(next(iter(r.values())).keys())
                    + ")",
                )
            )
    for policy, spreads in (res.get("ratio_spread_by_policy") or {}).items():
        per = spreads.get("ort_fp32_vs_torch_graph")
        if per:
            rows.append(
                (
                    f"onnxruntime fp32 vs torch graph round by round, {policy}",
                    " · ".join(
                        f"batch {b}: {v['min']:.2f}–{v['max']:.2f}× (median {v['median']:.2f})"
                        for b, v in per.items()
                    ),
                )
            )
    large = res.get("large_input")
    if large:
        rows.append(
            (
                "large input",
                f"{large['n_trials']:,} trials ({large['file_bytes'] / 1e9:.2f} GB): "
                f"{large['wall_s']:.1f} s, {_tps(large['trials_per_s'])} trials/s end to end "
                f"({large.get('vs_model_only_best', float('nan')):.2f}× model-only best), peak RSS "
                f"{large['peak_rss_mb']:.0f} MB, batch {large['batch_size']}"
                + (
                    f"; with --batch-size {large['huge_batch']['batch_size']:,}: "
                    f"{_tps(large['huge_batch']['trials_per_s'])} trials/s, "
                    f"{large['huge_batch']['peak_rss_mb']:.0f} MB"
                    if "huge_batch" in large
                    else ""
                ),
            )
        )
    best = res.get("model_only_best")
    if best:
        rows.append(
            (
                "model-only best (fp32)",
                f"{_tps(best['trials_per_s'])} trials/s at batch {best['batch']} "
                f"({best['pct_of_gemm_peak']:.0f} % of numpy GEMM peak)",
            )
        )
    gemm = res.get("gemm", {})
    if gemm:
        o = gemm.get("onnxruntime_matmul", {})
        ms = gemm.get("model_shapes")
        rows.append(
            (
                "GEMM peak",
                f"numpy {gemm['gflops']:.1f} GFLOP/s (n={gemm['size']}); onnxruntime MatMul "
                f"{o.get('gflops', '—')} GFLOP/s"
                + (
                    f"; the model's own products at batch 256 ({', '.join(_gemm_shape(s) for s in ms['products'])}): "
                    f"numpy {ms['gflops']:.1f} GFLOP/s, {1e3 * ms['seconds']:.3f} ms"
                    if ms
                    else ""
                ),
            )
        )
    fl = res.get("flops")
    if fl:
        rows.append(
            (
                "FLOPs per trial",
                f"{fl['per_trial']:,} from the ONNX graph ({', '.join(f'{k} {v / 1e6:.2f}M' for k, v in fl['by_op'].items())}); "
                f"{fl['per_trial_torch_layers']:,} from the PyTorch layers; {fl['parameters']:,} parameters",
            )
        )
    sweep = res.get("batch_sweep")
    if sweep:
        rows.append(
            (
                "fp32 batch sweep",
                " · ".join(f"{b}: {_tps(v)}/s" for b, v in sweep["trials_per_s"].items())
                + f" (fastest {sweep['fastest']}, predict default {sweep['predict_default']})",
            )
        )
    so = res.get("session_options")
    if so:
        rows.append(
            (
                "session options vs chosen",
                " · ".join(
                    f"{k}: " + "/".join(f"{v:.2f}" for v in r.values())
                    for k, r in so["relative_to_chosen"].items()
                    if k != "chosen"
                )
                + " (batch 1/256 trials/s relative to the chosen options)",
            )
        )
    m = res.get("model", {})
    if "int8_vs_fp32" in m:
        a = m["int8_vs_fp32"]
        rows.append(
            (
                "int8 vs fp32 answers",
                f"same CLASS on {100 * a['class_agreement']:.1f} % of {a['trials']} trials; "
                f"{m['int8_bytes'] / 1e6:.1f} MB vs {m['fp32_bytes'] / 1e6:.1f} MB",
            )
        )
    return rows


# ---- the two renderers ---------------------------------------------------------------------------------


def to_rich(g: Grid):
    from rich.table import Table

    t = Table(title=g.title or None, title_justify="left", show_header=g.show_header)
    for i, c in enumerate(g.columns):
        t.add_column(
            c.name,
            justify="right" if c.right else "left",
            style="bold" if not g.show_header and i == 0 else None,
        )
    for cells, derived in g.rows:
        cells = [
            (f"[green]{v}[/]" if v == "yes" else f"[red]{v}[/]" if v == "no" else v)
            if c.verdict
            else v
            for c, v in zip(g.columns, cells)
        ]
        t.add_row(*cells, style="dim" if derived else None)
    return t


def to_markdown(g: Grid) -> list[str]:
    """The table's lines (its title, when it has one, as a caption line before it)."""
    lines = [g.title, ""] if g.title else []
    lines += [
        _md_row([c.name for c in g.columns]),
        "|" + "".join(":---:|" if c.verdict else "---:|" if c.right else "---|" for c in g.columns),
    ]
    for cells, derived in g.rows:
        cells = [f"**{v}**" if c.verdict and v == "no" else v for c, v in zip(g.columns, cells)]
        if derived:
            cells[0] = f"*{cells[0]}*"
        lines.append(_md_row(cells))
    return lines


def _md_row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def tables(res: BenchResult) -> list:
    """Rich tables: engines × batches, the other measurements, the targets."""
    m = res["machine"]
    title = (
        f"fmri-edge bench — {m['cpu']}, {res['threads']} threads, load {m['load_average_start']} → "
        f"{m.get('load_average_end')}, {res['flops']['per_trial'] / 1e6:.2f} MFLOP/trial, numpy GEMM peak "
        f"{res['gemm']['gflops']:.0f} GFLOP/s"
    )
    return [
        to_rich(engine_grid(res, title=title)),
        to_rich(summary_grid(res)),
        to_rich(targets_grid(res)),
    ]


def markdown(res: BenchResult, command: str = "") -> str:
    """A README-ready section: the tables, the targets, the command and the machine."""
    m = res["machine"]
    lines = to_markdown(engine_grid(res))
    for policy in res.get("engines_by_policy") or {}:
        if policy != res.get("policy"):
            lines += [
                "",
                *to_markdown(engine_grid(res, policy, title=f"Threads {policy} (both engines):")),
            ]
    prof = res.get("profile")
    if prof:
        lines += [
            "",
            f"Per-op profile of the fp32 graph (onnxruntime's profiler, batch {prof['batch']}, "
            f"{prof['threads']} threads, {prof['calls']} calls): {prof['kernel_ms_per_call']:.3f} ms of "
            f"kernels per call, {prof['wall_ms_per_call']:.3f} ms wall.",
            "",
            *to_markdown(profile_grid(res)),
        ]
    targets = targets_grid(res)
    targets.title = ""
    summary = summary_grid(res)
    summary.title, summary.show_header = "", True
    lines += ["", *to_markdown(targets), "", *to_markdown(summary)]
    lines += [
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m.get('memory_gb')} GB RAM, "
        f"{', '.join(m['simd'])}; {m['platform']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f". Threads: {res['threads']}. Load average (1/5/15 min) {m['load_average_start']} at the start, "
        f"{m.get('load_average_end')} at the end. Date: {m['date']}. Inputs: {res['inputs']}.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, section: str) -> None:
    """Write the section to ``path``; where the file exists and holds the markers
    ``<!-- bench:start -->`` … ``<!-- bench:end -->``, only the text between them is replaced."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if MD_START in text and MD_END in text and text.index(MD_START) < text.index(MD_END):
        head, rest = text.split(MD_START, 1)
        tail = rest.split(MD_END, 1)[1]
        path.write_text(f"{head}{MD_START}\n{section}{MD_END}{tail}")
    else:
        path.write_text(section)
