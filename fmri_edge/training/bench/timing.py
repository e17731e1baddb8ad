"""How fast each engine answers: onnxruntime fp32 and int8 and PyTorch eager (the trained network
and the exported graph's form) timed on the same trials, interleaved, each engine in a fresh
process under one thread policy at a time; ratios between engines; onnxruntime's own per-op
profile; the session options and batch sizes around the chosen ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

ENGINES = ("ort-fp32", "ort-int8", "torch", "torch-graph")
ENGINE_LABELS = {
    "ort-fp32": "onnxruntime fp32",
    "ort-int8": "onnxruntime int8",
    "torch": "PyTorch eager, the trained network",
    "torch-graph": "PyTorch eager, the exported graph's form",
}


# Both engines under one thread policy at a time, each in a fresh process (OpenMP reads its wait
# policy when torch loads): onnxruntime's session.intra_op.allow_spinning and libgomp's
# OMP_WAIT_POLICY (PyTorch's CPU threads). "spinning off" is what `fmri-edge predict` ships.
THREAD_POLICIES = {
    "spinning off": {"ort_spinning": False, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "spinning on": {"ort_spinning": True, "env": {"OMP_WAIT_POLICY": "ACTIVE"}},
}

ENGINE_PAIRS = {
    "ort_fp32_vs_torch": ("ort-fp32", "torch"),
    "ort_fp32_vs_torch_graph": ("ort-fp32", "torch-graph"),
    "ort_int8_vs_fp32": ("ort-int8", "ort-fp32"),
    "ort_int8_vs_torch": ("ort-int8", "torch"),
}


def engine_ratios(timing: dict, batches) -> dict:
    """trials/s ratios between engines at each batch size (one policy, one run)."""
    return {
        name: {
            str(b): round(timing[a][b]["trials_per_s"] / timing[c][b]["trials_per_s"], 3)
            for b in batches
        }
        for name, (a, c) in ENGINE_PAIRS.items()
        if a in timing and c in timing
    }


@dataclass
class TimingJob:
    """What one timing process measures (written as JSON for :mod:`.timing_worker`)."""

    run: str  # run folder of the PyTorch network
    fp32: str  # its fp32 ONNX export
    int8: str | None  # its int8 ONNX, if any
    trials: str  # .npy of the trials as the graph receives them
    engines: list[str]  # names from ENGINES
    threads: int
    batches: list[int]
    seconds: float  # timing budget per engine, batch and round
    rounds: int
    spinning: bool = False  # onnxruntime's intra-op threads busy-wait between calls


def batch_of(x: np.ndarray, b: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])), dtype=np.float32)


def time_engines(
    engines: dict[str, Callable],
    x: np.ndarray,
    batches,
    seconds: float,
    rounds: int,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """{engine: {batch: stats}}: per batch size, every engine is warmed up, then timed in
    ``rounds`` interleaved rounds of about ``seconds`` each; stats are medians over all calls."""
    out: dict[str, dict] = {k: {} for k in engines}
    for b in batches:
        xb = batch_of(x, b)
        for fn in engines.values():
            fn(xb)
            if b <= 32:
                fn(xb)
        times: dict[str, list] = {k: [] for k in engines}
        for _ in range(rounds):
            for k, fn in engines.items():
                t_end = time.perf_counter() + seconds
                while True:
                    t = time.perf_counter()
                    fn(xb)
                    now = time.perf_counter()
                    times[k].append(now - t)
                    if now >= t_end:
                        break
        for k, ts in times.items():
            med = float(np.median(ts))
            out[k][b] = {
                "trials_per_s": round(b / med, 1),
                "ms_per_call": round(1e3 * med, 4),
                "ms_per_call_p10": round(1e3 * float(np.percentile(ts, 10)), 4),
                "ms_per_call_p90": round(1e3 * float(np.percentile(ts, 90)), 4),
                "calls": len(ts),
            }
        log(
            f"batch {b}: "
            + ", ".join(f"{k} {out[k][b]['trials_per_s']:.0f} trials/s" for k in engines)
        )
    return out


def ort_engine(path: Path, threads: int, spinning: bool = False, **options) -> Callable:
    """``Model.run`` of ``path`` with the runtime's session options (``spinning``: the intra-op
    threads busy-wait between calls; other ``options``: SessionOptions attributes)."""
    from fmri_edge.model.runtime import Model

    dec = Model(path, threads=threads)
    if spinning or options:
        import onnxruntime as ort

        from fmri_edge.model.runtime import session_options

        so = session_options(threads, spinning=spinning)
        for k, v in options.items():
            setattr(so, k, v)
        dec.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dec.run


def torch_engine(net, threads: int) -> Callable:
    import torch

    torch.set_num_threads(threads)

    def run(xb: np.ndarray):
        with torch.inference_mode():
            return [t.numpy() for t in net(torch.from_numpy(xb))]

    return run


def time_engines_in_process(job: TimingJob, policy: str, workdir: Path) -> dict:
    """:func:`time_engines` under one of :data:`THREAD_POLICIES`, each engine in a fresh process of
    its own: with spinning on, one engine's idle threads would otherwise keep spinning and take
    the cores from the engine being timed (with PyTorch's OpenMP pool under OMP_WAIT_POLICY=ACTIVE
    in the same process, onnxruntime ran at 0.4× its spinning-off rate; docs/speed.md).
    The rounds stay interleaved: round r starts one process per engine in turn, so a drift of the
    machine's speed hits every engine alike. Per engine and batch: the median over rounds of
    each round's median call, and ``rounds_trials_per_s`` (one value per round, for paired ratios)."""
    pol = THREAD_POLICIES[policy]
    env = {**os.environ, **pol["env"]}
    engines = [e for e in job.engines if e != "ort-int8" or job.int8]
    per_round: dict[str, list] = {e: [] for e in engines}
    for r in range(job.rounds):
        for engine in engines:
            path = workdir / f"timing-{policy.replace(' ', '-')}-{engine}.json"
            path.write_text(
                json.dumps(
                    asdict(replace(job, engines=[engine], rounds=1, spinning=pol["ort_spinning"]))
                )
            )
            res = subprocess.run(
                [sys.executable, "-m", "fmri_edge.training.bench.timing_worker", str(path)],
                capture_output=True,
                text=True,
                env=env,
            )
            if res.returncode != 0:
                raise RuntimeError(
                    f"timing {engine} under {policy!r} failed: {res.stderr.strip()[-600:]}"
                )
            per_round[engine].append({int(b): v for b, v in json.loads(res.stdout)[engine].items()})
    out: dict = {}
    for engine, rounds in per_round.items():
        out[engine] = {}
        for b in rounds[0]:
            tps = [rd[b]["trials_per_s"] for rd in rounds]
            ms = [rd[b]["ms_per_call"] for rd in rounds]
            out[engine][b] = {
                "trials_per_s": round(float(np.median(tps)), 1),
                "ms_per_call": round(float(np.median(ms)), 4),
                "ms_per_call_p10": min(rd[b]["ms_per_call_p10"] for rd in rounds),
                "ms_per_call_p90": max(rd[b]["ms_per_call_p90"] for rd in rounds),
                "calls": sum(rd[b]["calls"] for rd in rounds),
                "rounds_trials_per_s": tps,
            }
    return out


def paired_ratio_spread(timing: dict, a: str, c: str, batches) -> dict:
    """Per batch, the round-by-round ratios of engine ``a`` to ``c`` (rounds interleaved, so each
    pair ran minutes apart at most): min, median and max."""
    out = {}
    for b in batches:
        ra, rc = timing[a][b].get("rounds_trials_per_s"), timing[c][b].get("rounds_trials_per_s")
        if ra and rc:
            q = [x / y for x, y in zip(ra, rc)]
            out[str(b)] = {
                "min": round(min(q), 3),
                "median": round(float(np.median(q)), 3),
                "max": round(max(q), 3),
            }
    return out


def op_profile(path: Path, x: np.ndarray, threads: int, batch: int = 256, calls: int = 50) -> dict:
    """Where onnxruntime's time goes (its own profiler): per node and per op type, the share of
    kernel time and microseconds per call at ``batch``, over ``calls`` calls after a warm-up."""
    import onnxruntime as ort

    from fmri_edge.model.runtime import session_options

    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "fmri-edge-profile")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    xb = batch_of(x, batch)
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: xb})
    # the warm-up calls are in the profile too: count only the last `calls`
    t0 = time.perf_counter()
    for _ in range(calls):
        sess.run(None, {name: xb})
    wall_per_call = (time.perf_counter() - t0) / calls
    prof = Path(sess.end_profiling())
    try:
        events = json.loads(prof.read_text())
    finally:
        prof.unlink(missing_ok=True)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start = runs[-calls]["ts"] if len(runs) >= calls else 0
    per_node: dict[str, dict] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            nd = per_node.setdefault(
                e["name"][: -len("_kernel_time")],
                {
                    "op": e["args"].get("op_name"),
                    "us": 0.0,
                    "output_shapes": [
                        list(s.values())[0] for s in e["args"].get("output_type_shape", [])
                    ],
                },
            )
            nd["us"] += e["dur"]
    total = sum(nd["us"] for nd in per_node.values()) or 1.0
    nodes = sorted(
        (
            {
                "node": k,
                "op": v["op"],
                "us_per_call": round(v["us"] / calls, 1),
                "share": round(v["us"] / total, 4),
                "output_shapes": v["output_shapes"],
            }
            for k, v in per_node.items()
        ),
        key=lambda r: -r["share"],
    )
    by_op: dict[str, float] = {}
    for nd in nodes:
        by_op[nd["op"]] = by_op.get(nd["op"], 0.0) + nd["share"]
    return {
        "batch": batch,
        "calls": calls,
        "threads": threads,
        "wall_ms_per_call": round(1e3 * wall_per_call, 3),
        "kernel_ms_per_call": round(total / calls / 1e3, 3),
        "nodes": nodes,
        "by_op": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
    }


def session_option_sweep(
    path: Path,
    x: np.ndarray,
    threads: int,
    seconds: float,
    rounds: int,
    batches=(1, 256),
    log=lambda s: None,
) -> dict:
    """The chosen session options against each single alternative (same run, interleaved)."""
    import onnxruntime as ort

    lvl = ort.GraphOptimizationLevel
    variants = {
        "chosen": {},
        "spinning on": {"spinning": True},
        "1 thread": {"intra_op_num_threads": 1},
        "graph opt: extended": {"graph_optimization_level": lvl.ORT_ENABLE_EXTENDED},
        "graph opt: basic": {"graph_optimization_level": lvl.ORT_ENABLE_BASIC},
        "graph opt: off": {"graph_optimization_level": lvl.ORT_DISABLE_ALL},
    }
    engines, load_s = {}, {}
    for name, opts in variants.items():
        t = time.perf_counter()
        engines[name] = ort_engine(path, threads, **opts)
        load_s[name] = round(time.perf_counter() - t, 4)
    res = time_engines(engines, x, batches, seconds, rounds, log)
    return {
        "variants": {
            k: {
                "options": {kk: str(vv) for kk, vv in variants[k].items()},
                "session_open_s": load_s[k],
                **{str(b): res[k][b] for b in batches},
            }
            for k in variants
        },
        "relative_to_chosen": {
            k: {
                str(b): round(res[k][b]["trials_per_s"] / res["chosen"][b]["trials_per_s"], 3)
                for b in batches
            }
            for k in variants
        },
    }
