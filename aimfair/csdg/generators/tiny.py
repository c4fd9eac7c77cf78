"""The built-in text-to-image model: a small pixel-space diffusion UNet that reads MiniLM token states.

It is what the default pipeline uses instead of Stable Diffusion, which cannot be downloaded or run on a
laptop: a diffusers `UNet2DConditionModel` (channels 32/64/64, cross-attention at the 8x8 level) trained on
captioned "studio" renders of the built-in world. The text reaches it through cross-attention over the last
hidden states of all-MiniLM-L6-v2 (one vector per token), which follows smile and gender far
better than one pooled sentence vector. A learned "null" context stands for the empty prompt,
so sampling can use classifier-free guidance; the sampler is DDIM.

Checkpoints are a safetensors file (weights in float16: a few MB, small enough to commit) plus a JSON
config, in one folder. Sampling lives in aimfair.csdg.generators.tiny_sampling, so that a change to the sampler
does not make DVC retrain the model (this module is a dependency of the generator stage).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from aimfair.config import TinyConfig, TinyTraining
from aimfair.core import io
from aimfair.core.errors import AimfairError
from aimfair.core.resume import load_resume_state, save_resume_state
from aimfair.csdg.text import EMBED_DIM, token_states

WEIGHTS, CONFIG = "model.safetensors", "config.json"
_RESTORE = ("restore the committed model (git checkout models/tinyfaces_t2i), or retrain it "
            "(dvc repro -f generator, or aimfair dataset-generator for a setting's own model)")


class TinyT2I(nn.Module):
    """The UNet and the learned null context (the 'empty prompt' token states)."""

    def __init__(self, config: TinyConfig = TinyConfig()):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.config = config
        c = config.channels
        self.unet = UNet2DConditionModel(
            sample_size=config.resolution, in_channels=3, out_channels=3, block_out_channels=c,
            layers_per_block=1, norm_num_groups=8, cross_attention_dim=EMBED_DIM,
            attention_head_dim=config.head_dim,
            # only the lowest (8x8) level and the middle attend to the text: cheap, and where layout lives
            down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )
        self.null_context = nn.Parameter(torch.zeros(config.max_tokens, EMBED_DIM))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample


def make_scheduler(config: TinyConfig, kind: str = "ddim"):
    """The noise schedule for training ("ddpm") or sampling ("ddim"), from the model's config."""
    from diffusers import DDIMScheduler, DDPMScheduler

    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[kind]
    extra = dict(clip_sample=False, set_alpha_to_one=False) if kind == "ddim" else dict(clip_sample=False)
    return cls(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
               prediction_type="epsilon", **extra)


# ----------------------------------------------------------------------------- saving and loading


def save_tiny(model: TinyT2I, folder: str | os.PathLike, meta: dict | None = None) -> None:
    """Write model.safetensors (float16) and config.json into `folder`, each atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with io.atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    io.write_json(folder / CONFIG, dict(model=asdict(model.config), **(meta or {})))


def load_tiny(folder: str | os.PathLike) -> tuple[TinyT2I, dict]:
    """The model (float32, eval mode) and its config file's contents."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [name for name in (WEIGHTS, CONFIG) if not (folder / name).exists()]
    if missing:
        raise AimfairError(f"the built-in generator folder {folder} lacks {', '.join(missing)}: "
                           "train it with `dvc repro generator` (or `aimfair generator`)")
    meta = io.read_json(folder / CONFIG, _RESTORE)
    known = {f.name for f in fields(TinyConfig)}
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items() if k in known}
    model = TinyT2I(TinyConfig(**arch))
    try:
        state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS)).items()}
    except (SafetensorError, OSError) as e:
        raise AimfairError(f"{folder / WEIGHTS} is damaged ({str(e).splitlines()[0][:80]}): {_RESTORE}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise AimfairError(f"{folder / WEIGHTS} does not match its config.json ({str(e).splitlines()[0]}): "
                           "retrain it with `dvc repro -f generator`") from None
    return model.eval(), meta


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """A short hash of the weights file: the 'revision' recorded in the pool's manifest."""
    return hashlib.sha256((Path(folder) / WEIGHTS).read_bytes()).hexdigest()[:12]


# ----------------------------------------------------------------------------- training


def _lr_at(step: int, training: TinyTraining) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak."""
    if step < training.warmup:
        return training.lr * (step + 1) / training.warmup
    progress = (step - training.warmup) / max(1, training.steps - training.warmup)
    return training.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def train_tiny(images: np.ndarray, captions: Sequence[str], config: TinyConfig, training: TinyTraining,
               resume_file: str | os.PathLike | None = None, log: Callable[[dict], None] | None = None,
               progress: bool = True, save_every: int = 100) -> TinyT2I:
    """Train the model on captioned images (uint8, at config.resolution); returns the EMA weights.

    Each step's batch, noise and timesteps come from generators seeded by (seed, step), so a run resumed
    from `resume_file` (written every `save_every` steps) continues exactly as an uninterrupted one would.
    """
    from tqdm import tqdm

    if images.shape[1:3] != (config.resolution, config.resolution):
        raise AimfairError(f"corpus images are {images.shape[1]} px but the model is built for "
                           f"{config.resolution} px: render the corpus at generator.resolution")
    torch.manual_seed(training.seed)
    model = TinyT2I(config)
    ema = TinyT2I(config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=1e-4)
    scheduler = make_scheduler(config, "ddpm")
    alphas = scheduler.alphas_cumprod

    states, masks = token_states(captions, config.max_tokens)  # each distinct caption encoded once
    states = states.half()  # 20k captions x 40 tokens x 384: half the memory; batches go back to float32
    pixels = to_unit_range(images)
    corpus = hashlib.sha1(images.tobytes() + "\n".join(captions).encode()).hexdigest()
    key = json.dumps([asdict(config), asdict(training), corpus])  # a resume file of another run is ignored
    start = 0
    saved = load_resume_state(resume_file) if resume_file else None
    if saved is not None:
        if saved.get("key") == key:
            model.load_state_dict(saved["model"])
            ema.load_state_dict(saved["ema"])
            optimiser.load_state_dict(saved["optimiser"])
            start = saved["step"]

    model.train()
    bar = tqdm(range(start, training.steps), desc="train generator", unit="step", disable=not progress,
               initial=start, total=training.steps)
    for step in bar:
        rng = np.random.default_rng([training.seed, step])
        idx = torch.from_numpy(rng.choice(len(pixels), training.batch_size, replace=False))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x0 = pixels[idx]
        context, mask = states[idx].float(), masks[idx]
        drop = torch.rand(len(idx), generator=gen) < training.cond_dropout
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, config.train_timesteps, (len(idx),), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # dropped rows read the null context as a parameter so that it learns
        context = torch.where(drop.view(-1, 1, 1), model.null_context.expand_as(context), context)
        mask = mask | drop.view(-1, 1)
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, training)
        loss = nn.functional.mse_loss(model(noisy, t, context, mask), noise)
        if not torch.isfinite(loss):
            raise AimfairError(f"the generator's loss became {loss.item()} at step {step}: lower generator.lr")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        decay = min(training.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if log:
            log(dict(step=step + 1, loss=loss.item(), lr=_lr_at(step, training)))
        if resume_file and (step + 1) % save_every == 0 and step + 1 < training.steps:
            save_resume_state(dict(key=key, step=step + 1, model=model.state_dict(), ema=ema.state_dict(),
                                   optimiser=optimiser.state_dict()), resume_file)
    if resume_file and Path(resume_file).exists():
        Path(resume_file).unlink()
    return ema.eval()
