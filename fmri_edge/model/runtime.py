"""Open an exported fmri-edge ONNX model with onnxruntime and run it (numpy + onnxruntime only).

The ONNX file is the contract: its metadata (key ``fmri_edge``, a JSON document, parsed with
``json.loads`` and never evaluated) says the input shape, label values, normalization, region
names and provenance. Outputs: ``class_probs`` (N, 3), ``level_probs`` (N, 9) and
``region_weights`` (N, n_regions), the input SE block's attention per region; models linear in
per-region features also answer ``region_contributions`` (N, n_regions), each region's exact share
of the answered class's logit (:attr:`Model.explanation` says which a model gives).

Before a model is opened, its sha256 is checked against its model card (``<name>.md`` beside
``<name>.onnx``, line ``| sha256 | `<hex>` |``) when one is there; once open, its weights are
checked against the ``weights_sha256`` digest written at export (:mod:`fmri_edge.model.integrity`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from fmri_edge import valence
from fmri_edge.model import integrity
from fmri_edge.errors import InputError
from fmri_edge.model.normalize import SUBJECT_NORMS

METADATA_KEY = "fmri_edge"
OUTPUT_NAMES = ("class_probs", "level_probs", "region_weights")
# newer exports also give what the final layer reads and the per-trial representation before
# subject alignment; models with subject alignment take a participant's statistics as inputs
EXTRA_OUTPUTS = ("features", "normalized")
ALIGN_INPUTS = ("subject_mean", "subject_scale")
# the identity adaptation head's parameters, inputs with zero defaults that ``predict`` never feeds:
# ``fmri-edge adapt`` writes a participant's correction as their defaults (fmri_edge.decoding.adapt)
ADAPT_INPUTS = ("adapt_bias", "adapt_scale", "adapt_weight")
# models whose CLASS logits are linear in per-region features: each region's share of the answer
CONTRIBUTION_OUTPUT = "region_contributions"
DEFAULT_MODEL = "fmri-edge.onnx"
CLASS_VALUES = tuple(valence.CLASS_VALUES.tolist())  # as the metadata lists them
LEVEL_VALUES = tuple(valence.LEVEL_VALUES.tolist())
LEVEL_RULES = valence.LEVEL_RULES
CARD_SHA256 = re.compile(r"^\|\s*sha256\s*\|\s*`([0-9a-fA-F]{64})`\s*\|", re.MULTILINE)


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
        """Checked values only: the runtime's decisions assume CLASS −1, 0, 1 and LEVEL −4 … 4."""
        try:
            n_regions, n_times = int(meta["n_regions"]), int(meta["n_times"])
            if (
                n_regions < 1
                or n_times < 1
                or n_regions != meta["n_regions"]
                or n_times != meta["n_times"]
            ):
                raise ValueError(
                    f"n_regions {meta['n_regions']!r} and n_times {meta['n_times']!r} must be "
                    "positive whole numbers"
                )
            names = tuple(meta.get("region_names") or [f"region_{i}" for i in range(n_regions)])
            if len(names) != n_regions or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{len(names)} region names for {n_regions} regions")
            info = cls(
                path,
                n_regions,
                n_times,
                tuple(meta.get("class_values", CLASS_VALUES)),
                tuple(meta.get("level_values", LEVEL_VALUES)),
                names,
                meta.get("level_rule", "argmax"),
                meta.get("subject_normalization"),
                meta,
            )
            if info.class_values != CLASS_VALUES or info.level_values != LEVEL_VALUES:
                raise ValueError(
                    f"class_values {list(info.class_values)} / level_values {list(info.level_values)}"
                    f", expected {list(CLASS_VALUES)} / {list(LEVEL_VALUES)}"
                )
            if info.level_rule not in LEVEL_RULES:
                raise ValueError(
                    f"unknown level_rule {info.level_rule!r} ({', '.join(LEVEL_RULES)})"
                )
            if (info.subject_normalization or "none") not in SUBJECT_NORMS:
                raise ValueError(
                    f"unknown subject_normalization {info.subject_normalization!r} "
                    f"({', '.join(SUBJECT_NORMS)})"
                )
            return info
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise InputError(
                path,
                f"fmri-edge metadata is incomplete or malformed ({e}); "
                "export the model again with `fmri-edge export`",
            ) from None


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_model_card(path: Path) -> Path | None:
    """The model card beside ``path`` (``<name>.md``) if it has a sha256 line, after checking that
    the file matches it; None where there is no card to check against."""
    card = path.with_suffix(".md")
    if path.suffix != ".onnx" or not card.is_file():
        return None
    found = CARD_SHA256.search(card.read_text(errors="replace"))
    if found is None:
        return None
    want, got = found.group(1).lower(), file_sha256(path)
    if got != want:
        raise InputError(
            path,
            f"sha256 {got[:16]}… disagrees with its model card {card.name} ({want[:16]}…): the "
            "file is corrupt or was replaced; download or export it again (or update the card "
            "if the model was changed on purpose)",
        )
    return card


def _ort_reason(e: Exception) -> str:
    """onnxruntime's error code and reason, without the path it repeats."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    code = re.search(r"\b([A-Z][A-Z_]{3,})\b", text)
    reason = text.rsplit("failed:", 1)[-1].strip() if "failed:" in text else ""
    return ": ".join(x for x in (code.group(1) if code else "", reason) if x)[:120] or text[:120]


def session_options(threads: int = 0, spinning: bool = False):
    """Options chosen on purpose, each timed against its alternatives by ``fmri-edge bench`` (the
    numbers: docs/speed.md, "session options vs chosen"): all graph optimizations at load time
    (optimizing at load keeps the shipped file free of CPU-specific fused ops), sequential
    execution, one thread per core (``threads=0``), and no busy-waiting threads: spinning helps on
    an idle machine but costs far more while other jobs hold the cores — lab workstations are
    shared. ``spinning=True`` is for dedicated machines."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return so


class Model:
    """An fmri-edge model ready to run: ``Model(path).run(trials)``. ``verify=False`` skips the
    weights digest check (for models edited on purpose); ``integrity`` says what was checked."""

    def __init__(self, path: str | Path | None = None, threads: int = 0, verify: bool = True):
        import onnxruntime as ort

        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise InputError(self.path, "model file not found")
        if self.path.stat().st_size == 0:
            raise InputError(self.path, "empty model file (0 bytes); download or export it again")
        self.card = check_model_card(self.path)
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises several private exception types
            raise InputError(
                self.path,
                f"not a loadable ONNX model ({_ort_reason(e)}); "
                "pass an .onnx file written by `fmri-edge export`",
            ) from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise InputError(
                self.path,
                "ONNX model without fmri-edge metadata; export it with `fmri-edge export`",
            )
        try:
            meta = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InputError(
                self.path,
                f"fmri-edge metadata is not valid JSON ({str(e)[:100]}); "
                "export the model again with `fmri-edge export`",
            ) from None
        if not isinstance(meta, dict):
            raise InputError(
                self.path,
                f"fmri-edge metadata is a JSON {type(meta).__name__}, expected an object; "
                "export the model again with `fmri-edge export`",
            )
        self.info = ModelInfo.from_metadata(self.path, meta)
        self._check_graph()
        self.integrity = integrity.check(
            self.path, verify
        )  # verified / not verifiable / not checked

    def _check_graph(self) -> None:
        # inputs with a default value (an initializer of the same name) are listed apart
        inputs = [*self.session.get_inputs(), *self.session.get_overridable_initializers()]
        # models exported before the adaptation head lack its inputs (they run, but cannot be adapted)
        self.adaptable = {i.name for i in inputs} >= set(ADAPT_INPUTS)
        inputs = [i for i in inputs if i.name not in ADAPT_INPUTS]
        inputs = [i for i in inputs if i.name not in ALIGN_INPUTS] + sorted(
            (i for i in inputs if i.name in ALIGN_INPUTS), key=lambda i: ALIGN_INPUTS.index(i.name)
        )
        outputs = [o.name for o in self.session.get_outputs()]
        names = [i.name for i in inputs]
        if names[1:] not in ([], list(ALIGN_INPUTS)):
            raise InputError(
                self.path,
                f"model inputs {names}, expected trials (and {', '.join(ALIGN_INPUTS)} "
                "for subject alignment)",
            )
        self.aligned = len(names) > 1
        if self.aligned:
            if "normalized" not in outputs:
                raise InputError(
                    self.path,
                    f"model takes {', '.join(ALIGN_INPUTS)} but lacks the `normalized` "
                    "output they are computed from",
                )
            self.align_shape = tuple(inputs[1].shape)
            if (
                not all(isinstance(d, int) for d in self.align_shape)
                or tuple(inputs[2].shape) != self.align_shape
            ):
                raise InputError(
                    self.path,
                    f"subject statistics inputs have shapes {inputs[1].shape} and "
                    f"{inputs[2].shape}, expected one fixed (regions, times) shape",
                )
        self.outputs = tuple(outputs)
        shape = inputs[0].shape
        want = [self.info.n_regions, self.info.n_times]
        if inputs[0].type != "tensor(float)":
            raise InputError(
                self.path, f"model input is {inputs[0].type}, expected tensor(float) trials"
            )
        if len(shape) != 3 or list(shape[1:]) != want:
            raise InputError(
                self.path,
                f"model input shape {shape} disagrees with its metadata "
                f"(batch, {want[0]}, {want[1]}); export the model again with `fmri-edge export`",
            )
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise InputError(self.path, f"model lacks outputs {missing} (has {outputs})")
        widths = {
            "class_probs": len(self.info.class_values),
            "level_probs": len(self.info.level_values),
            "region_weights": self.info.n_regions,
            CONTRIBUTION_OUTPUT: self.info.n_regions,
        }
        for o in self.session.get_outputs():
            if (
                o.name in widths
                and o.shape
                and isinstance(o.shape[-1], int)
                and o.shape[-1] != widths[o.name]
            ):
                raise InputError(
                    self.path,
                    f"model output {o.name} has shape {o.shape}, its metadata says "
                    f"(batch, {widths[o.name]})",
                )
        self.input_name = inputs[0].name

    @property
    def explanation(self) -> str | None:
        """The model's per-region explanation: ``"contribution"`` (output ``region_contributions``: exact
        shares of the answered class's logit, linear models), ``"attention"`` (``region_weights``: the
        input SE gate) or None (neither: e.g. a linear model exported before contributions existed, or
        one adapted to a participant: its contributions are the base model's, not a split of its answer)."""
        if CONTRIBUTION_OUTPUT in self.outputs:
            return None if self.info.meta.get("adaptation") else "contribution"
        return None if self.info.meta.get("region_attention") is False else "attention"

    @property
    def run_outputs(self) -> tuple[str, ...]:
        """What ``predict`` asks for: the three answers, and the contributions where the model has them."""
        return OUTPUT_NAMES + (
            (CONTRIBUTION_OUTPUT,) if CONTRIBUTION_OUTPUT in self.outputs else ()
        )

    def run(
        self,
        trials: np.ndarray,
        subject: tuple[np.ndarray, np.ndarray] | None = None,
        outputs: list[str] | tuple[str, ...] | None = None,
    ) -> dict[str, np.ndarray]:
        """One onnxruntime call on (N, n_regions, n_times) trials (or one (n_regions, n_times)
        trial) of any real numeric dtype, byte order or memory layout → {output name: array}.
        ``subject``: a participant's (mean, scale) alignment statistics (see :meth:`represent`);
        None for the graph's defaults, the training population's. A wrong shape or dtype raises
        :class:`~fmri_edge.data.InputError`, never onnxruntime's error. ``outputs``: default
        :attr:`run_outputs`."""
        outputs = self.run_outputs if outputs is None else outputs
        feeds = {self.input_name: self.as_input(trials)}
        if subject is not None and self.aligned:
            feeds.update(
                {
                    n: np.ascontiguousarray(v, dtype=np.float32)
                    for n, v in zip(ALIGN_INPUTS, subject)
                }
            )
        outs = self.session.run(list(outputs), feeds)
        return dict(zip(outputs, outs))

    def represent(self, trials: np.ndarray) -> np.ndarray:
        """The per-trial representation that subject alignment is computed over (graph output
        ``normalized``: (N, …) laid out as the metadata's ``normalized_axes`` say)."""
        return self.session.run(["normalized"], {self.input_name: self.as_input(trials)})[0]

    def as_input(self, trials, name: str = "trials array") -> np.ndarray:
        """Checked C-contiguous native float32 (N, n_regions, n_times): no copy when it already is."""
        if (
            type(trials) is np.ndarray
            and trials.dtype == np.float32
            and trials.ndim == 3
            and trials.shape[0]
            and trials.shape[1:] == (self.info.n_regions, self.info.n_times)
            and trials.flags.c_contiguous
        ):
            return trials  # already what the graph takes (the common case, checked in ~1 µs)
        from fmri_edge.data import io

        arr = trials if isinstance(trials, np.ndarray) else np.asarray(trials)
        return io.to_float32(io.check_trials(arr, name, self.info.n_regions, self.info.n_times))
