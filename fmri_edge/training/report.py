"""The results report: the paper's table with fmri-edge's own rows, under both protocols.

``fmri-edge report`` reads ``train/report.toml`` (which runs make up each row), trains any run
whose ``runs/<name>/results.json`` is missing, and writes ``docs/results.md`` with PNG plots
(confusion matrices, per-fold accuracy, training curves). Numbers in the README and the model
cards come from here. matplotlib is needed for the plots (the ``plot`` extra).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fmri_edge import valence
from fmri_edge.evaluation import scoring
from fmri_edge.evaluation.splits import PROTOCOL_LABEL

PAPER_ROWS = [  # Lin & Lee, random 8:1:1 split of trials: CLASS P/S/F1, LEVEL P/S/F1
    ("paper, vanilla CNN", "random", (0.59, 0.54, 0.52), (0.19, 0.25, 0.21)),
    ("paper, SE", "random", (0.73, 0.73, 0.73), (0.23, 0.32, 0.26)),
    ("paper, EBR", "random", (0.49, 0.48, 0.47), (0.04, 0.07, 0.05)),
]


@dataclass
class Row:
    label: str
    class_recipe: str
    level_recipe: str


def load_rows(config: Path) -> tuple[list[Row], dict]:
    raw = tomllib.loads(Path(config).read_text())
    rows = [Row(r["label"], r["class"], r.get("level", r["class"])) for r in raw["rows"]]
    return rows, raw


def run_dir(recipe_path: str, runs: Path) -> Path:
    name = tomllib.loads(Path(recipe_path).read_text())["name"]
    return runs / name


def ensure_runs(
    rows: list[Row], runs: Path, log: Callable[[str], None] = print, progress=None
) -> dict[str, dict]:
    """results.json per recipe, training (without the final fit) those that are missing: one line per
    recipe trained (recipe k of n, time so far, estimate), ``progress`` per fit (train's callback)."""
    from fmri_edge.training.progress import RecipeClock

    results = {}
    recipes = list(dict.fromkeys(p for r in rows for p in (r.class_recipe, r.level_recipe)))
    clock = RecipeClock(sum(not (run_dir(p, runs) / "results.json").is_file() for p in recipes))
    for recipe_path in recipes:
        d = run_dir(recipe_path, runs)
        if not (d / "results.json").is_file():
            from fmri_edge.training.recipe import load_recipe
            from fmri_edge.training.run import run

            recipe = load_recipe(recipe_path)
            log(clock.line(f"{recipe.name} ({', '.join(recipe.eval.protocols)})"))
            run(
                recipe,
                recipe.eval.protocols,
                d,
                fit_final=False,
                progress=progress(recipe) if progress else None,
            )
        results[recipe_path] = json.loads((d / "results.json").read_text())
    return results


def _folds_stat(res: dict, protocol: str, task: str, metric: str) -> tuple[float, float] | None:
    p = res["protocols"].get(protocol)
    if p is None:
        return None
    s = p["summary"][task]
    return s[f"{metric}_folds_mean"], s[f"{metric}_folds_std"]


def _fmt(stat) -> str:
    return "—" if stat is None else f"{stat[0]:.2f} ± {stat[1]:.2f}"


def level_errors(res: dict, protocol: str) -> tuple[float, float] | None:
    """Pooled LEVEL_error of the run's LEVEL answers (its LEVEL head, else the class-only rule on
    its CLASS answers) and of the class-only rule applied to its CLASS answers (else to the sign
    of its LEVEL answers)."""
    p = res["protocols"].get(protocol)
    if p is None:
        return None
    preds = p["predictions"]
    truth = np.array([r["LEVEL"] for r in preds])
    lvl, rule = None, res["recipe"]["eval"]["level_rule"]
    if "level_probs" in preds[0]:
        lvl = valence.decide_level(np.array([r["level_probs"] for r in preds]), rule)
    elif (
        "level_mix_probs" in preds[0] and rule == "min_expected_error"
    ):  # class-only, Score-optimal LEVEL
        lvl = valence.decide_level(np.array([r["level_mix_probs"] for r in preds]), rule)
    cls = (
        valence.decide_class(np.array([r["class_probs"] for r in preds]))
        if "class_probs" in preds[0]
        else np.sign(lvl)
    )
    base = np.select([cls < 0, cls > 0], [-3, 2], 0)
    return scoring.level_error(base if lvl is None else lvl, truth), scoring.level_error(
        base, truth
    )


def paper_table(rows: list[Row], results: dict) -> list[str]:
    lines = ["| model | protocol | CLASS P / S / F1 | LEVEL P / S / F1 |", "|---|---|---|---|"]
    for label, protocol, c, lv in PAPER_ROWS:
        lines.append(
            f"| {label} (published) | {PROTOCOL_LABEL[protocol]} | "
            f"{' / '.join(f'{x:.2f}' for x in c)} | {' / '.join(f'{x:.2f}' for x in lv)} |"
        )
    for protocol, r, cr, lr in _measured(rows, results, ("random", "subject")):
        c = " / ".join(
            _fmt(_folds_stat(cr, protocol, "CLASS", m)) for m in ("precision", "sensitivity", "f1")
        )
        lv = " / ".join(
            _fmt(_folds_stat(lr, protocol, "LEVEL", m)) for m in ("precision", "sensitivity", "f1")
        )
        lines.append(f"| {r.label} | {PROTOCOL_LABEL[protocol]} | {c} | {lv} |")
    return lines


def _measured(rows: list[Row], results: dict, protocols):
    """(protocol, row, CLASS recipe's results, LEVEL recipe's results) for every row measured
    under each protocol, protocol by protocol."""
    for protocol in protocols:
        for r in rows:
            cr, lr = results[r.class_recipe], results[r.level_recipe]
            if protocol in cr["protocols"]:
                yield protocol, r, cr, lr


def challenge_table(rows: list[Row], results: dict) -> list[str]:
    lines = [
        "| model | protocol | folds | CLASS acc (pooled) | CLASS acc per fold | CLASS macro-F1 | LEVEL_error | "
        "LEVEL_error, class-only baseline | Score | kept epochs | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for protocol, r, cr, lr in _measured(rows, results, ("subject", "random")):
        s = cr["protocols"][protocol]["summary"]
        level_err = level_errors(lr, protocol)[0]
        base_err = level_errors(cr, protocol)[1]
        score = scoring.score_from_errors(s["CLASS_error"], level_err)
        minutes = (
            cr["protocols"][protocol]["seconds"]
            + (lr["protocols"][protocol]["seconds"] if lr is not cr else 0)
        ) / 60
        lines.append(
            f"| {r.label} | {PROTOCOL_LABEL[protocol]} | {len(cr['protocols'][protocol]['folds'])} | "
            f"{s['CLASS']['accuracy']:.3f} | {s['CLASS']['accuracy_folds_mean']:.3f} ± "
            f"{s['CLASS']['accuracy_folds_std']:.3f} | {s['CLASS']['f1']:.3f} | {level_err:.4f} | "
            f"{base_err:.4f} | {score:.4f} | {_epochs(s['best_epochs'], cr)} | {minutes:.1f} |"
        )
    return lines


def _epochs(best: list[int], res: dict | None = None) -> str:
    """The epochs kept by the networks of a run: all of them, or median [min–max] for many; a
    converged fit (optim.solver = "lbfgs") has no epochs to keep."""
    if ((res or {}).get("recipe") or {}).get("optim", {}).get("solver") == "lbfgs":
        return "converged (L-BFGS)"
    if len(best) <= 9:
        return ", ".join(map(str, best))
    return f"{int(np.median(best))} [{min(best)}–{max(best)}], {len(best)} networks"


# ---- plots --------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusions(res: dict, protocol: str, path: Path, title: str) -> None:
    plt = _plt()
    s = res["protocols"][protocol]["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1, 2]})
    for ax, task in zip(axes, ("CLASS", "LEVEL")):
        m = np.array(s[task]["confusion"])
        vals = s[task]["values"]
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(vals)), vals)
        ax.set_yticks(range(len(vals)), vals)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(vals)):
            for j in range(len(vals)):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        m[i, j],
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if m[i, j] > m.max() / 2 else "black",
                    )
        ax.set_title(f"{task} (acc {s[task]['accuracy']:.2f})")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fold_accuracy(rows: list[Row], results: dict, protocol: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(rows), 1)
    names = None
    for k, r in enumerate(rows):
        folds = results[r.class_recipe]["protocols"].get(protocol, {}).get("folds")
        if not folds:
            continue
        names = [f["name"].replace("test ", "") for f in folds]
        acc = [f["CLASS"]["accuracy"] for f in folds]
        ax.bar(np.arange(len(acc)) + k * width, acc, width, label=r.label)
    if names:
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.axhline(1 / 3, color="gray", ls="--", lw=1, label="chance (1/3)")
    ax.set_ylabel("CLASS accuracy on held-out fold")
    ax.set_ylim(0, 1)
    ax.set_title(f"Per-fold CLASS accuracy, {PROTOCOL_LABEL[protocol]}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(res: dict, protocol: str, path: Path, title: str) -> None:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for f in res["protocols"][protocol]["folds"]:
        h = f["history"]
        ep = [r["epoch"] for r in h]
        a1.plot(ep, [r["train_loss"] for r in h], lw=1)
        a2.plot(
            ep, [r.get("val_metric", np.nan) for r in h], lw=1, label=f["name"].replace("test ", "")
        )
        a2.axvline(f["best_epoch"], color=a2.lines[-1].get_color(), lw=0.5, ls=":")
    a1.set_title("training loss")
    a2.set_title("inner-validation metric, lower is better\n(dotted: kept epoch)", fontsize=10)
    for a in (a1, a2):
        a.set_xlabel("epoch")
    a2.legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


KEEP_BELOW = (
    "<!-- fmri-edge report ends here; what follows is kept when the report is written again -->"
)


def write_report(
    config: Path, runs: Path = Path("runs"), log: Callable[[str], None] = print, progress=None
) -> Path:
    """``progress(recipe)``: train's per-fit callback for the run of that recipe (or None)."""
    rows, raw = load_rows(config)
    out_md = Path(raw.get("out", "docs/results.md"))
    fig_dir = out_md.parent / out_md.stem
    fig_dir.mkdir(parents=True, exist_ok=True)
    results = ensure_runs(rows, runs, log, progress)
    shipped = rows[raw.get("shipped_row", len(rows) - 1)]
    sres = results[shipped.class_recipe]
    lines = [
        "# Results",
        "",
        f"Generated by `fmri-edge report --config {config}` from the runs in `{runs}/` "
        "(each run: `fmri-edge train --config <recipe>`). Data: ICBHI 2024 fMRI, 16 labeled subjects, "
        "480 trials.",
        "",
        "- **random 8:1:1 trials** is the paper's protocol: a stratified random split of trials, so the same "
        "subjects (and video order) sit in training and test. Its numbers are **optimistic**. Mean ± std over seeds.",
        "- **cross-subject** holds out whole order-mate groups (9 folds, pairs P01=P10 … kept together); "
        "epochs and checkpoints are chosen on one more group held out of the training subjects, never on "
        "the test fold (a converged fit has none to choose and trains on all of the fold's training subjects). "
        "Mean ± std over folds.",
        "- Rows named *paper recipe* use the paper's settings (whole-trial min-max, RAdam in Lookahead, L2 0.01, "
        "checkpoint on validation accuracy) for the CLASS network; their LEVEL answers use the class-only rule "
        "(the paper's separate LEVEL networks are not re-run here). Rows named *fmri-edge* use fmri-edge's "
        "representation (percent signal change, subject alignment); the *linear* row is the simple baseline every "
        f"network is read against. The shipped model is `{shipped.class_recipe}`; docs/research.md says how each "
        "choice was made (inner validation only).",
        "",
        "## The paper's table, with fmri-edge's rows",
        "",
        "Macro precision / sensitivity / F1 (mean ± std over seeds or folds).",
        "",
        *paper_table(rows, results),
        "",
        "## Challenge metrics",
        "",
        "CLASS accuracy pooled over all held-out trials and per fold; LEVEL_error of the model's LEVEL answers "
        "beside the class-only baseline (−1 → −3, 0 → 0, 1 → 2) applied to the same model's CLASS answers; "
        "Score = 0.6 · CLASS_error + 0.4 · LEVEL_error (lower is better).",
        "",
        *challenge_table(rows, results),
        "",
        "## Plots",
        "",
    ]
    for protocol in ("subject", "random"):
        if protocol not in sres["protocols"]:
            continue
        name = f"confusion_{protocol}.png"
        plot_confusions(
            sres, protocol, fig_dir / name, f"{shipped.label}: {PROTOCOL_LABEL[protocol]}"
        )
        lines += [f"![confusion {protocol}]({fig_dir.name}/{name})", ""]
        name = f"fold_accuracy_{protocol}.png"
        plot_fold_accuracy(rows, results, protocol, fig_dir / name)
        lines += [f"![per-fold accuracy {protocol}]({fig_dir.name}/{name})", ""]
    if (
        "subject" in sres["protocols"] and _epochs([], sres) != "converged (L-BFGS)"
    ):  # a converged fit has no curve
        plot_curves(
            sres, "subject", fig_dir / "curves_subject.png", f"{shipped.label}: cross-subject folds"
        )
        lines += [f"![training curves]({fig_dir.name}/curves_subject.png)", ""]
    # sections written by other tools (e.g. train/research/adapt_cv.py) sit below the marker and are kept
    before = out_md.read_text() if out_md.exists() else ""
    kept = before.split(KEEP_BELOW, 1)[1] if KEEP_BELOW in before else "\n"
    out_md.write_text("\n".join(lines) + "\n" + KEEP_BELOW + kept)
    return out_md
