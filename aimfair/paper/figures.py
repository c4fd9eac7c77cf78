"""Our results beside the paper's (aimfair.paper.numbers), table by table, read from what the pipelines wrote.

Sources: reports/metrics.json (Table 3, stage evaluate), reports/table4/metrics.json (Table 4, stage table4),
reports/ablations/<name>/metrics.json (the ablations) and, for the paper's other settings, each paper setting's
paper/<setting>/reports/metrics.json once paper/dvc.yaml has run there. A source that is absent gives a table
that says so instead of numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from aimfair.core import paths
from aimfair.paper.numbers import ABLATIONS, OTHER_SETTINGS, SMILING_MALE

METRICS = ("ACC", "WST", "EO_paper", "STD")
PAPER_SETTINGS = {"celeba Smiling/Male": "celeba_smiling_male", "celeba Smiling/Young": "celeba_smiling_young",
                  "utkface Female/White": "utkface_female_white", "celeba Young/Male": "celeba_young_male"}


def read_metrics(path: Path) -> dict[str, dict] | None:
    """A metrics.json as written by write_evaluation, or None when that stage has not run."""
    return json.loads(path.read_text()) if path.exists() else None


def beside(ours: dict[str, dict] | None, theirs: dict[str, dict], names: list[str],
           metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per name: our metric (aggregated the paper's way) and the paper's, side by side."""
    rows = []
    for name in names:
        mine = (ours or {}).get(name, {}).get("paper", {})
        row = {"row": name}
        for m in metrics:
            row[f"{m} ours"] = mine.get(m)
            row[f"{m} paper"] = theirs.get(name, {}).get(m)
        rows.append(row)
    return pd.DataFrame(rows).set_index("row").astype(float).round(2)


def table3(root: Path) -> pd.DataFrame:
    """The training strategies (the paper's Table 3) on our default world beside CelebA Smiling/Male."""
    names = ["baseline", "synthetic_only", "supplementation", "repairing", "linear_probe", "full_ft", "aimfair"]
    return beside(read_metrics(root / paths.REPORTS / "metrics.json"), SMILING_MALE, names)


def table4(root: Path) -> pd.DataFrame:
    """The partial fine-tuning baselines (the paper's Table 4)."""
    names = ["full_ft", "random_selection", "subtuning_update_one", "subtuning_freeze_one", "aimfair_cosine", "aimfair"]
    return beside(read_metrics(root / paths.TABLE4_REPORTS / "metrics.json"), SMILING_MALE, names)


def ablation(root: Path, name: str) -> pd.DataFrame:
    """One ablation's rows (its table's order) beside the paper's numbers for the same knob value."""
    ours = read_metrics(root / paths.ABLATION_REPORTS / name / "metrics.json")
    per_seed = root / paths.ABLATION_REPORTS / name / "per_seed.csv"
    if ours is None or not per_seed.exists():
        return pd.DataFrame({"not run": [f"dvc repro experiments/dvc.yaml:ablation@{name}"]})
    arms = pd.read_csv(per_seed, dtype={"value": str}).drop_duplicates("strategy")  # "1" stays "1", not 1.0
    theirs = {row.strategy: ABLATIONS.get(name, {}).get(str(row.value), {}) if row.series != "baseline" else {}
              for row in arms.itertuples()}
    return beside(ours, theirs, list(arms["strategy"]), ("ACC", "WST", "EO_paper"))


def other_settings(root: Path) -> pd.DataFrame:
    """The paper's four settings on real data: baseline, full fine-tuning and AIM-Fair, from paper/<setting>/ once
    it ran (Smiling/Male's Table 3 rows, the others' printed rows)."""
    frames = []
    smiling_male = {name: SMILING_MALE[name] for name in ("baseline", "full_ft", "aimfair")}
    for setting, theirs in {"celeba Smiling/Male": smiling_male, **OTHER_SETTINGS}.items():
        ours = read_metrics(root / "paper" / PAPER_SETTINGS[setting] / paths.REPORTS / "metrics.json")
        frame = beside(ours, theirs, list(theirs), ("ACC", "WST", "EO_paper"))
        frames.append(frame.set_index(pd.MultiIndex.from_product([[setting], frame.index])))
    return pd.concat(frames)


def plot_beside_paper(table: pd.DataFrame, title: str, metrics: tuple[str, ...] = ("ACC", "WST", "EO_paper")) -> plt.Figure:
    """Grouped bars per row: ours (filled) against the paper's (hatched), one panel per metric."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.6), squeeze=False)
    x = np.arange(len(table))
    for ax, m in zip(axes[0], metrics):
        ax.bar(x - 0.2, table[f"{m} ours"], 0.4, label="ours (built-in world)", color="#4C72B0")
        ax.bar(x + 0.2, table[f"{m} paper"], 0.4, label="paper (CelebA Smiling/Male)", color="white",
               edgecolor="#C44E52", hatch="//")
        ax.set_xticks(x, table.index, rotation=35, ha="right", fontsize=7)
        ax.set_title(m + (" (lower is fairer)" if m.startswith("EO") else ""), fontsize=9)
        low = np.nanmin(table[[f"{m} ours", f"{m} paper"]].to_numpy(dtype=float))
        if not m.startswith("EO"):
            ax.set_ylim(max(0.0, low - 10), 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


ABLATION_TABLES = {  # our ablations in the order the paper reports them
    "prompts": "Prompts (synthetic-only training; the paper's 50 are its final prompts, with head poses)",
    "amount": "Amount of balanced synthetic data, relative to the real training set",
    "skew": "Skew of D_S1 used for the mask",
    "real_fraction": "Less real data",
    "top_k": "Top-k (the paper plots it)",
    "frozen_upto": "Layer-wise freezing (the paper plots it)",
}


def all_tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every comparison, titled: Tables 3 and 4, the ablations, the other settings."""
    tables = {"Table 3: training strategies (ours: built-in world; paper: CelebA Smiling/Male)": table3(root),
              "Table 4: partial fine-tuning": table4(root)}
    tables.update({f"Ablation: {title}": ablation(root, name) for name, title in ABLATION_TABLES.items()})
    tables["The paper's settings on real data (ours: paper/<setting>/ after dvc repro paper/dvc.yaml)"] = other_settings(root)
    return tables


def write_beside_paper(root: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """reports/paper/beside_paper.md: every table, ours beside the paper's (blank where one side has none)."""
    from aimfair.core import io
    from aimfair.evaluation.report import markdown_table

    text = ["# Our numbers beside the paper's\n",
            "Aggregated the paper's way (group accuracies averaged over seeds; WST and STD of the averages; ACC and "
            "EO seed means; EO as the paper prints it). Our default world is not CelebA: compare directions and "
            "gaps, not levels.\n"]
    for title, table in tables.items():
        shown = table.copy()
        if isinstance(shown.index, pd.MultiIndex):
            shown.index = [" ".join(map(str, i)) for i in shown.index]
        text.append(f"## {title}\n\n" + markdown_table(shown.map(lambda v: "" if pd.isna(v) else f"{v:.2f}" if isinstance(v, float) else v)))
    out = root / paths.REPORTS / "paper" / "beside_paper.md"
    io.write_text(out, "\n".join(text))
    return out
