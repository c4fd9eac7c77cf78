"""GPU time of the paper settings (paper/), estimated from their params and measured throughput.

What it counts, per setting, from paper/<setting>/params.yaml and aimfair's own sizing rules:
* images to generate: the pool (per group, the larger of what D_S2 and D_S1 draw) and the repairing edits
  (each minority group filled up to the majority's size, an edit costing `repair.strength` of a full sample);
* images passed through ResNet-18 in training: pretraining and the fidelity oracles, the mask's three gradient
  passes, and every strategy's fine-tuning (a new model trains with section pretrain's epochs, the others with
  section finetune's), for every seed;
* images passed forward only: the validation split after every training epoch (model selection) and the test
  split once per strategy, counted as a third of a training image each (a forward pass of the three passes
  of a training step).

Training images are converted to hours with the throughput measured by benchmarks/training_throughput.py
(docs/training_throughput_h100.json: ResNet-18 at 224 px on an H100, full fine-tuning, the slower of the two
rows). Generation is converted with Stable Diffusion 2.1 base's rate measured by benchmarks/sd_throughput.py
(docs/sd_throughput_h100.json, on the same kind of GPU) at the preset each setting's params.yaml names;
--sd-images-per-s replaces it with your own GPU's rate.

    .venv/bin/python benchmarks/paper_gpu_time.py --json docs/paper_gpu_time.json
    .venv/bin/python benchmarks/paper_gpu_time.py --sd-images-per-s 2.5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aimfair.config import load_params
from aimfair.csdg.generation import pool_plan
from aimfair.data.splits import group_quotas

ROOT = Path(__file__).resolve().parents[1]
ORACLES = 2  # the fidelity stage trains one oracle for the target and one for the protected attribute
# val and test images: CelebA's official partitions (the paper's protocol); UTKFace's from aimfair's split (docs/data.md),
# estimated from the public set's group sizes (the smallest group, White women, has about 4,600 images)
VAL_TEST = {"celeba": (19_867, 19_962), "utkface": (2_000, 3_700)}
FORWARD_SHARE = 1 / 3  # an inference image costs about a third of a training image


def workload(params_file: Path) -> dict:
    """Images generated and images trained on for one setting."""
    p = load_params(params_file)
    pool = sum(pool_plan(p).values())
    real = group_quotas(p.data.bias_degree, p.data.n_train)
    majority, minority = max(real.values()), min(real.values())
    edits = 2 * (majority - minority)  # the two minority groups filled up to the majority's size
    balanced = 4 * p.synthetic.balanced_per_group
    n, seeds = p.data.n_train, len(p.seeds)
    if p.finetune.new_model_budget != "epochs":
        raise SystemExit(f"{params_file}: this estimate assumes finetune.new_model_budget: epochs (the paper's)")
    new_model, finetune = p.pretrain.epochs, p.finetune.epochs
    per_seed = {
        "pretrain": new_model * n,
        "mask": n + p.synthetic.biased_size + balanced,
        "synthetic_only": new_model * balanced,
        "supplementation": new_model * (n + balanced),
        "repairing": new_model * (n + edits),
        "linear_probe": finetune * balanced,
        "full_ft": finetune * balanced,
        "aimfair": finetune * balanced,
    }
    once = {"fidelity_oracles": ORACLES * p.fidelity.epochs * 4 * p.fidelity.per_group}
    val, test = VAL_TEST[p.data.dataset]
    epochs = 4 * new_model + 3 * finetune  # pretrain and the three new models; the three fine-tunings
    forward = seeds * (epochs * val + 7 * test)  # validation after every epoch; the 7 strategies on test
    training = sum(per_seed.values()) * seeds + sum(once.values())
    return dict(pool_images=pool, repair_edits=edits, sample_equivalents=pool + p.repair.strength * edits,
                seeds=seeds, training_images=training, forward_images=forward,
                training_equivalents=training + FORWARD_SHARE * forward, training_per_seed=per_seed,
                training_once=once)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sd-images-per-s", type=float, default=None,
                        help="Stable Diffusion's rate on your GPU at the settings' preset (benchmarks/sd_throughput.py);"
                             " default: the preset's rate in --sd-throughput")
    parser.add_argument("--throughput", type=Path, default=ROOT / "docs" / "training_throughput_h100.json")
    parser.add_argument("--sd-throughput", type=Path, default=ROOT / "docs" / "sd_throughput_h100.json")
    parser.add_argument("--json", type=Path, default=None, help="write the estimate here")
    args = parser.parse_args()
    measured = json.loads(args.throughput.read_text())
    rate = min(r["images_per_s"] for r in measured["rows"] if r["size"] == 224)
    sd_measured = json.loads(args.sd_throughput.read_text())
    sd_rates = {r["preset"]: r["images_per_s"] for r in sd_measured["results"]}
    rows = {}
    for params_file in sorted((ROOT / "paper").glob("*/params.yaml")):
        w = workload(params_file)
        preset = load_params(params_file).generate.preset
        sd_rate = args.sd_images_per_s or sd_rates[preset]
        w["training_hours"] = round(w["training_equivalents"] / rate / 3600, 2)
        w["sd_preset"], w["sd_images_per_s"] = preset, sd_rate
        w["generation_hours"] = round(w["sample_equivalents"] / sd_rate / 3600, 2)
        w["total_hours"] = round(w["generation_hours"] + w["training_hours"], 2)
        rows[params_file.parent.name] = w
        print(f"{params_file.parent.name:22s} {w['pool_images']:6d} pool images + {w['repair_edits']:6d} edits = "
              f"{w['generation_hours']:4.1f} h at {sd_rate:.2f} SD images/s ({preset}); "
              f"{w['training_images'] / 1e6:5.1f} M training + {w['forward_images'] / 1e6:4.1f} M inference images = "
              f"{w['training_hours']:4.1f} h at {rate:.0f} training images/s")
    if args.json:
        sd_source = "--sd-images-per-s" if args.sd_images_per_s else sd_measured["machine"]["gpu"]
        args.json.write_text(json.dumps(dict(throughput=dict(device=measured["device"], images_per_s=rate),
                                             sd_throughput=dict(source=sd_source, images_per_s=sd_rates),
                                             settings=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
