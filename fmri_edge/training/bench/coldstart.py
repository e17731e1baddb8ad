"""What a user waits for: ``fmri-edge predict`` on 30 trials from process start to exit against the
same job done the PyTorch way (:mod:`.torch_predict`), ``--help``, the imports each command pays
for (``-X importtime``), and ``predict`` end to end on a large simulated file (trials/s and peak
resident memory). Every command runs in its own process, started by a small one
(:mod:`.process_usage`) that reads its wall time and resource usage."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TORCH_SCRIPT = Path(__file__).with_name("torch_predict.py")


def fmri_edge_command() -> list[str]:
    """How a user starts the CLI: the console script beside this interpreter, else ``-m``."""
    script = Path(sys.executable).parent / "fmri-edge"
    if script.is_file():
        return [str(script)]
    found = shutil.which("fmri-edge")
    return [found] if found else [sys.executable, "-m", "fmri_edge.cli"]


@functools.lru_cache(maxsize=1)
def installed_env() -> dict:
    """The environment of a user's process: the package's bytecode compiled (as ``pip install``
    leaves it) and used. A PYTHONDONTWRITEBYTECODE=1 in this environment (some sandboxes set it)
    would otherwise make every cold start of an editable install compile fmri_edge's sources
    again (its cost: docs/speed.md)."""
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parents[2], quiet=2)
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds from process start to exit and peak RSS (KB) of one command, read by
    :mod:`.process_usage` (so neither number includes this process)."""
    r = subprocess.run(
        [sys.executable, "-m", "fmri_edge.training.bench.process_usage", *cmd],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    res = json.loads(r.stdout)
    if res["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res['code']}): {res['stderr'].strip()}")
    return res["wall_s"], res["maxrss_kb"]


def cold_start(
    fp32: Path,
    run: Path,
    trials30: np.ndarray,
    threads: int,
    runs: int,
    workdir: Path,
    log=lambda s: None,
) -> dict:
    """`fmri-edge predict` on 30 trials vs the PyTorch script, each from process start to exit
    (alternating, ``runs`` times each, after one untimed run of each to warm the file cache)."""
    x = workdir / "trials30.npy"
    np.save(x, trials30)
    ort_cmd = [
        *fmri_edge_command(),
        "predict",
        str(x),
        "--model",
        str(fp32),
        "--out",
        str(workdir / "ort30.csv"),
        "--force",
        "--threads",
        str(threads),
    ]
    torch_cmd = [
        sys.executable,
        "-m",
        "fmri_edge.training.bench.torch_predict",
        str(run if run.is_dir() else run.parent),
        str(x),
        str(workdir / "torch30.csv"),
        str(threads),
    ]
    help_cmd = [*fmri_edge_command(), "--help"]
    import_torch = [sys.executable, "-c", "import torch"]
    cmds = {
        "fmri-edge predict": ort_cmd,
        "pytorch script": torch_cmd,
        "fmri-edge --help": help_cmd,
        "python -c 'import torch'": import_torch,
    }
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
    log(
        f"cold start: fmri-edge predict {med['fmri-edge predict']:.2f} s, PyTorch {med['pytorch script']:.2f} s"
    )
    return {
        "median_s": med,
        "runs": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "ratio_fmri_edge_vs_torch": round(med["fmri-edge predict"] / med["pytorch script"], 3),
        "ratio_vs_import_torch": round(
            med["fmri-edge predict"] / med["python -c 'import torch'"], 3
        ),
        "same_answers": same,
        "n_trials": int(len(trials30)),
        "command": " ".join(ort_cmd),
        "bytecode": "compiled, as an installed package has it (PYTHONDONTWRITEBYTECODE unset)",
        "torch_script": TORCH_SCRIPT.read_text().strip(),
    }


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
    return round(
        sum((x["CLASS"], x["LEVEL"]) == (y["CLASS"], y["LEVEL"]) for x, y in zip(ra, rb)) / len(ra),
        4,
    )


# ---- large input -------------------------------------------------------------------------------------


def write_large_npy(path: Path, n_trials: int, n_times: int = 25, chunk: int = 2000) -> int:
    """A float32 (n_trials, 246, n_times) .npy from the simulator, written chunk by chunk."""
    from fmri_edge.simulation.simulate import simulate

    arr = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.float32, shape=(n_trials, 246, n_times)
    )
    for i in range(0, n_trials, chunk):
        n = min(chunk, n_trials - i)
        arr[i : i + n] = simulate(n, n_times=n_times, seed=i // chunk)[0]
    arr.flush()
    del arr
    return path.stat().st_size


def large_input(
    fp32: Path,
    n_trials: int,
    threads: int,
    batch: int | None,
    workdir: Path,
    n_times: int = 25,
    log=lambda s: None,
) -> dict:
    """End-to-end `fmri-edge predict` on a big simulated .npy: wall time, trials/s, peak RSS."""
    from fmri_edge.decoding.answers import DEFAULT_BATCH

    npy, csv_path = workdir / "large.npy", workdir / "large.csv"
    try:
        t = time.perf_counter()
        size = write_large_npy(npy, n_trials, n_times)
        log(
            f"large input: wrote {n_trials} simulated trials ({size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s"
        )
        cmd = [
            *fmri_edge_command(),
            "predict",
            str(npy),
            "--model",
            str(fp32),
            "--out",
            str(csv_path),
            "--force",
            "--threads",
            str(threads),
            "--batch-size",
            str(batch or DEFAULT_BATCH),
        ]
        elapsed, rss_kb = wall(cmd)
        with open(csv_path, "rb") as f:
            rows = sum(1 for _ in f) - 1
        log(
            f"large input: {n_trials / elapsed:.0f} trials/s end to end, peak RSS {rss_kb / 1024:.0f} MB"
        )
        huge = [
            *cmd[:-1],
            str(n_trials),
        ]  # one batch as large as the file: capped, so no slower and no bigger
        h_elapsed, h_rss = wall(huge)
        log(
            f"large input, --batch-size {n_trials}: {n_trials / h_elapsed:.0f} trials/s, peak RSS {h_rss / 1024:.0f} MB"
        )
        return {
            "n_trials": n_trials,
            "file_bytes": size,
            "wall_s": round(elapsed, 3),
            "trials_per_s": round(n_trials / elapsed, 1),
            "peak_rss_mb": round(rss_kb / 1024, 1),
            "csv_rows": rows,
            "batch_size": batch or DEFAULT_BATCH,
            "command": " ".join(cmd),
            "huge_batch": {
                "batch_size": n_trials,
                "wall_s": round(h_elapsed, 3),
                "trials_per_s": round(n_trials / h_elapsed, 1),
                "peak_rss_mb": round(h_rss / 1024, 1),
            },
        }
    finally:
        npy.unlink(missing_ok=True)
        csv_path.unlink(missing_ok=True)


WRAPPER_PACKAGES = {"fmri_edge.training", "fmri_edge.training.bench"}


def import_profile(args: list[str]) -> dict:
    """``python -X importtime -m fmri_edge.cli ARGS``: the imports that command pays for, as the
    top-level modules' cumulative seconds (largest first), their total, and whether any heavy
    module (torch, onnx, onnxscript) was imported. The command runs inside :mod:`.cli_imports`,
    whose own (empty) parent packages are left out."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fmri_edge.training.bench.cli_imports", *args],
        capture_output=True,
        text=True,
        env=installed_env(),
    )
    top: dict[str, int] = {}
    heavy: list = []
    for line in r.stderr.splitlines():
        if line.startswith("HEAVY"):
            heavy = json.loads(line[5:])
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            name = parts[2]
            if (
                not name.startswith("  ") and name.strip() not in WRAPPER_PACKAGES
            ):  # imported by the command
                top[name.strip()] = top.get(name.strip(), 0) + int(parts[1])
    ranked = sorted(top.items(), key=lambda kv: -kv[1])
    return {
        "command": "python -X importtime -m fmri_edge.cli " + " ".join(args),
        "exit_code": r.returncode,
        "total_s": round(sum(top.values()) / 1e6, 4),
        "top": [{"module": k, "cumulative_s": round(v / 1e6, 4)} for k, v in ranked[:12]],
        "heavy_modules_imported": heavy,
    }
