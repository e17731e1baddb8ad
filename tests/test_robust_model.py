"""The exported network itself (``sim_model``: trained and exported by the real exporter) stays
finite on constant trials, constant regions and extreme-but-finite BOLD: its in-graph
normalization (+1e-6 in every denominator) never divides by zero."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fmri_edge.model.runtime import Model
from tests import corpus


@pytest.fixture(scope="module")
def decoder(sim_model):
    return Model(sim_model)


def _check(out: dict, n: int) -> None:
    for k, width in (("class_probs", 3), ("level_probs", 9), ("region_weights", 246)):
        assert out[k].shape == (n, width) and np.isfinite(out[k]).all(), k
    assert np.allclose(out["class_probs"].sum(1), 1, atol=1e-5)
    assert np.allclose(out["level_probs"].sum(1), 1, atol=1e-5)
    assert ((out["region_weights"] >= 0) & (out["region_weights"] <= 1)).all()


def test_constant_trials_and_regions_through_the_exported_graph(decoder):
    x = corpus.trials(6)
    x[0] = 0.0  # zero-filled trial
    x[1] = 9500.0  # constant trial at a BOLD level
    x[2, :100] = 1234.5  # constant regions
    x[3, :, :5] = x[3, :, :1]  # constant fixation baseline
    x[4] = 9500.0 + np.float32(1e-3) * np.arange(25)  # almost constant
    x[5] = -9500.0  # negative (e.g. demeaned elsewhere)
    out = decoder.run(x)
    _check(out, 6)
    # baseline_z maps every constant trial to zeros: the level does not matter
    np.testing.assert_allclose(out["class_probs"][0], out["class_probs"][1], atol=1e-6)


@settings(max_examples=500, deadline=None)
@given(
    level=st.floats(-1e6, 1e6),
    amplitude=st.sampled_from([0.0, 1e-6, 1e-2, 1.0, 1e2, 1e4, 1e6]),
    n_flat=st.integers(0, 246),
    seed=st.integers(0, 2**16),
)
def test_exported_graph_is_finite_on_flat_and_extreme_trials(
    decoder, level, amplitude, n_flat, seed
):
    rng = np.random.default_rng(seed)
    x = (level + amplitude * rng.standard_normal((1, 246, 25))).astype(np.float32)
    x[0, rng.permutation(246)[:n_flat]] = np.float32(level)
    _check(decoder.run(x), 1)
