"""Property-based tests (hypothesis) over .npy headers and bytes, alone and as .npz members: any
header, length field and data give either exactly the array numpy would read, or one line naming
the file — from the library and from `predict` (exit code 2, no traceback) — and nothing is ever
unpickled. Small arrays (4 regions × 3 s), so the whole file runs in well under a minute."""

import io as stdio
import itertools
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from typer.testing import CliRunner

from fmri_edge.errors import InputError
from fmri_edge.data import io
from fmri_edge.cli import app
from tests import corpus

R, T = 4, 3
FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_counter = itertools.count()

NUMERIC = [
    "<f4",
    ">f4",
    "<f8",
    ">f8",
    "<f2",
    "|i1",
    "<i2",
    ">i4",
    "<i8",
    "|u1",
    ">u2",
    "<u4",
    "<u8",
]
OTHER = [
    "|O",
    "O",
    "<c8",
    "|b1",
    "<U4",
    "|S3",
    "|V8",
    "<M8[s]",
    "(2,)<f4",
    "f4,i4",
    "<q9z",
    "",
    "<f4 ",
]


def often(common, rare, one_in: int = 4):
    """``common`` most of the time, ``rare`` about once in ``one_in`` draws."""
    return st.integers(1, one_in).flatmap(lambda i: rare if i == 1 else common)


descrs = often(
    st.sampled_from(NUMERIC),
    st.one_of(
        st.sampled_from(OTHER),
        st.just([("a", "<f4"), ("b", "|O")]),
        st.text(max_size=12),
        st.integers(-2, 9),
    ),
    3,
)
shapes = often(
    st.one_of(st.tuples(st.integers(0, 3), st.just(R), st.just(T)), st.just((R, T))),
    st.one_of(
        st.lists(st.integers(-3, 6), max_size=5).map(tuple),
        st.tuples(st.sampled_from([2**31, 2**62, 10**30, -(2**63)]), st.just(R), st.just(T)),
        st.sampled_from([[1, R, T], (1.0, R, T), (True, R, T), "(1, 4, 3)", None, (1,) * 40]),
    ),
    3,
)
fortrans = often(st.booleans(), st.sampled_from([0, 1, "False", None]))
versions = often(
    st.sampled_from([(1, 0), (2, 0), (3, 0)]),
    st.tuples(st.integers(0, 255), st.integers(0, 255)),
    8,
)


@st.composite
def headers(draw) -> bytes:
    """A header literal (mostly well-formed dicts, sometimes broken) and the data after it."""
    if draw(st.integers(0, 9)) == 0:  # arbitrary text in place of the dict
        text = draw(
            st.one_of(
                st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin1"))
            )
        )
        body = b""
    else:
        fields = {"descr": draw(descrs), "fortran_order": draw(fortrans), "shape": draw(shapes)}
        if draw(st.integers(0, 9)) == 0:
            fields.pop(draw(st.sampled_from(sorted(fields))))
        if draw(st.integers(0, 9)) == 0:
            fields["extra"] = 1
        text = repr(fields)
        body = _body(draw, fields)
    version = draw(versions)
    length = draw(often(st.none(), st.integers(0, 2**16 - 1), 8))
    data = corpus.npy_with_header(
        text.encode("utf-8" if version == (3, 0) else "latin1", "replace"),
        body,
        version if version in ((1, 0), (2, 0), (3, 0)) else (1, 0),
        None if length is None else min(length, 2**16 - 1),
    )
    if version not in ((1, 0), (2, 0), (3, 0)):
        data = data[:6] + bytes(version) + data[8:]
    cut = draw(often(st.none(), st.integers(0, len(data)), 8))  # truncated anywhere
    return data if cut is None else data[:cut]


def _body(draw, fields) -> bytes:
    """Zeros exactly as long as the header asks (when it can be computed), or not, or a pickle."""
    kind = draw(often(st.just("exact"), st.sampled_from(["short", "long", "pickle"]), 3))
    if kind == "pickle":
        return pickle.dumps(np.array([corpus.Boom(FOLDER[0]), 1], dtype=object))
    try:
        n = int(np.prod(fields["shape"])) * np.dtype(fields["descr"]).itemsize
        if not 0 <= n <= 10_000:
            raise ValueError
    except Exception:
        n = draw(st.integers(0, 64))
    rng = np.random.default_rng(n)
    exact = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return {
        "exact": exact,
        "short": exact[: max(0, n - 1 - draw(st.integers(0, 8)))],
        "long": exact + b"\0" * draw(st.integers(1, 16)),
    }[kind]


FOLDER = []


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    FOLDER[:] = [tmp_path_factory.mktemp("headers")]
    return FOLDER[0]


def _write(folder, data: bytes, suffix: str, compressed: bool = False):
    path = folder / f"h{next(_counter)}{suffix}"
    if suffix == ".npz":
        buf = stdio.BytesIO()
        with zipfile.ZipFile(
            buf, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        ) as z:
            z.writestr("data.npy", data)
        data = buf.getvalue()
    path.write_bytes(data)
    return path


@FAST
@given(data=headers(), suffix=st.sampled_from([".npy", ".npz"]), compressed=st.booleans())
def test_any_header_gives_numpys_array_or_one_line_naming_the_file(
    folder, data, suffix, compressed
):
    path = _write(folder, data, suffix, compressed)
    try:
        got = io.read_array(path)
    except InputError as e:
        assert str(path) in str(e) and "\n" not in str(e) and len(str(e)) < 600
        event("refused")
        return
    finally:
        assert not corpus.exploded(folder)
    event("accepted")
    # accepted: a real numeric array, identical to what numpy itself reads (never with pickles)
    assert got.dtype.kind in "fiu" and not got.dtype.hasobject
    want = np.load(path, allow_pickle=False)
    want = want if suffix == ".npy" else want["data"]
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("onnx")
    return corpus.contract_model(
        tmp_path_factory.mktemp("m") / "small.onnx", n_regions=R, n_times=T, baseline_s=1
    )


@settings(FAST, max_examples=150)
@given(data=headers(), suffix=st.sampled_from([".npy", ".npz"]))
def test_predict_on_any_header_exits_0_or_2_with_one_line_and_no_traceback(
    folder, model, data, suffix
):
    path = _write(folder, data, suffix)
    res = CliRunner().invoke(app, ["predict", str(path), "--model", str(model), "--json"])
    assert res.exit_code in (0, 2), res.output
    assert "Traceback" not in res.output and (
        res.exception is None or isinstance(res.exception, SystemExit)
    )
    if res.exit_code == 2:
        assert res.stderr.count("error:") == 1 and str(path) in res.stderr and res.stdout == ""
    assert not corpus.exploded(folder)
