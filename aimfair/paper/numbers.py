"""The paper's published numbers (AIM-Fair, CVPR 2025, ResNet-18, CelebA Smiling/Male unless said),
to print beside ours. Facts copied from the paper's tables; EO is the paper's printed definition."""

from __future__ import annotations

# Table 3 and 4 rows on CelebA Smiling/Male: group accuracies (0,0) (0,1) (1,0) (1,1), ACC, WST, EO, STD
_COLUMNS = ("0_0", "0_1", "1_0", "1_1", "ACC", "WST", "EO_paper", "STD")
_ROWS = {
    "baseline": (83.57, 98.50, 95.36, 71.52, 89.23, 71.52, 23.84, 10.65),
    "synthetic_only": (86.82, 89.40, 86.39, 78.52, 85.98, 78.52, 7.87, 4.07),
    "supplementation": (84.39, 98.39, 95.40, 73.67, 89.77, 73.67, 21.96, 9.76),
    "repairing": (82.82, 98.10, 96.04, 75.05, 89.72, 75.05, 21.18, 9.50),
    "linear_probe": (84.55, 96.22, 94.82, 77.41, 89.69, 77.41, 17.51, 7.71),
    "full_ft": (88.81, 91.62, 89.55, 82.74, 88.77, 82.74, 6.83, 3.31),
    "random_selection": (87.93, 92.81, 91.31, 82.17, 89.33, 82.17, 9.14, 4.09),
    "subtuning_update_one": (87.50, 94.75, 93.09, 80.64, 90.04, 80.64, 12.45, 5.52),
    "subtuning_freeze_one": (88.69, 91.09, 90.48, 83.48, 89.06, 83.48, 7.00, 3.00),
    "aimfair_cosine": (86.07, 91.77, 91.53, 83.33, 88.85, 83.33, 8.40, 3.61),
    "aimfair": (88.16, 91.40, 90.25, 84.20, 89.02, 84.20, 6.07, 2.74),
}
SMILING_MALE: dict[str, dict[str, float]] = {name: dict(zip(_COLUMNS, row)) for name, row in _ROWS.items()}

# The other settings: ACC, WST, EO, STD of the baseline, full fine-tuning and AIM-Fair
OTHER_SETTINGS: dict[str, dict[str, dict[str, float]]] = {
    "celeba Smiling/Young": {"baseline": dict(ACC=90.19, WST=78.72, EO_paper=17.37, STD=6.92),
                             "full_ft": dict(ACC=87.85, WST=85.98, EO_paper=4.37, STD=1.68),
                             "aimfair": dict(ACC=90.21, WST=87.78, EO_paper=5.44, STD=2.34)},
    "utkface Female/White": {"baseline": dict(ACC=88.86, WST=79.58, EO_paper=16.59, STD=7.26),
                             "full_ft": dict(ACC=87.90, WST=83.00, EO_paper=5.40, STD=2.99),
                             "aimfair": dict(ACC=88.30, WST=84.26, EO_paper=4.81, STD=2.41)},
    "celeba Young/Male": {"baseline": dict(ACC=77.70, WST=42.00, EO_paper=52.00),  # the paper's ERM row
                          "aimfair": dict(ACC=78.19, WST=54.89, EO_paper=28.18)},
}

# Ablations on CelebA Smiling/Male: {ablation: {value: metrics}}; values as the ablation names its arms
ABLATIONS: dict[str, dict[str, dict[str, float]]] = {
    # synthetic-only training; the paper's final prompts (50 contextual with head poses) are its Table 3 row
    "prompts": {"single": dict(ACC=71.65, WST=43.28), "25": dict(ACC=81.85, WST=69.73),
                "50": dict(ACC=85.98, WST=78.52)},
    "amount": {"0.5": dict(WST=80.80), "1": dict(WST=84.20), "1.5": dict(WST=81.25), "2": dict(WST=83.36)},
    "skew": {"4:6": dict(WST=83.90), "3:7": dict(WST=83.52), "2:8": dict(WST=83.16), "1:9": dict(WST=84.20)},
    "real_fraction": {"1": dict(ACC=89.02, WST=84.20, EO_paper=6.07), "0.5": dict(ACC=88.85, WST=83.99, EO_paper=6.28),
                      "0.25": dict(ACC=88.89, WST=82.54, EO_paper=7.59), "0.1": dict(ACC=87.90, WST=81.73, EO_paper=8.16)},
}
