"""How much the mask's numerics matter: every seed's scores and masks computed three ways.

* float32 as the mask stage computes it (convolutions on tiny maps as matrix products, aimfair.classifier.small_maps);
* float32 with the convolutions as training computes them (models.SmallMapConv2d, the stage before
  small_maps): the same sums in another order, so the scores should agree to float32 rounding;
* bfloat16 autocast, as training runs on CPUs that compute it natively: would it do for the mask?

On the default pipeline's own files (each seed's biased model, D_R, D_S1, D_S2, as the mask stage uses
them), it reports per seed and rule, against the stage's float32, the largest relative change of a domain
or bias score, whether the selected tensors change, how close each ranking's k-th and (k+1)-th scores are,
and the seconds each way (one run, so only a rough guide on a shared machine). Needs the outputs of
`dvc repro` up to the mask stage. Run from the repository root:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/mask_precision.py --json docs/mask_precision.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import torch

from aimfair.classifier.train import logits_of
from aimfair.config import load_params
from aimfair.core import paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError
from aimfair.selective.gradients import biased_model, full_float32, mean_gradients, set_gradients
from aimfair.selective.scores import select_tensors, sensitivity_scores
from aimfair.strategies.base import Setting


def bfloat16_gradients(params, model, sets, device) -> dict:
    """set_gradients with the probe's forward pass under bfloat16 autocast (as training runs)."""
    forward = type(model).forward

    def autocast_forward(self, x):
        return logits_of(lambda batch: forward(self, batch), x, "bfloat16")

    with mock.patch.object(type(model), "forward", autocast_forward):
        return set_gradients(params, model, sets, device, progress=False)


def convolution_gradients(params, model, sets, device) -> dict:
    """set_gradients as it was before aimfair.classifier.small_maps: the model's own convolutions, full float32."""
    sel = params.selection
    with full_float32():
        return {name: mean_gradients(model, images, device, sel.batch_size, sel.bn_mode, sel.seed)
                for name, images in sets.items()}


def boundary_margin(values, top_k: int, largest: bool) -> float:
    """How far apart the k-th and (k+1)-th scores of a ranking are, relative to the k-th: the room a rounding
    error has before it swaps a tensor in or out of the top k."""
    ranked = sorted(values, reverse=largest)
    if top_k >= len(ranked):
        return float("inf")
    return abs(ranked[top_k] - ranked[top_k - 1]) / abs(ranked[top_k - 1])


def compare(reference: dict, other: dict, rule: str, top_k: int) -> dict:
    """How the scores and mask from `other` gradients differ from those from the `reference` gradients."""
    exact, rounded = sensitivity_scores(reference, rule), sensitivity_scores(other, rule)
    margins = dict(domain=round(boundary_margin(exact["domain"], top_k, largest=False), 4),
                   bias=round(boundary_margin(exact["bias"], top_k, largest=True), 4))
    change = ((rounded[["domain", "bias"]] - exact[["domain", "bias"]]).abs() / exact[["domain", "bias"]].abs()).max()
    try:
        kept, kept_rounded = select_tensors(exact, top_k), select_tensors(rounded, top_k)
    except AimfairError as e:
        return dict(error=str(e), boundary_margin=margins)
    return dict(boundary_margin=margins, max_relative_change_domain=round(float(change["domain"]), 4),
                max_relative_change_bias=round(float(change["bias"]), 4),
                selected=len(kept), selected_other=len(kept_rounded), same_mask=kept == kept_rounded,
                only_in_reference=sorted(set(kept) - set(kept_rounded)),
                only_in_other=sorted(set(kept_rounded) - set(kept)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    params = load_params(args.params)
    root = paths.repo_root()
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    results = {}
    for seed in params.seeds:
        setting = Setting(params, root, seed, device, progress=False)
        model = biased_model(params, setting.biased_checkpoint)
        sets = dict(real=setting.real_train, biased_synthetic=setting.synthetic["biased"],
                    balanced_synthetic=setting.synthetic["balanced"])
        ways = dict(float32=lambda: set_gradients(params, model, sets, device, progress=False),
                    float32_convolutions=lambda: convolution_gradients(params, model, sets, device),
                    bfloat16=lambda: bfloat16_gradients(params, model, sets, device))
        gradients, seconds = {}, {}
        for way, compute in ways.items():
            started = time.perf_counter()
            gradients[way] = compute()
            seconds[way] = round(time.perf_counter() - started, 2)
        results[f"seed {seed}"] = dict(seconds=seconds, **{
            f"{way} against float32": {rule: compare(gradients["float32"], gradients[way], rule, params.selection.top_k)
                                       for rule in ("absolute", "cosine")}
            for way in ("float32_convolutions", "bfloat16")})
        print(f"seed {seed}: {json.dumps(results[f'seed {seed}'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            machine=dict(torch=torch.__version__, device=str(device)), top_k=params.selection.top_k,
            results=results), indent=2) + "\n")


if __name__ == "__main__":
    main()
