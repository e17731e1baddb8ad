"""The benchmark and the speed work: bench runs end to end on tiny settings and writes its keys,
FLOPs counted from the graph agree with the PyTorch layers, int8 quantization keeps the answers,
streamed prediction keeps memory bounded without changing a single answer.

No test asserts a wall time: timings on a shared machine say nothing about correctness.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fmri_edge.model.normalize import subject_normalize
from fmri_edge.decoding.answers import SubjectStats, release_pages
from fmri_edge.simulation.simulate import simulate
from tests.conftest import qdq_in_float


# ---- numpy-only parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zscore", "center", "none"])
def test_streamed_subject_normalization_equals_whole_file(mode):
    x = simulate(70, seed=3)[0]
    stats = SubjectStats(mode)
    for i in range(0, len(x), 16):
        stats.add(x[i : i + 16])
    got = np.concatenate([stats.apply(x[i : i + 16]) for i in range(0, len(x), 16)])
    np.testing.assert_allclose(got, subject_normalize(x, mode), rtol=0, atol=1e-5)


def test_subject_stats_refuses_unknown_mode():
    with pytest.raises(ValueError, match="unknown subject normalization"):
        SubjectStats("minmax")


def test_release_pages_keeps_values_and_ignores_plain_arrays(tmp_path):
    x = simulate(40, seed=1)[0]
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    release_pages(mm[:25])  # consumed pages leave memory …
    np.testing.assert_array_equal(mm, x)  # … and come back from the file when touched again
    release_pages(mm[:, :, :10])  # strided views are fine
    release_pages(x[:10])  # not memory-mapped: nothing to do
    release_pages(mm[:0])
    np.testing.assert_array_equal(mm, x)


# ---- with a model ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A freshly initialised small network saved as a run folder, and its ONNX export."""
    pytest.importorskip("torch")
    from fmri_edge.training.checkpoints import random_run
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import load_checkpoint

    root = tmp_path_factory.mktemp("bench")
    run = random_run(root / "run", widths=(8, 16, 16), dense=(32, 16), normalization="minmax_trial")
    model, _ = load_checkpoint(run / "model.pt")
    x = simulate(64, seed=2)[0]
    onnx_path = root / "tiny.onnx"
    export_onnx([model], onnx_path, {"model_version": "tiny", "level_rule": "argmax"}, x)
    return run, onnx_path


def test_flops_from_graph_equal_flops_from_layers(tiny_run):
    from fmri_edge.training.bench.flops import flops_onnx, flops_torch
    from fmri_edge.training.checkpoints import reference_net as load_reference

    run, onnx_path = tiny_run
    _, members, _, _ = load_reference(run)
    f = flops_onnx(onnx_path)
    w1, w2, w3 = 8, 16, 16
    convs = 2 * 3 * 25 * (246 * w1 + w1 * w2 + 246 * w2 + w2 * w3 + 246 * w3 + w1 * w3)
    # the export computes convolutions as GEMMs (channels-last): same multiply-adds, other op names;
    # the adaptation head adds features @ adapt_weight (F × 3) and the LEVEL reweighting (3 × 9)
    head = 2 * 3 * (members[0].final_layer.in_features + 9)
    assert f["per_trial"] == flops_torch(members, 25) + head > convs + head
    assert sum(f["by_op"].values()) == f["per_trial"]
    assert f["parameters"] > 0


def test_int8_model_opens_answers_alike_and_says_so(tiny_run, tmp_path, monkeypatch):
    from fmri_edge.model.runtime import Model
    from fmri_edge.training.quantize import quantize_int8

    _, fp32 = tiny_run
    x = simulate(100, n_subjects=2, seed=4)[0]
    recipe = quantize_int8(fp32, tmp_path / "tiny.int8.onnx", x, "200 simulated trials")
    q, f = Model(tmp_path / "tiny.int8.onnx"), Model(fp32)
    assert q.info.meta["precision"] == "int8" and q.info.meta["quantization"]["format"] == "QDQ"
    assert recipe["calibration_trials"] == 200 and q.info.n_regions == f.info.n_regions
    a, b = q.run(x), f.run(x)
    assert a["class_probs"].shape == b["class_probs"].shape
    assert np.isfinite(a["class_probs"]).all() and np.allclose(
        a["class_probs"].sum(1), 1, atol=1e-5
    )
    # how close this CPU's int8 kernels come is the bench's to measure (cv_accuracy_change); the
    # quantized model's own arithmetic, computed in float, is the same on every CPU
    qdq_in_float(monkeypatch)
    a = Model(tmp_path / "tiny.int8.onnx").run(x)
    assert np.mean(a["class_probs"].argmax(1) == b["class_probs"].argmax(1)) >= 0.9
    assert np.abs(a["class_probs"] - b["class_probs"]).max() < 0.2


def test_int8_of_a_linear_graph_quantizes_only_its_gemm(aligned_model, tmp_path, monkeypatch):
    """The fused linear graph's MatMul projects raw BOLD over time: it stays float32 (and so does
    the input); its final Gemm becomes int8 and the answers stay the same."""
    import onnx

    from fmri_edge.model.runtime import Model
    from fmri_edge.training.quantize import quantize_int8, quantized_ops

    assert quantized_ops(onnx.load(str(aligned_model))) == ["Gemm"]
    x = simulate(60, n_subjects=2, seed=5)[0]
    recipe = quantize_int8(aligned_model, tmp_path / "lin.int8.onnx", x, "120 simulated trials")
    nodes = onnx.load(str(tmp_path / "lin.int8.onnx")).graph.node
    assert recipe["ops"] == ["Gemm"] and any(n.op_type == "QuantizeLinear" for n in nodes)
    assert not any(
        n.op_type == "QuantizeLinear" and "trials" in n.input for n in nodes
    )  # raw BOLD stays fp32
    a, b = Model(tmp_path / "lin.int8.onnx").run(x), Model(aligned_model).run(x)
    assert np.isfinite(a["class_probs"]).all() and np.allclose(
        a["class_probs"].sum(1), 1, atol=1e-5
    )
    qdq_in_float(
        monkeypatch
    )  # the agreement of the quantized arithmetic itself, not of this CPU's kernels
    a = Model(tmp_path / "lin.int8.onnx").run(x)
    assert np.mean(a["class_probs"].argmax(1) == b["class_probs"].argmax(1)) >= 0.95


def test_predict_streams_subject_normalized_file_like_the_whole_file(tiny_run, tmp_path):
    """A model with subject-wise normalization: two streamed passes give the answers of
    normalizing the whole file at once, whatever the chunk size."""
    import onnx

    from fmri_edge.decoding.answers import predict_to
    from fmri_edge.model.runtime import METADATA_KEY, Model

    _, fp32 = tiny_run
    m = onnx.load(str(fp32))
    for p in m.metadata_props:
        if p.key == METADATA_KEY:
            meta = json.loads(p.value)
            meta["subject_normalization"] = "zscore"
            p.value = json.dumps(meta)
    onnx.save(m, str(tmp_path / "subj.onnx"))
    dec = Model(tmp_path / "subj.onnx")
    x = simulate(90, seed=5)[0]
    np.save(tmp_path / "P01.npy", x)
    want = dec.run(subject_normalize(x, "zscore"))["class_probs"]
    for batch in (7, 64, 1000):
        with open(tmp_path / "p.csv", "w", newline="") as f:
            summary = predict_to(dec, [tmp_path / "P01.npy"], f, batch_size=batch, probs=True)
        rows = list(csv.DictReader(open(tmp_path / "p.csv")))
        assert summary.n_trials == 90 and [int(r["Trial"]) for r in rows] == list(range(1, 91))
        got = np.array(
            [[float(r[k]) for k in ("p_negative", "p_neutral", "p_positive")] for r in rows]
        )
        np.testing.assert_allclose(got, want, atol=1e-4 + 1e-6)


def test_bench_runs_on_tiny_settings_and_writes_every_key(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from fmri_edge.cli import app
    from fmri_edge.training.bench.schema import schema_errors

    run, fp32 = tiny_run
    out = tmp_path / "bench.json"
    md = tmp_path / "speed.md"
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "--run",
            str(run),
            "--model",
            str(fp32),
            "--batches",
            "1,4",
            "--seconds",
            "0.01",
            "--rounds",
            "1",
            "--cold-runs",
            "1",
            "--large-trials",
            "40",
            "--threads",
            "1",
            "--data",
            str(tmp_path / "no-data"),
            "--gemm-sizes",
            "128",
            "--json",
            str(out),
            "--markdown",
            str(md),
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    for key in (
        "machine",
        "model",
        "flops",
        "gemm",
        "engines",
        "efficiency",
        "ratios",
        "model_only_best",
        "session_options",
        "batch_sweep",
        "cold_start",
        "import_time",
        "large_input",
        "targets",
        "engines_by_policy",
        "ratios_by_policy",
        "profile",
    ):
        assert key in r, key
    assert set(r["engines"]) == {"ort-fp32", "ort-int8", "torch", "torch-graph"}
    assert set(r["engines_by_policy"]) == {"spinning off", "spinning on"}
    assert r["profile"]["nodes"] and abs(sum(n["share"] for n in r["profile"]["nodes"]) - 1) < 0.01
    assert (
        set(r["engines"]["torch"]) == {"1", "4"}
        and r["engines"]["ort-fp32"]["4"]["trials_per_s"] > 0
    )
    assert set(r["ratios"]) >= {"ort_fp32_vs_torch", "ort_int8_vs_fp32"}
    assert r["model"]["parity_max_abs_diff_vs_torch"] < 1e-4
    # the graph also computes the adaptation head (counted exactly in test_flops_from_graph_equal_flops_from_layers)
    assert r["flops"]["per_trial"] > r["flops"]["per_trial_torch_layers"] > 0
    assert r["large_input"]["csv_rows"] == 40 and r["large_input"]["peak_rss_mb"] > 0
    assert r["cold_start"]["same_answers"] == 1.0
    assert (
        r["import_time"]["predict"]["heavy_modules_imported"] == []
    )  # no torch/onnx behind the CLI
    assert r["import_time"]["help"]["exit_code"] == 0
    assert "simulated" in r["inputs"]
    assert {t["target"] for t in r["targets"]} and "| engine |" in md.read_text()
    assert "fmri-edge bench" in res.stdout
    assert schema_errors(r) == []


def test_the_shipped_bench_json_is_what_the_schema_says():
    from fmri_edge.training.bench.schema import schema_errors

    shipped = json.loads((Path(__file__).parents[1] / "docs" / "bench.json").read_text())
    assert schema_errors(shipped) == []
    assert schema_errors({**shipped, "extra": 1, "threads": "2"}) == [
        "result.extra: not in BenchResult",
        "result.threads: expected int, got str",
    ]


def test_bench_refuses_a_model_with_other_weights(tiny_run, tmp_path):
    from fmri_edge.training.bench.run import BenchConfig, run_bench
    from fmri_edge.training.checkpoints import random_run

    _, fp32 = tiny_run
    other = random_run(
        tmp_path / "other", seed=1, widths=(8, 16, 16), dense=(32, 16), normalization="minmax_trial"
    )
    with pytest.raises(ValueError, match="not the same weights"):
        run_bench(
            BenchConfig(
                run=other,
                model=fp32,
                data=tmp_path / "none",
                batches=(1,),
                seconds=0.01,
                rounds=1,
                cold_runs=0,
                large_trials=0,
                sweep=False,
                gemm_sizes=(64,),
                engines=("ort-fp32",),
            )
        )


def test_int8_accuracy_change_on_held_out_participants_of_each_fold(tmp_path):
    """Each fold model is exported fp32 and int8 and scored on its own held-out participants only."""
    pytest.importorskip("torch")
    from fmri_edge.training.fit import load_checkpoint, save_checkpoint
    from fmri_edge.training.quantize import cv_accuracy_change, int8_verdict
    from fmri_edge.training.checkpoints import random_run
    from tests.conftest import write_icbhi

    x, y, subj = simulate(30, n_subjects=3, seed=6)
    for s in range(3):
        write_icbhi(tmp_path / "data", x[subj == s], y[subj == s], f"P0{s + 1}")
    run = tmp_path / "run"
    for k, held_out in enumerate((["P01"], ["P02", "P03"])):
        random_run(tmp_path / f"init{k}", seed=k, widths=(8, 16, 16), dense=(32, 16))
        model, _ = load_checkpoint(tmp_path / f"init{k}" / "model.pt")
        run.mkdir(exist_ok=True)
        save_checkpoint(
            model,
            run / f"fold{k}.pt",
            fold=f"test {'+'.join(held_out)}",
            test_participants=held_out,
        )
    cv = cv_accuracy_change(run, tmp_path / "data")
    assert cv["n_folds"] == 2 and cv["n_trials"] == 90
    assert [r["n_trials"] for r in cv["folds"]] == [30, 60]
    change = cv["pooled"]["int8"]["CLASS_accuracy"] - cv["pooled"]["fp32"]["CLASS_accuracy"]
    assert cv["accuracy_change_points"] == round(100 * change, 2)
    assert (
        0 <= cv["class_agreement"] <= 1 and cv["fp32_vs_training_predictions_max_abs_diff"] is None
    )
    slow = int8_verdict({"speedup": 1.1}, cv)
    assert slow["default"] == "fp32" and any("1.5" in r for r in slow["reasons"])
    assert int8_verdict({"speedup": 2.0}, None)["default"] == "fp32"


def test_bench_module_imports_neither_torch_nor_onnx():
    import subprocess
    import sys

    modules = ", ".join(
        f"fmri_edge.training.bench.{m}"
        for m in (
            "run",
            "render",
            "schema",
            "timing",
            "coldstart",
            "flops",
            "probe",
            "targets",
            "gemm_rate",
            "process_usage",
        )
    )
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {modules}, fmri_edge.decoding.answers; "
            "print([m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.strip() == "[]"


def test_flops_of_a_linear_ensemble_by_hand(tmp_path):
    """The fused linear graph: one (T'+1)×T projection per region, one GEMM for all members."""
    pytest.importorskip("torch")
    from fmri_edge.training.bench.flops import efficiency, flops_onnx, gemm_nodes
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.checkpoints import load_members

    run = random_run_linear(tmp_path)
    members, _, _ = load_members(run)
    export_onnx(
        members,
        tmp_path / "lin.onnx",
        {"model_version": "lin", "level_rule": "argmax"},
        simulate(64, seed=2)[0],
    )
    f = flops_onnx(tmp_path / "lin.onnx")
    projection = 2 * (5 + 1) * 25 * 246  # 5 bins and the trial mean, each over the 25 s of a region
    gemm = 2 * (246 * 5) * (2 * 3)  # 2 members × 3 classes
    class_to_level = 2 * 3 * 9
    head = 2 * (246 * 5) * 3  # the adaptation head's features @ adapt_weight
    assert f["per_trial"] == projection + gemm + class_to_level + head
    nodes, _, _ = gemm_nodes(tmp_path / "lin.onnx", 8)
    assert sorted((n["m"], n["k"], n["n"]) for n in nodes) == sorted(
        [(8 * 6, 25, 246), (8, 1230, 6), (8, 3, 9), (8, 1230, 3)]
    )
    e = efficiency(1000.0, 2e6, 10.0)
    assert e == {"gflops": 2.0, "pct_of_gemm_peak": 20.0}


def random_run_linear(tmp_path):
    from fmri_edge.training.checkpoints import random_run

    return random_run(
        tmp_path / "lin",
        n_members=2,
        kind="linear",
        heads={"class": 3},
        se=False,
        normalization="psc_mean",
        time_window=[5, 25],
        time_bins=5,
    )


def test_markdown_section_replaces_only_the_marked_block(tmp_path):
    from fmri_edge.training.bench.render import MD_END, MD_START, write_markdown

    doc = tmp_path / "speed.md"
    doc.write_text(f"# Speed\nprose\n{MD_START}\nold table\n{MD_END}\nmore prose\n")
    write_markdown(doc, "| new table |\n")
    assert doc.read_text() == f"# Speed\nprose\n{MD_START}\n| new table |\n{MD_END}\nmore prose\n"
    write_markdown(tmp_path / "new.md", "| t |\n")
    assert (tmp_path / "new.md").read_text() == "| t |\n"


@pytest.mark.parametrize(
    "config",
    [
        {},  # the paper's defaults
        {
            "heads": {"class": 3},
            "normalization": "zscore_region",
            "time_window": [5, 25],
            "dropout": 0.5,
        },
        {"se": False, "normalization": "baseline_z"},  # vanilla ablation
        {"region_idx": [14, 15, 86, 87], "normalization": "baseline_sub"},  # EBR ablation
        {"widths": (8, 16, 24), "dense": (32, 16), "n_times": 20},
    ],
)
def test_channels_last_network_answers_like_the_original(config):
    torch = pytest.importorskip("torch")
    from fmri_edge.training.fused import ChannelsLast, for_inference
    from fmri_edge.training.model import ModelConfig, build_model

    torch.manual_seed(0)
    m = build_model(ModelConfig(**config)).eval()
    for mod in m.modules():  # trained-looking batch norms, not the identity
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    x = simulate(20, n_times=m.cfg.n_times, seed=8)[0]
    fast = ChannelsLast(m)
    with torch.inference_mode():
        want, got = m(torch.from_numpy(x)), fast(torch.from_numpy(x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert isinstance(for_inference([m], x)[0], ChannelsLast)


def test_for_inference_keeps_a_network_it_cannot_reproduce(monkeypatch):
    pytest.importorskip("torch")
    from fmri_edge.training import fused
    from fmri_edge.training.model import ModelConfig, build_model

    m = build_model(ModelConfig(widths=(8, 16, 16), dense=(32, 16))).eval()
    x = simulate(8, seed=9)[0]
    monkeypatch.setattr(
        fused, "unfold", lambda t, k: fused.F.pad(t, (0, 0, 0, 0)).repeat(1, 1, k) * 0.5
    )
    messages = []
    assert fused.for_inference([m], x, log=messages.append)[0] is m and "differs" in messages[0]


def test_paired_ratio_spread_pairs_rounds_in_order():
    from fmri_edge.training.bench.timing import paired_ratio_spread

    timing = {
        "a": {256: {"rounds_trials_per_s": [100.0, 300.0, 200.0]}},
        "b": {256: {"rounds_trials_per_s": [100.0, 100.0, 400.0]}},
    }
    assert paired_ratio_spread(timing, "a", "b", [256]) == {
        "256": {"min": 0.5, "median": 1.0, "max": 3.0}
    }


@pytest.fixture(scope="module")
def level_fp32(sim_data, tmp_path_factory):
    """A model of the shipped kind (aligned, with the sustained level) trained on simulated
    subjects 0-3, its graph defaults set far from every participant's own statistics (as the
    population's sustained level was from each participant's before that step became neutral by
    default). Aligned answers do not depend on the defaults."""
    from fmri_edge.training.onnx_export import export_onnx
    from fmri_edge.training.fit import fit
    from tests.conftest import level_recipe

    x, y, subj = sim_data
    tr = subj < 4
    model = fit(level_recipe(), x[tr], y[tr], participants=subj[tr]).model
    model.pop_mean += 40.0
    path = tmp_path_factory.mktemp("level") / "level.onnx"
    export_onnx(
        [model], path, {"model_version": "t", "region_names": [f"R{i}" for i in range(246)]}, x[:64]
    )
    return path


def test_int8_calibration_feeds_each_participant_its_own_statistics(level_fp32, sim_data):
    """The calibration reader gives the graph what predict gives it: each batch holds one
    participant's trials and, as alignment inputs, that participant's own mean and scale over all of
    its trials (computed here independently, in float64); without participants, no alignment
    inputs (the graph's defaults). Nothing here depends on the CPU's int8 kernels."""
    from fmri_edge.model.normalize import EPS
    from fmri_edge.model.runtime import ALIGN_INPUTS, Model
    from fmri_edge.training.quantize import _Trials

    x, _, subj = sim_data
    decoder = Model(level_fp32)
    reader = _Trials(level_fp32, decoder.input_name, x, participants=subj, batch=8)
    seen = {p: 0 for p in np.unique(subj)}
    while (feeds := reader.get_next()) is not None:
        batch = feeds[decoder.input_name]
        rows = [int(np.flatnonzero((x == t).all(axis=(1, 2)))[0]) for t in batch]
        (p,) = set(subj[rows].tolist())  # one participant per batch
        rep = decoder.represent(x[subj == p]).astype(np.float64)  # all of its trials
        np.testing.assert_allclose(feeds[ALIGN_INPUTS[0]], rep.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(feeds[ALIGN_INPUTS[1]], rep.std(0) + EPS, rtol=1e-5, atol=1e-5)
        seen[p] += len(rows)
    assert seen == {p: int((subj == p).sum()) for p in seen}  # every trial, once
    plain = _Trials(level_fp32, decoder.input_name, x, batch=64)
    first = plain.get_next()
    assert set(first) == {decoder.input_name} and len(first[decoder.input_name]) == 64


@pytest.mark.parametrize("kernels", ["this CPU's int8 kernels", "QDQ computed in float"])
def test_int8_calibrated_per_participant_answers_at_least_as_close_as_on_defaults(
    level_fp32, sim_data, tmp_path, monkeypatch, kernels
):
    """Calibrated on each participant aligned (as predict feeds the graph), int8 agrees with fp32 at
    least as well as int8 calibrated on the graph's defaults, on the same machine. Both sides of the
    comparison run on the same kernels, so it holds whichever kernels a CPU picks (AVX2, AVX-512
    VNNI, AMX): no margin measured on one machine is asserted. The second case runs the quantized
    graph unfused (``session.disable_quant_qdq``: Q/DQ pairs computed in float, no int8 kernels at
    all), the same numbers on every x86-64 CPU."""
    from fmri_edge.decoding.answers import run_by_participant
    from fmri_edge.model.runtime import Model
    from fmri_edge.training.quantize import quantize_int8

    x, _, subj = sim_data
    tr = subj < 4
    quantize_int8(level_fp32, tmp_path / "aligned.int8.onnx", x[tr], "sim", participants=subj[tr])
    quantize_int8(level_fp32, tmp_path / "defaults.int8.onnx", x[tr], "sim")
    if kernels == "QDQ computed in float":
        qdq_in_float(monkeypatch)
    ref = run_by_participant(Model(level_fp32), x[~tr], subj[~tr])["class_probs"]
    got = {
        k: run_by_participant(Model(tmp_path / f"{k}.int8.onnx"), x[~tr], subj[~tr])["class_probs"]
        for k in ("aligned", "defaults")
    }
    diff = {k: float(np.abs(v - ref).mean()) for k, v in got.items()}
    agree = {k: float(np.mean(v.argmax(1) == ref.argmax(1))) for k, v in got.items()}
    assert agree["aligned"] >= agree["defaults"] and diff["aligned"] <= diff["defaults"], (
        kernels,
        agree,
        diff,
    )
