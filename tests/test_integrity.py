"""The weights digest (fmri_edge.model.integrity): written at export, checked whenever a model is opened
(predict, explain, info, the library's Model); any altered initializer byte is refused."""

import hashlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from fmri_edge.model import integrity
from fmri_edge.cli import app
from fmri_edge.errors import InputError
from fmri_edge.model.runtime import Model, default_model_path
from tests import corpus

onnx = pytest.importorskip("onnx")
runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return corpus.contract_model(tmp_path_factory.mktemp("model") / "contract.onnx")


def _inits(path):
    return {
        t.name: len(onnx.numpy_helper.to_array(t).tobytes())
        for t in onnx.load(str(path)).graph.initializer
    }


def test_the_digest_is_over_everything_but_the_metadata_as_onnx_sees_it(model):
    m = onnx.load(str(model))
    assert {p.key for p in m.metadata_props} == {"fmri_edge", integrity.DIGEST_KEY}
    stored = {p.key: p.value for p in m.metadata_props}[integrity.DIGEST_KEY]
    del m.metadata_props[:]
    assert (
        hashlib.sha256(m.SerializeToString()).hexdigest()
        == stored
        == integrity.weights_digest(model)
    )
    assert Model(model).integrity == integrity.VERIFIED


def test_changing_metadata_keeps_the_digest_and_restamping_replaces_it(model, tmp_path):
    edited = corpus.model_with(
        model, tmp_path / "e.onnx", {"model_version": "edited"}
    )  # onnx load + save
    assert Model(edited).integrity == integrity.VERIFIED
    before = edited.read_bytes()
    assert integrity.stamp(edited) == integrity.weights_digest(model)
    assert len(edited.read_bytes()) == len(before)  # one entry replaced, not a second one added
    assert [p.key for p in onnx.load(str(edited)).metadata_props].count(integrity.DIGEST_KEY) == 1


@pytest.mark.parametrize("name", ["w3", "w9", "eps"])
def test_any_altered_initializer_byte_is_refused(model, tmp_path, name):
    n = _inits(model)[name]
    for offset in sorted({0, n // 2, n - 1}):
        for mask in (0x01, 0x80, 0xFF):
            bad = corpus.altered_model(model, tmp_path / "bad.onnx", name, offset, mask)
            with pytest.raises(
                InputError, match="weights digest .* disagrees with the weights_sha256"
            ):
                Model(bad)
            assert Model(bad, verify=False).integrity == integrity.NOT_CHECKED


def test_no_verify_opens_an_edited_model_and_info_says_so(model, tmp_path):
    bad = corpus.altered_model(model, tmp_path / "m.onnx")
    np.save(tmp_path / "t.npy", corpus.trials(2))
    res = runner.invoke(
        app, ["predict", str(tmp_path / "t.npy"), "--model", str(bad), "--no-verify", "--json"]
    )
    assert res.exit_code == 0 and json.loads(res.stdout)["n_trials"] == 2
    res = runner.invoke(app, ["info", str(bad), "--no-verify"])
    assert res.exit_code == 0 and "not checked (--no-verify)" in res.stdout


def test_a_model_without_a_digest_is_accepted_as_not_verifiable(model, tmp_path):
    m = onnx.load(str(model))
    keep = [(p.key, p.value) for p in m.metadata_props if p.key != integrity.DIGEST_KEY]
    del m.metadata_props[:]
    for k, v in keep:
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(tmp_path / "old.onnx"))
    assert Model(tmp_path / "old.onnx").integrity == integrity.UNVERIFIABLE
    res = runner.invoke(app, ["info", str(tmp_path / "old.onnx")])
    assert res.exit_code == 0 and "not verifiable" in res.stdout


def test_two_different_digests_are_refused(model, tmp_path):
    m = onnx.load(str(model))
    m.metadata_props.add(key=integrity.DIGEST_KEY, value="0" * 64)
    onnx.save(m, str(tmp_path / "two.onnx"))
    with pytest.raises(InputError, match="2 different weights_sha256 entries"):
        Model(tmp_path / "two.onnx")


def test_a_malformed_protobuf_is_an_input_error_not_a_crash(tmp_path):
    for data in (b"\xff" * 11, b"\x0a\xff\xff\x7f", b"\x00\x01", b"\x0b\x0c"):
        (tmp_path / "x.onnx").write_bytes(data)
        with pytest.raises(InputError, match="not a well-formed ONNX file"):
            integrity.check(tmp_path / "x.onnx")


def test_the_exporter_writes_a_digest_that_verifies(sim_model):
    assert Model(sim_model).integrity == integrity.VERIFIED


def test_shipped_models_verify_where_they_carry_a_digest():
    """Models exported before digests existed are 'not verifiable'; every re-exported one verifies."""
    for m in sorted(default_model_path().parent.glob("*.onnx")):
        assert Model(m).integrity in (integrity.VERIFIED, integrity.UNVERIFIABLE)
        stamped = integrity.weights_digest(m)
        assert integrity.inspect(m.read_bytes())[1] in ([], [stamped])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_flipped_byte_outside_the_metadata_is_refused_never_answered(model, tmp_path, data):
    raw = model.read_bytes()
    spans, pos = [], 0
    for f in integrity.fields(raw):
        spans.append((f.number, pos, pos + len(f.raw)))
        pos += len(f.raw)
    covered = [
        i
        for number, start, end in spans
        if number != integrity.METADATA_FIELD
        for i in (start, end - 1)
    ]
    at = data.draw(st.integers(min(covered), max(covered)), label="position")
    bad = bytearray(raw)
    bad[at] ^= data.draw(st.integers(1, 255), label="mask")
    (tmp_path / "flip.onnx").write_bytes(bytes(bad))
    with pytest.raises(InputError):  # by onnxruntime (unparsable) or by the digest: never opened
        Model(tmp_path / "flip.onnx")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=200))
def test_the_wire_walk_on_arbitrary_bytes_gives_a_status_or_an_input_error(tmp_path, blob):
    (tmp_path / "x.onnx").write_bytes(blob)
    try:
        assert integrity.check(tmp_path / "x.onnx") in (integrity.VERIFIED, integrity.UNVERIFIABLE)
    except InputError as e:
        assert "x.onnx" in str(e) and "\n" not in str(e)
