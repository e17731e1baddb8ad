"""Shared fixtures: simulated data and a small SE model trained on it and exported to ONNX.

Tests that need the real ICBHI data use ``icbhi`` and skip where ``../shared/data/icbhi2024`` is
absent. Everything else runs on data the simulator makes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmri_edge.simulation.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
ICBHI = ROOT.parent / "shared" / "data" / "icbhi2024"
SIGNAL_REGIONS = (14, 15, 86, 87)


@pytest.fixture(scope="session")
def icbhi() -> Path:
    if not (ICBHI / "Train").is_dir():
        pytest.skip(
            f"real ICBHI data not found at {ICBHI} (it lives in ../shared, beside the repository)"
        )
    return ICBHI


@pytest.fixture(scope="session")
def sim_data():
    """6 simulated subjects × 30 trials with a strong planted signal in SIGNAL_REGIONS."""
    return simulate(30, n_subjects=6, effect=0.03, signal_regions=SIGNAL_REGIONS, seed=7)


@pytest.fixture(scope="session")
def tiny_recipe():
    from fmri_edge.training.recipe import Recipe

    r = Recipe(name="tiny", data="/nonexistent", seed=0)
    r.model.widths, r.model.dense = (8, 16, 16), (32, 16)
    r.model.heads = {"class": 3, "level": 9}
    r.model.normalization = "baseline_z"
    r.optim.epochs, r.optim.lr, r.optim.batch_size = 25, 3e-3, 32
    return r


@pytest.fixture(scope="session")
def sim_model(tmp_path_factory, sim_data, tiny_recipe) -> Path:
    """A small SE model trained on simulated subjects 0-4, exported to ONNX (subject 5 held out)."""
    pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit

    x, y, subj = sim_data
    tr, va = subj < 4, subj == 4
    res = fit(tiny_recipe, x[tr], y[tr], x[va], y[va])
    out = tmp_path_factory.mktemp("model") / "sim.onnx"
    meta = {
        "model_version": "tiny-sim",
        "level_rule": "argmax",
        "region_names": [f"R{i}" for i in range(246)],
        "normalization": {"per_trial": "baseline_z"},
    }
    export_onnx([res.model], out, meta, x[:64])
    return out


def write_icbhi(root: Path, trials: np.ndarray, labels: np.ndarray | None, subject: str) -> Path:
    folder = root / subject
    folder.mkdir(parents=True)
    np.savez(folder / "fMRI_data.npz", data=trials.astype(np.float64))
    if labels is not None:
        np.savez(folder / "labels.npz", data=labels.astype(np.float64))
    return folder


def level_recipe(name: str = "level", C: float = 0.01):
    """A recipe of the shipped model's kind: converged logistic regression (lbfgs) on psc_mean_gsr
    bins plus the sustained level, each participant z-scored."""
    from fmri_edge.training.recipe import Recipe

    r = Recipe(name=name, data="/nonexistent", seed=0)
    r.model.kind, r.model.se, r.model.normalization = "linear", False, "psc_mean_gsr"
    r.model.time_window, r.model.time_bins, r.model.subject_align, r.model.trial_level = (
        [5, 25],
        5,
        "zscore",
        True,
    )
    r.model.heads = {"class": 3}
    r.optim.solver, r.optim.C = "lbfgs", C
    return r


@pytest.fixture(scope="session")
def aligned_model(tmp_path_factory, sim_data) -> Path:
    """A linear model with in-graph subject alignment (z-score of each participant's representation
    over its own trials), trained on simulated subjects 0-3 and exported to ONNX."""
    pytest.importorskip("torch")
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit
    from fmri_edge.training.recipe import Recipe

    x, y, subj = sim_data
    r = Recipe(name="aligned", data="/nonexistent", seed=0)
    r.model.kind, r.model.se, r.model.normalization = "linear", False, "psc_mean"
    r.model.time_window, r.model.time_bins, r.model.subject_align = [5, 25], 5, "zscore"
    r.optim.epochs, r.optim.lr = 20, 0.01
    r.eval.level_rule = "min_expected_error"
    tr, va = subj < 4, subj == 4
    res = fit(r, x[tr], y[tr], x[va], y[va], participants=subj[tr], val_participants=subj[va])
    out = tmp_path_factory.mktemp("aligned") / "aligned.onnx"
    meta = {
        "model_version": "aligned-sim",
        "level_rule": "min_expected_error",
        "region_attention": False,
        "region_names": [f"R{i}" for i in range(246)],
    }
    export_onnx([res.model], out, meta, x[:64])
    _ALIGNED[out] = res.model
    return out


_ALIGNED: dict = {}


@pytest.fixture(scope="session")
def aligned_network(aligned_model):
    """The PyTorch network behind ``aligned_model``."""
    return _ALIGNED[aligned_model]


def qdq_in_float(monkeypatch) -> None:
    """Make every Model run a quantized (QDQ) graph unfused: each QuantizeLinear/DequantizeLinear
    pair computed in float, no int8 kernels. onnxruntime picks int8 kernels per CPU (AVX2's u8s8
    path saturates, AVX-512 VNNI and AMX do not), so answers of the fused graph differ between
    machines; unfused, they are the quantized model's own arithmetic, the same on every x86-64 CPU."""
    import fmri_edge.model.runtime as runtime

    plain = runtime.session_options

    def unfused(*args, **kwargs):
        so = plain(*args, **kwargs)
        so.add_session_config_entry("session.disable_quant_qdq", "1")
        return so

    monkeypatch.setattr(runtime, "session_options", unfused)
