"""A corpus of deliberately broken inputs, made on the fly in a temporary folder (nothing binary is
committed). Each case knows the command that meets it and the message fmri-edge must answer with.

- :data:`BAD_FILES`: trial files, each met by ``fmri-edge predict FILE`` (and, all together,
  beside good files in one folder: every good trial must still be predicted);
- :data:`BAD_RUNS`: everything else — models, options, outputs, folders and ``score`` labels;
  each maker writes what it needs into a folder and returns the command line.

A "boom" file holds a pickle that would create a marker file if it were ever unpickled:
:func:`exploded` says whether one went off.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge.model import integrity
from fmri_edge.simulation.simulate import simulate

N_REGIONS, N_TIMES = 246, 25
NPY_MAGIC = b"\x93NUMPY"
MARKER = "BOOM_MARKER"
HEADER = "Participant,Trial,CLASS,LEVEL\n"


def trials(
    n: int = 2, n_regions: int = N_REGIONS, n_times: int = N_TIMES, seed: int = 0
) -> np.ndarray:
    """Good, BOLD-like float32 trials."""
    return simulate(n, n_regions=n_regions, n_times=n_times, signal_regions=(0,), seed=seed)[0]


class Boom:
    """Unpickling this object runs a shell command that creates ``MARKER`` in the folder ``target``.
    fmri-edge must never unpickle it."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target / MARKER}",)


def exploded(folder: Path) -> bool:
    return (folder / MARKER).exists()


# ---- broken trial files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadFile:
    filename: str
    write: Callable[[Path], None]
    message: str
    trial_level: bool = False  # the file is fine, its (only) trial is skipped


def _raw(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _save(arr_fn: Callable[[], np.ndarray]) -> Callable[[Path], None]:
    return lambda p: np.save(p, arr_fn(), allow_pickle=False)


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> Callable[[Path], None]:
    def write(p: Path):
        with zipfile.ZipFile(p, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)

    return write


def _pickle_npy(p: Path):
    import pickle

    p.write_bytes(pickle.dumps(Boom(p.parent)))


def _object_npz(p: Path):
    np.savez(p, data=np.array([Boom(p.parent), 1], dtype=object))


def _object_npy(p: Path):
    np.save(p, np.array([Boom(p.parent), 1], dtype=object), allow_pickle=True)


def _with(values: dict, n: int = 1, dtype=np.float32) -> Callable[[], np.ndarray]:
    """One or more trials with ``values`` set at {(trial, region, second): value}."""

    def make():
        x = trials(n).astype(dtype)
        for idx, v in values.items():
            x[idx] = v
        return x if n > 1 else x[0]

    return make


def npy_with_header(
    header: str | bytes, body: bytes = b"", version: tuple = (1, 0), length: int | None = None
) -> bytes:
    """A .npy file with any header text (padded as numpy pads it) and any data bytes after it;
    ``length`` overrides the header-length field."""
    text = header.encode("latin1") if isinstance(header, str) else header
    width = 2 if tuple(version) == (1, 0) else 4
    text += b" " * (-(8 + width + len(text) + 1) % 64) + b"\n"
    n = len(text) if length is None else length
    return NPY_MAGIC + bytes(version) + n.to_bytes(width, "little") + text + body


def _header(
    shape="(2, 246, 25)", descr="'<f4'", fortran="False", body: int = 2 * 246 * 25 * 4, **kw
):
    return _raw(
        npy_with_header(
            f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}",
            b"\0" * body,
            **kw,
        )
    )


_GOOD_NPY = _npy_bytes(trials(2))
_GOOD_NPZ = _npz_bytes(data=trials(2))

BAD_FILES: dict[str, BadFile] = {
    f.filename.replace(".", "_"): f
    for f in [
        # empty, truncated, corrupt
        BadFile("empty.npy", _raw(b""), "empty file (0 bytes); copy or export it again"),
        BadFile("empty.npz", _raw(b""), "empty file (0 bytes)"),
        BadFile(
            "truncated.npy",
            _raw(_GOOD_NPY[: len(_GOOD_NPY) // 2]),
            "truncated: its header promises shape (2, 246, 25) float32 (49,328 bytes), the file has 24,664 "
            "bytes; copy it again",
        ),
        BadFile("truncated_header.npy", _raw(_GOOD_NPY[:40]), "corrupt or truncated .npy header"),
        BadFile(
            "text.npy",
            _raw(b"Participant,Trial\nP1,1\n"),
            "not a .npy file (it starts with b'Particip'); save the trials with numpy.save(file, trials)",
        ),
        BadFile(
            "bad_header.npy",
            _raw(b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4\n"),
            "corrupt or truncated .npy header",
        ),
        BadFile(
            "truncated.npz",
            _raw(_GOOD_NPZ[: len(_GOOD_NPZ) // 2]),
            "truncated or corrupt zip archive (File is not a zip file); copy or export it again",
        ),
        BadFile(
            "text.npz",
            _raw(b"hello, world"),
            "not an .npz (zip) archive (it starts with b'hello, w')",
        ),
        BadFile(
            "no_data.npz",
            lambda p: np.savez(p, trials=trials(1)),
            "no array named 'data' in .npz (found: trials); save it with numpy.savez(file, data=array)",
        ),
        BadFile(
            "npy_named.npz",
            _raw(_GOOD_NPY),
            "not an .npz (zip) archive but a .npy file; rename it to .npy",
        ),
        BadFile(
            "npz_named.npy",
            _raw(_GOOD_NPZ),
            "not a .npy file but a zip archive (.npz); rename it to .npz",
        ),
        BadFile(
            "garbage_member.npz",
            _zip({"data.npy": b"not an array at all"}),
            "corrupt or truncated .npy header",
        ),
        BadFile(
            "truncated_member.npz",
            _zip({"data.npy": _GOOD_NPY[:1000]}),
            "truncated: member 'data.npy' promises shape (2, 246, 25) float32 (49,328 bytes), holds 1,000",
        ),
        # impossible or hostile headers: each field checked before anything is mapped
        BadFile(
            "negative_shape.npy",
            _header("(-1, 246, 25)"),
            "corrupt or truncated .npy header: shape (-1, 246, 25), "
            "expected a tuple of at most 32 non-negative whole numbers",
        ),
        BadFile(
            "float_shape.npy", _header("(2.5, 246, 25)"), "shape (2.5, 246, 25), expected a tuple"
        ),
        BadFile(
            "bool_shape.npy", _header("(True, 246, 25)"), "shape (True, 246, 25), expected a tuple"
        ),
        BadFile("list_shape.npy", _header("[2, 246, 25]"), "shape [2, 246, 25], expected a tuple"),
        BadFile(
            "many_dims.npy",
            _header(repr((1,) * 40)),
            "expected a tuple of at most 32 non-negative whole numbers",
        ),
        BadFile(
            "huge_shape.npy",
            _header(f"({2**62}, {2**62}, 25)"),
            "its header describes an impossible array: shape "
            f"({2**62}, {2**62}, 25) of float32 would need",
        ),
        BadFile(
            "shape_beyond_file.npy",
            _header("(1000000, 246, 25)"),
            "truncated: its header promises shape (1000000, "
            "246, 25) float32 (24,600,000,128 bytes)",
        ),
        BadFile(
            "trailing_bytes.npy",
            _raw(_npy_bytes(trials(1)) * 2),
            "bytes more than its header describes (shape (1, 246, 25) float32",
        ),
        BadFile(
            "fortran_order_text.npy",
            _header(fortran="'yes'"),
            "fortran_order 'yes', expected True or False",
        ),
        BadFile("descr_not_a_dtype.npy", _header(descr="'<q9z'"), "descr '<q9z' is not a dtype"),
        BadFile(
            "descr_subarray.npy",
            _header(descr="'(2,)<f4'"),
            "got a sub-array or structured dtype '(2,)<f4'",
        ),
        BadFile(
            "descr_structured_list.npy",
            _header(descr="[('a', '<f4'), ('b', '|O')]"),
            "not numeric: expected BOLD signal as floats or integers, got a structured dtype",
        ),
        BadFile(
            "descr_object_code.npy", _header(descr="'|O'"), "holds Python objects (dtype object)"
        ),
        BadFile(
            "header_call.npy",
            _raw(npy_with_header(f"__import__('os').system('touch {MARKER}')")),
            "corrupt or truncated .npy header: not a Python literal",
        ),
        BadFile(
            "header_not_dict.npy",
            _raw(npy_with_header("('<f4', False, (2, 246, 25))")),
            "corrupt or truncated .npy header: a tuple, expected a dict",
        ),
        BadFile(
            "header_extra_key.npy",
            _raw(
                npy_with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 246, 25), 'extra': 1}",
                    b"\0" * 24600,
                )
            ),
            "keys ['descr', 'extra', 'fortran_order', 'shape'], expected ['descr', 'fortran_order', 'shape']",
        ),
        BadFile(
            "header_nested.npy",
            _raw(npy_with_header("[" * 3000 + "]" * 3000)),
            "not a Python literal",
        ),
        BadFile(
            "header_length_huge.npy",
            _header(version=(2, 0), length=2**31),
            "header length 2,147,483,648 bytes, more than any numeric array needs",
        ),
        BadFile(
            "header_length_beyond_file.npy",
            _raw(npy_with_header("{'descr': '<f4'", length=5000)),
            "corrupt or truncated .npy header: 54 of its 5,000 bytes",
        ),
        BadFile("version_9.npy", _header(version=(9, 0)), "unsupported .npy format version 9.0"),
        BadFile(
            "member_negative_shape.npz",
            _zip(
                {
                    "data.npy": npy_with_header(
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -246, 25), }"
                    )
                }
            ),
            "member 'data.npy': corrupt or truncated .npy header: shape (2, -246, 25)",
        ),
        BadFile(
            "member_trailing_bytes.npz",
            _zip({"data.npy": _GOOD_NPY + b"\0" * 100}),
            "member 'data.npy' holds 100 bytes more than its header describes",
        ),
        # pickles and objects: refused, never loaded
        BadFile(
            "pickle.npy",
            _pickle_npy,
            "not a .npy file but a Python pickle; refused without loading "
            "(data files are never unpickled)",
        ),
        BadFile(
            "pickle_protocol0.npy",
            _raw(b"cos\nsystem\n(S'touch BOOM'\ntR."),
            "not a .npy file (it starts with",
        ),
        BadFile(
            "object.npy",
            _object_npy,
            "holds Python objects (dtype object), which only unpickling could read; "
            "refused without loading",
        ),
        BadFile("object.npz", _object_npz, "holds Python objects (dtype object)"),
        # not numeric
        BadFile(
            "strings.npy",
            _save(lambda: np.full((2, 246, 25), "9500")),
            "not numeric: expected BOLD signal as floats or integers, got dtype <U4",
        ),
        BadFile(
            "structured.npy",
            _save(lambda: np.zeros((2, 246, 25), dtype=[("bold", "f4"), ("t", "i4")])),
            "not numeric",
        ),
        BadFile(
            "bool.npy",
            _save(lambda: np.ones((2, 246, 25), dtype=bool)),
            "not numeric: expected BOLD signal as floats or integers, got dtype bool",
        ),
        BadFile(
            "datetime.npy",
            _save(lambda: np.zeros((2, 246, 25), dtype="datetime64[s]")),
            "not numeric: expected BOLD signal as floats or integers, got dtype datetime64",
        ),
        BadFile(
            "complex.npy",
            _save(lambda: trials(2).astype(np.complex64)),
            "complex values (dtype complex64); expected real BOLD signal",
        ),
        # wrong shapes
        BadFile(
            "one_d.npy",
            _save(lambda: trials(1).ravel()),
            "wrong number of dimensions: expected (N, 246, 25) or (246, 25), got 1-D shape (6150,)",
        ),
        BadFile(
            "four_d.npy",
            _save(lambda: trials(2)[None]),
            "got 4-D shape (1, 2, 246, 25); drop the extra axes",
        ),
        BadFile("scalar.npy", _save(lambda: np.float32(9500.0)), "got 0-D shape ()"),
        BadFile(
            "schaefer200.npy",
            _save(lambda: trials(2, n_regions=200)),
            "expected 246 regions (Brainnetome atlas) on axis 1, got 200, the size of the Schaefer-200 or "
            "Craddock-200 atlas (shape (2, 200, 25)); extract the region time series with the Brainnetome",
        ),
        BadFile(
            "power264.npy",
            _save(lambda: trials(2, n_regions=264)),
            "got 264, the size of the Power-264 atlas",
        ),
        BadFile(
            "aal116.npz",
            lambda p: np.savez(p, data=trials(2, n_regions=116)),
            "got 116, the size of the AAL-116",
        ),
        BadFile(
            "regions_10.npy",
            _save(lambda: trials(2, n_regions=10)),
            "expected 246 regions (Brainnetome atlas) on axis 1, got 10 (shape (2, 10, 25))",
        ),
        BadFile(
            "swapped.npy",
            _save(lambda: trials(2).swapaxes(1, 2)),
            "regions and time axes look swapped: expected (N, 246, 25), got (2, 25, 246); transpose with "
            "arr.swapaxes(-1, -2)",
        ),
        BadFile(
            "swapped_single.npy",
            _save(lambda: trials(1)[0].T),
            "regions and time axes look swapped",
        ),
        BadFile(
            "long_trials.npy",
            _save(lambda: trials(2, n_times=30)),
            "expected 25 time points (seconds) per trial, got 30 (shape (2, 246, 30)); pass --crop to keep the "
            "first 25 s of each trial",
        ),
        BadFile(
            "short_trials.npy",
            _save(lambda: trials(2, n_times=20)),
            "got 20 (shape (2, 246, 20)); pass --pad to repeat each trial's last second up to 25 s",
        ),
        BadFile(
            "no_trials.npy",
            _save(lambda: np.zeros((0, 246, 25), np.float32)),
            "holds no trials (shape (0, 246, 25))",
        ),
        # bad values in the only trial
        BadFile(
            "nan_trial.npy",
            _save(_with({(0, 3, 7): np.nan})),
            "trial 1: 1 NaN value(s), first at region 3, second 7 (0-based); trial skipped (--nan interpolate "
            "fills short gaps over time)",
            True,
        ),
        BadFile(
            "inf_trial.npy",
            _save(_with({(0, 5, 0): np.inf, (0, 6, 1): -np.inf})),
            "trial 1: 2 Inf value(s), first at region 5, second 0",
            True,
        ),
        BadFile(
            "nan_and_inf.npz",
            lambda p: np.savez(p, data=_with({(0, 1, 1): np.nan, (0, 2, 2): np.inf})()),
            "trial 1: 1 NaN and 1 Inf value(s)",
            True,
        ),
        BadFile(
            "beyond_float32.npy",
            _save(_with({(0, 0, 0): 1e300}, dtype=np.float64)),
            "trial 1: 1 value(s) beyond the float32 range ±3.4e+38, first at region 0, second 0",
            True,
        ),
        BadFile(
            "overflowing.npy",
            _save(
                lambda: (
                    np.where(np.arange(25) % 2, 3e38, -3e38).astype(np.float32)
                    * np.ones((246, 1), np.float32)
                )
            ),
            "trial 1: the model's outputs are not finite (largest |value| 3e+38 overflows float32 arithmetic",
            True,
        ),
    ]
}

# bad values for one trial among good ones: name → (value, dtype of the file)
BAD_TRIALS = {
    "nan": (np.nan, np.float32),
    "inf": (-np.inf, np.float16),
    "huge": (1e300, np.float64),
}


# ---- broken models --------------------------------------------------------------------------------------


def contract_model(
    path: Path, n_regions: int = N_REGIONS, n_times: int = N_TIMES, baseline_s: int = 5
) -> Path:
    """A tiny untrained model that honours the fmri-edge ONNX contract, built op by op (no torch, no
    training): in-graph baseline_z normalization with the exporter's +1e-6, then a linear read-out
    of each region's mean. Its answers mean nothing; its inputs, outputs and metadata are real."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {
        "w3": rng.normal(size=(n_regions, 3)),
        "w9": rng.normal(size=(n_regions, 9)),
        "eps": np.array(1e-6),
        "zero": np.array([0]),
        "base_end": np.array([baseline_s]),
        "two": np.array([2]),
    }
    inits = [
        numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k)
        for k, v in consts.items()
    ]
    n = helper.make_node
    nodes = [
        n("Slice", ["trials", "zero", "base_end", "two"], ["first"]),
        n("ReduceMean", ["first"], ["base"], axes=[2]),
        n("ReduceMean", ["trials"], ["mu"], axes=[2]),
        n("Sub", ["trials", "mu"], ["dev"]),
        n("Mul", ["dev", "dev"], ["sq"]),
        n("ReduceMean", ["sq"], ["var"], axes=[2]),
        n("Sqrt", ["var"], ["sd"]),
        n("Add", ["sd", "eps"], ["den"]),
        n("Sub", ["trials", "base"], ["num"]),
        n("Div", ["num", "den"], ["z"]),
        n("ReduceMean", ["z"], ["feat"], axes=[2], keepdims=0),
        n("MatMul", ["feat", "w3"], ["l3"]),
        n("Softmax", ["l3"], ["class_probs"], axis=1),
        n("MatMul", ["feat", "w9"], ["l9"]),
        n("Softmax", ["l9"], ["level_probs"], axis=1),
        n("Sigmoid", ["feat"], ["region_weights"]),
    ]
    out = lambda name, width: helper.make_tensor_value_info(
        name, TensorProto.FLOAT, ["batch", width]
    )  # noqa: E731
    graph = helper.make_graph(
        nodes,
        "contract",
        [helper.make_tensor_value_info("trials", TensorProto.FLOAT, ["batch", n_regions, n_times])],
        [out("class_probs", 3), out("level_probs", 9), out("region_weights", n_regions)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "model_version": "contract-test",
        "n_regions": n_regions,
        "n_times": n_times,
        "level_rule": "argmax",
        "normalization": {
            "per_trial": "baseline_z",
            "baseline_s": baseline_s,
            "inside_graph": True,
        },
        "outputs": ["class_probs", "level_probs", "region_weights"],
    }
    model.metadata_props.add(key="fmri_edge", value=json.dumps(meta))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    integrity.stamp(path)  # as the exporter does
    return path


def altered_model(
    src: Path, dst: Path, initializer: str = "w3", offset: int = 0, mask: int = 0x01
) -> Path:
    """A copy of the contract model ``src`` with one byte of an initializer's stored values changed
    in place (nothing else in the file moves): what a bad copy or a tampered file looks like."""
    import onnx
    from onnx import numpy_helper

    data = bytearray(src.read_bytes())
    weights = next(t for t in onnx.load(str(src)).graph.initializer if t.name == initializer)
    raw = numpy_helper.to_array(weights).tobytes()
    assert bytes(data).count(raw) == 1, f"{initializer}'s bytes are not unique in {src}"
    at = bytes(data).index(raw) + offset % len(raw)
    data[at] ^= mask
    dst.write_bytes(bytes(data))
    return dst


def model_with(src: Path, dst: Path, meta: str | None | dict = "keep") -> Path:
    """A copy of the ONNX model ``src`` with its fmri-edge metadata replaced (None: removed; a dict:
    updates the JSON; a string: stored as it is)."""
    import onnx

    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    if meta != "keep":
        if isinstance(meta, dict):
            props["fmri_edge"] = json.dumps({**json.loads(props["fmri_edge"]), **meta})
        elif meta is None:
            props.pop("fmri_edge")
        else:
            props["fmri_edge"] = meta
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


def _card(src: Path, d: Path, sha: str) -> Path:
    shutil.copy(src, d / "m.onnx")
    (d / "m.md").write_text(f"# m\n\n| | |\n|---|---|\n| file | `m.onnx` |\n| sha256 | `{sha}` |\n")
    return d / "m.onnx"


# ---- runs: everything else ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadRun:
    make: Callable[[Path, Path], list]  # (empty folder, a good model) → command line
    message: str
    exit_code: int = 2


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _good(d: Path, name: str = "good.npy", n: int = 2) -> Path:
    np.save(d / name, trials(n))
    return d / name


def _predict(d: Path, model: Path, *paths, options=()) -> list:
    return ["predict", *(paths or [_good(d)]), "--model", model, *options]


def _meta_run(meta) -> Callable[[Path, Path], list]:
    return lambda d, model: _predict(d, model_with(model, d / "m.onnx", meta))


def _score(pred: str, truth: str = None, truth_dir: Callable[[Path], Path] | None = None):
    def make(d: Path, model: Path) -> list:
        (d / "pred.csv").write_text(pred)
        if truth_dir is not None:
            return ["score", d / "pred.csv", truth_dir(d)]
        (d / "truth.csv").write_text(
            truth if truth is not None else HEADER + "P1,1,1,2\nP1,2,0,0\n"
        )
        return ["score", d / "pred.csv", d / "truth.csv"]

    return make


def _labels_folder(labels: np.ndarray | None) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / "study" / "P1").mkdir(parents=True)
        np.savez(d / "study" / "P1" / "fMRI_data.npz", data=trials(2))
        if labels is not None:
            np.savez(d / "study" / "P1" / "labels.npz", data=np.asarray(labels))
        return d / "study"

    return make


def _nan_second_trial(d: Path) -> Path:
    x = trials(3)
    x[1, 0, :20] = np.nan
    np.save(d / "nan.npy", x)
    return d / "nan.npy"


def _duplicate_participant(d: Path, model: Path) -> list:
    (d / "a").mkdir(), (d / "b").mkdir()
    return _predict(d, model, _good(d / "a", "P1.npy"), _good(d / "b", "P1.npy"))


def _two_bad(d: Path, model: Path) -> list:
    np.save(d / "r200.npy", trials(1, n_regions=200))
    (d / "e.npy").write_bytes(b"")
    return _predict(d, model, d / "r200.npy", d / "e.npy")


def _existing(name: str, options: Callable[[Path], list]) -> Callable[[Path, Path], list]:
    def make(d: Path, model: Path) -> list:
        (d / name).write_text("keep me")
        return _predict(d, model, options=options(d))

    return make


def _subject_folder_bad(d: Path, model: Path) -> list:
    (d / "study" / "P17").mkdir(parents=True)
    (d / "study" / "P17" / "fMRI_data.npz").write_bytes(_GOOD_NPZ[:500])
    return _predict(d, model, d / "study")


BAD_RUNS: dict[str, BadRun] = {
    # inputs and options
    "missing_path": BadRun(
        lambda d, m: _predict(d, m, d / "nowhere.npy"), "nowhere.npy: no such file or folder"
    ),
    "empty_folder": BadRun(
        lambda d, m: _predict(d, m, d),
        "folder holds no fMRI_data.npz, no subject folders and no .npy/.npz files",
    ),
    "wrong_suffix": BadRun(
        lambda d, m: _predict(d, m, _write(d / "t.csv", "1,2")),
        "not a .npy or .npz file (got '.csv')",
    ),
    "corrupt_subject_folder": BadRun(
        _subject_folder_bad, "P17/fMRI_data.npz: truncated or corrupt zip archive"
    ),
    "nan_policy_error": BadRun(
        lambda d, m: _predict(
            d, m, _nan_second_trial(d), options=["--nan", "error", "--out", d / "p.csv"]
        ),
        "nan.npy: trial 2: 20 NaN value(s), first at region 0, second 0 "
        "(0-based); stopped by --nan error",
    ),
    "nan_too_many_to_interpolate": BadRun(
        lambda d, m: _predict(
            d, m, _nan_second_trial(d), options=["--nan", "interpolate", "--json"]
        ),
        "a region misses more than 50% of its seconds, too many to interpolate",
        exit_code=0,
    ),
    "unknown_nan_policy": BadRun(
        lambda d, m: _predict(d, m, options=["--nan", "zero"]), "Invalid value for '--nan'"
    ),
    "nothing_predictable": BadRun(
        _two_bad, "no trial could be predicted (2 problems above); nothing written"
    ),
    "duplicate_participant": BadRun(
        _duplicate_participant, "participant 'P1' was already predicted from", exit_code=0
    ),
    # outputs
    "out_exists": BadRun(
        _existing("p.csv", lambda d: ["--out", d / "p.csv"]),
        "p.csv: exists; use --force to overwrite",
    ),
    "errors_exists": BadRun(
        _existing("e.json", lambda d: ["--errors", d / "e.json"]),
        "e.json: exists; use --force to overwrite",
    ),
    "out_folder_missing": BadRun(
        lambda d, m: _predict(d, m, options=["--out", d / "no" / "p.csv"]),
        "does not exist; create it first",
    ),
    "out_is_folder": BadRun(
        lambda d, m: _predict(d, m, options=["--out", d]), "is a folder; give a file name"
    ),
    # models
    "model_missing": BadRun(
        lambda d, m: _predict(d, d / "none.onnx"), "none.onnx: model file not found"
    ),
    "model_empty": BadRun(
        lambda d, m: _predict(d, _write(d / "m.onnx", b"")), "m.onnx: empty model file (0 bytes)"
    ),
    "model_not_onnx": BadRun(
        lambda d, m: _predict(d, _write(d / "m.onnx", "<html>")),
        "m.onnx: not a loadable ONNX model (INVALID_PROTOBUF: Protobuf parsing failed.); pass an "
        ".onnx file written by `fmri-edge export`",
    ),
    "model_is_trials": BadRun(
        lambda d, m: _predict(d, _write(d / "m.onnx", _GOOD_NPY)), "not a loadable ONNX model"
    ),
    "model_without_metadata": BadRun(
        _meta_run(None), "ONNX model without fmri-edge metadata; export it with `fmri-edge export`"
    ),
    "metadata_not_json": BadRun(
        _meta_run("{'n_regions': 246,"), "fmri-edge metadata is not valid JSON"
    ),
    "metadata_deeply_nested": BadRun(
        _meta_run("[" * 100_000), "fmri-edge metadata is not valid JSON"
    ),
    "metadata_not_object": BadRun(
        _meta_run("[246, 25]"), "fmri-edge metadata is a JSON list, expected an object"
    ),
    "metadata_missing_n_times": BadRun(
        _meta_run('{"n_regions": 246}'), "fmri-edge metadata is incomplete or malformed ('n_times')"
    ),
    "metadata_infinite_n_times": BadRun(
        _meta_run('{"n_regions": 246, "n_times": Infinity}'),
        "fmri-edge metadata is incomplete or malformed",
    ),
    "metadata_code": BadRun(
        _meta_run({"n_regions": f"__import__('os').system('touch {MARKER}')"}),
        "fmri-edge metadata is incomplete or malformed",
    ),
    "metadata_shape_disagrees": BadRun(
        _meta_run({"n_times": 30}),
        "model input shape ['batch', 246, 25] disagrees with its metadata (batch, 246, 30)",
    ),
    "metadata_region_names": BadRun(
        _meta_run({"region_names": ["A", "B"]}), "2 region names for 246 regions"
    ),
    "metadata_class_values": BadRun(
        _meta_run({"class_values": [0, 1, 2]}), "class_values [0, 1, 2]"
    ),
    "metadata_level_rule": BadRun(
        _meta_run({"level_rule": "median"}), "unknown level_rule 'median'"
    ),
    "metadata_subject_normalization": BadRun(
        _meta_run({"subject_normalization": "robust"}),
        "unknown subject_normalization 'robust' (none, zscore, center)",
    ),
    "model_weights_altered": BadRun(
        lambda d, m: _predict(d, altered_model(m, d / "m.onnx")), "m.onnx: weights digest"
    ),
    "model_weights_altered_explain": BadRun(
        lambda d, m: [
            "explain",
            _good(d),
            "--model",
            altered_model(m, d / "m.onnx", "w9", 17, 0x80),
        ],
        "the weights or graph were altered after export",
    ),
    "model_weights_altered_info": BadRun(
        lambda d, m: ["info", altered_model(m, d / "m.onnx", "eps")],
        "pass --no-verify if you edited the model on purpose",
    ),
    "model_card_checksum": BadRun(
        lambda d, m: _predict(d, _card(m, d, "0" * 64)),
        "disagrees with its model card m.md (0000000000000000…): the file is corrupt "
        "or was replaced",
    ),
    # score: predictions against labels
    "score_missing_trials": BadRun(
        _score(HEADER + "P1,1,1,2\n"),
        "1 labeled trial(s) have no prediction, first P1 trial 2; predict every labeled trial",
    ),
    "score_extra_trials": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0\nP1,3,0,0\n"),
        "1 predicted trial(s) have no label, first P1 trial 3",
    ),
    "score_class_out_of_range": BadRun(
        _score(HEADER + "P1,1,2,2\nP1,2,0,0\n"), "line 2: CLASS 2 outside {-1, 0, 1}"
    ),
    "score_level_out_of_range": BadRun(
        _score(HEADER + "P1,1,1,7\nP1,2,0,0\n"), "line 2: LEVEL 7 outside {-4 … 4}"
    ),
    "score_fractional_level": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0.5\n"), "line 3: LEVEL '0.5' is not a whole number"
    ),
    "score_infinite_class": BadRun(
        _score(HEADER + "P1,1,inf,2\nP1,2,0,0\n"), "line 2: CLASS 'inf' is not a whole number"
    ),
    "score_trial_zero": BadRun(
        _score(HEADER + "P1,0,1,2\nP1,2,0,0\n"), "line 2: Trial 0; trials are counted from 1"
    ),
    "score_duplicate_rows": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0\nP1,1,1,2\n"),
        "line 4: duplicate row for participant P1, trial 1 (first on line 2)",
    ),
    "score_other_participants": BadRun(
        _score(HEADER + "P2,1,1,2\nP2,2,0,0\n"),
        "participants differ from",
    ),
    "score_bad_header": BadRun(
        _score("Subject,Trial,CLASS,LEVEL\nP1,1,1,2\n"),
        "line 1: no Participant column (header: 'Subject,Trial,CLASS,LEVEL'); expected the "
        "columns Participant,Trial,CLASS,LEVEL, in any order",
    ),
    "score_duplicate_column": BadRun(
        _score("Participant,Trial,CLASS,LEVEL,class\nP1,1,1,2,0\n"),
        "pred.csv: line 1: column CLASS appears 2 times",
    ),
    "score_missing_column": BadRun(
        _score("LEVEL,Participant,Trial\n2,P1,1\n"), "line 1: no CLASS column"
    ),
    "score_blank_class": BadRun(
        _score("Trial,CLASS,Participant,LEVEL\n1,,P1,2\n2,0,P1,0\n"),
        "pred.csv: line 2: CLASS is blank",
    ),
    "score_blank_participant": BadRun(
        _score(HEADER + "P1,1,1,2\n ,2,0,0\n"), "line 3: Participant is blank"
    ),
    "score_nan_level": BadRun(
        _score("LEVEL,CLASS,Trial,Participant\r\n2,1,1,P1\r\nNaN,0,2,P1\r\n"),
        "pred.csv: line 3: LEVEL 'NaN' is not a whole number",
    ),
    "score_long_row": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0,0.3\n"), "line 3: 5 field(s), the header has 4"
    ),
    "score_truth_out_of_order_bad": BadRun(
        _score(
            HEADER + "P1,1,1,2\nP1,2,0,0\n",
            "\ufeffCLASS,LEVEL,Trial,Participant\n1,2,1,P1\n0,5,2,P1\n",
        ),
        "truth.csv: line 3: LEVEL 5 outside {-4 … 4}",
    ),
    "score_empty_csv": BadRun(_score(""), "empty file; expected a header"),
    "score_short_row": BadRun(
        _score(HEADER + "P1,1\n"),
        "line 2: 2 field(s), the header has 4; expected Participant,Trial,CLASS,LEVEL, got 'P1,1'",
    ),
    "score_truth_duplicates": BadRun(
        _score(HEADER + "P1,1,1,2\n", HEADER + "P1,1,1,2\nP1,1,0,0\n"),
        "truth.csv: line 3: duplicate row",
    ),
    "score_labels_class_out_of_range": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0\n", truth_dir=_labels_folder([[1, 2], [2, 0]])),
        "labels.npz: row 2: CLASS 2 outside {-1, 0, 1} (1 such row(s))",
    ),
    "score_labels_level_out_of_range": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0\n", truth_dir=_labels_folder([[1, 9], [0, 0]])),
        "labels.npz: row 1: LEVEL 9 outside {-4 … 4}",
    ),
    "score_labels_nan": BadRun(
        _score(HEADER + "P1,1,1,2\nP1,2,0,0\n", truth_dir=_labels_folder([[1, np.nan], [0, 0]])),
        "row 1: labels must be whole numbers, got [1.0, nan]",
    ),
    "score_labels_shape": BadRun(
        _score(HEADER + "P1,1,1,2\n", truth_dir=_labels_folder(np.zeros((2, 3)))),
        "expected labels of shape (N, 2) = [CLASS, LEVEL], got (2, 3)",
    ),
    "score_labels_fewer_than_trials": BadRun(
        _score(HEADER + "P1,1,1,2\n", truth_dir=_labels_folder([[1, 2]])),
        "labels.npz: 1 label rows for 2 trials; labels and fMRI_data.npz must "
        "have one row per trial",
    ),
    "score_labels_missing": BadRun(
        _score(HEADER + "P1,1,1,2\n", truth_dir=_labels_folder(None)),
        "labels.npz: missing: every subject folder needs labels.npz to be scored",
    ),
    "score_labels_pickled": BadRun(
        _score(HEADER + "P1,1,1,2\n", truth_dir=lambda d: _pickled_labels(d)),
        "labels.npz: holds Python objects (dtype object)",
    ),
    "score_predictions_missing": BadRun(
        lambda d, m: ["score", d / "none.csv", d], "none.csv: no such file"
    ),
    "score_predictions_binary": BadRun(
        lambda d, m: ["score", _write(d / "pred.csv", b"\xff\xfe\x00\x81" * 10), d],
        "not a readable CSV",
    ),
}


def _pickled_labels(d: Path) -> Path:
    folder = _labels_folder(None)(d)
    np.savez(folder / "P1" / "labels.npz", data=np.array([Boom(d), 1], dtype=object))
    return folder
