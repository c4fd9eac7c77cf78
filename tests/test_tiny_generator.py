"""The built-in text-to-image model: training (resumable), checkpoints, DDIM sampling with guidance."""

import numpy as np
import pytest
import torch

from aimfair.config import TinyConfig, TinyTraining, WorldConfig
from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.tiny import TinyT2I, checkpoint_hash, load_tiny, save_tiny, train_tiny
from aimfair.csdg.generators.tiny_sampling import load_tiny_generator
from aimfair.data.tinyfaces import studio_corpus

SMALL = TinyConfig(resolution=16, channels=(8, 16, 16), head_dim=8, max_tokens=16)


@pytest.fixture(scope="module")
def corpus():
    images, captions, _ = studio_corpus(48, WorldConfig(), 16, seed=1, workers=1, progress=False)
    return images, captions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("t2i")
    save_tiny(TinyT2I(SMALL), folder, meta={"note": "random weights"})
    return folder


def test_studio_corpus_is_seeded_and_independent_of_workers():
    a = studio_corpus(30, WorldConfig(), 16, seed=1, workers=1, progress=False)
    b = studio_corpus(30, WorldConfig(), 16, seed=1, workers=2, progress=False)
    c = studio_corpus(30, WorldConfig(), 16, seed=2, workers=1, progress=False)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (30, 16, 16, 3) and a[0].dtype == np.uint8


def test_training_lowers_the_loss_and_a_resumed_run_matches_an_uninterrupted_one(corpus, tmp_path):
    images, captions = corpus
    training = TinyTraining(steps=6, batch_size=8, lr=2e-3, warmup=1, seed=3)
    log = []
    straight = train_tiny(images, captions, SMALL, training, log=log.append, progress=False)
    assert len(log) == 6 and all(np.isfinite(r["loss"]) for r in log)

    resume = tmp_path / "resume.pt"

    class Killed(Exception):
        pass

    def kill_at_step_4(row):
        if row["step"] == 4:
            raise Killed

    with pytest.raises(Killed):
        train_tiny(images, captions, SMALL, training, resume_file=resume, log=kill_at_step_4, progress=False,
                   save_every=2)
    assert resume.exists()
    resumed = train_tiny(images, captions, SMALL, training, resume_file=resume, progress=False, save_every=2)
    assert not resume.exists()  # finished: the resume state is gone
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_resume_file_from_other_settings_is_ignored(corpus, tmp_path):
    images, captions = corpus
    resume = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        def stop(row):
            if row["step"] == 2:
                raise KeyboardInterrupt
        train_tiny(images, captions, SMALL, TinyTraining(steps=4, batch_size=8, warmup=1), resume_file=resume,
                   log=stop, progress=False, save_every=2)
    steps = []
    train_tiny(images, captions, SMALL, TinyTraining(steps=4, batch_size=8, warmup=1, lr=5e-4),
               resume_file=resume, log=steps.append, progress=False)
    assert [r["step"] for r in steps] == [1, 2, 3, 4]  # started over


def test_corpus_at_the_wrong_resolution_is_a_clear_error(corpus):
    images, captions = corpus
    with pytest.raises(AimfairError, match="corpus images are 16 px but the model is built for 32 px"):
        train_tiny(images, captions, TinyConfig(), TinyTraining(steps=1), progress=False)


def test_checkpoint_round_trip_is_small_and_exact_in_half_precision(checkpoint):
    model, meta = load_tiny(checkpoint)
    assert meta["note"] == "random weights" and model.config == SMALL
    n_params = sum(p.numel() for p in model.parameters())
    assert (checkpoint / "model.safetensors").stat().st_size < 2 * n_params + 50_000  # float16 on disk
    torch.manual_seed(0)
    fresh = TinyT2I(SMALL)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b.half().float()), name
    assert len(checkpoint_hash(checkpoint)) == 12


def test_missing_or_mismatched_checkpoints_are_clear_errors(checkpoint, tmp_path):
    with pytest.raises(AimfairError, match="lacks model.safetensors, config.json: train it"):
        load_tiny(tmp_path)
    save_tiny(TinyT2I(SMALL), tmp_path)
    config = (tmp_path / "config.json").read_text().replace('"head_dim": 8', '"head_dim": 4')
    (tmp_path / "config.json").write_text(config.replace("16,\n      16\n", "16,\n      32\n"))
    with pytest.raises(AimfairError, match="does not match its config.json.*retrain"):
        load_tiny(tmp_path)


def test_samples_depend_only_on_their_prompt_and_seed(checkpoint):
    generator = load_tiny_generator(checkpoint, steps=3, guidance=3.0, batch=16)
    prompts = ["a smiling man", "a woman not smiling", "a smiling lady, wearing glasses"]
    together = generator.generate(prompts, [1, 2, 3])
    assert together.shape == (3, 16, 16, 3) and together.dtype == np.uint8
    alone = np.concatenate([generator.generate([p], [s]) for p, s in zip(prompts, [1, 2, 3])])
    assert np.array_equal(together, alone)  # batch neighbours do not change an image
    assert not np.array_equal(together[0], generator.generate(prompts[:1], [9])[0])
    generator.batched_guidance = not generator.batched_guidance  # one doubled batch or two calls: same images
    assert np.array_equal(together, generator.generate(prompts, [1, 2, 3]))


def test_guidance_and_resolution_settings(checkpoint):
    with pytest.raises(AimfairError, match="makes 16 px images only, 32 px asked"):
        load_tiny_generator(checkpoint, resolution=32)
    with pytest.raises(AimfairError, match="at least one step"):
        load_tiny_generator(checkpoint, steps=0)
    plain = load_tiny_generator(checkpoint, steps=2, guidance=1.0).generate(["a smiling man"], [5])
    guided = load_tiny_generator(checkpoint, steps=2, guidance=5.0).generate(["a smiling man"], [5])
    assert plain.shape == guided.shape and not np.array_equal(plain, guided)
    info = load_tiny_generator(checkpoint, steps=7, guidance=2.5).info
    assert (info.model, info.sampler, info.steps, info.guidance, info.resolution) == ("builtin", "ddim", 7, 2.5, 16)


def test_bfloat16_sampling_is_recorded_and_close_to_float32(checkpoint):
    full = load_tiny_generator(checkpoint, steps=2, precision="float32")
    half = load_tiny_generator(checkpoint, steps=2, precision="bfloat16")
    assert (full.info.precision, half.info.precision) == ("float32", "bfloat16")
    a, b = full.generate(["a smiling man"], [5]), half.generate(["a smiling man"], [5])
    assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 20  # same image, coarser arithmetic
    assert load_tiny_generator(checkpoint, precision="auto").info.precision in ("float32", "bfloat16")
    with pytest.raises(AimfairError, match="precision must be auto, float32 or bfloat16"):
        load_tiny_generator(checkpoint, precision="float16")
