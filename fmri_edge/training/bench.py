"""How fast is edge inference, against PyTorch and against what this CPU can do (``fmri-edge bench``).

One run measures, on the same weights and the same real trials:

- **engines** — onnxruntime fp32 (the exported model), onnxruntime int8 (static QDQ, calibrated on
  real trials) and PyTorch eager (the training network in eval mode under
  ``torch.inference_mode``, same thread count): latency at batch 1, trials/s at batch 32, 256,
  4096 (warm-up, then interleaved rounds; medians over every call);
- **FLOPs per trial**, counted from the ONNX graph (2 × multiply-adds of every Conv, Gemm and
  MatMul at batch 1; element-wise ops and reductions are not counted) and checked against the
  same count from the PyTorch layer shapes; achieved GFLOP/s against a **practical peak**: the
  float32 GEMM rate of numpy (its BLAS) on the same threads, measured in the same run;
- **cold start**: wall time of ``fmri-edge predict`` on a 30-trial file, process start to exit,
  against the same job done the PyTorch way (:data:`TORCH_PREDICT`, a script that imports
  torch, loads the checkpoint, normalizes, predicts and writes the CSV);
- **large input**: ``fmri-edge predict`` on a ≥ 100 000-trial float32 ``.npy`` made by the
  simulator (written to a temporary folder and deleted afterwards): end-to-end trials/s
  (loading, validation, normalization, inference, CSV) and peak resident memory;
- **session options**: the alternatives to :func:`fmri_edge.runtime.session_options` and the
  batch sizes around the default, so the choices stay measured.

Ratios are computed inside one run; nothing here asserts a wall time. torch (and onnx) are
imported lazily, only by the parts that need them. Library code only: the CLI renders
:func:`run_bench`'s dict (:func:`tables`, :func:`markdown`).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.errors import UsageError
from fmri_edge.training.graph import DEFAULT_DATA, participant_trials, reference_net

DEFAULT_RUN = Path("runs/fmri-edge")
ENGINES = ("ort-fp32", "ort-int8", "torch", "torch-graph")
ENGINE_LABELS = {"ort-fp32": "onnxruntime fp32", "ort-int8": "onnxruntime int8",
                 "torch": "PyTorch eager, the trained network", "torch-graph": "PyTorch eager, the exported graph's form"}

# The targets of issue 13 (ratios from one run), and issue 4's end-to-end and memory ones.
TARGETS = {
    "ort_vs_torch_b1": 4.0, "ort_vs_torch_b32": 1.2, "ort_vs_torch_b256": 1.2, "ort_vs_torch_b4096": 1.2,
    "int8_vs_fp32_b256": 1.5, "int8_acc_change_points": -1.0, "cold_start_s": 0.35, "cold_start_vs_torch_import": 0.2,
    "help_s": 0.15, "e2e_vs_model_only": 0.60, "large_peak_rss_mb": 400.0,
}


# Both engines under one thread policy at a time, each in a fresh process (OpenMP reads its wait
# policy when torch loads): onnxruntime's session.intra_op.allow_spinning and libgomp's
# OMP_WAIT_POLICY (PyTorch's CPU threads). "spinning off" is what `fmri-edge predict` ships.
THREAD_POLICIES = {
    "spinning off": {"ort_spinning": False, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "spinning on": {"ort_spinning": True, "env": {"OMP_WAIT_POLICY": "ACTIVE"}},
}


@dataclass
class BenchConfig:
    run: Path = DEFAULT_RUN                 # run folder with model.pt (and fold<k>.pt for ensembles)
    model: Path | None = None               # fp32 ONNX of the same weights (default models/<name>.onnx, else exported)
    data: Path | None = None                # real trials (default: the run's recipe data, else ../shared/…/Train)
    threads: int = 0                        # 0 = os.cpu_count(); the same for onnxruntime, torch and numpy
    batches: tuple = (1, 32, 256, 4096)
    seconds: float = 1.0                    # timing budget per engine, batch and round
    rounds: int = 3
    engines: tuple = ENGINES
    cold_runs: int = 5                      # cold-start repeats per path (0 = skip)
    large_trials: int = 100_000             # trials in the large-input file (0 = skip)
    large_batch: int | None = None          # --batch-size for the large run (default: predict's default)
    workdir: Path | None = None             # temporary files (default: a new folder under the system temp dir)
    gemm_sizes: tuple = (2048, 4096)
    sweep: bool = True                      # session options and batch sizes around the default
    sweep_batches: tuple = (64, 128, 256, 512, 1024)
    int8_cv: dict | None = None             # an int8 accuracy check to quote (from `fmri-edge export --int8`)
    policies: tuple = tuple(THREAD_POLICIES)  # thread policies timed (both engines alike); the first is the headline


# ---- machine --------------------------------------------------------------------------------------

def resolve_threads(threads: int) -> int:
    return threads or os.cpu_count() or 1


def machine_info() -> dict:
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    import importlib.metadata as md

    for pkg in ("torch", "onnx"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "simd": sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                                       "amx_bf16"}),
            "memory_gb": _memory_gb(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_average_start": _load()}


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# ---- inputs ---------------------------------------------------------------------------------------

def real_trials(data: Path | None, recipe: dict, n_times: int, subject_norm: str
                ) -> tuple[np.ndarray, np.ndarray, str]:
    """Trials as the graph receives them and their participants
    (:func:`fmri_edge.training.graph.participant_trials`), from ``data``, else the recipe's data
    folder, else the default one."""
    return participant_trials(data or recipe.get("data") or DEFAULT_DATA, n_times, subject_norm)


def batch_of(x: np.ndarray, b: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(x, (b, *x.shape[1:])), dtype=np.float32)


# ---- FLOPs ----------------------------------------------------------------------------------------

def gemm_nodes(path: str | Path, batch: int = 1) -> tuple[list[dict], int, int]:
    """Every Conv, Gemm and MatMul of the ONNX graph at ``batch`` trials, as the matrix product it
    is: ``{"op", "name", "m", "k", "n", "flops"}`` with flops = 2·m·k·n (a Conv as its im2col
    product: m = batch·output positions, k = in channels·kernel, n = out channels; a batched
    MatMul as one product over the flattened leading axes). Shapes from onnx shape inference.
    Also returns the element count of every other op's output and the parameter count."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    g = model.graph
    for vi in (g.input[0], *g.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del g.value_info[:]
    g = shape_inference.infer_shapes(model, data_prop=True).graph
    shapes = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    nodes, other = [], 0
    for node in g.node:
        out = shapes.get(node.output[0]) if node.output else None
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv":
            w = shapes[node.input[1]]                       # (out, in/groups, k…)
            m, k, n = int(np.prod(out)) // out[1], int(np.prod(w[1:])), out[1]
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            k = a[0] if "transA" in attrs and attrs["transA"].i else a[1]
            m, n = out[0], out[1]
        elif node.op_type == "MatMul":
            a = shapes[node.input[0]]
            m, k, n = int(np.prod(out[:-1])), a[-1], out[-1]
        else:
            if out and all(d is not None for d in out):
                other += int(np.prod(out))
            continue
        nodes.append({"op": node.op_type, "name": node.name or node.output[0], "m": int(m), "k": int(k), "n": int(n),
                      "flops": 2 * int(m) * int(k) * int(n)})
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return nodes, other, params


def flops_onnx(path: str | Path) -> dict:
    """FLOPs per trial counted from the ONNX graph at batch 1: 2 × multiply-adds of every Conv,
    Gemm and MatMul (:func:`gemm_nodes`). Element-wise ops and reductions are counted separately
    as output elements (``other_elements``), not as FLOPs."""
    nodes, other, params = gemm_nodes(path, 1)
    by_op: dict[str, int] = {}
    for nd in nodes:
        by_op[nd["op"]] = by_op.get(nd["op"], 0) + nd["flops"]
    return {"per_trial": int(sum(by_op.values())), "by_op": by_op, "other_elements": other, "parameters": params,
            "method": "ONNX graph at batch 1: 2 × multiply-adds of Conv, Gemm, MatMul"}


def efficiency(trials_per_s: float, flops_per_trial: float, peak_gflops: float) -> dict:
    """Achieved GFLOP/s (trials/s × FLOPs per trial) and its percentage of a peak rate."""
    gflops = trials_per_s * flops_per_trial / 1e9
    return {"gflops": round(gflops, 3), "pct_of_gemm_peak": round(100 * gflops / peak_gflops, 1) if peak_gflops else None}


def flops_torch(members, n_times: int, n_regions: int = 246) -> int:
    """The same count from the PyTorch layers (Conv1d, Linear) seen in one batch-1 forward pass."""
    import torch
    from torch import nn

    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv1d):
            total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0]
        elif isinstance(mod, nn.Linear):
            total[0] += 2 * out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for net in members for m in net.modules()
               if isinstance(m, (nn.Conv1d, nn.Linear))]
    try:
        with torch.inference_mode():
            for net in members:
                net(torch.zeros(1, n_regions, n_times))
    finally:
        for h in handles:
            h.remove()
    return total[0]


# ---- the practical peak ---------------------------------------------------------------------------

GEMM_SCRIPT = r"""
import json, sys, time
import numpy as np
plan = json.loads(sys.argv[1])
out = {"square": {}, "shapes": []}
rng = np.random.default_rng(0)
def rate(m, k, n, reps):
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    return float(np.median(ts)), min(ts)
for n, reps in plan["square"]:
    med, best = rate(n, n, n, reps)
    out["square"][n] = {"gflops_median": 2 * n ** 3 / med / 1e9, "gflops_best": 2 * n ** 3 / best / 1e9, "reps": reps}
for m, k, n in plan["shapes"]:
    med, _ = rate(m, k, n, 20)
    out["shapes"].append({"m": m, "k": k, "n": n, "seconds": med, "gflops": 2 * m * k * n / med / 1e9})
print(json.dumps(out))
"""


def gemm_peak(threads: int, sizes=(2048, 4096), shapes=()) -> dict:
    """float32 GEMM rate of numpy's BLAS on ``threads`` threads (a fresh process, so the BLAS
    thread count is set before it loads): the median rate per square size (the best size is the
    peak), and, for ``shapes`` ((m, k, n) products, e.g. the model's own from :func:`gemm_nodes`),
    each product's time and rate and all of them together (``model_shapes``)."""
    env = {**os.environ, **{k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    plan = {"square": [(int(n), 5 if n <= 2048 else 3) for n in sizes], "shapes": [list(map(int, s)) for s in shapes]}
    res = subprocess.run([sys.executable, "-c", GEMM_SCRIPT, json.dumps(plan)], capture_output=True, text=True,
                         env=env, check=True)
    raw = json.loads(res.stdout)
    per = {int(k): {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()}
           for k, v in raw["square"].items()}
    best = max(per, key=lambda n: per[n]["gflops_median"])
    out = {"gflops": per[best]["gflops_median"], "size": best, "sizes": per, "threads": threads,
           "method": "numpy float32 matmul n×n, median over repeats, best n"}
    if raw["shapes"]:
        flops = sum(2 * s["m"] * s["k"] * s["n"] for s in raw["shapes"])
        seconds = sum(s["seconds"] for s in raw["shapes"])
        out["model_shapes"] = {"products": raw["shapes"], "seconds": seconds, "gflops": round(flops / seconds / 1e9, 2),
                               "method": "numpy float32 matmul of each of the model's products at that batch, "
                                         "one after the other"}
    return out


def ort_gemm_peak(threads: int, n: int = 2048, reps: int = 5) -> dict:
    """The same GEMM through onnxruntime's own MatMul kernel (MLAS), for context."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from fmri_edge.runtime import session_options

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    sess.run(None, feed)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return {"gflops": round(2 * n ** 3 / float(np.median(ts)) / 1e9, 1), "size": n, "threads": threads}


# ---- timing ----------------------------------------------------------------------------------------

def time_engines(engines: dict[str, Callable], x: np.ndarray, batches, seconds: float, rounds: int,
                 log: Callable[[str], None] = lambda s: None) -> dict:
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
            out[k][b] = {"trials_per_s": round(b / med, 1), "ms_per_call": round(1e3 * med, 4),
                         "ms_per_call_p10": round(1e3 * float(np.percentile(ts, 10)), 4),
                         "ms_per_call_p90": round(1e3 * float(np.percentile(ts, 90)), 4), "calls": len(ts)}
        log(f"batch {b}: " + ", ".join(f"{k} {out[k][b]['trials_per_s']:.0f} trials/s" for k in engines))
    return out


def ort_engine(path: Path, threads: int, spinning: bool = False, **options) -> Callable:
    """``Decoder.run`` of ``path`` with the runtime's session options (``spinning``: the intra-op
    threads busy-wait between calls; other ``options``: SessionOptions attributes)."""
    from fmri_edge.runtime import Decoder

    dec = Decoder(path, threads=threads)
    if spinning or options:
        import onnxruntime as ort

        from fmri_edge.runtime import session_options

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


def time_engines_in_process(spec: dict, policy: str, workdir: Path) -> dict:
    """:func:`time_engines` under one of :data:`THREAD_POLICIES`, each engine in a fresh process of
    its own: with spinning on, one engine's idle threads would otherwise keep spinning and take
    the cores from the engine being timed (with PyTorch's OpenMP pool under OMP_WAIT_POLICY=ACTIVE
    in the same process, onnxruntime ran at 0.4× its spinning-off rate; docs/speed.md).
    The rounds stay interleaved: round r starts one process per engine in turn, so a drift of the
    machine's speed hits every engine alike. Per engine and batch: the median over rounds of
    each round's median call, and ``rounds_trials_per_s`` (one value per round, for paired ratios).
    ``spec``: run, fp32, int8 (or None), trials (.npy), engines, threads, batches, seconds, rounds."""
    pol = THREAD_POLICIES[policy]
    env = {**os.environ, **pol["env"]}
    engines = [e for e in spec["engines"] if e != "ort-int8" or spec.get("int8")]
    per_round: dict[str, list] = {e: [] for e in engines}
    for r in range(spec["rounds"]):
        for engine in engines:
            path = workdir / f"timing-{policy.replace(' ', '-')}-{engine}.json"
            path.write_text(json.dumps({**spec, "engines": [engine], "rounds": 1, "spinning": pol["ort_spinning"]}))
            res = subprocess.run([sys.executable, "-m", "fmri_edge.training.bench", "--time-engines", str(path)],
                                 capture_output=True, text=True, env=env)
            if res.returncode != 0:
                raise RuntimeError(f"timing {engine} under {policy!r} failed: {res.stderr.strip()[-600:]}")
            per_round[engine].append({int(b): v for b, v in json.loads(res.stdout)[engine].items()})
    out: dict = {}
    for engine, rounds in per_round.items():
        out[engine] = {}
        for b in rounds[0]:
            tps = [rd[b]["trials_per_s"] for rd in rounds]
            ms = [rd[b]["ms_per_call"] for rd in rounds]
            out[engine][b] = {"trials_per_s": round(float(np.median(tps)), 1), "ms_per_call": round(float(np.median(ms)), 4),
                              "ms_per_call_p10": min(rd[b]["ms_per_call_p10"] for rd in rounds),
                              "ms_per_call_p90": max(rd[b]["ms_per_call_p90"] for rd in rounds),
                              "calls": sum(rd[b]["calls"] for rd in rounds), "rounds_trials_per_s": tps}
    return out


def paired_ratio_spread(timing: dict, a: str, c: str, batches) -> dict:
    """Per batch, the round-by-round ratios of engine ``a`` to ``c`` (rounds interleaved, so each
    pair ran minutes apart at most): min, median and max."""
    out = {}
    for b in batches:
        ra, rc = timing[a][b].get("rounds_trials_per_s"), timing[c][b].get("rounds_trials_per_s")
        if ra and rc:
            q = [x / y for x, y in zip(ra, rc)]
            out[str(b)] = {"min": round(min(q), 3), "median": round(float(np.median(q)), 3), "max": round(max(q), 3)}
    return out


def _time_engines_worker(spec_path: str) -> None:
    """The process :func:`time_engines_in_process` starts: builds the engines, times, prints JSON."""
    from fmri_edge.training.export import graph_module, level_from_class

    spec = json.loads(Path(spec_path).read_text())
    threads, x = spec["threads"], np.load(spec["trials"])
    engines: dict[str, Callable] = {}
    if {"torch", "torch-graph"} & set(spec["engines"]):  # loaded once for both PyTorch forms
        net, members, _, recipe = reference_net(Path(spec["run"]))
    for name in spec["engines"]:
        if name == "ort-fp32":
            engines[name] = ort_engine(Path(spec["fp32"]), threads, spinning=spec["spinning"])
        elif name == "ort-int8" and spec.get("int8"):
            engines[name] = ort_engine(Path(spec["int8"]), threads, spinning=spec["spinning"])
        elif name == "torch":
            engines[name] = torch_engine(net, threads)
        elif name == "torch-graph":
            rule = (recipe.get("eval") or {}).get("level_rule")
            engines[name] = torch_engine(graph_module(members, level_from_class(members, rule), x[:256]), threads)
    res = time_engines(engines, x, spec["batches"], spec["seconds"], spec["rounds"])
    print(json.dumps(res))


def op_profile(path: Path, x: np.ndarray, threads: int, batch: int = 256, calls: int = 50) -> dict:
    """Where onnxruntime's time goes (its own profiler): per node and per op type, the share of
    kernel time and microseconds per call at ``batch``, over ``calls`` calls after a warm-up."""
    import onnxruntime as ort

    from fmri_edge.runtime import session_options

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
            nd = per_node.setdefault(e["name"][:-len("_kernel_time")], {
                "op": e["args"].get("op_name"), "us": 0.0,
                "output_shapes": [list(s.values())[0] for s in e["args"].get("output_type_shape", [])]})
            nd["us"] += e["dur"]
    total = sum(nd["us"] for nd in per_node.values()) or 1.0
    nodes = sorted(({"node": k, "op": v["op"], "us_per_call": round(v["us"] / calls, 1),
                     "share": round(v["us"] / total, 4), "output_shapes": v["output_shapes"]}
                    for k, v in per_node.items()), key=lambda r: -r["share"])
    by_op: dict[str, float] = {}
    for nd in nodes:
        by_op[nd["op"]] = by_op.get(nd["op"], 0.0) + nd["share"]
    return {"batch": batch, "calls": calls, "threads": threads, "wall_ms_per_call": round(1e3 * wall_per_call, 3),
            "kernel_ms_per_call": round(total / calls / 1e3, 3), "nodes": nodes,
            "by_op": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}}


ENGINE_PAIRS = {"ort_fp32_vs_torch": ("ort-fp32", "torch"), "ort_fp32_vs_torch_graph": ("ort-fp32", "torch-graph"),
                "ort_int8_vs_fp32": ("ort-int8", "ort-fp32"), "ort_int8_vs_torch": ("ort-int8", "torch")}


def engine_ratios(timing: dict, batches) -> dict:
    """trials/s ratios between engines at each batch size (one policy, one run)."""
    return {name: {str(b): round(timing[a][b]["trials_per_s"] / timing[c][b]["trials_per_s"], 3) for b in batches}
            for name, (a, c) in ENGINE_PAIRS.items() if a in timing and c in timing}


def session_option_sweep(path: Path, x: np.ndarray, threads: int, seconds: float, rounds: int,
                         batches=(1, 256), log=lambda s: None) -> dict:
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
    return {"variants": {k: {"options": {kk: str(vv) for kk, vv in variants[k].items()}, "session_open_s": load_s[k],
                             **{str(b): res[k][b] for b in batches}} for k in variants},
            "relative_to_chosen": {k: {str(b): round(res[k][b]["trials_per_s"] / res["chosen"][b]["trials_per_s"], 3)
                                       for b in batches} for k in variants}}


# ---- cold start ------------------------------------------------------------------------------------

TORCH_PREDICT = r'''
"""The job of `fmri-edge predict TRIALS.npy --out OUT.csv`, done the PyTorch way."""
import csv, sys
from pathlib import Path

import numpy as np
import torch

from fmri_edge import scoring
from fmri_edge.normalize import AlignStats, subject_normalize
from fmri_edge.predict import MIN_ALIGN_TRIALS
from fmri_edge.training.graph import reference_net

run, trials_path, out_path, threads = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
net, members, ckpt, recipe = reference_net(run)
cfg = members[0].cfg
x = np.load(trials_path).astype(np.float32)
x = x[None] if x.ndim == 2 else x
if cfg.subject_norm != "none":
    x = subject_normalize(x, cfg.subject_norm)
with torch.inference_mode():
    x = torch.from_numpy(x)
    subject = ()
    if net.aligned and len(x) >= MIN_ALIGN_TRIALS:  # the file is one participant: aligned over its trials
        subject = tuple(torch.from_numpy(a) for a in AlignStats.of(members[0].normalize(x).numpy()).result())
    class_probs, level_probs, *_ = (t.numpy() for t in net(x, *subject))
c = scoring.decide_class(class_probs)
lv = scoring.decide_level(level_probs, recipe.get("eval", {}).get("level_rule", "argmax"))
with open(out_path, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["Participant", "Trial", "CLASS", "LEVEL"])
    for i in range(len(x)):
        w.writerow([trials_path.stem, i + 1, int(c[i]), int(lv[i])])
'''


def fmri_edge_command() -> list[str]:
    """How a user starts the CLI: the console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).parent / "fmri-edge"
    if script.is_file():
        return [str(script)]
    found = shutil.which("fmri-edge")
    return [found] if found else [sys.executable, "-m", "fmri_edge.cli"]


WALL_SCRIPT = r"""
import json, os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
elapsed = time.perf_counter() - t
print(json.dumps({"wall_s": elapsed, "maxrss_kb": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status),
                  "stderr": err.decode(errors="replace")[-800:]}))
"""


@functools.lru_cache(maxsize=1)
def installed_env() -> dict:
    """The environment of a user's process: the package's bytecode compiled (as ``pip install``
    leaves it) and used. A PYTHONDONTWRITEBYTECODE=1 in this environment (some sandboxes set it)
    would otherwise make every cold start of an editable install compile fmri_edge's sources
    again (~60 ms)."""
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parents[1], quiet=2)
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds from process start to exit and peak RSS (KB) of one command. A small Python
    process starts it and reads its resource usage, so neither number includes this (large)
    process: a child forked from here would inherit its resident memory until it execs."""
    r = subprocess.run([sys.executable, "-c", WALL_SCRIPT, *cmd], capture_output=True, text=True, check=True,
                       env=env)
    res = json.loads(r.stdout)
    if res["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res['code']}): {res['stderr'].strip()}")
    return res["wall_s"], res["maxrss_kb"]


def cold_start(fp32: Path, run: Path, trials30: np.ndarray, threads: int, runs: int, workdir: Path,
               log=lambda s: None) -> dict:
    """`fmri-edge predict` on 30 trials vs the PyTorch script, each from process start to exit
    (alternating, ``runs`` times each, after one untimed run of each to warm the file cache)."""
    x = workdir / "trials30.npy"
    np.save(x, trials30)
    script = workdir / "torch_predict.py"
    script.write_text(TORCH_PREDICT)
    ort_cmd = [*fmri_edge_command(), "predict", str(x), "--model", str(fp32), "--out", str(workdir / "ort30.csv"),
               "--force", "--threads", str(threads)]
    torch_cmd = [sys.executable, str(script), str(run if run.is_dir() else run.parent), str(x),
                 str(workdir / "torch30.csv"), str(threads)]
    help_cmd = [*fmri_edge_command(), "--help"]
    import_torch = [sys.executable, "-c", "import torch"]
    cmds = {"fmri-edge predict": ort_cmd, "pytorch script": torch_cmd, "fmri-edge --help": help_cmd,
            "python -c 'import torch'": import_torch}
    times: dict[str, list] = {k: [] for k in cmds}
    env = installed_env()
    if runs > 1:  # one untimed run of each first: the file cache is warm for every timed run
        for cmd in cmds.values():
            wall(cmd, env)
    for _ in range(runs):  # interleaved, so a drift of the machine's speed hits every command alike
        for k, cmd in cmds.items():
            times[k].append(wall(cmd, env)[0])
    med = {k: round(float(np.median(v)), 4) for k, v in times.items()}
    same = _same_answers(workdir / "ort30.csv", workdir / "torch30.csv")
    log(f"cold start: fmri-edge predict {med['fmri-edge predict']:.2f} s, PyTorch {med['pytorch script']:.2f} s")
    return {"median_s": med, "runs": {k: [round(t, 4) for t in v] for k, v in times.items()},
            "ratio_fmri_edge_vs_torch": round(med["fmri-edge predict"] / med["pytorch script"], 3),
            "ratio_vs_import_torch": round(med["fmri-edge predict"] / med["python -c 'import torch'"], 3),
            "same_answers": same, "n_trials": int(len(trials30)), "command": " ".join(ort_cmd),
            "bytecode": "compiled, as an installed package has it (PYTHONDONTWRITEBYTECODE unset)",
            "torch_script": TORCH_PREDICT.strip()}


def _same_answers(a: Path, b: Path) -> float | None:
    """Fraction of rows where two submission CSVs give the same CLASS and LEVEL."""
    import csv

    try:
        ra = list(csv.DictReader(open(a)))
        rb = list(csv.DictReader(open(b)))
    except OSError:
        return None
    if len(ra) != len(rb) or not ra:
        return None
    return round(sum((x["CLASS"], x["LEVEL"]) == (y["CLASS"], y["LEVEL"]) for x, y in zip(ra, rb)) / len(ra), 4)


# ---- large input -------------------------------------------------------------------------------------

def write_large_npy(path: Path, n_trials: int, n_times: int = 25, chunk: int = 2000) -> int:
    """A float32 (n_trials, 246, n_times) .npy from the simulator, written chunk by chunk."""
    from fmri_edge.simulate import simulate

    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_trials, 246, n_times))
    for i in range(0, n_trials, chunk):
        n = min(chunk, n_trials - i)
        arr[i:i + n] = simulate(n, n_times=n_times, seed=i // chunk)[0]
    arr.flush()
    del arr
    return path.stat().st_size


def large_input(fp32: Path, n_trials: int, threads: int, batch: int | None, workdir: Path, n_times: int = 25,
                log=lambda s: None) -> dict:
    """End-to-end `fmri-edge predict` on a big simulated .npy: wall time, trials/s, peak RSS."""
    from fmri_edge.predict import DEFAULT_BATCH

    npy, csv_path = workdir / "large.npy", workdir / "large.csv"
    try:
        t = time.perf_counter()
        size = write_large_npy(npy, n_trials, n_times)
        log(f"large input: wrote {n_trials} simulated trials ({size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
        cmd = [*fmri_edge_command(), "predict", str(npy), "--model", str(fp32), "--out", str(csv_path), "--force",
               "--threads", str(threads), "--batch-size", str(batch or DEFAULT_BATCH)]
        elapsed, rss_kb = wall(cmd)
        with open(csv_path, "rb") as f:
            rows = sum(1 for _ in f) - 1
        log(f"large input: {n_trials / elapsed:.0f} trials/s end to end, peak RSS {rss_kb / 1024:.0f} MB")
        huge = [*cmd[:-1], str(n_trials)]  # one batch as large as the file: capped, so no slower and no bigger
        h_elapsed, h_rss = wall(huge)
        log(f"large input, --batch-size {n_trials}: {n_trials / h_elapsed:.0f} trials/s, peak RSS {h_rss / 1024:.0f} MB")
        return {"n_trials": n_trials, "file_bytes": size, "wall_s": round(elapsed, 3),
                "trials_per_s": round(n_trials / elapsed, 1), "peak_rss_mb": round(rss_kb / 1024, 1),
                "csv_rows": rows, "batch_size": batch or DEFAULT_BATCH, "command": " ".join(cmd),
                "huge_batch": {"batch_size": n_trials, "wall_s": round(h_elapsed, 3),
                               "trials_per_s": round(n_trials / h_elapsed, 1), "peak_rss_mb": round(h_rss / 1024, 1)}}
    finally:
        npy.unlink(missing_ok=True)
        csv_path.unlink(missing_ok=True)


# ---- the whole benchmark ----------------------------------------------------------------------------

def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None) -> dict:
    """Every measurement of the module docstring, in one run; returns a JSON-ready dict."""
    threads = resolve_threads(cfg.threads)
    own = tempfile.TemporaryDirectory(prefix="fmri-edge-bench-") if cfg.workdir is None else None
    workdir = Path(own.name) if own else Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_bench(cfg, threads, workdir, log)
    finally:
        if own:
            own.cleanup()


def _run_bench(cfg: BenchConfig, threads: int, workdir: Path, log) -> dict:
    from fmri_edge.predict import DEFAULT_BATCH, run_by_participant
    from fmri_edge.runtime import Decoder, file_sha256

    res: dict = {"machine": machine_info(), "threads": threads,
                 "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}}
    if res["machine"]["load_average_start"] and res["machine"]["load_average_start"][0] > 0.5 * (os.cpu_count() or 1):
        log(f"[warning] load average {res['machine']['load_average_start'][0]} on {os.cpu_count()} CPUs: "
            "other processes compete for the CPU, timings are noisy")
    run = Path(cfg.run)
    log(f"loading the PyTorch network from {run} …")
    net, members, ckpt, recipe = reference_net(run)
    mcfg = members[0].cfg
    x, who, source = real_trials(cfg.data, recipe, mcfg.n_times, mcfg.subject_norm)
    res["inputs"] = source

    # the same weights in ONNX, fp32 and int8
    fp32 = Path(cfg.model) if cfg.model else Path("models") / f"{recipe.get('name', 'fmri-edge')}.onnx"
    if not fp32.is_file():
        from fmri_edge.training.export import export_onnx

        fp32 = workdir / "fp32.onnx"
        log(f"no ONNX model given: exporting {run} to a temporary file …")
        export_onnx(members, fp32, {"model_version": f"bench:{run}", "level_rule": "argmax",
                                    "subject_normalization": None if mcfg.subject_norm == "none" else mcfg.subject_norm},
                    x[:64])
    dec = Decoder(fp32, threads=threads)
    ref = torch_engine(net, threads)(x[:64])
    got = dec.run(np.ascontiguousarray(x[:64]))
    diff = max(float(np.abs(got[k] - r).max()) for k, r in zip(("class_probs", "level_probs", "region_weights"), ref))
    if diff > 1e-3:
        raise UsageError(f"{fp32} and {run} disagree (max |diff| {diff:.2e}): not the same weights; pass the "
                         "model exported from this run (--model) or leave --model out to export it")
    res["model"] = {"fp32": str(fp32), "fp32_bytes": fp32.stat().st_size, "sha256": file_sha256(fp32),
                    "members": len(members), "parity_max_abs_diff_vs_torch": diff}
    engines = [k for k in ENGINES if k in cfg.engines]
    int8 = None
    if "ort-int8" in engines:
        from fmri_edge.training.quantize import int8_path, quantize_members

        int8 = int8_path(fp32)
        shipped = Decoder(int8) if int8.is_file() else None
        if shipped and shipped.info.meta.get("quantization", {}).get("fp32_model_sha256") == res["model"]["sha256"]:
            log(f"int8: {int8} (quantized from this fp32 model)")
            check = shipped.info.meta.get("int8_check", {})
            if check.get("cv") and not cfg.int8_cv:
                res["int8_cv"] = check["cv"]
        else:
            int8 = workdir / "int8.onnx"
            log("quantizing to int8 (static, calibrated on the real trials) …")
            quantize_members(members, fp32, int8, x, source, participants=who)
        res["model"]["int8"] = str(int8)
        qdec = Decoder(int8, threads=threads)
        # each participant aligned over its own trials, as predict runs them (and as int8 is calibrated)
        q, f = (run_by_participant(d, np.ascontiguousarray(x), who) for d in (qdec, dec))
        res["model"]["int8_bytes"] = int8.stat().st_size
        res["model"]["int8_quantization"] = qdec.info.meta.get("quantization")
        res["model"]["int8_vs_fp32"] = {
            "class_agreement": float(np.mean(q["class_probs"].argmax(1) == f["class_probs"].argmax(1))),
            "level_agreement": float(np.mean(q["level_probs"].argmax(1) == f["level_probs"].argmax(1))),
            "max_abs_diff_class_probs": float(np.abs(q["class_probs"] - f["class_probs"]).max()), "trials": len(x)}

    onnx_flops = flops_onnx(fp32)
    res["flops"] = {**onnx_flops, "per_trial_torch_layers": flops_torch(members, mcfg.n_times, mcfg.n_regions)}
    shapes = [(nd["m"], nd["k"], nd["n"]) for nd in gemm_nodes(fp32, 256)[0]]
    log(f"GEMM peak: numpy float32 matmul on {threads} threads, square and the model's own products …")
    res["gemm"] = gemm_peak(threads, cfg.gemm_sizes, shapes)
    try:
        res["gemm"]["onnxruntime_matmul"] = ort_gemm_peak(threads, n=min(2048, max(cfg.gemm_sizes)))
    except Exception as e:  # context only; never fatal
        res["gemm"]["onnxruntime_matmul"] = {"error": str(e)[:200]}

    trials_npy = workdir / "trials.npy"
    np.save(trials_npy, x)
    spec = {"run": str(run), "fp32": str(fp32), "int8": str(int8) if int8 else None, "trials": str(trials_npy),
            "engines": engines, "threads": threads, "batches": list(cfg.batches), "seconds": cfg.seconds,
            "rounds": cfg.rounds}
    res["engines_by_policy"], res["ratios_by_policy"] = {}, {}
    for policy in cfg.policies:
        log(f"engines {', '.join(engines)} at batches {list(cfg.batches)} ({cfg.rounds} rounds × {cfg.seconds} s), "
            f"threads {policy} for both …")
        timing = time_engines_in_process(spec, policy, workdir)
        for b in cfg.batches:
            log(f"  batch {b}: " + ", ".join(f"{k} {timing[k][b]['trials_per_s']:,.0f}/s" for k in timing))
        res["engines_by_policy"][policy] = {k: {str(b): v for b, v in per.items()} for k, per in timing.items()}
        res["ratios_by_policy"][policy] = engine_ratios(timing, cfg.batches)
        res.setdefault("ratio_spread_by_policy", {})[policy] = {
            name: paired_ratio_spread(timing, *ENGINE_PAIRS[name], cfg.batches)
            for name in ("ort_fp32_vs_torch", "ort_fp32_vs_torch_graph")
            if all(e in timing for e in ENGINE_PAIRS[name])}
    headline = cfg.policies[0]
    res["policy"] = headline
    res["engines"] = res["engines_by_policy"][headline]
    res["ratios"] = res["ratios_by_policy"][headline]
    flops, peak = onnx_flops["per_trial"], res["gemm"]["gflops"]
    res["efficiency"] = {k: {b: efficiency(v["trials_per_s"], flops, peak) for b, v in per.items()}
                         for k, per in res["engines"].items()}
    shape_rate = (res["gemm"].get("model_shapes") or {}).get("gflops")
    fp = res["engines"].get("ort-fp32", {})
    if fp:
        best_b = max(fp, key=lambda b: fp[b]["trials_per_s"])
        res["model_only_best"] = {"batch": int(best_b), "trials_per_s": fp[best_b]["trials_per_s"],
                                  "pct_of_gemm_peak": res["efficiency"]["ort-fp32"][best_b]["pct_of_gemm_peak"]}
        if shape_rate and "256" in fp:
            res["model_only_best"]["pct_of_model_shape_peak_b256"] = efficiency(
                fp["256"]["trials_per_s"], flops, shape_rate)["pct_of_gemm_peak"]
    log("per-op profile of the fp32 graph (onnxruntime's profiler, batch 256) …")
    res["profile"] = op_profile(fp32, x, threads, 256)

    if cfg.sweep:
        log("session options and batch sizes …")
        res["session_options"] = session_option_sweep(fp32, x, threads, cfg.seconds / 2, max(1, cfg.rounds - 1),
                                                      log=log)
        sweep = time_engines({"ort-fp32": dec.run}, x, cfg.sweep_batches, cfg.seconds / 2, max(1, cfg.rounds - 1), log)
        per = sweep["ort-fp32"]
        res["batch_sweep"] = {"trials_per_s": {str(b): per[b]["trials_per_s"] for b in per},
                              "fastest": max(per, key=lambda b: per[b]["trials_per_s"]),
                              "predict_default": DEFAULT_BATCH}
        if res.get("model_only_best") and max(v["trials_per_s"] for v in per.values()) > res["model_only_best"]["trials_per_s"]:
            b = res["batch_sweep"]["fastest"]
            res["model_only_best"] = {**res["model_only_best"], "batch": b, "trials_per_s": per[b]["trials_per_s"],
                                      "pct_of_gemm_peak": efficiency(per[b]["trials_per_s"], flops, peak)["pct_of_gemm_peak"]}

    if cfg.cold_runs:
        log(f"cold start ({cfg.cold_runs} runs of each) …")
        raw30 = _raw_trials30(cfg.data, recipe, mcfg.n_times)
        res["cold_start"] = cold_start(fp32, run, raw30, threads, cfg.cold_runs, workdir, log)
        x30 = workdir / "trials30.npy"
        res["import_time"] = {"predict": import_profile(["predict", str(x30), "--model", str(fp32)]),
                              "help": import_profile(["--help"])}

    if cfg.large_trials:
        log(f"large input: {cfg.large_trials} trials …")
        res["large_input"] = large_input(fp32, cfg.large_trials, threads, cfg.large_batch, workdir, mcfg.n_times, log)
        if res.get("model_only_best"):
            res["large_input"]["vs_model_only_best"] = round(res["large_input"]["trials_per_s"]
                                                             / res["model_only_best"]["trials_per_s"], 3)
    if cfg.int8_cv:
        res["int8_cv"] = cfg.int8_cv
    res["machine"]["load_average_end"] = _load()
    res["targets"] = check_targets(res)
    return res


def _raw_trials30(data: Path | None, recipe: dict, n_times: int) -> np.ndarray:
    """The first 30 trials of a real participant as stored (what a user hands to predict)."""
    from fmri_edge.io import InputError, discover, load_trials

    root = Path(data) if data else Path(recipe.get("data") or DEFAULT_DATA)
    if root.is_dir():
        try:
            return load_trials(discover([root])[0].path, n_times=n_times)[:30]
        except (InputError, IndexError):  # unreadable or empty: simulate instead
            pass
    from fmri_edge.simulate import simulate

    return simulate(30, n_times=n_times, seed=1)[0]


def import_profile(args: list[str]) -> dict:
    """``python -X importtime -m fmri_edge.cli ARGS``: the imports that command pays for, as the
    top-level modules' cumulative seconds (largest first), their total, and whether any heavy
    module (torch, onnx, onnxscript) was imported."""
    code = ("import runpy, sys; sys.argv = ['fmri-edge', *sys.argv[1:]]; "
            "import atexit, json; atexit.register(lambda: print('HEAVY' + json.dumps([m for m in "
            "('torch', 'onnx', 'onnxscript') if m in sys.modules]), file=sys.stderr)); "
            "runpy.run_module('fmri_edge.cli', run_name='__main__')")
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True, text=True,
                       env=installed_env())
    top: dict[str, int] = {}
    heavy: list = []
    for line in r.stderr.splitlines():
        if line.startswith("HEAVY"):
            heavy = json.loads(line[5:])
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            name = parts[2]
            if not name.startswith("  "):  # a module imported by the command itself, not by another module
                top[name.strip()] = top.get(name.strip(), 0) + int(parts[1])
    ranked = sorted(top.items(), key=lambda kv: -kv[1])
    return {"command": "python -X importtime -m fmri_edge.cli " + " ".join(args), "exit_code": r.returncode,
            "total_s": round(sum(top.values()) / 1e6, 4),
            "top": [{"module": k, "cumulative_s": round(v / 1e6, 4)} for k, v in ranked[:12]],
            "heavy_modules_imported": heavy}


def check_targets(res: dict) -> list[dict]:
    """Each target with its measured value and whether it is met (None: not measured). Engine
    ratios are the headline thread policy's, against PyTorch running the trained network and
    against PyTorch running the exported graph's form (like for like)."""
    out = []

    def add(name, value, target, op, unit=""):
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"target": name, "value": value, "goal": f"{op} {target}{unit}", "met": met})

    for policy, r in (res.get("ratios_by_policy") or {"": res.get("ratios", {})}).items():
        for b in ("1", "32", "256", "4096"):
            for key, what in (("ort_fp32_vs_torch", "PyTorch"), ("ort_fp32_vs_torch_graph", "PyTorch (graph form)")):
                if b in r.get(key, {}):
                    add(f"onnxruntime fp32 / {what}, batch {b}, {policy}", r[key][b], TARGETS[f"ort_vs_torch_b{b}"],
                        ">=", "×")
        if "256" in r.get("ort_int8_vs_fp32", {}):
            add(f"int8 / fp32, batch 256, {policy}", r["ort_int8_vs_fp32"]["256"], TARGETS["int8_vs_fp32_b256"], ">=", "×")
    cv = res.get("int8_cv") or {}
    add("int8 CLASS accuracy change (CV, points)", cv.get("accuracy_change_points"), TARGETS["int8_acc_change_points"], ">=")
    cold = res.get("cold_start") or {}
    med = cold.get("median_s") or {}
    add("fmri-edge predict, 30 trials, cold (s)", med.get("fmri-edge predict"), TARGETS["cold_start_s"], "<=", " s")
    add("fmri-edge predict / python -c 'import torch'", cold.get("ratio_vs_import_torch"),
        TARGETS["cold_start_vs_torch_import"], "<=", "×")
    add("fmri-edge --help (s)", med.get("fmri-edge --help"), TARGETS["help_s"], "<=", " s")
    large = res.get("large_input") or {}
    add("end-to-end predict / model-only best", large.get("vs_model_only_best"), TARGETS["e2e_vs_model_only"], ">=", "×")
    add("peak RSS of predict on the large input (MB)", large.get("peak_rss_mb"), TARGETS["large_peak_rss_mb"], "<=", " MB")
    return out


# ---- rendering --------------------------------------------------------------------------------------

def _mkn(s: dict) -> str:
    return f"{s['m']}×{s['k']}×{s['n']}"


def _fmt_tps(v: float) -> str:
    return f"{v:,.0f}"


def tables(res: dict) -> list:
    """Rich tables: engines × batches, then targets."""
    from rich.table import Table

    batches = list(next(iter(res["engines"].values())).keys()) if res.get("engines") else []
    m = res["machine"]
    t = Table(title=f"fmri-edge bench — {m['cpu']}, {res['threads']} threads, load {m['load_average_start']} → "
                    f"{m.get('load_average_end')}, {res['flops']['per_trial'] / 1e6:.2f} MFLOP/trial, numpy GEMM peak "
                    f"{res['gemm']['gflops']:.0f} GFLOP/s", title_justify="left")
    t.add_column("engine")
    for b in batches:
        t.add_column("batch 1 latency" if b == "1" else f"batch {b}", justify="right")
    t.add_column("best GFLOP/s (% peak)", justify="right")
    for k, per in res["engines"].items():
        cells = []
        for b in batches:
            v = per[b]
            cells.append(f"{v['ms_per_call']:.2f} ms ({_fmt_tps(v['trials_per_s'])}/s)" if b == "1"
                         else f"{_fmt_tps(v['trials_per_s'])}/s")
        eff = res["efficiency"][k]
        bb = max(eff, key=lambda b: eff[b]["gflops"])
        cells.append(f"{eff[bb]['gflops']:.1f} ({eff[bb]['pct_of_gemm_peak']:.0f} %) @ {bb}")
        t.add_row(ENGINE_LABELS.get(k, k), *cells)
    for name, per in res.get("ratios", {}).items():
        t.add_row(name.replace("_", " ").replace("ort", "onnxruntime"), *(f"{per[b]:.2f}×" for b in batches), "",
                  style="dim")
    g = Table(title="targets", title_justify="left")
    for c in ("target", "measured", "goal", "met"):
        g.add_column(c, justify="left" if c == "target" else "right")
    for row in res["targets"]:
        v = row["value"]
        g.add_row(row["target"], "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)), row["goal"],
                  "—" if row["met"] is None else ("[green]yes[/]" if row["met"] else "[red]no[/]"))
    extra = Table(title="other measurements", title_justify="left", show_header=False)
    extra.add_column(style="bold")
    extra.add_column()
    for k, v in summary_rows(res):
        extra.add_row(k, v)
    return [t, extra, g]


def summary_rows(res: dict) -> list[tuple[str, str]]:
    rows = []
    cold = res.get("cold_start")
    if cold:
        med = cold["median_s"]
        rows.append(("cold start, 30 trials", f"fmri-edge predict {med['fmri-edge predict']:.3f} s · PyTorch script "
                     f"{med['pytorch script']:.3f} s ({cold['ratio_fmri_edge_vs_torch']:.2f}×) · fmri-edge --help "
                     f"{med['fmri-edge --help']:.3f} s · same answers {cold['same_answers']}"))
    for what, imp in (res.get("import_time") or {}).items():
        rows.append((f"imports of `{what}` (-X importtime)", f"{imp['total_s']:.3f} s: " + ", ".join(
            f"{m['module']} {m['cumulative_s']:.3f}" for m in imp["top"][:6]) + f"; heavy modules imported: "
            f"{imp['heavy_modules_imported'] or 'none'}"))
    prof = res.get("profile")
    if prof:
        rows.append((f"per-op profile, batch {prof['batch']}", f"{prof['kernel_ms_per_call']:.2f} ms of kernels per call "
                     f"({prof['wall_ms_per_call']:.2f} ms wall): " + ", ".join(
                         f"{k} {100 * v:.0f} %" for k, v in list(prof["by_op"].items())[:6])))
    for policy, r in (res.get("ratios_by_policy") or {}).items():
        if policy != res.get("policy"):
            rows.append((f"ratios, threads {policy}", " · ".join(
                f"{name.replace('_', ' ').replace('ort', 'onnxruntime')}: " + "/".join(f"{v:.2f}" for v in per.values())
                for name, per in r.items()) + " (batches " + "/".join(next(iter(r.values())).keys()) + ")"))
    for policy, spreads in (res.get("ratio_spread_by_policy") or {}).items():
        per = spreads.get("ort_fp32_vs_torch_graph")
        if per:
            rows.append((f"onnxruntime fp32 vs torch graph round by round, {policy}", " · ".join(
                f"batch {b}: {v['min']:.2f}–{v['max']:.2f}× (median {v['median']:.2f})" for b, v in per.items())))
    large = res.get("large_input")
    if large:
        rows.append(("large input", f"{large['n_trials']:,} trials ({large['file_bytes'] / 1e9:.2f} GB): "
                     f"{large['wall_s']:.1f} s, {_fmt_tps(large['trials_per_s'])} trials/s end to end "
                     f"({large.get('vs_model_only_best', float('nan')):.2f}× model-only best), peak RSS "
                     f"{large['peak_rss_mb']:.0f} MB, batch {large['batch_size']}"
                     + (f"; with --batch-size {large['huge_batch']['batch_size']:,}: "
                        f"{_fmt_tps(large['huge_batch']['trials_per_s'])} trials/s, "
                        f"{large['huge_batch']['peak_rss_mb']:.0f} MB" if "huge_batch" in large else "")))
    best = res.get("model_only_best")
    if best:
        rows.append(("model-only best (fp32)", f"{_fmt_tps(best['trials_per_s'])} trials/s at batch {best['batch']} "
                     f"({best['pct_of_gemm_peak']:.0f} % of numpy GEMM peak)"))
    gemm = res.get("gemm", {})
    if gemm:
        o = gemm.get("onnxruntime_matmul", {})
        ms = gemm.get("model_shapes")
        rows.append(("GEMM peak", f"numpy {gemm['gflops']:.1f} GFLOP/s (n={gemm['size']}); onnxruntime MatMul "
                     f"{o.get('gflops', '—')} GFLOP/s" + (
                         f"; the model's own products at batch 256 ({', '.join(_mkn(s) for s in ms['products'])}): "
                         f"numpy {ms['gflops']:.1f} GFLOP/s, {1e3 * ms['seconds']:.3f} ms" if ms else "")))
    fl = res.get("flops")
    if fl:
        rows.append(("FLOPs per trial", f"{fl['per_trial']:,} from the ONNX graph ({', '.join(f'{k} {v / 1e6:.2f}M' for k, v in fl['by_op'].items())}); "
                     f"{fl['per_trial_torch_layers']:,} from the PyTorch layers; {fl['parameters']:,} parameters"))
    sweep = res.get("batch_sweep")
    if sweep:
        rows.append(("fp32 batch sweep", " · ".join(f"{b}: {_fmt_tps(v)}/s" for b, v in sweep["trials_per_s"].items())
                     + f" (fastest {sweep['fastest']}, predict default {sweep['predict_default']})"))
    so = res.get("session_options")
    if so:
        rows.append(("session options vs chosen", " · ".join(
            f"{k}: " + "/".join(f"{v:.2f}" for v in r.values()) for k, r in so["relative_to_chosen"].items() if k != "chosen")
            + " (batch 1/256 trials/s relative to the chosen options)"))
    m = res.get("model", {})
    if "int8_vs_fp32" in m:
        a = m["int8_vs_fp32"]
        rows.append(("int8 vs fp32 answers", f"same CLASS on {100 * a['class_agreement']:.1f} % of {a['trials']} trials; "
                     f"{m['int8_bytes'] / 1e6:.1f} MB vs {m['fp32_bytes'] / 1e6:.1f} MB"))
    return rows


def markdown(res: dict, command: str = "") -> str:
    """A README-ready section: the table, the targets, the command and the machine."""
    m = res["machine"]
    batches = list(next(iter(res["engines"].values())).keys())
    head = "| engine | " + " | ".join("batch 1 latency" if b == "1" else f"batch {b}" for b in batches) + " | best GFLOP/s (% of GEMM peak) |"
    lines = [head, "|---|" + "---:|" * (len(batches) + 1)]
    for k, per in res["engines"].items():
        cells = [f"{per[b]['ms_per_call']:.2f} ms ({_fmt_tps(per[b]['trials_per_s'])}/s)" if b == "1"
                 else f"{_fmt_tps(per[b]['trials_per_s'])}/s" for b in batches]
        eff = res["efficiency"][k]
        bb = max(eff, key=lambda b: eff[b]["gflops"])
        lines.append(f"| {ENGINE_LABELS.get(k, k)} | " + " | ".join(cells)
                     + f" | {eff[bb]['gflops']:.1f} ({eff[bb]['pct_of_gemm_peak']:.0f} %) at batch {bb} |")
    for name, per in res.get("ratios", {}).items():
        lines.append(f"| *{name.replace('_', ' ').replace('ort', 'onnxruntime')}* | "
                     + " | ".join(f"{per[b]:.2f}×" for b in batches) + " | |")
    for policy, per_engine in (res.get("engines_by_policy") or {}).items():
        if policy == res.get("policy"):
            continue
        lines += ["", f"Threads {policy} (both engines):", "",
                  "| engine | " + " | ".join("batch 1 latency" if b == "1" else f"batch {b}" for b in batches) + " |",
                  "|---|" + "---:|" * len(batches)]
        for k, per in per_engine.items():
            lines.append(f"| {ENGINE_LABELS.get(k, k)} | " + " | ".join(
                f"{per[b]['ms_per_call']:.3f} ms ({_fmt_tps(per[b]['trials_per_s'])}/s)" if b == "1"
                else f"{_fmt_tps(per[b]['trials_per_s'])}/s" for b in batches) + " |")
        for name, per in res["ratios_by_policy"][policy].items():
            lines.append(f"| *{name.replace('_', ' ').replace('ort', 'onnxruntime')}* | "
                         + " | ".join(f"{per[b]:.2f}×" for b in batches) + " |")
    prof = res.get("profile")
    if prof:
        lines += ["", f"Per-op profile of the fp32 graph (onnxruntime's profiler, batch {prof['batch']}, "
                      f"{prof['threads']} threads, {prof['calls']} calls): {prof['kernel_ms_per_call']:.3f} ms of "
                      f"kernels per call, {prof['wall_ms_per_call']:.3f} ms wall.", "",
                  "| node (after onnxruntime's graph optimizations) | op | output | µs per call | share |",
                  "|---|---|---|---:|---:|"]
        for nd in prof["nodes"][:12]:
            lines.append(f"| {nd['node'][:48]} | {nd['op']} | {' '.join(map(str, nd['output_shapes']))} | "
                         f"{nd['us_per_call']:.1f} | {100 * nd['share']:.1f} % |")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for row in res["targets"]:
        v = row["value"]
        lines.append(f"| {row['target']} | {'—' if v is None else (f'{v:.3g}' if isinstance(v, float) else v)} | "
                     f"{row['goal']} | {'—' if row['met'] is None else ('yes' if row['met'] else '**no**')} |")
    lines += ["", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary_rows(res)]
    lines += ["", f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m.get('memory_gb')} GB RAM, "
              f"{', '.join(m['simd'])}; {m['platform']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
              + f". Threads: {res['threads']}. Load average (1/5/15 min) {m['load_average_start']} at the start, "
              f"{m.get('load_average_end')} at the end. Date: {m['date']}. Inputs: {res['inputs']}."]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


MD_START, MD_END = "<!-- bench:start -->", "<!-- bench:end -->"


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


if __name__ == "__main__":  # pragma: no cover  (the timing process of time_engines_in_process)
    if sys.argv[1:2] == ["--time-engines"]:
        _time_engines_worker(sys.argv[2])
    else:
        sys.exit("use `fmri-edge bench`")
