"""Figures for the notebooks. Each function draws one figure, saves it (PNG) and returns it.

No backend is forced: in Jupyter the inline backend shows the figures in the executed notebook;
elsewhere matplotlib picks a headless one by itself."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .data import load_png

BINS = np.linspace(0, 1, 11)


def _save(fig, path: str | Path | None, dpi: int = 100):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def score_histograms(df: pd.DataFrame, columns: dict[str, str], threshold: float, path=None):
    """10-bin histograms (fraction of images per bin) of normalised scores, one panel per column.

    columns: column name -> panel title. The threshold S_thr is drawn as a dashed line.
    """
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for ax, (col, title) in zip(axes[0], columns.items()):
        counts, _ = np.histogram(df[col], bins=BINS)
        ax.bar(BINS[:-1] + 0.05, counts / len(df), width=0.09, color=sns.color_palette()[0])
        for x, c in zip(BINS[:-1] + 0.05, counts):
            ax.text(x, c / len(df), str(c), ha="center", va="bottom", fontsize=7)
        ax.axvline(threshold, ls="--", color="crimson", lw=1)
        ax.set(title=title, xlabel="score (0 = worst, 1 = best)", ylabel="fraction of images", xlim=(0, 1))
    fig.tight_layout()
    return _save(fig, path)


def scatter_vs_truth(tables: dict[str, pd.DataFrame], columns: dict[str, str], spearman: dict, path=None):
    """Scatter of metric scores (rows: metrics) against true quality (columns: sets)."""
    sets, cols = list(tables), list(columns)
    fig, axes = plt.subplots(len(cols), len(sets), figsize=(3.4 * len(sets), 3 * len(cols)), squeeze=False)
    for i, col in enumerate(cols):
        for j, name in enumerate(sets):
            ax, df = axes[i][j], tables[name]
            ax.scatter(df["true_quality"], df[col], s=5, alpha=0.5)
            rho = spearman.get((col, name), float("nan"))
            ax.set_title(f"{columns[col]} | {name}\nSpearman {rho:+.3f}", fontsize=9)
            ax.set_xlabel("true quality (SSIM to oracle)")
            ax.set_ylabel("raw score")
    fig.tight_layout()
    return _save(fig, path)


def examples_per_bin(df: pd.DataFrame, set_dir: str | Path, score_col: str = "S", per_bin: int = 3, path=None):
    """A grid: one column per score bin (0..9), up to `per_bin` images each, with their scores."""
    set_dir = Path(set_dir)
    fig, axes = plt.subplots(per_bin, 10, figsize=(10, 1.15 * per_bin), squeeze=False)
    for b in range(10):
        rows = df[(df[score_col] >= b / 10) & (df[score_col] < (b + 1) / 10 + (b == 9))].head(per_bin)
        axes[0][b].set_title(f"bin {b}\n[{b / 10:.1f}, {(b + 1) / 10:.1f})", fontsize=8)
        for r in range(per_bin):
            ax = axes[r][b]
            ax.axis("off")
            if r < len(rows):
                rec = rows.iloc[r]
                ax.imshow(load_png(set_dir / rec["file"]), interpolation="nearest")
                ax.text(0.02, 0.02, f"{rec[score_col]:.2f}", color="w", fontsize=7, transform=ax.transAxes,
                        bbox={"facecolor": "k", "alpha": 0.5, "pad": 1, "lw": 0})
    fig.tight_layout(pad=0.3)
    return _save(fig, path, dpi=80)  # noisy thumbnails compress badly: keep the file small


def training_history(history: pd.DataFrame, path=None):
    """Loss and validation Spearman per epoch of the learned prior."""
    rho_cols = [c for c in history if c.startswith("spearman_")]
    fig, axes = plt.subplots(1, 1 + bool(rho_cols), figsize=(4.5 * (1 + bool(rho_cols)), 3), squeeze=False)
    axes[0][0].plot(history["epoch"], history["loss"], marker="o")
    axes[0][0].set(xlabel="epoch", ylabel="training loss", title="learned NR-IQA: loss")
    for c in rho_cols:
        axes[0][1].plot(history["epoch"], history[c], marker="o", label=c.removeprefix("spearman_"))
    if rho_cols:
        axes[0][1].axhline(0.85, ls="--", color="grey", lw=1)
        axes[0][1].set(xlabel="epoch", ylabel="Spearman with true quality", title="validation", ylim=(0, 1))
        axes[0][1].legend()
    fig.tight_layout()
    return _save(fig, path)


def image_row(images: list[np.ndarray], titles: list[str], path=None):
    """Images side by side with titles."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.8 * len(images), 2.1), squeeze=False)
    for ax, img, t in zip(axes[0], images, titles):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.tight_layout(pad=0.3)
    return _save(fig, path, dpi=80)


def curves(log: pd.DataFrame, groups: dict[str, list[str]], x: str = "step", path=None):
    """One panel per group of log columns against `x` (training curves)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3), squeeze=False)
    for ax, (title, cols) in zip(axes[0], groups.items()):
        for c in cols:
            if c in log:
                ax.plot(log[x], log[c], label=c)
        ax.set(title=title, xlabel=x)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def grouped_bars(table: pd.DataFrame, columns: dict[str, str], ylabel: str, path=None):
    """Bars of `table`'s rows (index: the x labels), one bar per column in each group; columns:
    column name -> legend label."""
    long = (table[list(columns)].rename(columns=columns).rename_axis("row").reset_index()
            .melt(id_vars="row", var_name="measure", value_name=ylabel))
    fig, ax = plt.subplots(figsize=(1.1 * len(table) + 2, 3))
    sns.barplot(long, x="row", y=ylabel, hue="measure", ax=ax)
    ax.set(xlabel="")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def image_grid(rows: list[list[np.ndarray]], col_titles: list[str], path=None):
    """A grid of images (rows x columns), titles on the first row."""
    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(1.5 * len(rows[0]), 1.5 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.axis("off")
            if r == 0:
                ax.set_title(col_titles[c], fontsize=8)
    fig.tight_layout(pad=0.2)
    return _save(fig, path, dpi=80)


def code_usage_bars(counts: dict[str, np.ndarray], path=None):
    """Sorted code-use counts per codebook (how many codes carry the data)."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 2.8), squeeze=False)
    for ax, (name, cnt) in zip(axes[0], counts.items()):
        srt = np.sort(cnt)[::-1]
        ax.bar(np.arange(len(srt)), srt, width=1.0)
        ax.set(title=f"{name}: {int((cnt > 0).sum())}/{len(cnt)} codes used", xlabel="code (sorted by use)",
               ylabel="count", yscale="log" if srt.max() > 0 else "linear")
    fig.tight_layout()
    return _save(fig, path)


def codebook_projection(points: dict[str, np.ndarray], usage: dict[str, np.ndarray], path=None):
    """2-D projection (already computed) of several codebooks, marker size by use, unused as x."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for (name, p), colour in zip(points.items(), sns.color_palette()):
        used = usage[name] > 0
        ax.scatter(p[used, 0], p[used, 1], s=4 + 40 * usage[name][used] / max(usage[name].max(), 1),
                   color=colour, alpha=0.6, label=f"{name} (used)")
        ax.scatter(p[~used, 0], p[~used, 1], s=8, marker="x", color=colour, alpha=0.3, label=f"{name} (unused)")
    ax.set(title="codebooks, first two principal axes", xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def score_vs_condition(s_values: list[float], per_image: dict, reference: dict[str, float], path=None,
                       ylabel: str = "prior score of the output", diagonal: bool = True):
    """Mean (and spread) of an output quality measure against the requested S, with reference lines."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    vals = np.stack([np.asarray(per_image[s]) for s in s_values])  # (len(S), N)
    ax.plot(s_values, vals.mean(1), marker="o", label="restored (mean)")
    ax.fill_between(s_values, np.percentile(vals, 25, 1), np.percentile(vals, 75, 1), alpha=0.2, label="25-75%")
    for (name, v), style in zip(reference.items(), ("--", ":")):
        ax.axhline(v, ls=style, color="grey", label=name)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="crimson", lw=0.8, alpha=0.5, label="output = S")
    ax.set(xlabel="requested quality S", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def sweep_panels(sweep: pd.DataFrame, columns: dict[str, str], path=None):
    """The S sweep: one panel per column of `sweep` (title -> column) against the requested S,
    one line per model (`row`)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.2), squeeze=False)
    for ax, (title, col) in zip(axes[0], columns.items()):
        for name, g in sweep.groupby("row", sort=False):
            ax.plot(g["S_requested"], g[col], marker="o", ms=3, label=name)
        ax.set(title=title, xlabel="requested quality S")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def design_curves(df: pd.DataFrame, path=None):
    """Stage-I design measurement (benchmarks/stage1_design.py): held-out PSNR and code use of C
    against the training images seen (steps x batch), one line per design."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, g in df.groupby("design", sort=False):
        axes[0].plot(g["images"] / 1000, g["psnr_holdout_lambda0"], marker="o", ms=3, label=name)
        axes[1].plot(g["images"] / 1000, g["used_c_holdout"], marker="o", ms=3, label=name)
    axes[0].set(title="held-out PSNR, common codebook (dB)", xlabel="training images seen (thousands)")
    axes[1].set(title="fraction of C used on held-out GTs", xlabel="training images seen (thousands)", ylim=(0, 1))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def claims_by_seed(claims: pd.DataFrame, seeds: list[int], path=None):
    """Per claim, the paired difference (a - b) of every training seed, one panel per metric; the
    claimed-better side of zero is shaded."""
    metrics = list(dict.fromkeys(claims["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 0.5 + 0.42 * claims["metric"].value_counts().max()),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = claims[claims["metric"] == metric].reset_index(drop=True)
        for (i, row), colour in zip(sub.iterrows(), sns.color_palette(n_colors=len(sub))):
            xs = [row[f"diff_seed{s}"] for s in seeds]
            ax.scatter(xs, [i] * len(xs), color=colour, s=18, zorder=3)
        ax.axvline(0, color="grey", lw=0.8)
        lim = max(1e-9, float(sub[[f"diff_seed{s}" for s in seeds]].abs().max().max())) * 1.15
        better = sub["better"].iloc[0]
        ax.axvspan(0, lim, color="seagreen", alpha=0.08) if better == "higher" else ax.axvspan(-lim, 0, color="seagreen", alpha=0.08)
        ax.set(xlim=(-lim, lim), yticks=range(len(sub)), title=f"{metric} (a - b), one dot per seed")
        ax.set_yticklabels([f"{r.a} vs {r.b}: {r.verdict}" for r in sub.itertuples()], fontsize=7)
        ax.invert_yaxis()
    fig.tight_layout()
    return _save(fig, path)
