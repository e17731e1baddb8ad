"""Robustness beyond the corpus: conversions that must be exact, explicit repairs (--crop, --pad,
--nan interpolate), warnings that do not stop a run, model cards, and the security rules
(nothing is unpickled, nothing is evaluated) checked in the source and in behaviour."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fmri_edge.errors import InputError
from fmri_edge.data import arrays, io
from fmri_edge.cli import app
from fmri_edge.model.runtime import Model, file_sha256
from tests import corpus

pytest.importorskip("onnx")
runner = CliRunner()
SOURCE = Path(__file__).resolve().parent.parent / "fmri_edge"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return corpus.contract_model(tmp_path_factory.mktemp("model") / "contract.onnx")


def predict_rows(*args) -> list[dict]:
    res = runner.invoke(app, ["predict", *map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["predictions"]


def probs(rows) -> np.ndarray:
    return np.array([r["class_probs"] for r in rows])


# ---- conversions: accepted and exact --------------------------------------------------------------


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(">f4"),  # big-endian
        lambda x: x.astype(">f8"),
        lambda x: np.asfortranarray(x),  # Fortran order
        lambda x: np.asfortranarray(x.astype(">f8")),
        lambda x: x.astype(np.float16).astype(
            np.float16
        ),  # compared with its own float32 cast below
        lambda x: np.round(x).astype(np.int32),
        lambda x: np.round(x).astype(">u2"),
    ],
    ids=["be-f4", "be-f8", "fortran", "fortran-be-f8", "float16", "int32", "be-uint16"],
)
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_dtypes_byte_orders_and_layouts_give_the_same_answers(model, tmp_path, convert, suffix):
    x = convert(corpus.trials(4))
    path = tmp_path / f"x{suffix}"
    np.savez(path, data=x) if suffix == ".npz" else np.save(path, x)
    np.save(tmp_path / "ref.npy", np.ascontiguousarray(x, dtype=np.float32))
    got, ref = (
        predict_rows(path, "--model", model),
        predict_rows(tmp_path / "ref.npy", "--model", model),
    )
    assert [(r["trial"], r["CLASS"], r["LEVEL"]) for r in got] == [
        (r["trial"], r["CLASS"], r["LEVEL"]) for r in ref
    ]
    np.testing.assert_array_equal(probs(got), probs(ref))


def test_memory_mapped_file_is_streamed_in_chunks_with_trial_numbers_kept(model, tmp_path):
    x = corpus.trials(7)
    x[4, 1, 1] = np.nan
    np.save(tmp_path / "s.npy", x)
    rows = predict_rows(tmp_path / "s.npy", "--model", model, "--batch-size", "2")
    assert [r["trial"] for r in rows] == [1, 2, 3, 4, 6, 7]


# ---- explicit repairs ---------------------------------------------------------------------------


def test_crop_keeps_the_first_seconds(model, tmp_path):
    x = corpus.trials(3, n_times=31)
    np.save(tmp_path / "long.npy", x)
    np.save(tmp_path / "ref.npy", x[:, :, :25])
    got = predict_rows(tmp_path / "long.npy", "--model", model, "--crop")
    np.testing.assert_array_equal(
        probs(got), probs(predict_rows(tmp_path / "ref.npy", "--model", model))
    )


def test_pad_repeats_the_last_second(model, tmp_path):
    x = corpus.trials(3, n_times=21)
    np.save(tmp_path / "short.npy", x)
    np.save(tmp_path / "ref.npy", np.concatenate([x, np.repeat(x[:, :, -1:], 4, axis=2)], axis=2))
    got = predict_rows(tmp_path / "short.npy", "--model", model, "--pad")
    np.testing.assert_array_equal(
        probs(got), probs(predict_rows(tmp_path / "ref.npy", "--model", model))
    )


def test_crop_does_not_pad_and_pad_does_not_crop(model, tmp_path):
    np.save(tmp_path / "long.npy", corpus.trials(1, n_times=30))
    res = runner.invoke(
        app, ["predict", str(tmp_path / "long.npy"), "--model", str(model), "--pad"]
    )
    assert res.exit_code == 2 and "pass --crop" in res.stderr


def test_nan_interpolate_repairs_short_gaps_and_says_so(model, tmp_path):
    x = corpus.trials(3)
    x[1, 7, 3:6] = np.nan
    x[1, 9, 0] = np.inf
    np.save(tmp_path / "gaps.npy", x)
    fixed = x.copy()
    fixed[1, 7, 3:6] = np.interp([3, 4, 5], [2, 6], x[1, 7, [2, 6]])
    fixed[1, 9, 0] = x[1, 9, 1]  # held constant past the ends
    np.save(tmp_path / "ref.npy", fixed)
    res = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "gaps.npy"),
            "--model",
            str(model),
            "--json",
            "--nan",
            "interpolate",
        ],
    )
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["n_trials"] == 3
    assert [(e["trial"], e["outcome"]) for e in doc["errors"]] == [(2, "repaired")]
    assert "3 NaN and 1 Inf value(s)" in doc["errors"][0]["problem"] and "repaired:" in res.stderr
    np.testing.assert_allclose(
        probs(doc["predictions"]),
        probs(predict_rows(tmp_path / "ref.npy", "--model", model)),
        atol=1e-6,
    )


def test_constant_trials_and_regions_are_predicted_with_a_warning(model, tmp_path):
    x = corpus.trials(3)
    x[0] = 0.0  # a zero-filled trial
    x[1, :40] = 9500.0  # flat regions
    np.save(tmp_path / "c.npy", x)
    res = runner.invoke(app, ["predict", str(tmp_path / "c.npy"), "--model", str(model), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["n_trials"] == 3
    assert np.isfinite(probs(doc["predictions"])).all()
    assert [(e["trial"], e["outcome"]) for e in doc["errors"]] == [(1, "predicted")]
    assert "every value is 0: a constant trial carries no signal" in doc["errors"][0]["problem"]


@pytest.mark.parametrize("mode", ["zscore", "center"])
def test_subject_normalization_from_the_metadata_is_applied_over_the_good_trials(
    model, tmp_path, mode
):
    from fmri_edge.model.normalize import subject_normalize

    m = corpus.model_with(model, tmp_path / "m.onnx", {"subject_normalization": mode})
    x = corpus.trials(5) * np.linspace(0.5, 2, 246, dtype=np.float32)[:, None]
    x[2, 0, 0] = np.nan  # left out of the statistics too
    np.save(tmp_path / "s.npy", x)
    rows = predict_rows(tmp_path / "s.npy", "--model", m, "--batch-size", "2")
    assert [r["trial"] for r in rows] == [1, 2, 4, 5]
    expected = Model(m).run(subject_normalize(x[[0, 1, 3, 4]], mode))["class_probs"]
    np.testing.assert_allclose(probs(rows), expected, atol=1e-4)  # the JSON rounds to 4 decimals


def test_same_file_twice_is_predicted_once(model, tmp_path):
    np.save(tmp_path / "a.npy", corpus.trials(2))
    res = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "a.npy"),
            str(tmp_path / "a.npy"),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert res.exit_code == 0 and "given more than once; predicted once" in res.stderr
    assert len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 2


def test_same_stem_is_no_duplicate_when_the_first_file_is_refused(model, tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    np.savez(tmp_path / "a.npz", data=corpus.trials(2))
    res = runner.invoke(app, ["predict", str(tmp_path), "--model", str(model), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["n_trials"] == 2


def test_nothing_written_when_nothing_predicted_even_with_force(model, tmp_path):
    (tmp_path / "p.csv").write_text("old")
    (tmp_path / "e.npy").write_bytes(b"")
    res = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "e.npy"),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "p.csv"),
            "--force",
            "--errors",
            str(tmp_path / "e.json"),
        ],
    )
    assert res.exit_code == 2 and (tmp_path / "p.csv").read_text() == "old"
    assert json.loads((tmp_path / "e.json").read_text())[0]["problem"].startswith("empty file")


# ---- model cards ---------------------------------------------------------------------------------------


def test_a_matching_model_card_is_verified_and_a_card_without_checksum_ignored(model, tmp_path):
    m = tmp_path / "m.onnx"
    m.write_bytes(model.read_bytes())
    (tmp_path / "m.md").write_text(f"# m\n\n| sha256 | `{file_sha256(m)}` |\n")
    assert Model(m).card == tmp_path / "m.md"
    (tmp_path / "m.md").write_text("# m\n\nnotes, no checksum\n")
    assert Model(m).card is None


def test_the_shipped_models_match_their_cards():
    models = sorted((SOURCE.parent / "models").glob("*.onnx"))
    for m in models:
        Model(m)  # raises if its card disagrees


# ---- security: data are never code -----------------------------------------------------------------


def _source_lines():
    for path in sorted(SOURCE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if code.strip():
                yield f"{path.relative_to(SOURCE.parent)}:{n}", code


def test_source_never_unpickles_or_evaluates():
    banned = re.compile(
        r"allow_pickle\s*=\s*True|\bpickle\.loads?\(|\bimport (c?pickle|marshal|shelve|dill)\b|"
        r"(?<![\w.])(eval|exec)\(|yaml\.load\(|\bjoblib\.load\(|pd\.read_pickle"
    )
    found = [f"{where}: {code.strip()}" for where, code in _source_lines() if banned.search(code)]
    assert not found, found


def test_every_np_load_refuses_pickles_and_every_torch_load_is_weights_only():
    """np.load refuses pickles unless told otherwise (numpy ≥ 1.16.3; fmri-edge needs ≥ 1.24): no call
    may pass anything but allow_pickle=False. The loaders in fmri_edge.data.io do not call np.load at all: they build
    each array from the header they checked themselves (np.memmap, np.frombuffer)."""
    calls = {}
    for path in sorted(SOURCE.rglob("*.py")):
        for name in ("np.load", "torch.load"):
            calls.setdefault(name, {})[path.relative_to(SOURCE).as_posix()] = re.findall(
                rf"{re.escape(name)}\(([^()]*(?:\([^()]*\)[^()]*)*)\)", path.read_text()
            )
    np_calls = [c for found in calls["np.load"].values() for c in found]
    assert all("allow_pickle" not in c or "allow_pickle=False" in c for c in np_calls), np_calls
    assert (
        calls["np.load"]["data/io.py"] == calls["np.load"]["data/arrays.py"] == []
        and "np.memmap(" in (SOURCE / "data" / "arrays.py").read_text()
    )
    torch_calls = [c for found in calls["torch.load"].values() for c in found]
    assert all("weights_only=True" in c for c in torch_calls), torch_calls


@pytest.mark.parametrize(
    "make",
    [
        lambda d: corpus._pickle_npy(d / "x.npy") or d / "x.npy",
        lambda d: corpus._object_npz(d / "x.npz") or d / "x.npz",
        lambda d: corpus._object_npy(d / "x.npy") or d / "x.npy",
    ],
)
def test_pickled_payloads_never_run(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(InputError, match="refused"):
        io.load_trials(path)
    with pytest.raises(InputError, match="refused"):
        io.load_labels(path)
    assert not corpus.exploded(tmp_path)


def test_metadata_is_parsed_never_evaluated(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = f"__import__('os').system('touch {corpus.MARKER}')"
    for meta in (code, json.dumps(code), {"level_rule": code}, {"region_names": [code] * 246}):
        path = corpus.model_with(model, tmp_path / "m.onnx", meta)
        try:
            Model(path)
        except InputError:
            pass
    assert not corpus.exploded(tmp_path)


# ---- the library API: Model.run is as strict as the CLI ------------------------------------------


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(">f8"),
        np.asfortranarray,
        lambda x: x[:, :, ::-1][:, :, ::-1],
        lambda x: np.round(x).astype(np.int16),
        lambda x: x.astype(np.float16),
        lambda x: x.tolist(),
    ],
    ids=["be-f8", "fortran", "strided", "int16", "f16", "list"],
)
def test_decoder_run_takes_any_numeric_dtype_and_layout(model, convert):
    d = Model(model)
    x = corpus.trials(3)
    y = convert(x)
    want = d.run(np.ascontiguousarray(np.asarray(y), dtype=np.float32))["class_probs"]
    np.testing.assert_array_equal(d.run(y)["class_probs"], want)
    np.testing.assert_array_equal(
        d.run(x[0])["class_probs"], d.run(x[:1])["class_probs"]
    )  # one (R, T) trial


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 200, 25), np.float32), "expected 246 regions"),
        (np.zeros((2, 246, 30), np.float32), "expected 25 time points"),
        (np.zeros((2, 25, 246), np.float32), "regions and time axes look swapped"),
        (np.zeros((0, 246, 25), np.float32), "holds no trials"),
        (np.zeros((1, 1, 246, 25), np.float32), "wrong number of dimensions"),
        (np.zeros(6150, np.float32), "wrong number of dimensions"),
        (np.zeros((2, 246, 25), np.complex64), "complex values"),
        (np.zeros((2, 246, 25), "U3"), "not numeric"),
        (np.zeros((2, 246, 25), object), "holds Python objects"),
    ],
    ids=["regions", "times", "swapped", "empty", "4-D", "1-D", "complex", "strings", "objects"],
)
def test_decoder_run_raises_input_error_for_wrong_shapes_and_dtypes(model, bad, message):
    with pytest.raises(InputError, match=message):
        Model(model).run(bad)


# ---- discovery: study trees of any depth, nothing skipped without a word -----------------------------


def _subject(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True)
    np.savez(folder / "fMRI_data.npz", data=corpus.trials(n, seed=seed).astype(np.float64))


def test_trial_files_beside_a_folder_of_subject_folders_are_all_predicted(model, tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    np.save(root / "P01.npy", corpus.trials(2))
    _subject(root / "study" / "P02", 3)
    _subject(root / "study" / "site_b" / "deeper" / "P03", 1)
    np.save(root / "study" / "site_b" / "P04.npy", corpus.trials(1)[0])
    res = runner.invoke(
        app, ["predict", str(root), "--model", str(model), "--out", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 0, res.output
    got = [(r["Participant"], int(r["Trial"])) for r in csv.DictReader(open(tmp_path / "p.csv"))]
    assert sorted(got) == [
        ("P01", 1),
        ("P01", 2),
        ("P02", 1),
        ("P02", 2),
        ("P02", 3),
        ("P03", 1),
        ("P04", 1),
    ]
    assert "found 4 file(s) of 4 participant(s) holding 7 trial(s); predicted 7" in res.stderr
    assert "warning" not in res.stderr


def test_symlink_loops_are_cut_hidden_entries_skipped_and_unentered_folders_named(model, tmp_path):
    root = tmp_path / "study"
    _subject(root / "P01", 2)
    (root / "P01" / "extra.npy").write_bytes(b"")  # inside a subject folder: named, not read
    (root / "group").mkdir()
    (root / "group" / "loop").symlink_to(root, target_is_directory=True)
    (root / ".cache").mkdir()
    (root / ".cache" / "P99.npy").write_bytes(b"junk")  # hidden: skipped
    (root / "._P02.npy").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork: skipped
    np.save(root / "P02.npy", corpus.trials(1))
    items = list(io.iter_sources([root]))
    sources = [i for i in items if isinstance(i, io.Source)]
    notes = [i for i in items if isinstance(i, InputError)]
    assert [s.participant for s in sources] == ["P02", "P01"]
    assert {n.outcome for n in notes} == {io.IGNORED}
    assert any(
        "already searched (a symlink loop" in str(n) and n.path.endswith("loop") for n in notes
    )
    assert any(
        "extra.npy not read: a subject folder's trials are its fMRI_data.npz" in str(n)
        for n in notes
    )
    res = runner.invoke(
        app, ["predict", str(root), "--model", str(model), "--out", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 0, res.output  # nothing lost: the loop leads back to read folders
    assert res.stderr.count("ignored:") == 2 and "P99" not in res.stderr
    assert len(list(csv.DictReader(open(tmp_path / "p.csv")))) == 3


def test_an_empty_tree_is_one_error(model, tmp_path):
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "notes.txt").write_text("no trials here")
    res = runner.invoke(app, ["predict", str(tmp_path / "a"), "--model", str(model)])
    assert res.exit_code == 2 and "no .npy/.npz files (at any depth)" in res.stderr


@pytest.mark.parametrize("compressed", [False, True])
def test_a_large_npz_member_is_unpacked_in_chunks_and_mapped_not_refused(
    tmp_path, monkeypatch, compressed
):
    monkeypatch.setattr(
        arrays, "NPZ_IN_MEMORY", 1000
    )  # everything above 1000 bytes is "large" here
    monkeypatch.setattr(arrays, "CHUNK_BYTES", 4096)
    x = np.asfortranarray(corpus.trials(3).astype(">f8"))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "big.npz", data=x)
    got = io.read_array(tmp_path / "big.npz")
    assert isinstance(got, np.memmap) and not got.flags.writeable
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(io.load_trials(tmp_path / "big.npz"), x.astype(np.float32))
