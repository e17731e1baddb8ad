"""One benchmark run end to end (:func:`run_bench`): loads the network and its ONNX export, checks
they are the same weights, and calls the measuring modules in turn; returns the result
(:class:`fmri_edge.training.bench.schema.BenchResult`, JSON-ready)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.errors import UsageError
from fmri_edge.training.bench.coldstart import cold_start, import_profile, large_input
from fmri_edge.training.bench.flops import efficiency, flops_onnx, flops_torch, gemm_nodes
from fmri_edge.training.bench.probe import (
    gemm_peak,
    load_average,
    machine_info,
    ort_gemm_peak,
    resolve_threads,
)
from fmri_edge.training.bench.schema import BenchResult
from fmri_edge.training.bench.targets import check_targets
from fmri_edge.training.bench.timing import (
    ENGINE_PAIRS,
    ENGINES,
    THREAD_POLICIES,
    TimingJob,
    engine_ratios,
    op_profile,
    paired_ratio_spread,
    session_option_sweep,
    time_engines,
    time_engines_in_process,
    torch_engine,
)
from fmri_edge.training.checkpoints import DEFAULT_DATA, participant_trials, reference_net

DEFAULT_RUN = Path("runs/fmri-edge")


@dataclass
class BenchConfig:
    run: Path = DEFAULT_RUN  # run folder with model.pt (and fold<k>.pt for ensembles)
    model: Path | None = (
        None  # fp32 ONNX of the same weights (default models/<name>.onnx, else exported)
    )
    data: Path | None = None  # real trials (default: the run's recipe data, else ../shared/…/Train)
    threads: int = 0  # 0 = os.cpu_count(); the same for onnxruntime, torch and numpy
    batches: tuple = (1, 32, 256, 4096)
    seconds: float = 1.0  # timing budget per engine, batch and round
    rounds: int = 3
    engines: tuple = ENGINES
    cold_runs: int = 5  # cold-start repeats per path (0 = skip)
    large_trials: int = 100_000  # trials in the large-input file (0 = skip)
    large_batch: int | None = None  # --batch-size for the large run (default: predict's default)
    workdir: Path | None = None  # temporary files (default: a new folder under the system temp dir)
    gemm_sizes: tuple = (2048, 4096)
    sweep: bool = True  # session options and batch sizes around the default
    sweep_batches: tuple = (64, 128, 256, 512, 1024)
    int8_cv: dict | None = None  # an int8 accuracy check to quote (from `fmri-edge export --int8`)
    policies: tuple = tuple(
        THREAD_POLICIES
    )  # thread policies timed (both engines alike); the first is the headline


def real_trials(
    data: Path | None, recipe: dict, n_times: int, subject_norm: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Trials as the graph receives them and their participants
    (:func:`fmri_edge.training.checkpoints.participant_trials`), from ``data``, else the recipe's data
    folder, else the default one."""
    return participant_trials(data or recipe.get("data") or DEFAULT_DATA, n_times, subject_norm)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> BenchResult:
    """Every measurement of :mod:`fmri_edge.training.bench`, in one run."""
    threads = resolve_threads(cfg.threads)
    own = tempfile.TemporaryDirectory(prefix="fmri-edge-bench-") if cfg.workdir is None else None
    workdir = Path(own.name) if own else Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_bench(cfg, threads, workdir, log)
    finally:
        if own:
            own.cleanup()


def _run_bench(cfg: BenchConfig, threads: int, workdir: Path, log) -> BenchResult:
    from fmri_edge.decoding.answers import DEFAULT_BATCH, run_by_participant
    from fmri_edge.model.runtime import Model, file_sha256

    res: BenchResult = {
        "machine": machine_info(),
        "threads": threads,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    if res["machine"]["load_average_start"] and res["machine"]["load_average_start"][0] > 0.5 * (
        os.cpu_count() or 1
    ):
        log(
            f"[warning] load average {res['machine']['load_average_start'][0]} on {os.cpu_count()} CPUs: "
            "other processes compete for the CPU, timings are noisy"
        )
    run = Path(cfg.run)
    log(f"loading the PyTorch network from {run} …")
    net, members, ckpt, recipe = reference_net(run)
    mcfg = members[0].cfg
    x, who, source = real_trials(cfg.data, recipe, mcfg.n_times, mcfg.subject_norm)
    res["inputs"] = source

    # the same weights in ONNX, fp32 and int8
    fp32 = (
        Path(cfg.model) if cfg.model else Path("models") / f"{recipe.get('name', 'fmri-edge')}.onnx"
    )
    if not fp32.is_file():
        from fmri_edge.training.onnx_export import export_onnx

        fp32 = workdir / "fp32.onnx"
        log(f"no ONNX model given: exporting {run} to a temporary file …")
        export_onnx(
            members,
            fp32,
            {
                "model_version": f"bench:{run}",
                "level_rule": "argmax",
                "subject_normalization": None if mcfg.subject_norm == "none" else mcfg.subject_norm,
            },
            x[:64],
        )
    dec = Model(fp32, threads=threads)
    ref = torch_engine(net, threads)(x[:64])
    got = dec.run(np.ascontiguousarray(x[:64]))
    diff = max(
        float(np.abs(got[k] - r).max())
        for k, r in zip(("class_probs", "level_probs", "region_weights"), ref)
    )
    if diff > 1e-3:
        raise UsageError(
            f"{fp32} and {run} disagree (max |diff| {diff:.2e}): not the same weights; pass the "
            "model exported from this run (--model) or leave --model out to export it"
        )
    res["model"] = {
        "fp32": str(fp32),
        "fp32_bytes": fp32.stat().st_size,
        "sha256": file_sha256(fp32),
        "members": len(members),
        "parity_max_abs_diff_vs_torch": diff,
    }
    engines = [k for k in ENGINES if k in cfg.engines]
    int8 = None
    if "ort-int8" in engines:
        from fmri_edge.training.quantize import int8_path, quantize_members

        int8 = int8_path(fp32)
        shipped = Model(int8) if int8.is_file() else None
        if (
            shipped
            and shipped.info.meta.get("quantization", {}).get("fp32_model_sha256")
            == res["model"]["sha256"]
        ):
            log(f"int8: {int8} (quantized from this fp32 model)")
            check = shipped.info.meta.get("int8_check", {})
            if check.get("cv") and not cfg.int8_cv:
                res["int8_cv"] = check["cv"]
        else:
            int8 = workdir / "int8.onnx"
            log("quantizing to int8 (static, calibrated on the real trials) …")
            quantize_members(members, fp32, int8, x, source, participants=who)
        res["model"]["int8"] = str(int8)
        qdec = Model(int8, threads=threads)
        # each participant aligned over its own trials, as predict runs them (and as int8 is calibrated)
        q, f = (run_by_participant(d, np.ascontiguousarray(x), who) for d in (qdec, dec))
        res["model"]["int8_bytes"] = int8.stat().st_size
        res["model"]["int8_quantization"] = qdec.info.meta.get("quantization")
        res["model"]["int8_vs_fp32"] = {
            "class_agreement": float(
                np.mean(q["class_probs"].argmax(1) == f["class_probs"].argmax(1))
            ),
            "level_agreement": float(
                np.mean(q["level_probs"].argmax(1) == f["level_probs"].argmax(1))
            ),
            "max_abs_diff_class_probs": float(np.abs(q["class_probs"] - f["class_probs"]).max()),
            "trials": len(x),
        }

    onnx_flops = flops_onnx(fp32)
    res["flops"] = {
        **onnx_flops,
        "per_trial_torch_layers": flops_torch(members, mcfg.n_times, mcfg.n_regions),
    }
    shapes = [(nd["m"], nd["k"], nd["n"]) for nd in gemm_nodes(fp32, 256)[0]]
    log(
        f"GEMM peak: numpy float32 matmul on {threads} threads, square and the model's own products …"
    )
    res["gemm"] = gemm_peak(threads, cfg.gemm_sizes, shapes)
    try:
        res["gemm"]["onnxruntime_matmul"] = ort_gemm_peak(threads, n=min(2048, max(cfg.gemm_sizes)))
    except Exception as e:  # context only; never fatal
        res["gemm"]["onnxruntime_matmul"] = {"error": str(e)[:200]}

    trials_npy = workdir / "trials.npy"
    np.save(trials_npy, x)
    job = TimingJob(
        run=str(run),
        fp32=str(fp32),
        int8=str(int8) if int8 else None,
        trials=str(trials_npy),
        engines=engines,
        threads=threads,
        batches=list(cfg.batches),
        seconds=cfg.seconds,
        rounds=cfg.rounds,
    )
    res["engines_by_policy"], res["ratios_by_policy"] = {}, {}
    for policy in cfg.policies:
        log(
            f"engines {', '.join(engines)} at batches {list(cfg.batches)} ({cfg.rounds} rounds × {cfg.seconds} s), "
            f"threads {policy} for both …"
        )
        timing = time_engines_in_process(job, policy, workdir)
        for b in cfg.batches:
            log(
                f"  batch {b}: "
                + ", ".join(f"{k} {timing[k][b]['trials_per_s']:,.0f}/s" for k in timing)
            )
        res["engines_by_policy"][policy] = {
            k: {str(b): v for b, v in per.items()} for k, per in timing.items()
        }
        res["ratios_by_policy"][policy] = engine_ratios(timing, cfg.batches)
        res.setdefault("ratio_spread_by_policy", {})[policy] = {
            name: paired_ratio_spread(timing, *ENGINE_PAIRS[name], cfg.batches)
            for name in ("ort_fp32_vs_torch", "ort_fp32_vs_torch_graph")
            if all(e in timing for e in ENGINE_PAIRS[name])
        }
    headline = cfg.policies[0]
    res["policy"] = headline
    res["engines"] = res["engines_by_policy"][headline]
    res["ratios"] = res["ratios_by_policy"][headline]
    flops, peak = onnx_flops["per_trial"], res["gemm"]["gflops"]
    res["efficiency"] = {
        k: {b: efficiency(v["trials_per_s"], flops, peak) for b, v in per.items()}
        for k, per in res["engines"].items()
    }
    shape_rate = (res["gemm"].get("model_shapes") or {}).get("gflops")
    fp = res["engines"].get("ort-fp32", {})
    if fp:
        best_b = max(fp, key=lambda b: fp[b]["trials_per_s"])
        res["model_only_best"] = {
            "batch": int(best_b),
            "trials_per_s": fp[best_b]["trials_per_s"],
            "pct_of_gemm_peak": res["efficiency"]["ort-fp32"][best_b]["pct_of_gemm_peak"],
        }
        if shape_rate and "256" in fp:
            res["model_only_best"]["pct_of_model_shape_peak_b256"] = efficiency(
                fp["256"]["trials_per_s"], flops, shape_rate
            )["pct_of_gemm_peak"]
    log("per-op profile of the fp32 graph (onnxruntime's profiler, batch 256) …")
    res["profile"] = op_profile(fp32, x, threads, 256)

    if cfg.sweep:
        log("session options and batch sizes …")
        res["session_options"] = session_option_sweep(
            fp32, x, threads, cfg.seconds / 2, max(1, cfg.rounds - 1), log=log
        )
        sweep = time_engines(
            {"ort-fp32": dec.run},
            x,
            cfg.sweep_batches,
            cfg.seconds / 2,
            max(1, cfg.rounds - 1),
            log,
        )
        per = sweep["ort-fp32"]
        res["batch_sweep"] = {
            "trials_per_s": {str(b): per[b]["trials_per_s"] for b in per},
            "fastest": max(per, key=lambda b: per[b]["trials_per_s"]),
            "predict_default": DEFAULT_BATCH,
        }
        if (
            res.get("model_only_best")
            and max(v["trials_per_s"] for v in per.values())
            > res["model_only_best"]["trials_per_s"]
        ):
            b = res["batch_sweep"]["fastest"]
            res["model_only_best"] = {
                **res["model_only_best"],
                "batch": b,
                "trials_per_s": per[b]["trials_per_s"],
                "pct_of_gemm_peak": efficiency(per[b]["trials_per_s"], flops, peak)[
                    "pct_of_gemm_peak"
                ],
            }

    if cfg.cold_runs:
        log(f"cold start ({cfg.cold_runs} runs of each) …")
        raw30 = _raw_trials30(cfg.data, recipe, mcfg.n_times)
        res["cold_start"] = cold_start(fp32, run, raw30, threads, cfg.cold_runs, workdir, log)
        x30 = workdir / "trials30.npy"
        res["import_time"] = {
            "predict": import_profile(["predict", str(x30), "--model", str(fp32)]),
            "help": import_profile(["--help"]),
        }

    if cfg.large_trials:
        log(f"large input: {cfg.large_trials} trials …")
        res["large_input"] = large_input(
            fp32, cfg.large_trials, threads, cfg.large_batch, workdir, mcfg.n_times, log
        )
        if res.get("model_only_best"):
            res["large_input"]["vs_model_only_best"] = round(
                res["large_input"]["trials_per_s"] / res["model_only_best"]["trials_per_s"], 3
            )
    if cfg.int8_cv:
        res["int8_cv"] = cfg.int8_cv
    res["machine"]["load_average_end"] = load_average()
    res["targets"] = check_targets(res)
    return res


def _raw_trials30(data: Path | None, recipe: dict, n_times: int) -> np.ndarray:
    """The first 30 trials of a real participant as stored (what a user hands to predict)."""
    from fmri_edge.data.io import discover, load_trials
    from fmri_edge.errors import InputError

    root = Path(data) if data else Path(recipe.get("data") or DEFAULT_DATA)
    if root.is_dir():
        try:
            return load_trials(discover([root])[0].path, n_times=n_times)[:30]
        except (InputError, IndexError):  # unreadable or empty: simulate instead
            pass
    from fmri_edge.simulation.simulate import simulate

    return simulate(30, n_times=n_times, seed=1)[0]
