"""Stable Diffusion through diffusers (aimfair.csdg.generators.sd) on a tiny randomly initialised pipeline.

The pipeline is built from configs (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, a CLIP tokenizer from
a vocabulary written here), saved with save_pretrained and loaded back through load_stable_diffusion, so the
real StableDiffusionPipeline code path runs on the CPU, at 16 px, in 2 steps: no weights, no downloads.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.sd import PRESETS, load_stable_diffusion
from tests.builders import NATIVE, save_tiny_sd, tiny_tokenizer

OUT = 12  # the output side the tests ask for: a real LANCZOS resize, still tiny
PROMPTS = ["portrait photo of a smiling woman", "portrait photo of a man, not smiling", "a smiling man",
           "a woman with glasses"]
SEEDS = [11, 22, 33, 44]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny random SD pipeline saved as a diffusers folder, as one copied from the Hub would be."""
    return save_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def test_images_have_the_asked_shape_and_each_depends_only_on_its_prompt_and_seed(sd_folder):
    generator = load_stable_diffusion(sd_folder, device="cpu", steps=2, resolution=OUT, batch_size=3)
    alone = generator.generate(PROMPTS[1:2], SEEDS[1:2])
    assert alone.shape == (1, OUT, OUT, 3) and alone.dtype == np.uint8
    batch = generator.generate(PROMPTS, SEEDS)  # a full batch of 3, then a batch of 1
    assert batch.shape == (4, OUT, OUT, 3) and batch.dtype == np.uint8
    # the same (prompt, seed) alone or in a batch: identical, as the UNet always sees a batch of 3
    assert np.array_equal(batch[1], alone[0]) and generator.info.batch == 3
    assert batch.std() > 0  # random weights still make varied pixels, not a constant image
    assert not np.array_equal(generator.generate(PROMPTS[1:2], [999])[0], alone[0])  # another seed, another image
    assert np.array_equal(generator.generate(PROMPTS[1:2], SEEDS[1:2]), alone)  # and it is reproducible
    assert generator.generate([], []).shape == (0, OUT, OUT, 3)
    assert np.array_equal(generator.generate(PROMPTS[::-1], SEEDS[::-1])[::-1], batch)  # nor on its place


def test_paper_preset_is_ddim_50_steps_guidance_9_and_resizes_with_lanczos(sd_folder):
    from diffusers import DDIMScheduler

    paper = load_stable_diffusion(sd_folder, device="cpu", batch_size=2)
    assert (paper.info.sampler, paper.info.steps, paper.info.guidance) == ("ddim", 50, 9.0)
    assert (paper.info.resolution, paper.size, paper.dtype) == (224, NATIVE, torch.float32)
    assert type(paper.pipe.scheduler) is DDIMScheduler
    assert paper.pipe.safety_checker is None
    assert len(paper.info.revision) == 12  # a fingerprint of the local weights (no revision was given)
    # the resize: generate at the native size, compare with PIL's LANCZOS of the same image
    native = load_stable_diffusion(sd_folder, device="cpu", steps=2, resolution=NATIVE).generate(PROMPTS[:1], [5])
    resized = load_stable_diffusion(sd_folder, device="cpu", steps=2, resolution=OUT).generate(PROMPTS[:1], [5])
    expected = np.asarray(Image.fromarray(native[0]).resize((OUT, OUT), Image.Resampling.LANCZOS))
    assert np.array_equal(resized[0], expected)


def test_fast_preset_is_dpm_solver_plus_plus_with_sdpa_and_channels_last(sd_folder):
    from diffusers import DPMSolverMultistepScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0

    fast = load_stable_diffusion(sd_folder, preset="fast", device="cpu", steps=2, resolution=OUT, guidance=5)
    scheduler = fast.pipe.scheduler
    assert type(scheduler) is DPMSolverMultistepScheduler and scheduler.config.algorithm_type == "dpmsolver++"
    assert (fast.info.sampler, fast.info.steps, fast.info.guidance) == ("dpmsolver++", 2, 5.0)
    assert PRESETS["fast"].steps == 25 and fast.info.batch == PRESETS["fast"].batch_size
    assert fast.dtype == torch.float32  # half precision only on a GPU
    assert all(isinstance(p, AttnProcessor2_0) for p in fast.pipe.unet.attn_processors.values())
    assert fast.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    images = fast.generate(PROMPTS[:2], SEEDS[:2])
    assert images.shape == (2, OUT, OUT, 3) and images.dtype == np.uint8
    assert np.array_equal(fast.generate(PROMPTS[1:2], SEEDS[1:2])[0], images[1])  # channels-last too


def test_a_model_id_is_found_in_the_hugging_face_cache_at_its_revision(sd_folder, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-sd"
    shutil.copytree(sd_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    sd = load_stable_diffusion("someone/tiny-sd", device="cpu", steps=1, resolution=OUT, cache_dir=tmp_path / "hub")
    assert (sd.info.model, sd.info.revision) == ("someone/tiny-sd", commit)
    assert load_stable_diffusion("someone/tiny-sd", revision=commit, device="cpu", cache_dir=tmp_path / "hub"
                                 ).info.revision == commit
    with pytest.raises(AimfairError,
                       match="at revision 'v2' is neither.*nor in the Hugging Face cache.*huggingface-cli download"):
        load_stable_diffusion("someone/tiny-sd", revision="v2", device="cpu", cache_dir=tmp_path / "hub")
    with pytest.raises(AimfairError, match="'someone/absent' is neither a local folder.*nor in the Hugging Face"):
        load_stable_diffusion("someone/absent", device="cpu", cache_dir=tmp_path / "hub")


def test_the_revision_of_a_local_folder_is_a_fingerprint_of_its_weights(sd_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    from aimfair.csdg.generators.sd import PIPELINES, weights_fingerprint

    components = PIPELINES["StableDiffusionPipeline"]
    copy = tmp_path / "copy"
    shutil.copytree(sd_folder, copy)
    assert weights_fingerprint(copy, components) == weights_fingerprint(sd_folder, components)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v * 1.01 for k, v in load_file(weights).items()}, weights)  # other weights, same shapes
    assert weights_fingerprint(copy, components) != weights_fingerprint(sd_folder, components)
    assert load_stable_diffusion(copy, revision="my-finetune-v1", device="cpu").info.revision == "my-finetune-v1"


def test_missing_and_incomplete_folders_are_clear_errors(sd_folder, tmp_path):
    with pytest.raises(AimfairError, match=r"folder .*nowhere does not exist: give a local .*huggingface-cli download"):
        load_stable_diffusion(tmp_path / "models" / "nowhere", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AimfairError, match="has no model_index.json"):
        load_stable_diffusion(empty, device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(sd_folder, broken)
    shutil.rmtree(broken / "vae")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(AimfairError, match=r"incomplete, missing: unet/ \(no weights.*\); vae/ \(missing folder\); "
                                           r"tokenizer/ \(no tokenizer.json"):
        load_stable_diffusion(broken, device="cpu")
    index = json.loads((sd_folder / "model_index.json").read_text())
    other = tmp_path / "other"
    shutil.copytree(sd_folder, other)
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(AimfairError, match="KandinskyPipeline pipeline; supported: StableDiffusionPipeline"):
        load_stable_diffusion(other, device="cpu")


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=12), r"cannot generate 12 px images: .*positive multiple of 8 \(its native size is 16\)"),
    (dict(size=0), "cannot generate 0 px images"),
    (dict(resolution=0), "output resolution must be a positive number of pixels"),
    (dict(preset="slow"), "unknown Stable Diffusion preset 'slow': use one of paper, fast"),
    (dict(steps=0), "at least one sampling step"),
    (dict(sampler="euler"), "unknown sampler 'euler'"),
    (dict(dtype="float8"), "unknown dtype 'float8'"),
])
def test_impossible_settings_are_clear_errors(sd_folder, kwargs, message):
    with pytest.raises(AimfairError, match=message):
        load_stable_diffusion(sd_folder, **{"device": "cpu", **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(sd_folder):
    with pytest.raises(AimfairError, match="'cuda' is not available here.*use device: auto or cpu"):
        load_stable_diffusion(sd_folder, device="cuda")


def test_an_sdxl_folder_runs_through_the_sdxl_pipeline(tmp_path):
    """SDXL: two text encoders (the second with a projection) and size/crop conditioning in the UNet."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer(tmp_path / "vocab")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=NATIVE // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), norm_num_groups=8, use_linear_projection=True,
        # the pooled text (32) and six size/crop numbers embedded in 8 dimensions each
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=NATIVE)
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=37, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, projection_dim=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(text),
                                     text_encoder_2=CLIPTextModelWithProjection(text), tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.save_pretrained(tmp_path / "tiny-sdxl")

    sdxl = load_stable_diffusion(tmp_path / "tiny-sdxl", device="cpu", steps=2, resolution=OUT, batch_size=3)
    assert type(sdxl.pipe).__name__ == "StableDiffusionXLPipeline" and sdxl.info.sampler == "ddim"
    images = sdxl.generate(PROMPTS, SEEDS)
    assert images.shape == (4, OUT, OUT, 3) and images.dtype == np.uint8 and images.std() > 0
    assert np.array_equal(sdxl.generate(PROMPTS[1:2], SEEDS[1:2])[0], images[1])


def test_the_pool_runner_drives_stable_diffusion_like_the_builtin_model(sd_folder, tmp_path):
    from aimfair.csdg.pool import generate_pool, plan_jobs, read_manifest

    generator = load_stable_diffusion(sd_folder, device="cpu", steps=2, resolution=OUT, batch_size=2)
    prompts = {g: [f"a photo of group {g}"] for g in ("0_0", "0_1", "1_0", "1_1")}
    jobs = plan_jobs(prompts, {g: 2 for g in prompts}, base_seed=0)
    run = generate_pool(generator, jobs, tmp_path, batch_size=2, progress=False)
    manifest = read_manifest(tmp_path)
    assert run.generated == 8 and len(manifest) == 8
    assert set(manifest["sampler"]) == {"ddim"} and set(manifest["steps"]) == {2}
    assert set(manifest["revision"]) == {generator.info.revision}


def test_sdedit_runs_diffusers_img2img_on_the_same_weights(sd_folder):
    generator = load_stable_diffusion(sd_folder, device="cpu", steps=4, resolution=OUT, batch_size=3)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)  # any square size: resized to the model's
    edited = generator.edit(images, PROMPTS, SEEDS, strength=0.5)
    assert edited.shape == (4, OUT, OUT, 3) and edited.dtype == np.uint8 and edited.std() > 0
    assert type(generator._img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert generator._img2img.unet is generator.pipe.unet  # the same weights, not a second copy
    alone = generator.edit(images[1:2], PROMPTS[1:2], SEEDS[1:2], strength=0.5)
    assert np.array_equal(alone[0], edited[1])  # each edit depends on its own image, prompt and seed
    assert not np.array_equal(generator.edit(images[1:2], PROMPTS[1:2], [999], strength=0.5), alone)
