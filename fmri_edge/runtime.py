"""Open an exported fmri-edge ONNX model with onnxruntime and run it (numpy + onnxruntime only).

The ONNX file is the contract: its metadata (key ``fmri_edge``, a JSON document, parsed with
``json.loads`` and never evaluated) says the input shape, label values, normalization, region
names and provenance. Outputs: ``class_probs`` (N, 3), ``level_probs`` (N, 9) and
``region_weights`` (N, n_regions), the input SE block's attention per region.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from fmri_edge.io import InputError

METADATA_KEY = "fmri_edge"
OUTPUT_NAMES = ("class_probs", "level_probs", "region_weights")
DEFAULT_MODEL = "fmri-edge-se.onnx"


def default_model_path() -> Path:
    """The shipped model (``models/`` of the source tree, installed as ``fmri_edge.models``)."""
    return Path(str(resources.files("fmri_edge.models") / DEFAULT_MODEL))


@dataclass(frozen=True)
class ModelInfo:
    """What an fmri-edge ONNX file says about itself."""

    path: Path
    n_regions: int
    n_times: int
    class_values: tuple
    level_values: tuple
    region_names: tuple
    level_rule: str
    subject_normalization: str | None
    meta: dict

    @classmethod
    def from_metadata(cls, path: Path, meta: dict) -> "ModelInfo":
        try:
            n_regions, n_times = int(meta["n_regions"]), int(meta["n_times"])
            names = tuple(meta.get("region_names") or [f"region_{i}" for i in range(n_regions)])
            if len(names) != n_regions:
                raise ValueError(f"{len(names)} region names for {n_regions} regions")
            return cls(path, n_regions, n_times,
                       tuple(meta.get("class_values", (-1, 0, 1))),
                       tuple(meta.get("level_values", range(-4, 5))),
                       names, meta.get("level_rule", "argmax"),
                       meta.get("subject_normalization"), meta)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(path, f"fmri-edge metadata is incomplete or malformed ({e})") from None


def session_options(threads: int = 0):
    """Options chosen on purpose: all graph optimizations at load time, sequential execution,
    no busy-waiting threads (lab workstations are shared)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class Decoder:
    """An fmri-edge model ready to run: ``Decoder(path).run(trials)``."""

    def __init__(self, path: str | Path | None = None, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise InputError(self.path, "model file not found")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several private exception types
            raise InputError(self.path, f"not a loadable ONNX model ({str(e).splitlines()[0][:100]})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise InputError(self.path, "ONNX model without fmri-edge metadata; export it with `fmri-edge export`")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(self.path, f"fmri-edge metadata is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise InputError(self.path, "fmri-edge metadata is not a JSON object")
        self.info = ModelInfo.from_metadata(self.path, meta)
        self._check_graph()

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1:
            raise InputError(self.path, f"model has {len(inputs)} inputs, expected 1 (trials)")
        shape = inputs[0].shape
        want = [self.info.n_regions, self.info.n_times]
        if len(shape) != 3 or list(shape[1:]) != want:
            raise InputError(self.path, f"model input shape {shape} disagrees with its metadata "
                                        f"(batch, {want[0]}, {want[1]})")
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise InputError(self.path, f"model lacks outputs {missing} (has {outputs})")
        self.input_name = inputs[0].name

    def run(self, trials: np.ndarray) -> dict[str, np.ndarray]:
        """One onnxruntime call on float32 (N, n_regions, n_times) → {output name: array}."""
        outs = self.session.run(list(OUTPUT_NAMES), {self.input_name: trials})
        return dict(zip(OUTPUT_NAMES, outs))
