"""Export: onnx.checker passes, onnxruntime matches PyTorch, the file describes itself."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from fmri_edge.model.runtime import EXTRA_OUTPUTS, METADATA_KEY, OUTPUT_NAMES, Model  # noqa: E402
from fmri_edge.training.onnx_export import Ensemble, ExportRecipe, export_onnx  # noqa: E402
from fmri_edge.training.model import ModelConfig, build_model  # noqa: E402


def _small(**kw):
    return build_model(ModelConfig(widths=(8, 8, 8), dense=(16, 8), **kw)).eval()


def test_metadata_and_dynamic_batch(sim_model, sim_data):
    m = onnx.load(str(sim_model))
    meta = json.loads({p.key: p.value for p in m.metadata_props}[METADATA_KEY])
    assert meta["n_regions"] == 246 and meta["n_times"] == 25
    assert meta["outputs"] == [*OUTPUT_NAMES, *EXTRA_OUTPUTS]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [246, 25]
    d = Model(sim_model)
    for b in (1, 3, 50):
        out = d.run(sim_data[0][:b])
        assert out["class_probs"].shape == (b, 3) and out["level_probs"].shape == (b, 9)
        assert out["region_weights"].shape == (b, 246)
        assert np.allclose(out["class_probs"].sum(1), 1, atol=1e-5)


def test_parity_failure_is_reported(tmp_path, sim_data):
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_onnx([_small()], tmp_path / "m.onnx", {}, sim_data[0][:8], ExportRecipe(atol=-1.0))
    assert not (tmp_path / "m.onnx").exists()


def test_ensemble_derives_missing_tasks_and_scatters_ebr_weights():
    cls_only = _small(heads={"class": 3})
    lvl_only = _small(heads={"level": 9}, region_idx=[14, 15, 86, 87])
    x = torch.rand(5, 246, 25) * 1e4 + 400
    with torch.inference_mode():
        c, lv, w, *_ = Ensemble([cls_only])(x)
        assert torch.allclose(lv.sum(1), torch.ones(5), atol=1e-5)
        assert torch.allclose(lv[:, [1, 4, 6]], c, atol=1e-6)  # −1→−3, 0→0, 1→2
        c2, _, w2, *_ = Ensemble([lvl_only])(x)
        assert torch.allclose(c2.sum(1), torch.ones(5), atol=1e-5)
        outside = torch.ones(246, dtype=torch.bool)
        outside[[14, 15, 86, 87]] = False
        assert (w2[:, [14, 15, 86, 87]] > 0).all() and (w2[:, outside] == 0).all()
        _, _, w3, *_ = Ensemble([_small(se=False)])(x)
        assert torch.equal(w3, torch.ones(5, 246))


def test_export_parity_on_real_trials(icbhi, tmp_path):
    from fmri_edge.data.io import load_trials

    x = np.concatenate([load_trials(icbhi / "Train" / p / "fMRI_data.npz") for p in ("P01", "P09")])
    report = export_onnx([_small(heads={"class": 3, "level": 9})], tmp_path / "r.onnx", {}, x)
    assert report["ok"] and max(report["max_abs_diff"].values()) <= 1e-4


@pytest.mark.parametrize(
    "normalization,trial_level",
    [("psc_mean", False), ("psc_mean_gsr", False), ("psc_mean_gsr", True)],
)
def test_fused_linear_ensemble_answers_like_the_members_in_its_own_layout(
    normalization, trial_level, sim_data, tmp_path
):
    """The fused graph of linear members computes the Ensemble's outputs, its representation laid
    out (time, regions); the exported file passes parity with a participant's statistics fed in."""
    from fmri_edge.training.fused import LinearEnsemble, fused_ensemble

    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = _small(
            kind="linear",
            se=False,
            normalization=normalization,
            time_window=[5, 25],
            time_bins=5,
            subject_align="zscore",
            heads={"class": 3},
            trial_level=trial_level,
        )
        m.pop_mean.normal_(0, 0.5)
        m.pop_scale.uniform_(0.5, 2.0)
        members.append(m)
    x = sim_data[0][:32].astype(np.float32)
    ens = Ensemble(members).eval()
    fast = fused_ensemble(ens, x)
    assert isinstance(fast, LinearEnsemble)
    mean, scale = (s * 1.1 + 0.05 for s in ens.population_stats())
    xt = torch.as_tensor(x)
    with torch.inference_mode():
        ref = ens(xt, mean, scale)
        got = fast(
            xt,
            fast.from_reference("subject_mean", mean),
            fast.from_reference("subject_scale", scale),
        )
    names = (*OUTPUT_NAMES, *EXTRA_OUTPUTS)
    steps = 6 if trial_level else 5  # the level is one more step after the 5 bins
    assert got[4].shape == (32, steps, 246) and ref[4].shape == (32, 246, steps)
    for name, g, r in zip(names, got, ref):
        np.testing.assert_allclose(
            g.numpy(), fast.from_reference(name, r).numpy(), rtol=1e-4, atol=1e-4, err_msg=name
        )
    if normalization == "psc_mean_gsr":  # the global signal is gone from every bin
        np.testing.assert_allclose(got[4][:, :5].mean(dim=2).numpy(), 0, atol=1e-3)
    if trial_level:  # … and the level is not part of the global-signal step
        level = np.log(x[:, :, 5:25].astype(np.float64).mean(axis=2))
        np.testing.assert_allclose(got[4][:, 5].numpy(), level, rtol=1e-5)
    report = export_onnx(members, tmp_path / "lin.onnx", {"model_version": "t"}, x)
    d = Model(tmp_path / "lin.onnx")
    assert report["ok"] and d.align_shape == (steps, 246)
    assert d.info.meta["normalized_axes"] == ["batch", "time", "regions"]
