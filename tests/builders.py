"""Builders shared by the tests: a fresh clone of the repository, commands that must succeed, a tiny Stable
Diffusion pipeline saved as a diffusers folder (random weights, nothing downloaded)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from aimfair.config import WorldConfig
from aimfair.data.tinyfaces import write_world

ROOT = Path(__file__).resolve().parents[1]
NATIVE = 16  # the tiny SD's image side: latent 8 px x VAE scale 2


def merge(base: dict, override: dict) -> dict:
    """`override` merged into `base` (nested mappings key by key); returns base."""
    for key, value in override.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def run_ok(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run `cmd`, asserting it succeeds (with the end of its output when it does not)."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def fresh_clone(dest: Path) -> tuple[Path, dict]:
    """A clone of the repository at `dest` with the uncommitted work under test copied in (tracked files only:
    no data/, no DVC remote, no outputs), and the environment to run its commands with."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    for path in subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, dest / path)
    for path in subprocess.run(["git", "diff", "HEAD", "--name-only"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split():
        if (ROOT / path).exists():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, dest / path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(dest), MPLBACKEND="Agg")
    return dest, env


def make_celeba_and_utkface(data: Path, n_images: int = 320) -> None:
    """data/celeba in CelebA's official text format, and data/utkface with the same faces under UTKFace names."""
    write_world(data / "celeba", WorldConfig(n_images=n_images, image_size=32), workers=1, progress=False)
    lines = (data / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    utkface = data / "utkface" / "UTKFace"
    utkface.mkdir(parents=True)
    for i, line in enumerate(lines[2:]):
        image, *values = line.split()
        a = dict(zip(names, map(int, values)))
        age = 22 if a["Young"] == 1 else 47
        gender = 0 if a["Male"] == 1 else 1
        race = 0 if i % 2 else 1 + i % 4  # about half White
        shutil.copy(data / "celeba" / "img_align_celeba" / image,
                    utkface / f"{age}_{gender}_{race}_2017011617{i:07d}.jpg.chip.jpg")


def toy_settings_repo(dest: Path, pipeline: str, settings: list[str], toy: dict, n_images: int = 320) -> tuple[Path, dict]:
    """A fresh clone with CelebA/UTKFace fixture files under data/, whose `pipeline` folder (paper, settings) runs
    only `settings`, each with `toy` merged into its params.yaml, for toy['seeds']."""
    import yaml

    repo, env = fresh_clone(dest)
    make_celeba_and_utkface(repo / "data", n_images)
    dvc_file = repo / pipeline / "dvc.yaml"
    stages = yaml.safe_load(dvc_file.read_text())
    everything = stages["vars"][0]["settings"]
    stages["vars"][0].update(settings={name: everything[name] for name in settings}, seeds=toy["seeds"])
    dvc_file.write_text(yaml.safe_dump(stages, sort_keys=False))
    for setting in settings:
        params_file = repo / pipeline / setting / "params.yaml"
        params_file.write_text(yaml.safe_dump(merge(yaml.safe_load(params_file.read_text()), toy), sort_keys=False))
    return repo, env


def byte_level_alphabet() -> list[str]:
    """The 256 printable characters that byte-level BPE (GPT-2, CLIP) maps the bytes 0-255 to."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def tiny_tokenizer(folder):
    """A CLIP tokenizer that spells every word letter by letter: the alphabet, each letter also as a word end."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    alphabet = byte_level_alphabet()
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


def save_tiny_sd(folder: Path) -> Path:
    """A tiny random SD pipeline saved into `folder` as a diffusers folder, as one copied from the Hub would
    be (16 px images: 8 px latents, VAE scale 2)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer(folder.parent / f"{folder.name}-vocab")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=NATIVE // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=NATIVE)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    # SD 2.1 base's schedule; save it as PNDM, as the Hub's folder does, so the presets must swap the sampler
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


