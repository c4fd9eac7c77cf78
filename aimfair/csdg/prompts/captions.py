"""Captions for the generator pool: each real image described from its labels, in the prompts' own words.

The built-in text-to-image model trained on a dataset (`generator.corpus: dataset`) learns what the words of
its captions look like. The contextual prompts that later drive it come from the same vocabulary
(aimfair.csdg.prompts.vocabulary): the group is named by the same phrases ("a smiling woman", "a man with a
neutral expression"), and the labelled details by the context phrases the grammar writes ("with wavy brown
hair", "wearing glasses"). So a prompt lands in what the model has learned. Wording, order and which details
are said vary per image with a seed, as they do in the prompts.

CelebA (and tinyfaces, written in CelebA's format): the person from the target, the protected attribute and
Young; hair from the colour and texture attributes; up to three other labelled details.
UTKFace: the person from gender, age (young under 30, middle-aged, old from 60) and race (white, black, east
asian, indian, latino for "others"); it has no other labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from aimfair.core.errors import AimfairError
from aimfair.csdg.prompts.grammar import LEADS, person_phrase
from aimfair.csdg.prompts.vocabulary import ATTRIBUTES

# CelebA attribute (value 1) -> the phrase a caption says; most are the grammar's celeba context phrases
DETAILS: dict[str, str] = {
    "Eyeglasses": "wearing glasses", "Wearing_Hat": "wearing a hat", "Wearing_Earrings": "wearing earrings",
    "Wearing_Necklace": "wearing a necklace", "Wearing_Necktie": "wearing a necktie",
    "High_Cheekbones": "with high cheekbones", "Bushy_Eyebrows": "with thick eyebrows",
    "Rosy_Cheeks": "with rosy cheeks", "Pointy_Nose": "with a pointy nose",
    "Receding_Hairline": "with a receding hairline", "Bald": "with a bald head", "Mustache": "with a mustache",
    "Goatee": "with a goatee", "5_o_Clock_Shadow": "with a 5 o'clock shadow", "Wearing_Lipstick": "wearing lipstick",
    "Heavy_Makeup": "with heavy makeup", "Pale_Skin": "with pale skin",
}
HAIR_COLOURS = {"Black_Hair": "black", "Brown_Hair": "brown", "Blond_Hair": "blond", "Gray_Hair": "gray"}
HAIR_TEXTURES = {"Wavy_Hair": "wavy", "Straight_Hair": "straight"}
UTKFACE_RACES = {0: "white", 1: "black", 2: "east asian", 3: "indian", 4: "latino"}  # each in the White vocabulary
MAX_DETAILS = 3


def check_caption_vocabulary(dataset: str, target: str, sensitive: str, columns: Sequence[str]) -> None:
    """The captions must be able to say the group: both attributes in the vocabulary and in the pool's labels."""
    for role, name in (("target", target), ("sensitive", sensitive)):
        if name not in ATTRIBUTES:
            raise AimfairError(
                f"the generator's captions cannot say the {role} attribute {name!r}: the caption and prompt "
                f"vocabulary knows {', '.join(ATTRIBUTES)}; add its phrases to aimfair/csdg/prompts/vocabulary.py, "
                "or set generate.model to a Stable Diffusion folder"
            )
        if name not in columns:
            raise AimfairError(f"the generator pool of {dataset} has no label {name!r} to caption: rerun the data "
                               "stage (dvc repro data)")


def pool_captions(pool: pd.DataFrame, dataset: str, target: str, sensitive: str, seed: int) -> list[str]:
    """One caption per row of the pool (its labels as 0/1 columns), the same for the same seed."""
    check_caption_vocabulary(dataset, target, sensitive, list(pool.columns))
    rng = np.random.default_rng([seed, 7])
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    describe = _utkface_caption if dataset == "utkface" else _celeba_caption
    return [describe(row, target, sensitive, pick, rng) for row in pool.to_dict("records")]


def _celeba_caption(row: dict, target: str, sensitive: str, pick, rng: np.random.Generator) -> str:
    values = [(target, int(row[target])), (sensitive, int(row[sensitive]))]
    if "Young" in row and "Young" not in (target, sensitive):
        values.insert(0, ("Young", int(row["Young"])))
    details = [phrase for name, phrase in DETAILS.items() if row.get(name) == 1]
    if row.get("No_Beard") == 0:
        details.append("with a beard")
    hair = _hair(row)
    if hair:
        details.append(hair)
    return _sentence(values, details, {}, pick, rng)


def _hair(row: dict) -> str:
    colour = next((word for name, word in HAIR_COLOURS.items() if row.get(name) == 1), "")
    if row.get("Bald") == 1 or not colour:
        return ""
    if row.get("Bangs") == 1:
        return f"with {colour} bangs"
    texture = next((word for name, word in HAIR_TEXTURES.items() if row.get(name) == 1), "")
    return f"with {texture + ' ' if texture else ''}{colour} hair"


def _utkface_caption(row: dict, target: str, sensitive: str, pick, rng: np.random.Generator) -> str:
    age = int(row["age"])
    values = [("Young", int(age < 30)), ("White", int(row["race"] == 0)), ("Male", int(row["gender"] == 0))]
    # the exact race and age words, all of them in the vocabulary of White and Young
    fixed = {"White": UTKFACE_RACES[int(row["race"])],
             "Young": pick(ATTRIBUTES["Young"].says[1]) if age < 30 else ("middle-aged" if age < 60 else
                                                                          pick(("elderly", "old")))}
    return _sentence(values, [], fixed, pick, rng)


def _sentence(values: list[tuple[str, int]], details: list[str], fixed: dict[str, str], pick,
              rng: np.random.Generator) -> str:
    """'<lead> <person>, <up to three details in random order>.'"""
    person = person_phrase(values, pick, fixed)
    said = [details[i] for i in rng.permutation(len(details))[:int(rng.integers(0, MAX_DETAILS + 1))]]
    return f"{pick(LEADS)} {person}" + (", " + ", ".join(said) if said else "") + "."
