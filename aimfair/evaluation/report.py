"""Tables in the paper's layout and the figures of the data and evaluation stages."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))  # a headless default; notebooks switch to inline

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from aimfair.core import io  # noqa: E402
from aimfair.core.groups import GROUPS, parse_group_key  # noqa: E402
from aimfair.evaluation.metrics import PAPER_COLUMNS, format_mean_std  # noqa: E402

GROUP_COLOURS = {"0_0": "#4C72B0", "0_1": "#55A868", "1_0": "#C44E52", "1_1": "#8172B2"}


def group_labels(target: str, sensitive: str) -> dict[str, str]:
    """Readable names of the four groups, e.g. {"0_1": "Smiling=0, Male=1", ...}."""
    return {g: f"{target}={parse_group_key(g)[0]}, {sensitive}={parse_group_key(g)[1]}" for g in GROUPS}


def column_names(target: str, sensitive: str) -> dict[str, str]:
    """Headers of the paper's table: group accuracies as (y,s), then ACC, WST, EO, STD."""
    names = {f"acc_{g}": "({},{})".format(*parse_group_key(g)) for g in GROUPS}
    return dict(names, ACC="ACC", WST="WST", EO_paper="EO", EO_code="EO (code)", STD="STD", DP="DP")


def paper_table(rows: Mapping[str, Mapping], target: str, sensitive: str, digits: int = 2) -> pd.DataFrame:
    """One row per method, aggregated the paper's way (aimfair.evaluation.metrics.aggregate_seeds(...)["paper"])."""
    cols = PAPER_COLUMNS + ["EO_code", "DP"]
    frame = pd.DataFrame([[row[c] for c in cols] for row in rows.values()], index=list(rows), columns=cols)
    frame.index.name = "method"
    return frame.round(digits).rename(columns=column_names(target, sensitive))


def formatted(frame: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Numbers as fixed-decimal strings (71.80, not 71.8), for markdown tables."""
    return frame.map(lambda v: f"{v:.{digits}f}" if isinstance(v, float) else v)


# columns of the paper's table shown with their interval, by header -> metric key
INTERVAL_HEADERS = {"ACC": "ACC", "WST": "WST", "EO": "EO_paper", "STD": "STD", "EO (code)": "EO_code", "DP": "DP"}


def with_intervals(frame: pd.DataFrame, intervals: Mapping[str, Mapping], digits: int = 2) -> pd.DataFrame:
    """paper_table's frame as strings, the summary columns as "value [lo, hi]" for the rows that have
    intervals (aimfair.evaluation.uncertainty.aggregate_intervals), the others as plain values."""
    out = formatted(frame, digits)
    for header, key in INTERVAL_HEADERS.items():
        for name in frame.index:
            if name in intervals:
                i = intervals[name][key]
                out.loc[name, header] = f"{frame.loc[name, header]:.{digits}f} [{i['lo']:.1f}, {i['hi']:.1f}]"
    return out


def with_interval_columns(frame: pd.DataFrame, intervals: Mapping[str, Mapping], digits: int = 4) -> pd.DataFrame:
    """paper_table's frame with a "<header> lo" and "<header> hi" column after each summary column."""
    out = frame.copy()
    for header, key in INTERVAL_HEADERS.items():
        position = out.columns.get_loc(header) + 1
        for side in ("hi", "lo"):
            values = [round(intervals[n][key][side], digits) if n in intervals else None for n in frame.index]
            out.insert(position, f"{header} {side}", values)
    return out


def difference_cell(value) -> str:
    """A paired comparison (uncertainty.compare output for one metric) as "1.78 [0.9, 2.7] p=0.004"."""
    if not isinstance(value, Mapping):
        return str(value)
    p = value["p"]
    p = "p=–" if p != p else "p<0.001" if p < 0.001 else f"p={p:.3f}"  # p != p: NaN, no variance at all
    return f"{value['difference']:.2f} [{value['lo']:.1f}, {value['hi']:.1f}] {p}"


def mean_std_table(rows: Mapping[str, Mapping], target: str, sensitive: str) -> pd.DataFrame:
    """One row per method, every column as "mean ± std" over seeds (aggregate_seeds output)."""
    cols = PAPER_COLUMNS + ["EO_code", "DP"]
    frame = pd.DataFrame([[format_mean_std(agg["mean"][c], agg["std"][c]) for c in cols] for agg in rows.values()],
                         index=list(rows), columns=cols)
    frame.index.name = "method"
    return frame.rename(columns=column_names(target, sensitive))


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (index included) without extra dependencies."""
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in frame.iterrows():
        lines.append("| " + " | ".join([str(name)] + [str(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a PNG atomically (a crashed run never leaves half a figure)."""
    path = Path(path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


# ----------------------------------------------------------------------------- data stage


def plot_group_counts(counts: Mapping[str, Mapping[str, int]], labels: Mapping[str, str]) -> plt.Figure:
    """Bars of images per group in each split: the skew of the training split at a glance."""
    splits = list(counts)
    fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 3.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        values = [counts[split][g] for g in GROUPS]
        bars = ax.bar(range(4), values, color=[GROUP_COLOURS[g] for g in GROUPS])
        ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(4), [labels[g].replace(", ", "\n") for g in GROUPS], fontsize=7)
        ax.set_title(f"{split} ({sum(values)} images)")
    axes[0][0].set_ylabel("images")
    fig.tight_layout()
    return fig


def plot_sample_grid(image_dir: str | os.PathLike, frame: pd.DataFrame, labels: Mapping[str, str],
                     per_group: int = 8, seed: int = 0) -> plt.Figure:
    """A row of random images from each group of `frame` (columns image_id, y, s)."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(4, per_group, figsize=(1.2 * per_group, 5.4), squeeze=False)
    for row, g in enumerate(GROUPS):
        y, s = parse_group_key(g)
        ids = frame.loc[(frame["y"] == y) & (frame["s"] == s), "image_id"].to_numpy()
        chosen = rng.choice(ids, size=min(per_group, len(ids)), replace=False) if len(ids) else []
        for col in range(per_group):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(chosen):
                with Image.open(Path(image_dir) / chosen[col]) as im:
                    ax.imshow(im.convert("RGB"))
        axes[row][0].set_title(labels[g], fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def plot_style_pairs(examples: list[tuple[Image.Image, Image.Image, str]]) -> plt.Figure:
    """Each face in the real "photo" style above its "studio" twin, with the studio render's caption."""
    fig, axes = plt.subplots(2, len(examples), figsize=(2.1 * len(examples), 5.0), squeeze=False)
    for col, (photo, studio, text) in enumerate(examples):
        for row, im in enumerate((photo, studio)):
            axes[row][col].imshow(im)
            axes[row][col].axis("off")
        axes[1][col].set_title(textwrap.fill(text, 24), fontsize=7, y=-0.45)
    axes[0][0].set_title("photo (real domain)", fontsize=9, loc="left")
    axes[1][0].text(0, -4, "studio (T2I corpus)", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- training and evaluation


def _plot_val_acc(ax: plt.Axes, history: pd.DataFrame, label: str):
    """Validation accuracy per epoch, with a dot on the selected (best) epoch; returns the line."""
    line, = ax.plot(history["epoch"], history["val_acc"], label=label)
    best = history["val_acc"].idxmax()
    ax.scatter(history.loc[best, "epoch"], history.loc[best, "val_acc"], color=line.get_color(), zorder=3)
    return line


def plot_histories(histories: Mapping[int, pd.DataFrame]) -> plt.Figure:
    """Training loss and train/validation accuracy per epoch, one line per seed."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for seed, h in histories.items():
        ax_loss.plot(h["epoch"], h["train_loss"], label=f"seed {seed}")
        line = _plot_val_acc(ax_acc, h, f"val, seed {seed}")
        ax_acc.plot(h["epoch"], h["train_acc"], ls="--", color=line.get_color(), alpha=0.6)
    ax_loss.set(xlabel="epoch", ylabel="BCE loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy (dashed: train; dot: selected epoch)")
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_validation_curves(histories: Mapping[str, pd.DataFrame], reference: float | None = None,
                           title: str = "") -> plt.Figure:
    """Validation accuracy per epoch, one line per run (dot: the selected epoch), and a dashed reference line
    (e.g. the biased model's validation accuracy)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, h in histories.items():
        _plot_val_acc(ax, h, name)
    if reference is not None:
        ax.axhline(reference, ls="--", color="grey", label="biased model")
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_group_accuracy(per_seed: pd.DataFrame, labels: Mapping[str, str], title: str = "") -> plt.Figure:
    """Bars: each group's accuracy averaged over seeds; dots: the individual seeds; dashed: overall ACC."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, g in enumerate(GROUPS):
        values = per_seed[f"acc_{g}"].to_numpy()
        ax.bar(i, values.mean(), color=GROUP_COLOURS[g], alpha=0.8)
        ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, color="black",
                   s=12, zorder=3)
        ax.text(i, values.max() + 2, f"{values.mean():.1f}", ha="center", fontsize=8)
    ax.axhline(per_seed["ACC"].mean(), ls="--", color="grey", label=f"ACC {per_seed['ACC'].mean():.1f}")
    ax.set_xticks(range(4), [labels[g].replace(", ", "\n") for g in GROUPS], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"group accuracy over {len(per_seed)} seed(s)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion_by_group(predictions: pd.DataFrame, target: str, sensitive: str) -> plt.Figure:
    """Row-normalised confusion matrices (true y vs predicted), one panel per protected value s."""
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4))
    for ax, s in zip(axes, (0, 1)):
        part = predictions[predictions["s"] == s]
        counts = np.array([[((part["y"] == y) & (part["pred"] == p)).sum() for p in (0, 1)] for y in (0, 1)])
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 100
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=100)
        for y in (0, 1):
            for p in (0, 1):
                ax.text(p, y, f"{rates[y, p]:.1f}%\n(n={counts[y, p]})", ha="center", va="center",
                        color="white" if rates[y, p] > 60 else "black", fontsize=9)
        ax.set_xticks([0, 1], ["0", "1"])
        ax.set_xlabel(f"predicted {target}")
        ax.set_yticks([0, 1], [f"{target}=0", f"{target}=1"])
        ax.set_title(f"{sensitive}={s}")
    fig.suptitle("confusion by group (all seeds pooled)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- generation


def plot_image_rows(rows: Mapping[str, np.ndarray], title: str = "", captions: Mapping[str, list[str]] | None = None,
                    scale: float = 1.1) -> plt.Figure:
    """One row of images per key (uint8 (N, H, W, 3) each), the key as the row's title."""
    width = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), width, figsize=(scale * width, (scale + 0.35) * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(width):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
                if captions and c < len(captions.get(name, [])):
                    ax.set_title(textwrap.fill(captions[name][c], 22), fontsize=5)
        axes[r][0].text(-0.06, 0.5, textwrap.fill(name, 22), fontsize=7, rotation=90, ha="right", va="center",
                        transform=axes[r][0].transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_training_loss(log: pd.DataFrame, window: int = 50) -> plt.Figure:
    """The generator's denoising loss per step, with a moving average."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(log["step"], log["loss"], color="0.75", lw=0.6, label="per step")
    ax.plot(log["step"], log["loss"].rolling(window, min_periods=1).mean(), color="C0", label=f"mean of {window}")
    ax.set_xlabel("training step")
    ax.set_ylabel("noise-prediction MSE")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_fidelity(per_group: pd.DataFrame, labels: Mapping[str, str], threshold: float = 80.0) -> plt.Figure:
    """Per group, the % of generated images whose target, protected value and both match the prompt."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.27
    x = np.arange(len(per_group))
    for i, (column, colour) in enumerate((("target", "C0"), ("sensitive", "C1"), ("both", "C2"))):
        bars = ax.bar(x + (i - 1) * width, per_group[column], width, label=column, color=colour)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"{threshold:.0f}%")
    ax.set_xticks(x, [labels[g].replace(", ", "\n") for g in per_group["group"]], fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of images read as their group")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- mask and strategies


def plot_mask_scores(scores: pd.DataFrame, title: str = "") -> plt.Figure:
    """Both sensitivity scores per parameter tensor (model order), the selected tensors marked."""
    fig, axes = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True)
    x = np.arange(len(scores))
    chosen = scores["selected"].to_numpy(bool)
    for ax, column, label in ((axes[0], "domain", "domain score d1 (real vs synthetic): smaller is safer"),
                              (axes[1], "bias", "bias score d2 (biased vs balanced): larger is more biased")):
        values = scores[column].to_numpy(float)
        ax.bar(x[~chosen], values[~chosen], color="#BBBBBB", label="not selected")
        ax.bar(x[chosen], values[chosen], color="#C44E52", label="selected (fine-tuned)")
        ax.set_yscale("log")
        ax.set_ylabel(column)
        ax.set_title(label, fontsize=9, loc="left")
    axes[0].legend(fontsize=8, loc="upper right")
    names = [n.replace(".weight", ".w").replace(".bias", ".b") for n in scores["name"]]
    axes[1].set_xticks(x, names, rotation=90, fontsize=6)
    fig.suptitle(title or f"{int(chosen.sum())} of {len(scores)} tensors selected", fontsize=10)
    fig.tight_layout()
    return fig


STRATEGY_MARKERS = "osD^v<>PX*hp"


def plot_accuracy_fairness(per_seed: pd.DataFrame, fairness: str = "EO_paper",
                           intervals: Mapping[str, Mapping] | None = None) -> plt.Figure:
    """The paper's teaser: accuracy against fairness, one small point per strategy and seed, a large one for
    the seed mean. Left: ACC vs EO (lower is fairer); right: ACC vs worst-group accuracy. With `intervals`
    (Evaluation.intervals), a large point is the value aggregated as the tables aggregate it, with its 95 %
    interval as error bars on both axes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    names = list(dict.fromkeys(per_seed["strategy"]))
    colours = plt.get_cmap("tab10")
    intervals = intervals or {}
    for ax, metric, label in ((axes[0], fairness, "EO (max gap, %) - lower is fairer"),
                              (axes[1], "WST", "worst-group accuracy (%) - higher is fairer")):
        for i, name in enumerate(names):
            runs = per_seed[per_seed["strategy"] == name]
            style = dict(color=colours(i % 10), marker=STRATEGY_MARKERS[i % len(STRATEGY_MARKERS)])
            ax.scatter(runs[metric], runs["ACC"], s=18, alpha=0.45, **style)
            if name in intervals:
                x, y = intervals[name][metric], intervals[name]["ACC"]
                ax.errorbar(x["value"], y["value"], xerr=[[x["value"] - x["lo"]], [x["hi"] - x["value"]]],
                            yerr=[[y["value"] - y["lo"]], [y["hi"] - y["value"]]], color=style["color"],
                            elinewidth=1, capsize=2, alpha=0.7, zorder=1)
                ax.scatter(x["value"], y["value"], s=90, edgecolor="black", label=name, zorder=2, **style)
            else:
                ax.scatter(runs[metric].mean(), runs["ACC"].mean(), s=90, edgecolor="black", label=name, **style)
        ax.set(xlabel=label, ylabel="ACC (%)")
        ax.grid(alpha=0.3)
    axes[0].invert_xaxis()  # fairer to the right on both panels
    axes[1].legend(fontsize=8, loc="best")
    title = ("large markers: over seeds as in the tables, with 95 % intervals; small ones: single seeds"
             if intervals else "accuracy vs fairness: large markers are seed means, small ones single seeds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_strategy_groups(per_seed: pd.DataFrame, labels: Mapping[str, str]) -> plt.Figure:
    """Group accuracies of every strategy (seed means, with the spread over seeds as error bars)."""
    names = list(dict.fromkeys(per_seed["strategy"]))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.3 * len(names)), 3.8))
    width = 0.8 / len(GROUPS)
    for j, g in enumerate(GROUPS):
        stats = per_seed.groupby("strategy", sort=False)[f"acc_{g}"].agg(["mean", "std"]).reindex(names)
        ax.bar(np.arange(len(names)) + (j - 1.5) * width, stats["mean"], width, yerr=stats["std"].fillna(0),
               color=GROUP_COLOURS[g], label=labels[g], capsize=2)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("group accuracy (%)")
    ax.legend(fontsize=7, ncols=4, loc="lower center")
    fig.tight_layout()
    return fig


def plot_family_variants(per_seed: pd.DataFrame, families: Mapping[str, tuple[str, ...]]) -> plt.Figure:
    """Per family, the mean test ACC and WST of each variant over seeds, and how often validation chose it."""
    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.4), squeeze=False)
    for ax, (family, variants) in zip(axes[0], families.items()):
        rows = per_seed[per_seed["strategy"].isin(variants)].groupby("strategy")[["ACC", "WST"]].mean()
        rows = rows.reindex(list(variants))
        chosen = per_seed.loc[per_seed["strategy"] == family, "variant"].value_counts()
        x = np.arange(len(variants))
        ax.bar(x - 0.2, rows["ACC"], 0.4, label="ACC", color="#4C72B0")
        ax.bar(x + 0.2, rows["WST"], 0.4, label="WST", color="#C44E52")
        labels = [f"{v.rsplit('-', 1)[1]}\nchosen {int(chosen.get(v, 0))}x" for v in variants]
        ax.set_xticks(x, labels, fontsize=7)
        low = float(np.nanmin(rows.to_numpy()))
        ax.set_ylim(max(0.0, low - 10), 100)
        ax.set_title(family, fontsize=9)
        ax.set_ylabel("test accuracy (%), mean over seeds")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


ABLATION_METRICS = (("ACC", "ACC (%)"), ("WST", "WST, worst group (%)"), ("EO_paper", "EO (%), lower is fairer"))


def plot_ablation(per_seed: pd.DataFrame, arms: list, knob: str, title: str,
                  paper: Mapping[str, Mapping[str, float]] | None = None) -> plt.Figure:
    """ACC, WST and EO against an ablation's knob: per series (a line), the mean over seeds with the spread as
    error bars; the pipeline's own value (read from stage finetune) as a star; the paper's numbers on CelebA
    Smiling/Male, where it gives them, as hollow grey squares. `arms`: aimfair.ablations.base.Arm, in axis order."""
    values = list(dict.fromkeys(arm.value for arm in arms))
    fig, axes = plt.subplots(1, len(ABLATION_METRICS), figsize=(4.3 * len(ABLATION_METRICS), 3.6))
    colours = plt.get_cmap("tab10")
    stats = per_seed.groupby("strategy", sort=False)[[m for m, _ in ABLATION_METRICS]].agg(["mean", "std"])
    for ax, (metric, label) in zip(axes, ABLATION_METRICS):
        for i, series in enumerate(dict.fromkeys(arm.series for arm in arms)):
            mine = [arm for arm in arms if arm.series == series]
            x = [values.index(arm.value) for arm in mine]
            mean = [stats.loc[arm.label, (metric, "mean")] for arm in mine]
            spread = [np.nan_to_num(stats.loc[arm.label, (metric, "std")]) for arm in mine]
            ax.errorbar(x, mean, yerr=spread, color=colours(i), marker="o", capsize=3, label=series)
            for xi, m, arm in zip(x, mean, mine):
                if arm.reference:
                    ax.scatter([xi], [m], marker="*", s=160, color=colours(i), edgecolor="black", zorder=3)
        shown = [(values.index(v), numbers[metric]) for v, numbers in (paper or {}).items()
                 if v in values and metric in numbers]
        if shown:
            ax.scatter(*zip(*shown), marker="s", s=50, facecolor="none", edgecolor="grey", label="paper (CelebA)")
        ax.set_xticks(range(len(values)), values)
        ax.set(xlabel=knob, ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}\n(mean ± std over seeds; star: the pipeline's own setting)", fontsize=9)
    fig.tight_layout()
    return fig
