"""How attribute values are said in prompts, and the context (hair, pose, light, ...) around them.

An attribute's phrases serve twice: the grammar backend writes them, and validation reads them back from
any backend's prompts (an LLM's included), so a prompt that says "not smiling" counts as Smiling = 0 and
never as Smiling = 1. Phrases are matched longest first, on word boundaries ("woman" is not "man").
"""

from __future__ import annotations

from dataclasses import dataclass

from aimfair.core.errors import AimfairError


@dataclass(frozen=True)
class AttributeWords:
    """Phrases that say value 1 and value 0 of an attribute, and where they go in a prompt."""

    role: str  # "noun": names the person; "adjective": before the noun; "phrase": after it
    says: dict[int, tuple[str, ...]]  # value -> phrases the grammar writes (and validation recognises)
    also: dict[int, tuple[str, ...]] = None  # value -> further phrases only recognised, e.g. "grinning"

    def recognised(self, value: int) -> tuple[str, ...]:
        return self.says[value] + ((self.also or {}).get(value, ()))


_MEN = ("man", "male", "guy", "gentleman")
_WOMEN = ("woman", "female", "lady")

ATTRIBUTES: dict[str, AttributeWords] = {
    "Smiling": AttributeWords("phrase", {
        1: ("smiling", "with a smile", "with a broad smile", "smiling warmly", "with a happy smile"),
        0: ("not smiling", "with a neutral expression", "with a serious expression", "with closed lips and no smile",
            "with a calm, unsmiling face"),
    }, also={1: ("smile", "smiles", "grinning", "laughing"),
             0: ("unsmiling", "no smile", "without a smile", "neutral face", "serious face")}),
    "Male": AttributeWords("noun", {1: _MEN, 0: _WOMEN}, also={1: ("men", "boy"), 0: ("women", "girl")}),
    "Female": AttributeWords("noun", {1: _WOMEN, 0: _MEN}, also={1: ("women", "girl"), 0: ("men", "boy")}),
    "Young": AttributeWords("adjective", {1: ("young", "youthful"), 0: ("elderly", "old", "middle-aged")},
                            also={1: ("in their twenties",), 0: ("older", "senior", "aged")}),
    "White": AttributeWords("adjective", {1: ("white", "caucasian"),
                                          0: ("black", "east asian", "south asian", "indian", "latino")},
                            also={0: ("asian", "african", "hispanic")}),
}

# Context per dataset: things that vary within a group. The tinyfaces words are those its renderer draws.
CONTEXT: dict[str, dict[str, tuple[str, ...]]] = {
    "celeba": {
        "hair": ("with wavy brown hair", "with straight black hair", "with blond bangs", "with short curly hair",
                 "with gray hair", "with long red hair", "with a receding hairline", "with hair tied back"),
        "detail": ("wearing glasses", "wearing earrings", "wearing a hat", "with high cheekbones",
                   "with thick eyebrows", "with rosy cheeks", "with a pointy nose", "wearing a necklace"),
        "pose": ("facing the camera", "with the head slightly tilted left", "with the head slightly tilted right",
                 "in three-quarter view", "looking slightly up", "looking slightly down"),
        "light": ("in soft daylight", "under warm indoor light", "with dramatic side lighting",
                  "in bright studio light", "in the shade"),
        "background": ("against a plain grey background", "outdoors with a blurred park behind",
                       "in front of a brick wall", "at a red-carpet event", "in an office"),
    },
    "utkface": {
        "hair": ("with short dark hair", "with long hair", "with curly hair", "with gray hair", "with a shaved head",
                 "with hair in a bun"),
        "detail": ("wearing glasses", "wearing a scarf", "wearing a cap", "with freckles", "wearing earrings"),
        "pose": ("facing the camera", "with the head slightly turned", "looking slightly up", "in a close-up"),
        "light": ("in natural light", "under indoor light", "in a dim room", "in bright sunlight"),
        "background": ("against a plain background", "outdoors", "at home", "in a street"),
    },
    "tinyfaces": {
        "hair": ("with black hair", "with brown hair", "with blond hair", "with gray hair"),
        "detail": ("wearing glasses", "wearing a hat", "with no accessories", "with a round face"),
        "pose": ("facing the camera", "with the head slightly tilted", "slightly off centre"),
        "light": ("in flat light", "with soft shading"),
        "background": ("against a blue background", "against a green background", "against a beige background",
                       "against a grey background", "against a purple background"),
    },
}


def attribute_words(name: str) -> AttributeWords:
    """The vocabulary of one attribute; a clear error for attributes prompts cannot express yet."""
    if name not in ATTRIBUTES:
        raise AimfairError(f"no prompt vocabulary for attribute {name!r}: prompts can name "
                           f"{', '.join(ATTRIBUTES)}; add it to aimfair/csdg/prompts/vocabulary.py")
    return ATTRIBUTES[name]


def context_words(dataset: str) -> dict[str, tuple[str, ...]]:
    """The context vocabulary of a dataset."""
    if dataset not in CONTEXT:
        raise AimfairError(f"no prompt context for dataset {dataset!r}: choose one of {', '.join(CONTEXT)}")
    return CONTEXT[dataset]
