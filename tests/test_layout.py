"""The runtime/training boundary is visible and enforced: every module of the runtime package
(fmri_edge, fmri_edge.cli) imports nothing of torch and nothing from fmri_edge.training — not
even lazily, except the CLI's training-side commands (fmri_edge.cli.build) — and no module of
the package imports one that imports it back."""

import ast
import subprocess
import sys
from pathlib import Path

import fmri_edge

ROOT = Path(fmri_edge.__file__).parent
TRAINING = "fmri_edge.training"
LAZY_TRAINING_OK = {
    "fmri_edge.cli.build"
}  # its command bodies import the training side (torch) when run


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name: str, path: Path) -> set[str]:
    """Every fmri_edge/torch module a file imports, at module level or inside functions."""
    out = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            subs = {
                f"{base}.{a.name}" for a in node.names
            }  # `from fmri_edge import valence` imports fmri_edge.valence
            out |= subs
            if not subs <= set(
                MODULES
            ):  # and the package itself only when a name is not a module of it
                out.add(base)
    return {m for m in out if m.split(".")[0] in ("fmri_edge", "torch")}


MODULES = dict(_modules())
RUNTIME = [m for m in MODULES if not m.startswith(TRAINING)]


def test_runtime_modules_never_import_torch_or_the_training_side():
    bad = {}
    for m in RUNTIME:
        imported = _imports(m, MODULES[m])
        hits = [
            i
            for i in imported
            if (i.split(".")[0] == "torch" or i.startswith(TRAINING)) and m not in LAZY_TRAINING_OK
        ]
        if hits:
            bad[m] = sorted(hits)
    assert not bad, bad
    assert len(RUNTIME) > 15 and "fmri_edge.cli.decode" in RUNTIME


def test_importing_every_runtime_module_loads_no_torch():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in RUNTIME if not m.endswith("__main__"))
        + "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('fmri_edge.training')]\n"
        "print(bad)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_no_import_cycles_in_the_package():
    graph = {m: {i for i in _imports(m, p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # a module's parent package runs first but is not an edge: `import fmri_edge.x` is not a cycle through fmri_edge
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_training_side_holds_bench_report_and_quantize():
    for m in ("bench", "report", "quantize", "checkpoints", "onnx_export", "fit"):
        assert f"{TRAINING}.{m}" in MODULES
    for m in ("fmri_edge.bench", "fmri_edge.report"):
        assert m not in MODULES


def test_the_cli_loads_neither_numpy_nor_rich_before_a_command_runs():
    """So `--help` stays fast and the console script can still set OPENBLAS_NUM_THREADS."""
    code = "import sys, fmri_edge.cli; print(sorted(m for m in ('numpy', 'rich', 'onnxruntime') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_console_script_gives_openblas_one_thread_for_runtime_commands_only():
    code = (
        "import os, sys, fmri_edge.cli as c; c.app = lambda **kw: print(os.environ.get('OPENBLAS_NUM_THREADS')); "
        "sys.argv = ['fmri-edge'] + sys.argv[1:]; c.run()"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def blas_threads(*args):
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env
        ).stdout.strip()

    assert blas_threads("--debug", "predict", "x.npy") == "1"
    assert blas_threads("train", "--config", "r.toml") == "None"
    env["OPENBLAS_NUM_THREADS"] = "4"  # the user's own setting wins
    assert blas_threads("predict", "x.npy") == "4"


def test_console_script_keeps_exit_codes_and_all_output_when_it_skips_teardown(sim_model, tmp_path):
    """Runtime commands end with os._exit (no interpreter teardown): exit codes, every line on
    stdout and stderr, and the files they wrote are complete."""
    import numpy as np

    from fmri_edge.simulation.simulate import simulate

    x = tmp_path / "t.npy"
    np.save(x, simulate(40, seed=3)[0])
    cli = [sys.executable, "-m", "fmri_edge.cli"]
    ok = subprocess.run(
        [
            *cli,
            "predict",
            str(x),
            "--model",
            str(sim_model),
            "--out",
            str(tmp_path / "o.csv"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and len(__import__("json").loads(ok.stdout)["predictions"]) == 40
    assert "wrote 40 rows" in ok.stderr and len((tmp_path / "o.csv").read_text().splitlines()) == 41
    bad = subprocess.run(
        [*cli, "predict", str(tmp_path / "missing.npy")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "missing.npy: no such file or folder"
    )
    usage = subprocess.run([*cli, "predict"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


# ---- the house: concept folders in layers; an import only ever goes down ------------------------
LAYERS = [
    {"errors"},
    {"files", "valence", "scheduler"},
    {"data"},  # trials files, the submission CSV
    {"model"},  # the ONNX file: runtime, metadata, alignment, integrity, editing
    {"imaging", "evaluation"},  # NIfTI/DICOM/events/atlas/window/extract; scores and splits
    {
        "decoding",
        "simulation",
    },  # answers for files, on Dask, adaptation, the Decoder; simulated data
    {"explanation", "realtime"},  # region contributions and brain maps; the live stream
    {"face"},  # fmri_edge/__init__: the public names, imported lazily
    {"training"},  # torch: fit, export (never imported by the runtime)
    {"cli"},  # the commands, thin over the layers below
]
FOLDERS = {
    "data",
    "model",
    "decoding",
    "imaging",
    "realtime",
    "simulation",
    "explanation",
    "evaluation",
    "cli",
    "training",
    "models",
}


def _unit(module: str) -> str:
    parts = module.split(".")
    if module == "fmri_edge":
        return "face"
    return parts[1]


def _layer(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def test_every_module_lives_in_a_layer_and_imports_only_downwards():
    """model/ never imports decoding/, imaging/ or realtime/; data/ never imports model/; nothing
    imports the face or the CLI back (the CLI and training may import the version)."""
    up = []
    for m, path in MODULES.items():
        for i in _imports(m, path):
            if i not in MODULES or _unit(i) == _unit(m) or i.split(".")[0] == "torch":
                continue
            if i == "fmri_edge" and _unit(m) == "training":
                continue  # `from fmri_edge import __version__`
            if _layer(_unit(i)) >= _layer(_unit(m)):
                up.append(f"{m} -> {i}")
    assert not up, up


def test_the_top_of_the_package_holds_the_face_and_concept_folders_only():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= 8, top
    assert {"__init__.py", "errors.py", "files.py", "valence.py", "scheduler.py"} <= set(top)
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= FOLDERS, folders - FOLDERS


def test_no_module_is_longer_than_600_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_importing_the_package_imports_no_numpy_until_a_name_is_used():
    code = (
        "import sys, fmri_edge; a = 'numpy' in sys.modules; fmri_edge.Decoder; "
        "print(a, 'numpy' in sys.modules, 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "True", "False"]
