"""tinyfaces: the built-in world, procedurally rendered faces with CelebA-style attributes.

No face dataset and no pretrained diffusion model can be downloaded on a laptop with no internet, so the
default pipeline renders its own faces. They are built to show the paper's phenomena honestly:

* the target (Smiling) is subtle: a mouth curve of a few pixels;
* the protected attribute (Male) is salient: short hair or long hair, a wider jaw, beards, lipstick;
* two styles of the same world give a genuine real/synthetic domain gap: "photo" (lighting gradients,
  blur, sensor noise, JPEG) is the real domain, "studio" (flat colours, outlines, clean) is the training
  corpus of the built-in text-to-image model, with a varied caption for every render.

The real domain is written to disk in CelebA's own format (`img_align_celeba/`, `list_attr_celeba.txt`,
`list_eval_partition.txt`), so the default run goes through the same reader as real CelebA. Every image
is drawn from its own random generator seeded by (world seed, image index), so the world is the same for
a seed whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from aimfair.config import WorldConfig
from aimfair.core import io
from aimfair.core.errors import AimfairError

# CelebA attribute names this world renders (a subset of CelebA's 40, same spelling, same -1/+1 coding).
ATTRIBUTES: tuple[str, ...] = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Gray_Hair", "Male",
    "No_Beard", "Pale_Skin", "Smiling", "Wearing_Hat", "Wearing_Lipstick", "Young",
)
# Continuous nuisances that CelebA does not annotate; written to tinyfaces_meta.csv.
NUISANCES: tuple[str, ...] = ("tilt", "scale", "dx", "dy", "light", "light_angle", "skin", "background",
                              "clothes", "hat_colour")

CANVAS = 128  # drawing resolution; images are downsampled from it, which antialiases the strokes
HAIR_COLOURS = {"Black_Hair": (30, 25, 22), "Brown_Hair": (96, 62, 36), "Blond_Hair": (214, 182, 110),
                "Gray_Hair": (165, 165, 160)}
BACKGROUNDS = [(70, 90, 120), (140, 150, 160), (200, 190, 170), (60, 110, 80), (150, 80, 70),
               (210, 210, 215), (90, 70, 110), (180, 140, 90)]
CLOTHES = [(40, 60, 130), (150, 30, 40), (30, 30, 30), (220, 220, 220), (60, 120, 60), (120, 90, 150)]
HAT_COLOURS = [(20, 20, 70), (120, 20, 20), (200, 180, 140), (40, 40, 40)]


# ----------------------------------------------------------------------------- attributes


def sample_attributes(rng: np.random.Generator, cfg: WorldConfig) -> dict[str, float]:
    """Draw one face's attributes: binary CelebA attributes as 0/1 plus continuous nuisances."""
    male = rng.random() < cfg.p_male
    smiling = rng.random() < (cfg.p_smile_male if male else cfg.p_smile_female)
    young = rng.random() < cfg.p_young
    bald = male and not young and rng.random() < 0.3
    hair = rng.choice(["Black_Hair", "Brown_Hair", "Blond_Hair"], p=[0.4, 0.4, 0.2])
    if not young and rng.random() < 0.6:
        hair = "Gray_Hair"
    a = {name: 0.0 for name in ATTRIBUTES}
    a.update(Male=male, Smiling=smiling, Young=young, Bald=bald, No_Beard=1.0)
    if not bald:
        a[hair] = 1.0
    a["No_Beard"] = 0.0 if (male and rng.random() < 0.4) else 1.0
    a["Wearing_Lipstick"] = float(not male and rng.random() < 0.6)
    a["Bangs"] = float(not bald and rng.random() < 0.15)
    a["Eyeglasses"] = float(rng.random() < 0.1)
    a["Wearing_Hat"] = float(rng.random() < 0.06)
    a["Pale_Skin"] = float(rng.random() < 0.06)
    a.update(
        tilt=rng.uniform(-10, 10), scale=rng.uniform(0.92, 1.08), dx=rng.uniform(-4, 4),
        dy=rng.uniform(-4, 4), light=rng.uniform(0.0, 0.35), light_angle=rng.uniform(0, 2 * math.pi),
        skin=0.9 if a["Pale_Skin"] else rng.uniform(0.0, 0.75),
        background=rng.integers(len(BACKGROUNDS)), clothes=rng.integers(len(CLOTHES)),
        hat_colour=rng.integers(len(HAT_COLOURS)),
    )
    # mouth shape: the target. Drawn here so that the attribute table and the pixels agree.
    lo, hi = cfg.smile_amplitude
    a["mouth_lift"] = rng.uniform(lo, hi) if smiling else rng.uniform(-cfg.neutral_amplitude,
                                                                      cfg.neutral_amplitude)
    a["teeth"] = float(smiling and rng.random() < cfg.teeth_probability)
    return {k: float(v) for k, v in a.items()}


def skin_colour(tone: float, young: bool) -> tuple[int, int, int]:
    """Map a tone in [0, 1] (dark to pale) to RGB; older faces are a little less saturated."""
    dark, pale = np.array([105, 70, 50]), np.array([245, 215, 195])
    rgb = dark + (pale - dark) * tone
    if not young:
        rgb = 0.85 * rgb + 0.15 * rgb.mean()
    return tuple(int(c) for c in rgb)


# ----------------------------------------------------------------------------- drawing


def _mouth_points(cx: float, cy: float, half_width: float, lift: float, n: int = 9) -> list:
    """A parabola through the mouth: corners `lift` px above the centre (negative: a frown)."""
    pts = []
    for i in range(n):
        t = -1 + 2 * i / (n - 1)
        pts.append((cx + t * half_width, cy + lift * (0.5 - t * t)))
    return pts


def draw_face(a: dict[str, float], style: str) -> Image.Image:
    """Draw the face on the CANVAS x CANVAS canvas (before any photo effects or downsampling)."""
    if style not in ("photo", "studio"):
        raise AimfairError(f"unknown tinyfaces style {style!r}: use 'photo' or 'studio'")
    studio = style == "studio"
    outline = (40, 30, 30) if studio else None
    bg = BACKGROUNDS[int(a["background"])]
    if studio:
        bg = tuple(int(0.5 * c + 0.5 * 235) for c in bg)  # pastel, flat
    img = Image.new("RGB", (CANVAS, CANVAS), bg)
    d = ImageDraw.Draw(img)
    male, young = a["Male"] > 0, a["Young"] > 0
    s = a["scale"]
    cx, cy = CANVAS / 2 + a["dx"], CANVAS * 0.5 + a["dy"]
    rx, ry = (0.24 if male else 0.21) * CANVAS * s, 0.29 * CANVAS * s
    skin = skin_colour(a["skin"], young)
    hair_name = next((h for h in HAIR_COLOURS if a[h] > 0), None)
    hair = HAIR_COLOURS[hair_name] if hair_name else skin

    # long hair falls behind the head and onto the shoulders: the salient cue for "not Male"
    if not male and hair_name:
        d.ellipse((cx - rx * 1.35, cy - ry * 1.2, cx + rx * 1.35, cy + ry * 0.9), fill=hair)
        d.rectangle((cx - rx * 1.35, cy - ry * 0.1, cx + rx * 1.35, cy + ry * 1.7), fill=hair)
    # shoulders and neck
    clothes = CLOTHES[int(a["clothes"])]
    d.ellipse((cx - rx * 2.4, cy + ry * 1.25, cx + rx * 2.4, cy + ry * 3.2), fill=clothes, outline=outline)
    d.rectangle((cx - rx * 0.42, cy + ry * 0.6, cx + rx * 0.42, cy + ry * 1.35), fill=skin)
    # head; men get a squarer, wider jaw
    d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin, outline=outline)
    if male:
        d.polygon([(cx - rx * 0.98, cy), (cx + rx * 0.98, cy), (cx + rx * 0.8, cy + ry * 0.85),
                   (cx - rx * 0.8, cy + ry * 0.85)], fill=skin)
    # short hair: a cap on top of the head
    if male and hair_name:
        d.chord((cx - rx * 1.06, cy - ry * 1.12, cx + rx * 1.06, cy + ry * 0.15), 180, 360, fill=hair)
    if not male and hair_name:
        d.chord((cx - rx * 1.02, cy - ry * 1.06, cx + rx * 1.02, cy - ry * 0.05), 180, 360, fill=hair)
    if a["Bangs"] > 0:
        d.rectangle((cx - rx * 0.75, cy - ry * 0.6, cx + rx * 0.75, cy - ry * 0.38), fill=hair)
    if not young:  # forehead wrinkles
        for k in (0.3, 0.22):
            d.line((cx - rx * 0.35, cy - ry * k, cx + rx * 0.35, cy - ry * k),
                   fill=tuple(int(c * 0.75) for c in skin), width=1)
    # beard: covers the jaw; the mouth is drawn on top of it
    if a["No_Beard"] <= 0:
        beard = tuple(int(c * 0.8) for c in (hair if hair_name else (60, 50, 45)))
        d.chord((cx - rx * 0.95, cy - ry * 0.35, cx + rx * 0.95, cy + ry * 0.98), 0, 180, fill=beard)
    # eyes, brows, nose
    ey = cy - ry * 0.12
    for side in (-1, 1):
        ex = cx + side * rx * 0.4
        d.ellipse((ex - rx * 0.13, ey - ry * 0.06, ex + rx * 0.13, ey + ry * 0.06), fill=(245, 245, 240))
        d.ellipse((ex - rx * 0.06, ey - ry * 0.05, ex + rx * 0.06, ey + ry * 0.05), fill=(35, 30, 30))
        d.line((ex - rx * 0.16, ey - ry * 0.17, ex + rx * 0.16, ey - ry * 0.19),
               fill=hair if hair_name else (70, 60, 50), width=3 if male else 2)
        if a["Eyeglasses"] > 0:
            d.rectangle((ex - rx * 0.22, ey - ry * 0.11, ex + rx * 0.22, ey + ry * 0.11),
                        outline=(20, 20, 20), width=2)
    if a["Eyeglasses"] > 0:
        d.line((cx - rx * 0.18, ey, cx + rx * 0.18, ey), fill=(20, 20, 20), width=2)
    nose = tuple(int(c * 0.7) for c in skin)
    d.line((cx, cy + ry * 0.02, cx + rx * 0.06, cy + ry * 0.26), fill=nose, width=2)
    # mouth: the target attribute
    lips = (170, 30, 50) if a["Wearing_Lipstick"] > 0 else tuple(int(c * 0.4) for c in skin)
    if a["No_Beard"] <= 0 and sum(beard) < 300:
        lips = (215, 135, 125)  # lips show through a dark beard, as in photos; else a frown hides in it
    pts = _mouth_points(cx, cy + ry * 0.52, rx * 0.45, a["mouth_lift"])
    if a["teeth"] > 0:
        upper = _mouth_points(cx, cy + ry * 0.52, rx * 0.45, a["mouth_lift"] * 0.3)
        d.polygon(upper + pts[::-1], fill=(250, 250, 245))
    d.line(pts, fill=lips, width=4, joint="curve")
    if a["Wearing_Hat"] > 0:
        hat = HAT_COLOURS[int(a["hat_colour"])]
        d.chord((cx - rx * 1.15, cy - ry * 1.35, cx + rx * 1.15, cy - ry * 0.25), 180, 360, fill=hat)
        d.rectangle((cx - rx * 1.4, cy - ry * 0.82, cx + rx * 1.4, cy - ry * 0.7), fill=hat)
    return img.rotate(a["tilt"], resample=Image.BILINEAR, fillcolor=bg)


def render(a: dict[str, float], style: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Render one face at `size` px in the given style ("photo": real domain, "studio": T2I corpus)."""
    img = draw_face(a, style).resize((size, size), Image.LANCZOS)
    if style == "studio":
        return img
    # photo: blur, a lighting gradient, exposure and colour cast, sensor noise (JPEG comes on saving)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8) * size / 64))
    x = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    ramp = xx * math.cos(a["light_angle"]) + yy * math.sin(a["light_angle"])
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, size=3)
    x = x * (1 + 2 * a["light"] * ramp)[..., None] * gain
    x += rng.normal(0, rng.uniform(2, 7), size=x.shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- captions

# Caption words: those the prompts of the tinyfaces setting use (aimfair/csdg/prompts/vocabulary.py), so that the
# text-to-image model has seen every phrase a prompt may hold.
_NOUN = {1: ["man", "male", "guy", "gentleman"], 0: ["woman", "female", "lady"]}
_AGE = {1: ["young", "youthful", ""], 0: ["older", "middle-aged", "elderly"]}
_EXPRESSION = {1: ["smiling", "with a smile", "with a broad smile", "smiling warmly", "with a happy smile"],
               0: ["not smiling", "with a neutral expression", "with a serious expression",
                   "with closed lips and no smile", "with a calm, unsmiling face"]}
_LEADS = ["A portrait of", "Face photo of", "Studio portrait of", "Portrait face photo of", "A close-up portrait of",
          "Headshot of", "A photo of the face of", ""]
_BACKGROUND_NAMES = ["blue", "grey", "beige", "green", "red", "white", "purple", "ochre"]  # as BACKGROUNDS
_LIGHT = ["in flat light", "with soft shading"]


def caption(a: dict[str, float], rng: np.random.Generator) -> str:
    """A varied caption: always the face's smile and gender, often its age, and some of its details."""
    male, young = int(a["Male"] > 0), int(a["Young"] > 0)
    age = rng.choice(_AGE[young])
    person = " ".join(w for w in (age, rng.choice(_NOUN[male])) if w)
    expression = rng.choice(_EXPRESSION[int(a["Smiling"] > 0)])
    details = []
    hair = next((h for h in HAIR_COLOURS if a[h] > 0), None)
    if a["Bald"] > 0:
        details.append("bald")
    elif hair:
        details.append(f"with {hair.split('_')[0].lower()} hair")
    if a["No_Beard"] <= 0:
        details.append("with a beard")
    if a["Eyeglasses"] > 0:
        details.append("wearing glasses")
    if a["Wearing_Hat"] > 0:
        details.append("wearing a hat")
    if a["Wearing_Lipstick"] > 0:
        details.append("wearing lipstick")
    colour = _BACKGROUND_NAMES[int(a["background"])]
    details.append(f"against {'an' if colour[0] in 'aeiou' else 'a'} {colour} background")
    if abs(a["tilt"]) > 5:
        details.append("with the head slightly tilted")
    elif max(abs(a["dx"]), abs(a["dy"])) > 2.5:
        details.append("slightly off centre")
    else:
        details.append("facing the camera")
    details.append(rng.choice(_LIGHT))
    rng.shuffle(details)
    details = details[: int(rng.integers(0, 4))]
    lead = rng.choice(_LEADS)
    article = "an" if person[0] in "aeiou" else "a"
    text = " ".join(w for w in (lead, article, person) if w) + " " + expression
    text = text[0].upper() + text[1:]
    return text + "".join(", " + d for d in details) + "."


def style_examples(n: int, cfg: WorldConfig = WorldConfig(), seed: int = 0) -> list[tuple[Image.Image, Image.Image, str]]:
    """`n` faces drawn in both styles with a caption each: (photo, studio, caption)."""
    out = []
    for i in range(n):
        a = sample_attributes(_image_rng(seed, i, 0), cfg)
        out.append((render(a, "photo", cfg.image_size, _image_rng(seed, i, 1)),
                    render(a, "studio", cfg.image_size, _image_rng(seed, i, 1)),
                    caption(a, _image_rng(seed, i, 3))))
    return out


# ----------------------------------------------------------------------------- writing a dataset


def _image_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    # one independent stream per (world seed, image, purpose): results do not depend on worker count
    return np.random.default_rng([seed, index, stream])


def _render_chunk(args: tuple[WorldConfig, Path, list[int]]) -> list[dict[str, float]]:
    cfg, image_dir, indices = args
    rows = []
    for i in indices:
        a = sample_attributes(_image_rng(cfg.seed, i, 0), cfg)
        img = render(a, "photo", cfg.image_size, _image_rng(cfg.seed, i, 1))
        quality = int(_image_rng(cfg.seed, i, 2).integers(60, 92))
        target = image_dir / image_name(i)
        with io.atomic_path(target) as tmp:
            img.save(tmp, format="JPEG", quality=quality)
        rows.append(a)
    return rows


def image_name(index: int) -> str:
    """CelebA-style file name of image `index` (0-based): 000001.jpg, 000002.jpg, ..."""
    return f"{index + 1:06d}.jpg"


def partition_of(index: int, cfg: WorldConfig) -> int:
    """Official-style partition by id ranges, as in CelebA: 0 train, 1 val, 2 test."""
    n_train = round(cfg.partition[0] * cfg.n_images)
    n_val = round(cfg.partition[1] * cfg.n_images)
    return 0 if index < n_train else (1 if index < n_train + n_val else 2)


def write_world(out: str | os.PathLike, cfg: WorldConfig = WorldConfig(), workers: int = 2,
                progress: bool = True) -> Path:
    """Render the photo-style world into `out` in CelebA's official format. Returns `out`.

    Skips the work when `out` already holds a complete world made with the same config.
    """
    out = Path(out)
    done_marker = out / "world.json"
    # the marker records the config and the renderer's code: a change to either renders the world again
    marker = dict(asdict(cfg), renderer=hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12])
    if io.read_record(done_marker) == json.loads(json.dumps(marker)):
        return out
    image_dir = out / "img_align_celeba"
    image_dir.mkdir(parents=True, exist_ok=True)
    chunks = [list(range(i, min(i + 250, cfg.n_images))) for i in range(0, cfg.n_images, 250)]
    bar = tqdm(total=cfg.n_images, desc="render tinyfaces", unit="img", disable=not progress)
    rows: list[dict[str, float]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for chunk_rows in pool.map(_render_chunk, [(cfg, image_dir, c) for c in chunks]):
            rows.extend(chunk_rows)
            bar.update(len(chunk_rows))
    bar.close()

    write_labels(out, cfg, rows)
    names = [image_name(i) for i in range(cfg.n_images)]
    meta = ["image_id," + ",".join(NUISANCES + ("mouth_lift", "teeth"))]
    for name, a in zip(names, rows):
        meta.append(name + "," + ",".join(f"{a[k]:.4f}" for k in NUISANCES + ("mouth_lift", "teeth")))
    io.write_text(out / "tinyfaces_meta.csv", "\n".join(meta) + "\n")
    io.write_json(done_marker, marker)  # written last: marks the world complete
    return out


def world_attributes(cfg: WorldConfig) -> list[dict[str, float]]:
    """Every image's attributes, as write_world draws them, without drawing a pixel (aimfair check reads the
    labels of a world not rendered yet)."""
    return [sample_attributes(_image_rng(cfg.seed, i, 0), cfg) for i in range(cfg.n_images)]


def write_labels(out: str | os.PathLike, cfg: WorldConfig, rows: list[dict[str, float]]) -> None:
    """The world's label files in CelebA's format: list_attr_celeba.txt and list_eval_partition.txt."""
    out = Path(out)
    names = [image_name(i) for i in range(cfg.n_images)]
    attr_lines = [str(cfg.n_images), " ".join(ATTRIBUTES)]
    for name, a in zip(names, rows):
        attr_lines.append(name + " " + " ".join("1" if a[k] > 0 else "-1" for k in ATTRIBUTES))
    io.write_text(out / "list_attr_celeba.txt", "\n".join(attr_lines) + "\n")
    io.write_text(out / "list_eval_partition.txt",
                  "".join(f"{n} {partition_of(i, cfg)}\n" for i, n in enumerate(names)))


# ----------------------------------------------------------------------------- the text-to-image corpus


def _studio_chunk(args: tuple[WorldConfig, int, int, list[int]]) -> tuple[np.ndarray, list[str], list[dict]]:
    cfg, size, seed, indices = args
    images, captions, rows = [], [], []
    for i in indices:
        a = sample_attributes(_image_rng(seed, i, 0), cfg)
        images.append(np.asarray(render(a, "studio", size, _image_rng(seed, i, 1))))
        captions.append(caption(a, _image_rng(seed, i, 3)))
        rows.append(a)
    return np.stack(images), captions, rows


def studio_corpus(n: int, cfg: WorldConfig, size: int, seed: int, workers: int = 2,
                  progress: bool = True) -> tuple[np.ndarray, list[str], list[dict[str, float]]]:
    """`n` captioned studio renders for training the built-in text-to-image model, rendered in memory.

    Returns uint8 images (n, size, size, 3), their captions and attributes. The faces follow the world's
    attribute distribution (no skew between target and protected attribute beyond the world's own), drawn
    from `seed`, which should differ from the world's seed so that the corpus is not the real photos.
    """
    chunks = [list(range(i, min(i + 500, n))) for i in range(0, n, 500)]
    images, captions, rows = [], [], []
    bar = tqdm(total=n, desc="render studio corpus", unit="img", disable=not progress)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for chunk_images, chunk_captions, chunk_rows in pool.map(
                _studio_chunk, [(cfg, size, seed, c) for c in chunks]):
            images.append(chunk_images)
            captions += chunk_captions
            rows += chunk_rows
            bar.update(len(chunk_rows))
    bar.close()
    return np.concatenate(images), captions, rows
