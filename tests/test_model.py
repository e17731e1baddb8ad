"""Every model variant the paper compares builds, runs forward and backward, and stays finite."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from fmri_edge.training.model import TRIAL_NORMALIZATIONS, ModelConfig, build_model  # noqa: E402

VARIANTS = {
    "se": {},
    "vanilla": {"se": False},
    "ebr": {"region_idx": [14, 15, 86, 87]},
    "two_heads": {"heads": {"class": 3, "level": 9}},
}


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_finite(name):
    model = build_model(ModelConfig(**VARIANTS[name]))
    x = torch.rand(4, 246, 25) * 1e4 + 400
    y = model(x)
    assert y.shape == (4, sum(model.cfg.heads.values()))
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    w = model.region_weights(x)
    assert w.shape == (4, 4 if name == "ebr" else 246)
    assert ((w >= 0) & (w <= 1)).all()


def test_vanilla_has_no_se_and_se_has_input_attention():
    names = lambda m: {type(x).__name__ for x in m.modules()}  # noqa: E731
    assert "SqueezeExcite" not in names(build_model(ModelConfig(se=False)))
    se = build_model(ModelConfig())
    assert se.input_se.fc1.out_features == 246 // 16


@pytest.mark.parametrize("norm", sorted(TRIAL_NORMALIZATIONS))
def test_normalizations_survive_constant_trials_and_regions(norm):
    x = torch.full((2, 246, 25), 9500.0)
    x[1, :10] = torch.linspace(0, 1, 25) * 100 + 9000
    out = TRIAL_NORMALIZATIONS[norm](x, 5)
    assert torch.isfinite(out).all()


def test_minmax_trial_is_the_papers_eq1():
    x = torch.rand(3, 246, 25) * 1e4
    out = TRIAL_NORMALIZATIONS["minmax_trial"](x, 5)
    assert np.allclose(out.amin(dim=(1, 2)).numpy(), 0, atol=1e-6)
    assert np.allclose(out.amax(dim=(1, 2)).numpy(), 1, atol=1e-4)
