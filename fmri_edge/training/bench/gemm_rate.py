"""The GEMM-rate process of :func:`fmri_edge.training.bench.probe.gemm_peak`, run as
``python -m fmri_edge.training.bench.gemm_rate PLAN_JSON`` in a fresh process, so the BLAS thread
count in its environment is read before numpy loads. Prints one JSON document: per square size the
median and best GFLOP/s, and per (m, k, n) product its median seconds and GFLOP/s."""

import json
import sys
import time

import numpy as np


def rate(rng, m: int, k: int, n: int, reps: int) -> tuple[float, float]:
    """Median and best seconds of a float32 (m, k) @ (k, n), after one untimed call."""
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), min(ts)


def measure(plan: dict) -> dict:
    rng = np.random.default_rng(0)
    out: dict = {"square": {}, "shapes": []}
    for n, reps in plan["square"]:
        med, best = rate(rng, n, n, n, reps)
        out["square"][n] = {
            "gflops_median": 2 * n**3 / med / 1e9,
            "gflops_best": 2 * n**3 / best / 1e9,
            "reps": reps,
        }
    for m, k, n in plan["shapes"]:
        med, _ = rate(rng, m, k, n, 20)
        out["shapes"].append(
            {"m": m, "k": k, "n": n, "seconds": med, "gflops": 2 * m * k * n / med / 1e9}
        )
    return out


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
