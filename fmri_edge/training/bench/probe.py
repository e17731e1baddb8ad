"""What this machine is and what it can do: CPU, memory, versions, load, and the practical peak,
the float32 GEMM rate of numpy's BLAS (and of onnxruntime's MatMul) on the benchmark's threads."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


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
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "simd": sorted(
            f
            for f in flags
            if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"}
        ),
        "memory_gb": _memory_gb(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_average_start": load_average(),
    }


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def gemm_peak(threads: int, sizes=(2048, 4096), shapes=()) -> dict:
    """float32 GEMM rate of numpy's BLAS on ``threads`` threads (a fresh process, so the BLAS
    thread count is set before it loads): the median rate per square size (the best size is the
    peak), and, for ``shapes`` ((m, k, n) products, e.g. the model's own from :func:`fmri_edge.training.bench.flops.gemm_nodes`),
    each product's time and rate and all of them together (``model_shapes``)."""
    env = {
        **os.environ,
        **{k: str(threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    plan = {
        "square": [(int(n), 5 if n <= 2048 else 3) for n in sizes],
        "shapes": [list(map(int, s)) for s in shapes],
    }
    res = subprocess.run(
        [sys.executable, "-m", "fmri_edge.training.bench.gemm_rate", json.dumps(plan)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    raw = json.loads(res.stdout)
    per = {
        int(k): {kk: round(vv, 1) if isinstance(vv, float) else vv for kk, vv in v.items()}
        for k, v in raw["square"].items()
    }
    best = max(per, key=lambda n: per[n]["gflops_median"])
    out = {
        "gflops": per[best]["gflops_median"],
        "size": best,
        "sizes": per,
        "threads": threads,
        "method": "numpy float32 matmul n×n, median over repeats, best n",
    }
    if raw["shapes"]:
        flops = sum(2 * s["m"] * s["k"] * s["n"] for s in raw["shapes"])
        seconds = sum(s["seconds"] for s in raw["shapes"])
        out["model_shapes"] = {
            "products": raw["shapes"],
            "seconds": seconds,
            "gflops": round(flops / seconds / 1e9, 2),
            "method": "numpy float32 matmul of each of the model's products at that batch, "
            "one after the other",
        }
    return out


def ort_gemm_peak(threads: int, n: int = 2048, reps: int = 5) -> dict:
    """The same GEMM through onnxruntime's own MatMul kernel (MLAS), for context."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from fmri_edge.model.runtime import session_options

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    sess = ort.InferenceSession(
        model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.standard_normal((n, n), dtype=np.float32),
        "b": rng.standard_normal((n, n), dtype=np.float32),
    }
    sess.run(None, feed)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return {
        "gflops": round(2 * n**3 / float(np.median(ts)) / 1e9, 1),
        "size": n,
        "threads": threads,
    }
