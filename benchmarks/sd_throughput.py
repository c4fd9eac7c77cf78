"""Stable Diffusion sampling throughput: the `paper` preset against the `fast` preset of aimfair.csdg.generators.sd.

What it measures: images per second handed back by StableDiffusionGenerator.generate (prompt encoding,
classifier-free guidance, all sampling steps, the VAE decode, the conversion to uint8 and the resize to
224 px), one preset after the other on the same model and prompts:

* paper: DDIM 50 steps, guidance 9.0, float32, 512 px resized to 224 px with LANCZOS (the authors' settings);
* fast: DPM-Solver++ 25 steps, guidance 9.0, bfloat16 (float16 on GPUs without it), larger batches,
  channels-last, SDPA attention; `--compile` also compiles its UNet with torch.compile.

The model is Stable Diffusion 2.1 base at full size with random weights: the UNet, VAE and text encoder
are built here from configs with the same shapes as stabilityai/stable-diffusion-2-1-base (SD21_* below;
the text encoder is an OpenCLIP-H-like CLIP text transformer) and a CLIP tokenizer is built from a
byte-level alphabet, so nothing is downloaded. The weights do not change the work per image, so the
numbers hold for the real checkpoint. The pipeline is saved to a temporary folder and loaded back through
load_stable_diffusion, exactly as the generation stage loads real weights.

Each preset generates one untimed batch first (CUDA kernels, cuDNN autotuning, compilation), then
`--batches` timed batches of its batch size (3 by default). The first timed result is checked: shape
(N, 224, 224, 3), uint8.

Full size needs a GPU (CUDA, or Apple's MPS): on a CPU one image takes minutes and float32 weights take
5 GB, so the script refuses to run there unless `--tiny` is given, which runs the same code on a toy
pipeline (16 px latents: a smoke check, not a measurement). Run from the repository root:

    .venv/bin/python benchmarks/sd_throughput.py --json docs/sd_throughput_h100.json   # on a GPU machine
    .venv/bin/python benchmarks/sd_throughput.py --compile                        # fast preset compiled
    .venv/bin/python benchmarks/sd_throughput.py --tiny                           # smoke check, any machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aimfair.core.device import resolve_device
from aimfair.csdg.generators.sd import PRESETS, load_stable_diffusion

PROMPTS = ["Portrait face photo of a smiling woman with wavy hair, head slightly tilted left.",
           "Portrait face photo of a man not smiling, with a 5 o'clock shadow and glasses.",
           "Portrait face photo of a smiling man with short black hair, soft studio lighting.",
           "Portrait face photo of a woman not smiling, with bangs, looking at the camera."]

# ----------------------------------------------------------------------------- the model's shapes

SD21_UNET = dict(  # stabilityai/stable-diffusion-2-1-base, unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0)
SD21_VAE = dict(  # vae/config.json: 8x downscaling, 4 latent channels
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, scaling_factor=0.18215)
SD21_TEXT = dict(  # text_encoder/config.json: the text tower of OpenCLIP ViT-H/14, its last layer dropped
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512)

TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                 cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8)
TINY_VAE = dict(sample_size=16, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                norm_num_groups=8)
TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77)

SCHEDULER = dict(  # scheduler/scheduler_config.json of SD 2.1 base (the presets swap the sampler, keep the betas)
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
    steps_offset=1, prediction_type="epsilon")


def byte_level_tokenizer(folder: Path):
    """A CLIP tokenizer over the byte-level alphabet (one token per character, no merges), saved nowhere else."""
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = [chr(b) for b in printable] + [chr(256 + i) for i in range(256 - len(printable))]
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


def save_random_sd21(folder: Path, tiny: bool, device: torch.device) -> dict:
    """Build SD 2.1 base (or the toy) with random weights, save it as a diffusers folder; parameter counts."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = byte_level_tokenizer(folder.parent / "vocab")
    torch.manual_seed(0)
    with torch.device(device):  # random initialisation of ~1.3 billion parameters is much faster on a GPU
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SD21_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD21_VAE))
        text_encoder = CLIPTextModel(CLIPTextConfig(**(TINY_TEXT if tiny else SD21_TEXT),
                                                    bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return {name: sum(p.numel() for p in m.parameters()) for name, m in
            (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run_preset(folder: Path, preset: str, args, device: torch.device) -> dict:
    """Load the pipeline at one preset, warm it up with one batch, then time `args.batches` batches."""
    batch_size = args.batch_size or PRESETS[preset].batch_size
    compiled = args.compile and preset == "fast"
    t0 = time.perf_counter()
    generator = load_stable_diffusion(folder, preset=preset, device=str(device), batch_size=batch_size,
                                      compile=compiled, steps=args.steps)
    load_seconds = time.perf_counter() - t0
    info = generator.info

    def prompts_and_seeds(batch: int) -> tuple[list[str], list[int]]:
        seeds = list(range(batch * batch_size, (batch + 1) * batch_size))
        return [PROMPTS[s % len(PROMPTS)] for s in seeds], seeds

    t0 = time.perf_counter()
    generator.generate(*prompts_and_seeds(0))  # warm-up: kernels, autotuning, compilation
    synchronize(device)
    warmup_seconds = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    seconds, first = [], None
    for batch in range(1, args.batches + 1):
        synchronize(device)
        start = time.perf_counter()
        images = generator.generate(*prompts_and_seeds(batch))  # returns numpy, so the device has finished
        seconds.append(time.perf_counter() - start)
        first = images if first is None else first
        print(f"  {preset} batch {batch}/{args.batches}: {batch_size / seconds[-1]:.2f} img/s", flush=True)
    r = info.resolution
    if first.shape != (batch_size, r, r, 3) or first.dtype != np.uint8:
        sys.exit(f"{preset}: bad images: {first.shape} {first.dtype}, expected ({batch_size}, {r}, {r}, 3) uint8")

    row = dict(preset=preset, sampler=info.sampler, steps=info.steps, guidance=info.guidance,
               dtype=str(generator.dtype).removeprefix("torch."), batch_size=batch_size, compiled=compiled,
               generation_size=generator.size, resolution=r, images=batch_size * args.batches,
               images_per_s=round(batch_size * args.batches / sum(seconds), 3),
               unet_steps_per_s=round(batch_size * args.batches * info.steps / sum(seconds), 1),
               batch_seconds=[round(s, 3) for s in seconds], load_seconds=round(load_seconds, 1),
               warmup_seconds=round(warmup_seconds, 1))
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del generator
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="toy-size pipeline: a smoke check that runs anywhere")
    parser.add_argument("--presets", nargs="+", default=["paper", "fast"], choices=sorted(PRESETS))
    parser.add_argument("--batches", type=int,
                        help="timed batches per preset, after one warm-up (default 3; 1 with --tiny)")
    parser.add_argument("--batch-size", type=int, help="images per batch for every preset (default: the preset's)")
    parser.add_argument("--steps", type=int, help="sampling steps for every preset (default: the preset's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet of the fast preset")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    args.batches = args.batches or (1 if args.tiny else 3)
    device = resolve_device(args.device)
    if device.type == "cpu" and not args.tiny:
        sys.exit("full-size Stable Diffusion 2.1 needs a GPU: on this CPU one 512 px image takes minutes and the "
                 "float32 weights 5 GB of memory. Run it on a CUDA machine, or pass --tiny for a smoke check of "
                 "the same code at toy size")
    model = "tiny random SD (16 px latents)" if args.tiny else "SD 2.1 base shapes, random weights"

    with tempfile.TemporaryDirectory(prefix="sd_throughput_") as scratch:
        folder = Path(scratch) / "sd"
        t0 = time.perf_counter()
        parameters = save_random_sd21(folder, args.tiny, device)
        print(f"{model}: {', '.join(f'{k} {v / 1e6:,.1f} M' for k, v in parameters.items())} parameters, "
              f"built and saved in {time.perf_counter() - t0:.1f} s", flush=True)
        print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
              + f", torch {torch.__version__}, {os.cpu_count()} CPU cores", flush=True)
        rows = [run_preset(folder, preset, args, device) for preset in args.presets]

    print()
    print(f"{'preset':<7} {'sampler':<12} {'steps':>5} {'dtype':<9} {'batch':>5} {'size':>9} {'img/s':>8} "
          f"{'UNet steps/s':>12}")
    for r in rows:
        print(f"{r['preset']:<7} {r['sampler']:<12} {r['steps']:>5} {r['dtype']:<9} {r['batch_size']:>5} "
              f"{r['generation_size']:>4}->{r['resolution']:<4} {r['images_per_s']:>8.2f} "
              f"{r['unet_steps_per_s']:>12.1f}")
    rates = {r["preset"]: r["images_per_s"] for r in rows}
    if "paper" in rates and "fast" in rates:
        print(f"fast / paper: {rates['fast'] / rates['paper']:.2f}x images per second")

    if args.json:
        import diffusers

        result = dict(
            machine=dict(cpus=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                         diffusers=diffusers.__version__, device=str(device),
                         gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None),
            settings=dict(model=model, tiny=args.tiny, parameters=parameters, batches=args.batches,
                          prompts=PROMPTS),
            results=rows,
            fast_over_paper=round(rates["fast"] / rates["paper"], 2) if {"paper", "fast"} <= rates.keys() else None)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
