"""Property-based tests (hypothesis, 500 examples each) for the loaders, the normalizations and
the scoring. Arrays are small (a few regions and seconds) so that the whole file runs in seconds."""

import csv
import io as stdio
import itertools
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fmri_edge.errors import InputError
from fmri_edge.data import arrays, io, submission
from fmri_edge.model import normalize
from fmri_edge.evaluation import scoring

R, T = 4, 3  # regions and seconds of the small trials used here
PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_counter = itertools.count()

NUMERIC_DTYPES = [
    np.dtype(f"{order}{kind}")
    for order, kind in itertools.product(
        "<>", ["f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"]
    )
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


def _fresh(folder, suffix):
    return folder / f"f{next(_counter)}{suffix}"


def _save(path, arr, compressed=False):
    if path.suffix == ".npz":
        (np.savez_compressed if compressed else np.savez)(path, data=arr)
    else:
        np.save(path, arr)


# ---- loaders ------------------------------------------------------------------------------------------

trial_arrays = st.sampled_from(NUMERIC_DTYPES).flatmap(
    lambda dt: hnp.arrays(
        dt,
        st.one_of(st.tuples(st.integers(1, 3), st.just(R), st.just(T)), st.just((R, T))),
        elements=hnp.from_dtype(dt, allow_subnormal=False) if dt.kind == "f" else None,
    )
)


@PROPERTY
@given(
    arr=trial_arrays,
    fortran=st.booleans(),
    suffix=st.sampled_from([".npy", ".npz"]),
    compressed=st.booleans(),
)
def test_any_numeric_dtype_byte_order_and_layout_loads_as_native_float32(
    folder, arr, fortran, suffix, compressed
):
    arr = np.asfortranarray(arr) if fortran else arr
    path = _fresh(folder, suffix)
    _save(path, arr, compressed)
    got = io.to_float32(io.check_trials(io.read_array(path), path, R, T))
    with np.errstate(over="ignore"):
        expected = arr.reshape(-1, R, T).astype(np.float32)
    assert got.dtype == np.float32 and got.dtype.isnative and got.flags.c_contiguous
    np.testing.assert_array_equal(
        got, expected
    )  # NaN equals NaN; values beyond float32 become ±Inf alike


@PROPERTY
@given(
    prefix=st.sampled_from(
        [b"", arrays.NPY_MAGIC, arrays.NPY_MAGIC + b"\x01\x00", arrays.ZIP_MAGICS[0], b"\x80\x04"]
    ),
    body=st.binary(max_size=300),
    suffix=st.sampled_from([".npy", ".npz"]),
)
def test_arbitrary_bytes_give_an_array_or_an_input_error(folder, prefix, body, suffix):
    path = _fresh(folder, suffix)
    path.write_bytes(prefix + body)
    try:
        io.check_trials(io.read_array(path), path, R, T)
    except InputError as e:
        assert str(path) in str(e) and "\n" not in str(e)


def _valid_bytes(suffix: str) -> bytes:
    buf = stdio.BytesIO()
    x = np.arange(2 * R * T, dtype=np.float32).reshape(2, R, T)
    if suffix == ".npz":
        with zipfile.ZipFile(buf, "w") as z:
            one = stdio.BytesIO()
            np.save(one, x)
            z.writestr("data.npy", one.getvalue())
    else:
        np.save(buf, x)
    return buf.getvalue()


VALID = {s: _valid_bytes(s) for s in (".npy", ".npz")}


@PROPERTY
@given(suffix=st.sampled_from([".npy", ".npz"]), data=st.data())
def test_truncated_or_bit_flipped_files_give_an_array_or_an_input_error(folder, suffix, data):
    raw = bytearray(VALID[suffix])
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        i = data.draw(st.integers(0, len(raw) - 1), label="position")
        raw[i] ^= data.draw(st.integers(1, 255), label="mask")
    path = _fresh(folder, suffix)
    path.write_bytes(bytes(raw))
    try:
        trials = io.check_trials(io.read_array(path), path, R, T)
    except InputError as e:
        assert str(path) in str(e)
    else:
        assert trials.shape[1:] == (R, T)
        io.to_float32(trials)


@PROPERTY
@given(
    shape=st.lists(st.integers(0, 6), max_size=4).map(tuple), crop=st.booleans(), pad=st.booleans()
)
def test_shapes_are_accepted_exactly_or_refused_never_reshaped(shape, crop, pad):
    arr = np.zeros(shape, dtype=np.float32)
    full = arr[None] if arr.ndim == 2 else arr
    try:
        got = io.check_trials(arr, "x.npy", R, T, crop=crop, pad=pad)
    except InputError as e:
        assert str(shape) in str(e)  # says what it found
        return
    assert full.ndim == 3 and full.shape[0] >= 1 and full.shape[1] == R
    t = full.shape[2]
    assert t == T or (crop and t > T) or (pad and 0 < t < T)
    np.testing.assert_array_equal(got, full[:, :, :T])


@PROPERTY
@given(
    trial=hnp.arrays(
        np.float32,
        (R, 8),
        elements=st.one_of(
            st.floats(-1e6, 1e6, width=32), st.sampled_from([np.nan, np.inf, -np.inf])
        ),
    )
)
def test_interpolation_fills_every_gap_or_declines(trial):
    fixed = io.interpolate_nonfinite(trial)
    bad = ~np.isfinite(trial)
    if fixed is None:
        assert (bad.sum(axis=1) > io.MAX_INTERPOLATED * trial.shape[1]).any()
        return
    assert np.isfinite(fixed).all()
    np.testing.assert_array_equal(fixed[~bad], trial[~bad])  # finite values untouched
    lo, hi = np.where(bad, np.inf, trial).min(axis=1), np.where(bad, -np.inf, trial).max(axis=1)
    assert ((fixed >= lo[:, None]) | ~bad).all() and ((fixed <= hi[:, None]) | ~bad).all()


# ---- normalizations: finite for any finite input, constants included ---------------------------------

FINITE = st.floats(-(2.0**50), 2.0**50, allow_nan=False, width=32)  # ±1.1e15: raw BOLD is ≤ 1e5
trials_strategy = hnp.arrays(
    np.float32, st.tuples(st.integers(1, 3), st.integers(1, R), st.integers(1, 8)), elements=FINITE
)


@PROPERTY
@given(x=trials_strategy, mode=st.sampled_from(normalize.SUBJECT_NORMS))
def test_subject_normalization_is_finite(x, mode):
    out = normalize.subject_normalize(x, mode)
    assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()


@PROPERTY
@given(x=trials_strategy, data=st.data())
def test_in_graph_trial_normalizations_are_finite(x, data):
    torch = pytest.importorskip("torch")
    from fmri_edge.training.model import TRIAL_NORMALIZATIONS

    name = data.draw(st.sampled_from(sorted(TRIAL_NORMALIZATIONS)), label="normalization")
    baseline = data.draw(st.integers(1, x.shape[2]), label="baseline_s")
    out = TRIAL_NORMALIZATIONS[name](torch.from_numpy(x), baseline)
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def contract_decoder(tmp_path_factory):
    """The baseline_z normalization as the exporter writes it, executed by onnxruntime."""
    pytest.importorskip("onnx")
    from fmri_edge.model.runtime import Model
    from tests.corpus import contract_model

    return Model(
        contract_model(
            tmp_path_factory.mktemp("m") / "c.onnx", n_regions=R, n_times=8, baseline_s=3
        )
    )


@PROPERTY
@given(
    x=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(R), st.just(8)), elements=FINITE)
)
def test_onnx_graph_outputs_are_finite_probabilities(contract_decoder, x):
    out = contract_decoder.run(x)
    for k in ("class_probs", "level_probs"):
        assert np.isfinite(out[k]).all() and np.allclose(out[k].sum(axis=1), 1, atol=1e-5)
    assert np.isfinite(out["region_weights"]).all()


# ---- scoring -------------------------------------------------------------------------------------------


def answers(n_min=1):
    """(CLASS predicted, CLASS true, LEVEL predicted, LEVEL true) for the same n trials."""
    return st.integers(n_min, 20).flatmap(
        lambda n: st.tuples(
            *(hnp.arrays(np.int64, n, elements=st.integers(-k, k)) for k in (1, 1, 4, 4))
        )
    )


@PROPERTY
@given(a=answers(), seed=st.integers(0, 2**32 - 1))
def test_score_is_bounded_order_free_and_zero_when_perfect(a, seed):
    cp, ct, lp, lt = a
    s = scoring.challenge_score(cp, ct, lp, lt)
    assert all(0 <= s[k] <= 1 for k in ("CLASS_error", "LEVEL_error", "Score"))
    perm = np.random.default_rng(seed).permutation(len(cp))
    assert scoring.challenge_score(cp[perm], ct[perm], lp[perm], lt[perm]) == s
    assert scoring.challenge_score(ct, ct, lt, lt) == {
        "CLASS_error": 0.0,
        "LEVEL_error": 0.0,
        "Score": 0.0,
    }
    terms = scoring.level_terms(lp, lt)
    assert ((terms >= 0) & (terms <= 1)).all()
    np.testing.assert_array_equal(terms, scoring.level_terms(lt, lp))
    report = scoring.full_report(cp, ct, lp, lt)
    assert report["CLASS"]["accuracy"] == pytest.approx(1 - scoring.class_error(cp, ct))
    assert np.array(report["CLASS"]["confusion"]).sum() == len(cp)


@PROPERTY
@given(a=answers(), seed=st.integers(0, 2**32 - 1))
def test_submission_rows_in_any_order_score_the_same(folder, a, seed):
    cp, ct, lp, lt = a
    n = len(cp)
    participant = np.array([f"P{i % 3}" for i in range(n)])
    trial = np.arange(n) // 3 + 1
    perm = np.random.default_rng(seed).permutation(n)
    path = _fresh(folder, ".csv")
    with submission.atomic_write(path) as f:
        submission.write_header(f)
        for i in perm:
            submission.write_rows(f, participant[i], [trial[i]], [cp[i]], [lp[i]], [[1 / 3] * 3])
    pred = submission.read_answers(path)
    truth = submission.Answers(participant, trial, ct, lt)
    pi, ti = submission.align(pred, truth, path, "truth")
    got = scoring.challenge_score(
        pred.valence_class[pi],
        truth.valence_class[ti],
        pred.valence_level[pi],
        truth.valence_level[ti],
    )
    assert got == scoring.challenge_score(cp, ct, lp, lt)


@PROPERTY
@given(a=answers(n_min=2), data=st.data())
def test_missing_extra_or_duplicated_rows_are_errors_never_a_score(folder, a, data):
    cp, _, lp, _ = a
    n = len(cp)
    keys = [("P1", t) for t in range(1, n + 1)]
    rows = list(zip(keys, cp, lp))
    change = data.draw(st.sampled_from(["drop", "add", "duplicate", "rename"]), label="change")
    i = data.draw(st.integers(0, n - 1), label="row")
    if change == "drop":
        rows.pop(i)
    elif change == "add":
        rows.append((("P1", n + 1), 0, 0))
    elif change == "duplicate":
        rows.append(rows[i])
    else:
        rows = [(("P2", t), c, lv) for (_, t), c, lv in rows]
    path = _fresh(folder, ".csv")
    buf = stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(submission.HEADER)
    w.writerows([[p, t, c, lv] for (p, t), c, lv in rows])
    path.write_text(buf.getvalue())
    truth = submission.Answers(np.array(["P1"] * n), np.arange(1, n + 1), cp, lp)
    with pytest.raises(InputError):
        pred = submission.read_answers(path)
        submission.align(pred, truth, path, "truth")


@PROPERTY
@given(a=answers(), data=st.data())
def test_score_reads_columns_by_name_in_any_order_with_or_without_bom_and_crlf(folder, a, data):
    """As spreadsheets and pandas write them: any column order, extra columns, names in any case."""
    cp, ct, lp, lt = a
    n = len(cp)
    table = {
        "Participant": [f"P{i % 3}" for i in range(n)],
        "Trial": [str(i // 3 + 1) for i in range(n)],
        "CLASS": [str(c) for c in cp],
        "LEVEL": [f"{lv}.0" if i % 2 else str(lv) for i, lv in enumerate(lp)],
    }
    extra = data.draw(
        st.lists(st.sampled_from(["p_negative", "Unnamed: 0", "note", ""]), unique=True),
        label="extra",
    )
    table.update({name: [str(i) for i in range(n)] for name in extra})
    order = data.draw(st.permutations(list(table)), label="order")
    names = [
        data.draw(st.sampled_from([c, c.lower(), c.upper(), f" {c} "]), label=c)
        if c in submission.HEADER
        else c
        for c in order
    ]
    bom, crlf = data.draw(st.booleans(), label="bom"), data.draw(st.booleans(), label="crlf")
    buf = stdio.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(names)
    w.writerows(zip(*(table[c] for c in order)))
    path = _fresh(folder, ".csv")
    path.write_bytes((("\ufeff" if bom else "") + buf.getvalue()).encode())
    got = submission.read_answers(path)
    assert got.keys() == list(zip(table["Participant"], map(int, table["Trial"])))
    np.testing.assert_array_equal(got.valence_class, cp)
    np.testing.assert_array_equal(got.valence_level, lp)
    truth = submission.Answers(
        np.array(table["Participant"]), np.array(table["Trial"], dtype=int), ct, lt
    )
    pi, ti = submission.align(got, truth, path, "truth")
    assert scoring.challenge_score(
        got.valence_class[pi], ct[ti], got.valence_level[pi], lt[ti]
    ) == scoring.challenge_score(cp, ct, lp, lt)
