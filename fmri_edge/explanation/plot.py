"""Figures for region attention or contributions (matplotlib, the optional ``[plot]`` extra, imported lazily).

:func:`plot_attention` draws one PNG from an :class:`~fmri_edge.explanation.regions.AttentionSummary`:
a bar chart of the most attended regions per predicted CLASS, with atlas names (literature
regions highlighted), above a heat strip of all regions (overall and per class) in atlas order,
with lobes and the literature regions marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_edge.explanation.regions import (
    KINDS,
    REFERENCE_REGIONS,
    AttentionSummary,
    brainnetome_lobes,
)

CLASS_NAMES = {-1: "negative", 0: "neutral", 1: "positive"}
GROUP_COLORS = {"EBR": "#d95f02", "amygdala": "#c2185b", None: "#5b7fa6"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'fmri-edge[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _class_label(c: int) -> str:
    return f"{c:+d}" if c else "0"


def plot_attention(
    summary: AttentionSummary,
    out: str | Path,
    top: int = 15,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write the attention figure to ``out`` (PNG); returns the path."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    names = list(summary.region_names)
    classes = list(summary.class_values)
    top = max(1, min(top, len(names)))
    kind = KINDS[summary.kind]
    # bars start from the median region (attention: all weights are positive) or from 0 (contributions)
    median = 0.0 if kind.signed else float(np.median(summary.mean))
    origin = "0" if kind.signed else "the median region"
    shown = [(j, c) for j, c in enumerate(classes) if summary.class_counts[j]]
    missing = [_class_label(c) for j, c in enumerate(classes) if not summary.class_counts[j]]
    ref_idx = [names.index(n) for n in REFERENCE_REGIONS if n in names]
    n_panels = len(shown) + bool(ref_idx)
    fig = plt.figure(figsize=(3.9 * n_panels + 1.8, 4.4 + 0.22 * top), dpi=dpi)
    grid = fig.add_gridspec(
        2,
        n_panels,
        height_ratios=[0.24 * top + 1.2, 1.6],
        hspace=0.5,
        wspace=0.8,
        left=0.11,
        right=0.93,
        top=0.84,
        bottom=0.1,
    )
    hi = float(np.nanmax(summary.class_mean[[j for j, _ in shown]]))
    lo = min(float(summary.mean[ref_idx].min()) if ref_idx else median, median)
    if kind.signed:
        lo = min(lo, float(np.nanmin(summary.class_mean[[j for j, _ in shown]])))

    def bars(ax, idx, vals, xlabel, ranks=None):
        colors = [GROUP_COLORS[REFERENCE_REGIONS.get(names[i])] for i in idx]
        y = np.arange(len(idx))[::-1]
        ax.barh(y, vals - median, left=median, color=colors, height=0.75)
        ax.set_yticks(y, [names[i] for i in idx], fontsize=8)
        ax.axvline(median, color="black", lw=0.8)
        span = hi - lo + 1e-9
        ax.set_xlim(lo - 0.03 * span, hi + (0.22 if ranks is not None else 0.05) * span)
        if ranks is not None:
            for yy, v, r in zip(y, vals, ranks):
                ax.text(max(v, median) + 0.01 * span, yy, f"#{r}", va="center", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(xlabel, fontsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    for col, (j, c) in enumerate(shown):
        ax = fig.add_subplot(grid[0, col])
        n = int(summary.class_counts[j])
        ax.set_title(
            f"predicted {CLASS_NAMES.get(c, c)} ({_class_label(c)}) · {n} trial{'s' * (n != 1)}\n"
            f"top {top} regions",
            fontsize=9,
        )
        idx = summary.ranking(c)[:top]
        bars(ax, idx, summary.class_mean[j, idx], f"mean {kind.units} (bars from {origin})")
    if ref_idx:
        ax = fig.add_subplot(grid[0, n_panels - 1])
        ax.set_title(
            f"literature regions, all {summary.n_trials} trials\n(#rank of {len(names)})",
            fontsize=9,
        )
        bars(
            ax,
            ref_idx,
            summary.mean[ref_idx],
            f"mean {kind.units} (bars from {origin})",
            summary.ranks()[ref_idx],
        )
    handles = [
        Patch(color=GROUP_COLORS["EBR"], label="paper's EBR regions (A9/46d, aSTS)"),
        Patch(color=GROUP_COLORS["amygdala"], label="amygdala"),
        Patch(color=GROUP_COLORS[None], label="other regions"),
    ]
    fig.legend(
        handles=handles,
        loc="upper left",
        fontsize=8,
        frameon=False,
        ncol=3,
        bbox_to_anchor=(0.09, 0.935),
    )

    # heat strip: all regions in atlas order, overall and per predicted class
    ax = fig.add_subplot(grid[1, :])
    rows = [summary.mean] + [summary.class_mean[j] for j, n in enumerate(summary.class_counts) if n]
    labels = ["all"] + [_class_label(c) for c, n in zip(classes, summary.class_counts) if n]
    strip = np.vstack(rows)
    if kind.signed:
        peak = float(np.nanmax(np.abs(strip))) or 1.0
        im = ax.imshow(
            strip, aspect="auto", cmap="RdBu_r", vmin=-peak, vmax=peak, interpolation="nearest"
        )
    else:
        im = ax.imshow(strip, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("predicted", fontsize=8)
    ref = [(names.index(n), n) for n in REFERENCE_REGIONS if n in names]
    groups: dict[str, list[int]] = {}
    for i, n in ref:  # one label per region pair (A9/46d_L and _R sit side by side in the atlas)
        base = n.removesuffix("_L").removesuffix("_R")
        groups.setdefault("Amyg" if base.endswith("Amyg") else base, []).append(i)
    ax.set_xticks([float(np.mean(ix)) for ix in groups.values()], list(groups), fontsize=8)
    for i, n in ref:
        ax.plot(
            [i, i],
            [-0.5 - 0.35, -0.5],
            color=GROUP_COLORS[REFERENCE_REGIONS[n]],
            lw=2,
            clip_on=False,
        )
    lobes = brainnetome_lobes(names)
    for lobe, start, stop in lobes:
        if start:
            ax.axvline(start - 0.5, color="white", lw=1)
        ax.text((start + stop - 1) / 2, -0.5 - 0.45, lobe, ha="center", va="bottom", fontsize=8)
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_title(
        f"all {len(names)} regions in atlas order"
        + (" (Brainnetome, L/R alternating)" if lobes else ""),
        fontsize=9,
        pad=16 if lobes else 6,
    )
    cax = fig.add_axes([0.945, 0.1, 0.01, 0.14])
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=7)
    cax.set_title(kind.short, fontsize=7)

    sub = (
        f"{summary.n_trials} trials"
        + (f"; no trial predicted as {', '.join(missing)}" if missing else "")
        + ("; the same weights in every trial" if summary.static else "")
    )
    fig.suptitle(
        f"{title or 'Input SE attention per brain region'} ({sub})", fontsize=12, x=0.09, ha="left"
    )
    out = Path(out)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
