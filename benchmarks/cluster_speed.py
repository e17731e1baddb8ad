"""Speed of `fmri-edge predict --scheduler` (the dask extra) against plain `predict`.

Writes (once, into --work) a 100 000-trial float32 .npy (2.46 GB; 2 000 simulated trials tiled
50 times: the speed does not depend on the values), then:

- whole-process timings of `fmri-edge predict FILE --out …` locally, with `--scheduler local:1`
  and with `--scheduler local:2`, each under /usr/bin/time -v (wall seconds from process start to
  exit, cluster start-up included, and peak resident memory of the largest process), in turns,
  ``--runs`` times; the CSVs must be byte-identical;
- the overhead per task: `fmri_edge.decoding.cluster.predict` on a `local:1` cluster started once, over
  the first ``--overhead-trials`` trials at batch 64, as tasks of 64 trials and as one task
  (the same onnxruntime calls either way), in turns; (time(many) − time(one)) / (extra tasks).
  With ``--skip-whole`` the JSON's earlier whole-process figures are kept.

    .venv/bin/python benchmarks/cluster_speed.py --work scratch/bench-cluster --json benchmarks/results/cluster.json

Not a test: timings depend on the machine and on what else runs on it (the load average is
recorded before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_TRIALS = 100_000


def make_trials(path: Path, n_trials: int) -> Path:
    if path.is_file():
        return path
    from fmri_edge.simulation.simulate import simulate

    x = simulate(2000, n_subjects=1, seed=1)[0].astype(np.float32)
    out = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_trials, *x.shape[1:])
    )
    for start in range(0, n_trials, len(x)):
        out[start : start + len(x)] = x[: n_trials - start]
    out.flush()
    return path


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak MB) of one whole process under /usr/bin/time -v."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, int(rss.group(1)) / 1024 if rss else float("nan")


def whole_process(trials: Path, work: Path, runs: int) -> dict:
    exe = str(Path(sys.executable).with_name("fmri-edge"))
    modes = {
        "local predict": [],
        "local:1": ["--scheduler", "local:1"],
        "local:2": ["--scheduler", "local:2"],
    }
    out = {m: work / f"out-{m.replace(' ', '-').replace(':', '')}.csv" for m in modes}
    times = {m: [] for m in modes}
    for _ in range(runs):
        for mode, extra in modes.items():
            times[mode].append(
                timed([exe, "predict", str(trials), "--out", str(out[mode]), "--force", *extra])
            )
    first = out["local predict"].read_bytes()
    same = all(p.read_bytes() == first for p in out.values())
    n = first.count(b"\n") - 1
    return {
        mode: {
            "wall_s": [round(w, 2) for w, _ in t],
            "median_s": round(float(np.median([w for w, _ in t])), 2),
            "trials_per_s": round(n / float(np.median([w for w, _ in t]))),
            "peak_mb": round(max(m for _, m in t)),
        }
        for mode, t in times.items()
    } | {"same_csv": same, "rows": n}


def task_overhead(trials: Path, n: int, runs: int) -> dict:
    import distributed

    from fmri_edge.decoding import cluster
    from fmri_edge.model.runtime import Model

    part = trials.with_name(f"first{n}.npy")
    if not part.is_file():
        np.save(part, np.load(trials, mmap_mode="r", allow_pickle=False)[:n])
    decoder = Model()
    with cluster.connect("local:1") as (
        client,
        threads,
    ):  # one worker: the same parallelism either way
        distributed.wait(
            client.submit(
                cluster.worker_decoder,
                cluster.ModelRef(
                    str(decoder.path.resolve()), cluster.file_sha256(decoder.path), threads
                ),
            )
        )  # models opened, files cached
        took = {64: [], n: []}
        for _ in range(runs):
            for size in took:
                t0 = time.perf_counter()
                for _item in cluster.predict(
                    client, decoder, [part], 64, threads=threads, weights=False, task_trials=size
                ):
                    pass
                took[size].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in took.items()}
    tasks = {k: len(cluster.spans(n, k, True)) for k in took}
    return {
        "trials": n,
        "batch": 64,
        "tasks": list(tasks.values()),
        "seconds": [[round(x, 3) for x in v] for v in took.values()],
        "overhead_ms_per_task": round(1000 * (med[64] - med[n]) / (tasks[64] - tasks[n]), 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--overhead-trials", type=int, default=20_000)
    ap.add_argument("--skip-whole", action="store_true", help="only the overhead per task")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    trials = make_trials(a.work / "trials100k.npy", N_TRIALS)
    res = json.loads(a.json.read_text()) if a.skip_whole and a.json and a.json.is_file() else {}
    res["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_before": os.getloadavg(),
    }
    if not a.skip_whole:
        res["whole_process"] = whole_process(trials, a.work, a.runs)
    res["task_overhead"] = task_overhead(trials, a.overhead_trials, a.runs)
    res["machine"]["load_after"] = os.getloadavg()
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
