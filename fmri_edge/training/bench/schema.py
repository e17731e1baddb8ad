"""The result of one benchmark run: what ``fmri-edge bench --json`` writes (docs/bench.json) and what
the renderers read. A JSON-ready dict typed section by section; a key marked ``NotRequired`` is
absent when its measurement was skipped. Keys of per-batch tables are batch sizes as strings
("1", "256"), keys of per-engine tables are names from ``timing.ENGINES``, keys of per-policy
tables are names from ``timing.THREAD_POLICIES``. :func:`schema_errors` checks a result against it.
"""

import types
import typing
from typing import Any, NotRequired, TypedDict, Union


class Machine(TypedDict):
    cpu: str
    logical_cpus: int | None
    platform: str
    simd: list[str]  # the SIMD extensions that matter for GEMM (avx2, fma, avx512f, …)
    memory_gb: float | None
    versions: dict[str, str]  # python, numpy, onnxruntime, torch, onnx
    date: str
    load_average_start: list[float]  # 1/5/15 min
    load_average_end: NotRequired[list[float]]


class AgreementInt8(TypedDict):
    class_agreement: float  # fraction of trials with the same CLASS as fp32
    level_agreement: float
    max_abs_diff_class_probs: float
    trials: int


class ModelInfo(TypedDict):
    fp32: str
    fp32_bytes: int
    sha256: str
    members: int  # networks in the graph (ensembles: more than one)
    parity_max_abs_diff_vs_torch: float
    int8: NotRequired[str]
    int8_bytes: NotRequired[int]
    int8_quantization: NotRequired[dict | None]
    int8_vs_fp32: NotRequired[AgreementInt8]


class Flops(TypedDict):
    per_trial: int  # 2 × multiply-adds of Conv, Gemm, MatMul at batch 1
    by_op: dict[str, int]
    other_elements: int  # output elements of every other op (not FLOPs)
    parameters: int
    method: str
    per_trial_torch_layers: (
        int  # the same count from the PyTorch layers (without the adaptation head)
    )


class GemmProduct(TypedDict):
    m: int
    k: int
    n: int
    seconds: float
    gflops: float


class ModelShapes(TypedDict):
    products: list[GemmProduct]
    seconds: float
    gflops: float
    method: str


class Gemm(TypedDict):
    gflops: float  # the practical peak: numpy's best median over the square sizes
    size: int
    sizes: dict[str, dict[str, float]]
    threads: int
    method: str
    model_shapes: NotRequired[ModelShapes]
    onnxruntime_matmul: NotRequired[dict[str, Any]]


class EngineStats(TypedDict):
    trials_per_s: float
    ms_per_call: float
    ms_per_call_p10: float
    ms_per_call_p90: float
    calls: int
    rounds_trials_per_s: NotRequired[list[float]]


class Efficiency(TypedDict):
    gflops: float
    pct_of_gemm_peak: float | None


class Spread(TypedDict):
    min: float
    median: float
    max: float


class ModelOnlyBest(TypedDict):
    batch: int
    trials_per_s: float
    pct_of_gemm_peak: float | None
    pct_of_model_shape_peak_b256: NotRequired[float | None]


class ProfileNode(TypedDict):
    node: str
    op: str
    us_per_call: float
    share: float
    output_shapes: list


class Profile(TypedDict):
    batch: int
    calls: int
    threads: int
    wall_ms_per_call: float
    kernel_ms_per_call: float
    nodes: list[ProfileNode]
    by_op: dict[str, float]


class SessionOptions(TypedDict):
    variants: dict[
        str, dict[str, Any]
    ]  # per variant: options, session_open_s, and EngineStats per batch
    relative_to_chosen: dict[str, dict[str, float]]


class BatchSweep(TypedDict):
    trials_per_s: dict[str, float]
    fastest: int
    predict_default: int


class ColdStart(TypedDict):
    median_s: dict[
        str, float
    ]  # per command: fmri-edge predict, pytorch script, fmri-edge --help, import torch
    runs: dict[str, list[float]]
    ratio_fmri_edge_vs_torch: float
    ratio_vs_import_torch: float
    same_answers: float | None
    n_trials: int
    command: str
    bytecode: str
    torch_script: str


class ImportedModule(TypedDict):
    module: str
    cumulative_s: float


class ImportTime(TypedDict):
    command: str
    exit_code: int
    total_s: float
    top: list[ImportedModule]
    heavy_modules_imported: list[str]


class HugeBatch(TypedDict):
    batch_size: int
    wall_s: float
    trials_per_s: float
    peak_rss_mb: float


class LargeInput(TypedDict):
    n_trials: int
    file_bytes: int
    wall_s: float
    trials_per_s: float
    peak_rss_mb: float
    csv_rows: int
    batch_size: int
    command: str
    huge_batch: HugeBatch
    vs_model_only_best: NotRequired[float]


class Target(TypedDict):
    target: str
    value: float | None
    goal: str  # e.g. ">= 1.2×"
    met: bool | None  # None: not measured


class BenchResult(TypedDict):
    machine: Machine
    threads: int
    config: dict[str, Any]  # the BenchConfig of the run
    inputs: NotRequired[str]  # where the trials came from
    model: NotRequired[ModelInfo]
    flops: NotRequired[Flops]
    gemm: NotRequired[Gemm]
    engines_by_policy: NotRequired[dict[str, dict[str, dict[str, EngineStats]]]]
    ratios_by_policy: NotRequired[dict[str, dict[str, dict[str, float]]]]
    ratio_spread_by_policy: NotRequired[dict[str, dict[str, dict[str, Spread]]]]
    policy: NotRequired[str]  # the headline thread policy (the first timed)
    engines: NotRequired[dict[str, dict[str, EngineStats]]]  # the headline policy's
    ratios: NotRequired[dict[str, dict[str, float]]]
    efficiency: NotRequired[dict[str, dict[str, Efficiency]]]
    model_only_best: NotRequired[ModelOnlyBest]
    profile: NotRequired[Profile]
    session_options: NotRequired[SessionOptions]
    batch_sweep: NotRequired[BatchSweep]
    cold_start: NotRequired[ColdStart]
    import_time: NotRequired[dict[str, ImportTime]]
    large_input: NotRequired[LargeInput]
    int8_cv: NotRequired[dict[str, Any]]  # quantize.cv_accuracy_change's report
    targets: NotRequired[list[Target]]
    command: NotRequired[str]  # the command line that produced it


def schema_errors(value: Any, kind: Any = BenchResult, where: str = "result") -> list[str]:
    """Every place where ``value`` (parsed JSON) departs from ``kind``: a missing required key, a
    key the schema does not know, a value of another type. Empty when it conforms."""
    if kind is Any:
        return []
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        options = typing.get_args(kind)
        return (
            []
            if any(not schema_errors(value, k, where) for k in options)
            else [f"{where}: {type(value).__name__} is none of {options}"]
        )
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            return [f"{where}: expected an object ({kind.__name__}), got {type(value).__name__}"]
        hints = typing.get_type_hints(kind)
        errors = [f"{where}.{k}: missing" for k in kind.__required_keys__ if k not in value]
        errors += [f"{where}.{k}: not in {kind.__name__}" for k in value if k not in hints]
        for k, v in value.items():
            if k in hints:
                errors += schema_errors(v, hints[k], f"{where}.{k}")
        return errors
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        _, item = typing.get_args(kind) or (Any, Any)
        return [e for k, v in value.items() for e in schema_errors(v, item, f"{where}[{k!r}]")]
    if origin is list or kind is list:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        (item,) = typing.get_args(kind) or (Any,)
        return [e for i, v in enumerate(value) for e in schema_errors(v, item, f"{where}[{i}]")]
    if kind is type(None):
        return [] if value is None else [f"{where}: expected null, got {type(value).__name__}"]
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    return [] if ok else [f"{where}: expected {kind.__name__}, got {type(value).__name__}"]
