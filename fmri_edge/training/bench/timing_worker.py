"""The timing process of :func:`fmri_edge.training.bench.timing.time_engines_in_process`, run as
``python -m fmri_edge.training.bench.timing_worker JOB_JSON`` (a :class:`TimingJob`): builds the
engines it names, times them (:func:`time_engines`) and prints the result as one JSON document."""

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.training.bench.timing import TimingJob, ort_engine, time_engines, torch_engine


def main(job_path: str) -> dict:
    from fmri_edge.training.onnx_export import graph_module, level_from_class
    from fmri_edge.training.checkpoints import reference_net

    job = TimingJob(**json.loads(Path(job_path).read_text()))
    threads, x = job.threads, np.load(job.trials)
    engines: dict[str, Callable] = {}
    if {"torch", "torch-graph"} & set(job.engines):  # loaded once for both PyTorch forms
        net, members, _, recipe = reference_net(Path(job.run))
    for name in job.engines:
        if name == "ort-fp32":
            engines[name] = ort_engine(Path(job.fp32), threads, spinning=job.spinning)
        elif name == "ort-int8" and job.int8:
            engines[name] = ort_engine(Path(job.int8), threads, spinning=job.spinning)
        elif name == "torch":
            engines[name] = torch_engine(net, threads)
        elif name == "torch-graph":
            rule = (recipe.get("eval") or {}).get("level_rule")
            engines[name] = torch_engine(
                graph_module(members, level_from_class(members, rule), x[:256]), threads
            )
    return time_engines(engines, x, job.batches, job.seconds, job.rounds)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
