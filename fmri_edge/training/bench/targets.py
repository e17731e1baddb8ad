"""The goals a benchmark run is held to, and each one's measured value and verdict."""

from __future__ import annotations

# The targets a benchmark run is held to (ratios from one run; end-to-end and memory): docs/speed.md.
TARGETS = {
    "ort_vs_torch_b1": 4.0,
    "ort_vs_torch_b32": 1.2,
    "ort_vs_torch_b256": 1.2,
    "ort_vs_torch_b4096": 1.2,
    "int8_vs_fp32_b256": 1.5,
    "int8_acc_change_points": -1.0,
    "cold_start_s": 0.35,
    "cold_start_vs_torch_import": 0.2,
    "help_s": 0.15,
    "e2e_vs_model_only": 0.60,
    "large_peak_rss_mb": 400.0,
}


def check_targets(res: dict) -> list[dict]:
    """Each target with its measured value and whether it is met (None: not measured). Engine
    ratios are the headline thread policy's, against PyTorch running the trained network and
    against PyTorch running the exported graph's form (like for like)."""
    out = []

    def add(name, value, target, op, unit=""):
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"target": name, "value": value, "goal": f"{op} {target}{unit}", "met": met})

    for policy, r in (res.get("ratios_by_policy") or {"": res.get("ratios", {})}).items():
        for b in ("1", "32", "256", "4096"):
            for key, what in (
                ("ort_fp32_vs_torch", "PyTorch"),
                ("ort_fp32_vs_torch_graph", "PyTorch (graph form)"),
            ):
                if b in r.get(key, {}):
                    add(
                        f"onnxruntime fp32 / {what}, batch {b}, {policy}",
                        r[key][b],
                        TARGETS[f"ort_vs_torch_b{b}"],
                        ">=",
                        "×",
                    )
        if "256" in r.get("ort_int8_vs_fp32", {}):
            add(
                f"int8 / fp32, batch 256, {policy}",
                r["ort_int8_vs_fp32"]["256"],
                TARGETS["int8_vs_fp32_b256"],
                ">=",
                "×",
            )
    cv = res.get("int8_cv") or {}
    add(
        "int8 CLASS accuracy change (CV, points)",
        cv.get("accuracy_change_points"),
        TARGETS["int8_acc_change_points"],
        ">=",
    )
    cold = res.get("cold_start") or {}
    med = cold.get("median_s") or {}
    add(
        "fmri-edge predict, 30 trials, cold (s)",
        med.get("fmri-edge predict"),
        TARGETS["cold_start_s"],
        "<=",
        " s",
    )
    add(
        "fmri-edge predict / python -c 'import torch'",
        cold.get("ratio_vs_import_torch"),
        TARGETS["cold_start_vs_torch_import"],
        "<=",
        "×",
    )
    add("fmri-edge --help (s)", med.get("fmri-edge --help"), TARGETS["help_s"], "<=", " s")
    large = res.get("large_input") or {}
    add(
        "end-to-end predict / model-only best",
        large.get("vs_model_only_best"),
        TARGETS["e2e_vs_model_only"],
        ">=",
        "×",
    )
    add(
        "peak RSS of predict on the large input (MB)",
        large.get("peak_rss_mb"),
        TARGETS["large_peak_rss_mb"],
        "<=",
        " MB",
    )
    return out
