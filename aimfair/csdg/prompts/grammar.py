"""The built-in prompt backend: contextual prompts composed from the vocabulary, seeded, no model needed.

A prompt names the group (target and protected values, in varied words) and varies everything else:
hair, accessories, pose, light, background — what the paper asks GPT-4 for. `single_prompt` is the
paper's plain one-prompt-per-group ablation ("Portrait face photo of a smiling man.").
"""

from __future__ import annotations

import numpy as np

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.csdg.prompts.vocabulary import attribute_words, context_words

LEADS = ("Portrait face photo of", "A close-up portrait of", "Headshot of", "A photo of the face of")


def person_phrase(values: list[tuple[str, int]], pick, fixed: dict[str, str] | None = None) -> str:
    """The noun phrase naming a person with these attribute values, e.g. 'a young woman' or 'a man smiling'.

    `pick` chooses one of several phrases, unless `fixed` gives an attribute's phrase; the generator's captions
    use the same words (aimfair.csdg.prompts.captions).
    """
    noun, before, after = "person", [], []
    for attribute, value in values:
        words = attribute_words(attribute)
        phrase = (fixed or {}).get(attribute) or pick(words.says[value])
        if words.role == "noun":
            noun = phrase
        elif words.role == "adjective" or (" " not in phrase and not phrase.startswith("not")):
            before.append(phrase)  # "a smiling man", "a young man"
        else:
            after.append(phrase)  # "a man with a broad smile"
    words = " ".join(before + [noun] + after)
    return ("an " if words[0] in "aeiou" else "a ") + words


def _person(target: str, sensitive: str, group: str, pick) -> str:
    """The noun phrase naming the group, e.g. 'a young woman' or 'an old man smiling'."""
    return person_phrase(list(zip((target, sensitive), parse_group_key(group))), pick)


def single_prompt(target: str, sensitive: str, group: str) -> str:
    """The paper's single plain prompt for a group, e.g. 'Portrait face photo of a smiling man.'"""
    return f"Portrait face photo of {_person(target, sensitive, group, lambda options: options[0])}."


def contextual_prompts(dataset: str, target: str, sensitive: str, group: str, n: int, seed: int) -> list[str]:
    """`n` distinct contextual prompts for one group, the same for the same seed."""
    rng = np.random.default_rng([seed, GROUPS.index(group)])
    context = context_words(dataset)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    prompts: list[str] = []
    seen: set[str] = set()
    misses = 0  # draws in a row that gave nothing new: the vocabulary is exhausted long before 1,000
    while len(prompts) < n and misses < 1000:
        kinds = list(rng.permutation(list(context)))[: int(rng.integers(2, 4))]
        details = ", ".join(pick(context[k]) for k in kinds)
        prompt = f"{pick(LEADS)} {_person(target, sensitive, group, pick)}, {details}."
        misses = misses + 1 if prompt in seen else 0
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    if len(prompts) == n:
        return prompts
    raise AimfairError(f"the {dataset} vocabulary yields only {len(prompts)} distinct prompts for group {group}, "
                       f"{n} asked: lower the number of prompts or extend aimfair/csdg/prompts/vocabulary.py")


def grammar_prompts(dataset: str, target: str, sensitive: str, n: int, seed: int = 0,
                    mode: str = "contextual") -> dict[str, list[str]]:
    """Prompts for all four groups: `n` contextual ones each, or the single plain one ("single" mode)."""
    if mode == "single":
        return {g: [single_prompt(target, sensitive, g)] for g in GROUPS}
    if mode != "contextual":
        raise AimfairError(f"prompt mode must be 'contextual' or 'single', got {mode!r}")
    if n <= 0:
        raise AimfairError(f"the number of prompts per group must be positive, got {n}")
    return {g: contextual_prompts(dataset, target, sensitive, g, n, seed) for g in GROUPS}
