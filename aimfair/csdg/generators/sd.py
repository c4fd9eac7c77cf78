"""Stable Diffusion (1.x, 2.x, SDXL) through diffusers, offline, as a Generator (aimfair.csdg.generators.base).

The weights come from disk only: a local pipeline folder (the one holding model_index.json) or a model id
already in the local Hugging Face cache, optionally pinned to a revision. Nothing is ever downloaded: the
model is resolved to a folder on disk before diffusers sees it, loaded with `local_files_only=True`, and
HF_HUB_OFFLINE is set.

Two presets (PRESETS below), each of which can be overridden knob by knob:

* `paper`: what the AIM-Fair authors ran: DDIM, 50 steps, eta 0, guidance 9.0, float32, images generated at
  the model's native size (512 px for SD 2.1 base) and resized to 224 px with PIL's LANCZOS filter.
* `fast`: for a GPU: bfloat16 (float16 where bfloat16 is not supported; float32 off CUDA), DPM-Solver++ in
  25 steps, large batches, PyTorch's scaled-dot-product attention (diffusers' default AttnProcessor2_0),
  channels-last tensors and, when asked, a compiled UNet. Same guidance and output size as `paper`.

Seeds. The starting noise of image i is drawn from its own CPU torch.Generator seeded with seeds[i]
(base.initial_noise) in float32 and then moved to the device and dtype, so it is the same on every device,
in every dtype and in every batch. Both samplers are deterministic from there (DDIM with eta 0 and
DPM-Solver++ add no noise while sampling), so an image depends only on its prompt, its seed and the
settings. The UNet always sees the preset's batch (`batch_size`, recorded as info.batch; the last batch is
filled with copies that are dropped), because kernels chosen by batch shape round differently.

The safety checker is not loaded: it is not part of the paper's protocol, local folders often lack it, and
it would silently black out some images of the pool.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.base import GeneratorInfo, in_fixed_batches, initial_noise

DEFAULT_RESOLUTION = 224  # the classifier's input size: the authors resize every generated image to it


@dataclass(frozen=True)
class Preset:
    """Sampling settings; every field can be overridden in load_stable_diffusion."""

    sampler: str  # "ddim" or "dpmsolver++"
    steps: int
    guidance: float
    dtype: str  # "float32", "float16", "bfloat16", or "half": bfloat16 on a GPU that has it, else float16
    batch_size: int
    channels_last: bool


PRESETS = {
    "paper": Preset(sampler="ddim", steps=50, guidance=9.0, dtype="float32", batch_size=8, channels_last=False),
    "fast": Preset(sampler="dpmsolver++", steps=25, guidance=9.0, dtype="half", batch_size=32, channels_last=True),
}
SAMPLERS = ("ddim", "dpmsolver++")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The components each supported pipeline cannot run without (optional ones, such as the safety checker,
# are left out on purpose).
PIPELINES = {
    "StableDiffusionPipeline": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "StableDiffusionXLPipeline": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                                  "scheduler"),
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")

HOW_TO_GET_WEIGHTS = ("give a local diffusers pipeline folder (the one holding model_index.json), or a model id "
                      "already in the Hugging Face cache: on a machine with internet run `huggingface-cli download "
                      "<model id>` and copy its cache folder (~/.cache/huggingface/hub) here")


# ----------------------------------------------------------------------------- finding the weights on disk


def _looks_like_model_id(model: str) -> bool:
    """'name' or 'owner/name' (what the Hub accepts), as opposed to a path such as ./x, /x or a/b/c."""
    parts = model.split("/")
    return (0 < len(parts) <= 2 and all(parts) and not model.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for part in parts for c in part))


def _hub_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_model_folder(model: str | os.PathLike, revision: str | None = None,
                         cache_dir: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """The pipeline folder on disk for a local path or a cached model id, and its commit when it is cached.

    A path that exists is used as it is (a revision given with it is only recorded). Otherwise a model id
    is looked up in the Hugging Face cache (`cache_dir`, default the hub's), at `revision` (a branch, tag
    or commit the cache knows; default main).
    """
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AimfairError(f"Stable Diffusion model {str(model)!r} is a file, not a folder: "
                               f"{HOW_TO_GET_WEIGHTS}")
        return path.resolve(), None
    name = str(model)
    if not _looks_like_model_id(name):
        raise AimfairError(f"Stable Diffusion model folder {path.resolve()} does not exist: {HOW_TO_GET_WEIGHTS}")

    from huggingface_hub import try_to_load_from_cache

    cache = _hub_cache_dir(cache_dir)
    found = try_to_load_from_cache(name, "model_index.json", cache_dir=cache, revision=revision)
    if not isinstance(found, str):  # None (never cached) or _CACHED_NO_EXIST (known to be absent)
        at = f" at revision {revision!r}" if revision else ""
        raise AimfairError(f"Stable Diffusion model {name!r}{at} is neither a local folder (looked for "
                           f"{path.resolve()}) nor in the Hugging Face cache (looked in {cache}): "
                           f"{HOW_TO_GET_WEIGHTS}, or point HF_HUB_CACHE at a cache that has it")
    snapshot = Path(found).parent  # <cache>/models--owner--name/snapshots/<commit>/
    return snapshot, snapshot.name


def _component_problem(folder: Path, component: str) -> str | None:
    """What is missing from one component's subfolder, or None when it looks loadable."""
    sub = folder / component
    if not sub.is_dir():
        return f"{component}/ (missing folder)"
    if component.startswith("scheduler"):
        return None if (sub / "scheduler_config.json").is_file() else f"{component}/scheduler_config.json"
    if component.startswith("tokenizer"):
        # a tokenizer saved by transformers 5 has tokenizer.json; the Hub's SD folders have vocab.json + merges.txt
        ok = (sub / "tokenizer.json").is_file() or ((sub / "vocab.json").is_file() and (sub / "merges.txt").is_file())
        return None if ok else f"{component}/ (no tokenizer.json, nor vocab.json + merges.txt)"
    if not (sub / "config.json").is_file():
        return f"{component}/config.json"
    # is_file() follows symlinks, so a cache snapshot whose blob never finished downloading counts as missing
    if not any(p.is_file() for p in sub.iterdir() if p.name.endswith(WEIGHT_SUFFIXES)):
        return f"{component}/ (no weights: *.safetensors or *.bin)"
    return None


def _only_fp16_weights(folder: Path, components: Sequence[str]) -> bool:
    """True when some component has only `*.fp16.*` weight files (diffusers then needs variant="fp16")."""
    for component in components:
        sub = folder / component
        if component.startswith(("scheduler", "tokenizer")) or not sub.is_dir():
            continue
        weights = [p.name for p in sub.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file()]
        if weights and all(".fp16." in w for w in weights):
            return True
    return False


def read_pipeline_index(folder: Path) -> tuple[str, dict]:
    """The pipeline class and model_index.json of a folder, checked for a supported class and completeness."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise AimfairError(f"{folder} has no model_index.json, so it is not a diffusers pipeline folder: "
                           f"{HOW_TO_GET_WEIGHTS}")
    index = json.loads(index_file.read_text())
    class_name = index.get("_class_name", "")
    if class_name not in PIPELINES:
        raise AimfairError(f"{folder} holds a {class_name or 'unnamed'} pipeline; supported: "
                           f"{', '.join(PIPELINES)} (Stable Diffusion 1.x, 2.x and SDXL text-to-image)")
    missing = [p for c in PIPELINES[class_name] if (p := _component_problem(folder, c))]
    if missing:
        raise AimfairError(f"Stable Diffusion folder {folder} is incomplete, missing: {'; '.join(missing)}. "
                           "Copy the whole pipeline folder (or download it again with `huggingface-cli download`)")
    return class_name, index


def weights_fingerprint(folder: Path, components: Sequence[str]) -> str:
    """A short hash that identifies local weights cheaply: model_index.json, every component's config, and
    each weight file's name, size, first and last MiB (reading gigabytes of weights would take minutes)."""
    h = hashlib.sha256((folder / "model_index.json").read_bytes())
    for component in components:
        sub = folder / component
        for p in sorted(sub.iterdir()):
            if not p.is_file():
                continue
            if p.name.endswith(".json") and not p.name.endswith(".index.json"):
                h.update(f"{component}/{p.name}".encode() + p.read_bytes())
            elif p.name.endswith(WEIGHT_SUFFIXES):
                size = p.stat().st_size
                h.update(f"{component}/{p.name}:{size}".encode())
                with p.open("rb") as f:
                    h.update(f.read(1 << 20))
                    f.seek(max(0, size - (1 << 20)))
                    h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------- sizes


def size_multiple(unet_config: dict, vae_config: dict) -> int:
    """Generation sizes must be multiples of this: the VAE's downscaling times the UNet's, and of 8 (diffusers)."""
    vae_scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    unet_scale = 2 ** (len(unet_config["block_out_channels"]) - 1)
    return math.lcm(8, vae_scale * unet_scale)


def native_size(unet_config: dict, vae_config: dict) -> int:
    """The size the model was trained at: the UNet's latent sample size times the VAE's scale (512 for SD 2.1 base)."""
    sample = unet_config["sample_size"]
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    return int(sample) * 2 ** (len(vae_config["block_out_channels"]) - 1)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """Resize uint8 (N, H, W, 3) images to (N, resolution, resolution, 3) with PIL's LANCZOS, as the authors."""
    if images.shape[1:3] == (resolution, resolution):
        return images
    out = [np.asarray(Image.fromarray(im).resize((resolution, resolution), Image.Resampling.LANCZOS))
           for im in images]
    return np.stack(out) if out else np.zeros((0, resolution, resolution, 3), np.uint8)


# ----------------------------------------------------------------------------- the generator


class StableDiffusionGenerator:
    """A loaded Stable Diffusion pipeline ready to sample (the Generator interface of aimfair.csdg.generators.base)."""

    def __init__(self, pipe, info: GeneratorInfo, size: int, device: torch.device, dtype: torch.dtype, preset: str):
        self.pipe, self.info, self.size = pipe, info, size  # info.batch images go through the UNet at once
        self.device, self.dtype, self.preset = device, dtype, preset
        self.latent_shape = (pipe.unet.config.in_channels, size // pipe.vae_scale_factor,
                             size // pipe.vae_scale_factor)
        self._img2img = None  # the image-to-image pipeline on the same weights, built on first use

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 images (N, R, R, 3), R = info.resolution; image i depends only on prompts[i] and seeds[i]."""
        if len(prompts) != len(seeds):
            raise ValueError(f"one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds")
        return in_fixed_batches(self._batch, [list(prompts), list(seeds)], self.info.batch, self.info.resolution)

    @torch.inference_mode()
    def _batch(self, prompts: list[str], seeds: list[int]) -> np.ndarray:
        latents = initial_noise(seeds, self.latent_shape, dtype=self.dtype, device=self.device)
        images = self.pipe(prompt=prompts, height=self.size, width=self.size, latents=latents,
                           num_inference_steps=self.info.steps, guidance_scale=self.info.guidance, eta=0.0,
                           output_type="np").images
        # float in [0, 1] -> uint8 as diffusers' own PIL conversion rounds it, then the authors' resize
        pixels = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        return resize_images(pixels, self.info.resolution)


    def edit(self, images: np.ndarray, prompts: Sequence[str], seeds: Sequence[int], strength: float) -> np.ndarray:
        """SDEdit through diffusers' image-to-image pipeline on the same weights: uint8 square images
        (N, H, W, 3) noised to `strength`, denoised with `prompts`; returns (N, R, R, 3) uint8."""
        if not len(images) == len(prompts) == len(seeds):
            raise ValueError("one image and one seed per prompt")
        if not 0 < strength <= 1:
            raise AimfairError(f"the edit strength must be in (0, 1], got {strength}")
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return in_fixed_batches(lambda x, p, s: self._edit_batch(x, p, s, strength),
                                [images, list(prompts), list(seeds)], self.info.batch, self.info.resolution)

    @torch.inference_mode()
    def _edit_batch(self, images: np.ndarray, prompts: list[str], seeds: list[int], strength: float) -> np.ndarray:
        from aimfair.data.loading import resize_uint8

        source = torch.from_numpy(resize_uint8(images, self.size)).float().div(255)
        # one CPU generator per image: its noise depends on its seed only, whatever the batch or device
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        edited = self._img2img(prompt=prompts, image=source.to(self.device, self.dtype), strength=strength,
                               num_inference_steps=self.info.steps, guidance_scale=self.info.guidance, eta=0.0,
                               generator=generators, output_type="np").images
        pixels = (np.clip(edited, 0, 1) * 255).round().astype(np.uint8)
        return resize_images(pixels, self.info.resolution)


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "half":
        if device.type != "cuda":
            return torch.float32  # half precision on a CPU is slow or unsupported for these kernels
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise AimfairError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)} or half")
    return DTYPES[name]


def _scheduler(sampler: str, config):
    """The sampler, built from the model's own scheduler config (its betas, prediction type, offsets)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if sampler == "ddim":
        return DDIMScheduler.from_config(config)
    return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)


def load_stable_diffusion(model: str | os.PathLike, revision: str | None = None, preset: str = "paper",
                          device: str | torch.device = "auto", resolution: int | None = None,
                          batch_size: int | None = None, compile: bool = False, steps: int | None = None,
                          guidance: float | None = None, size: int | None = None, sampler: str | None = None,
                          dtype: str | None = None, cache_dir: str | os.PathLike | None = None) -> StableDiffusionGenerator:
    """Load a local Stable Diffusion 1.x / 2.x / SDXL pipeline, offline, ready to generate.

    model: a pipeline folder, or a model id in the Hugging Face cache (`cache_dir`, default the hub's);
    revision: the branch, tag or commit to take from the cache (recorded as given for a local folder);
    preset: "paper" or "fast" (PRESETS); steps, guidance, sampler ("ddim" or "dpmsolver++"), dtype and
    batch_size override the preset's; size: the side generated at (default the model's native size);
    resolution: the side of the images handed back, resized with LANCZOS (default 224);
    device: "auto" (cuda, else mps, else cpu) or a torch device; compile: torch.compile the UNet.

    info.revision is the cache's commit for a cached model id, the given revision for a local folder, or
    else a short fingerprint of the local weights (weights_fingerprint).
    """
    from aimfair.core.device import resolve_device

    if preset not in PRESETS:
        raise AimfairError(f"unknown Stable Diffusion preset {preset!r}: use one of {', '.join(PRESETS)}")
    settings = PRESETS[preset]
    settings = replace(settings, **{k: v for k, v in dict(steps=steps, guidance=guidance, sampler=sampler,
                                                          dtype=dtype, batch_size=batch_size).items()
                                    if v is not None})
    if settings.sampler not in SAMPLERS:
        raise AimfairError(f"unknown sampler {settings.sampler!r}: use one of {', '.join(SAMPLERS)}")
    if settings.steps < 1:
        raise AimfairError(f"Stable Diffusion needs at least one sampling step, got {settings.steps}")
    if settings.guidance < 0:
        raise AimfairError(f"guidance must be >= 0 (1 turns classifier-free guidance off), got {settings.guidance}")
    if settings.batch_size < 1:
        raise AimfairError(f"batch_size must be 1 or more, got {settings.batch_size}")
    device = resolve_device(device)  # a clear error for cuda without a GPU
    torch_dtype = _resolve_dtype(settings.dtype, device)

    folder, commit = resolve_model_folder(model, revision, cache_dir)
    class_name, _ = read_pipeline_index(folder)
    components = PIPELINES[class_name]

    # sizes are checked from the configs, before gigabytes of weights are read
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    multiple = size_multiple(unet_config, vae_config)
    native = native_size(unet_config, vae_config)
    size = native if size is None else size
    if size <= 0 or size % multiple:
        raise AimfairError(f"this model cannot generate {size} px images: the generation size must be a positive "
                           f"multiple of {multiple} (its native size is {native}): set it to e.g. "
                           f"{max(multiple, round(size / multiple) * multiple)} or leave it unset")
    resolution = DEFAULT_RESOLUTION if resolution is None else resolution
    if resolution <= 0:
        raise AimfairError(f"the output resolution must be a positive number of pixels, got {resolution}: "
                           f"use e.g. {DEFAULT_RESOLUTION} as the paper")

    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: the folder is local, nothing may be fetched
    import diffusers

    pipeline_class = getattr(diffusers, class_name)
    # leave out what the paper's protocol does not use (and local folders often lack)
    extra = dict(feature_extractor=None, image_encoder=None)
    if class_name == "StableDiffusionPipeline":
        extra.update(safety_checker=None, requires_safety_checker=False)
    else:
        extra.update(add_watermarker=False)
    pipe = pipeline_class.from_pretrained(folder, dtype=torch_dtype, local_files_only=True,
                                          variant="fp16" if _only_fp16_weights(folder, components) else None,
                                          **extra)
    pipe.scheduler = _scheduler(settings.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)  # the runner shows one bar for the whole pool
    pipe = pipe.to(device)
    # attention: diffusers' default processor (AttnProcessor2_0) already calls torch's scaled_dot_product_attention
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile:
        pipe.unet = torch.compile(pipe.unet)

    info = GeneratorInfo(model=str(model), revision=commit or revision or weights_fingerprint(folder, components),
                         sampler=settings.sampler, steps=settings.steps, guidance=float(settings.guidance),
                         resolution=resolution, precision=str(torch_dtype).removeprefix("torch."),
                         batch=settings.batch_size)
    return StableDiffusionGenerator(pipe, info, size=size, device=device, dtype=torch_dtype, preset=preset)
