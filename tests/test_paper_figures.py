"""Our numbers beside the paper's (aimfair.paper.figures) from the metrics files the stages write."""

import json

import pandas as pd

from aimfair.paper import figures as pf
from aimfair.paper.numbers import SMILING_MALE


def metrics(**rows) -> dict:
    return {name: {"paper": dict(ACC=acc, WST=wst, EO_paper=eo, STD=1.0)} for name, (acc, wst, eo) in rows.items()}


def test_table3_puts_each_strategy_beside_the_papers_row(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps(metrics(baseline=(91.0, 71.0, 27.0),
                                                                          aimfair=(92.0, 88.0, 8.0))))
    table = pf.table3(tmp_path)
    assert table.loc["aimfair", "WST ours"] == 88.0 and table.loc["aimfair", "WST paper"] == SMILING_MALE["aimfair"]["WST"]
    assert pd.isna(table.loc["full_ft", "ACC ours"])  # not evaluated: blank, not a number made up
    assert table.loc["full_ft", "ACC paper"] == 88.77


def test_an_ablation_that_has_not_run_says_how_to_run_it(tmp_path):
    table = pf.ablation(tmp_path, "skew")
    assert table.iloc[0, 0] == "dvc repro experiments/dvc.yaml:ablation@skew"


def test_an_ablations_rows_get_the_papers_number_for_the_same_value(tmp_path):
    folder = tmp_path / "reports" / "ablations" / "real_fraction"
    folder.mkdir(parents=True)
    rows = {"baseline, 50% real": (80.0, 50.0, 30.0), "AIM-Fair, 50% real": (90.0, 80.0, 9.0)}
    (folder / "metrics.json").write_text(json.dumps(metrics(**rows)))
    pd.DataFrame(dict(strategy=list(rows), seed=1, value=["0.5", "0.5"], series=["baseline", "AIM-Fair"])).to_csv(
        folder / "per_seed.csv", index=False)
    table = pf.ablation(tmp_path, "real_fraction")
    assert table.loc["AIM-Fair, 50% real", "WST paper"] == 83.99  # the paper's AIM-Fair at 50% real data
    assert pd.isna(table.loc["baseline, 50% real", "WST paper"])  # the paper prints no baseline there
    assert table.loc["AIM-Fair, 50% real", "WST ours"] == 80.0


def test_the_report_holds_every_table_and_leaves_missing_numbers_blank(tmp_path):
    out = pf.write_beside_paper(tmp_path, pf.all_tables(tmp_path))
    text = out.read_text()
    assert text.count("\n## ") == 2 + len(pf.ABLATION_TABLES) + 1
    assert "| aimfair |  | 89.02 |" in text and "nan" not in text
