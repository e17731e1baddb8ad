"""int8 answers under this CPU's fused int8 kernels vs the quantized arithmetic computed in float.

The model of tests/test_bench.py::test_int8_calibrated_per_participant_answers_at_least_as_close_as_on_defaults
(aligned linear model with the level step, graph defaults moved far from every participant), quantized
with per-participant calibration and on the defaults; each run fused (this CPU's kernels), with
session.disable_quant_qdq (Q/DQ in float) and with all graph optimizations off. docs/speed.md has a table.

    .venv/bin/python benchmarks/int8_kernels.py
"""

import sys
import tempfile
from pathlib import Path as _P

sys.path.insert(0, str(_P(__file__).resolve().parents[1]))
import numpy as np
from pathlib import Path
from tests.conftest import level_recipe, SIGNAL_REGIONS
from fmri_edge.simulation.simulate import simulate
import fmri_edge.model.runtime as runtime
from fmri_edge.decoding.answers import run_by_participant
from fmri_edge.model.runtime import Model
from fmri_edge.training.onnx_export import export_onnx
from fmri_edge.training.fit import fit
from fmri_edge.training.quantize import quantize_int8

x, y, subj = simulate(30, n_subjects=6, effect=0.03, signal_regions=SIGNAL_REGIONS, seed=7)
tr = subj < 4
model = fit(level_recipe(), x[tr], y[tr], participants=subj[tr]).model
model.pop_mean += 40.0
d = Path(tempfile.mkdtemp())
export_onnx(
    [model],
    d / "l.onnx",
    {"model_version": "t", "region_names": [f"R{i}" for i in range(246)]},
    x[:64],
)
quantize_int8(d / "l.onnx", d / "aligned.onnx", x[tr], "sim", participants=subj[tr])
quantize_int8(d / "l.onnx", d / "defaults.onnx", x[tr], "sim")
plain = runtime.session_options
for mode in ("fused", "unfused", "noopt"):

    def so_(*a, **k):
        so = plain(*a, **k)
        if mode == "unfused":
            so.add_session_config_entry("session.disable_quant_qdq", "1")
        if mode == "noopt":
            import onnxruntime as ort

            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return so

    runtime.session_options = so_
    ref = run_by_participant(Model(d / "l.onnx"), x[~tr], subj[~tr])["class_probs"]
    for k in ("aligned", "defaults"):
        v = run_by_participant(Model(d / f"{k}.onnx"), x[~tr], subj[~tr])["class_probs"]
        print(
            mode,
            k,
            "agree",
            np.mean(v.argmax(1) == ref.argmax(1)),
            "mean|dp|",
            np.abs(v - ref).mean(),
            "sum",
            v.sum(),
        )
