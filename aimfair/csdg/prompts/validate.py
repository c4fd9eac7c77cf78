"""Check prompts against their group: each must name its group's target and protected values, must not
name the other values of those attributes, and must not repeat another prompt of its group."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.csdg.prompts.vocabulary import attribute_words

# "black hair" or "a white background" say nothing about the person's ethnicity
_NOT_ABOUT_THE_PERSON = r"(?!\s+(?:hair|background|wall|shirt|jacket|top|dress|hat|cap|scarf|glasses|eyes))"


def values_named(prompt: str, attribute: str) -> set[int]:
    """Which values of `attribute` a prompt names (0, 1, both or neither), longest phrase first."""
    words = attribute_words(attribute)
    phrases = sorted(((p, v) for v in (0, 1) for p in words.recognised(v)), key=lambda pv: -len(pv[0]))
    text, named = " " + prompt.lower() + " ", set()
    for phrase, value in phrases:
        pattern = rf"\b{re.escape(phrase)}\b{_NOT_ABOUT_THE_PERSON}"
        if re.search(pattern, text):
            named.add(value)
            text = re.sub(pattern, " ", text)  # "not smiling" must not also count as "smiling"
    return named


def problem_with(prompt: str, target: str, sensitive: str, group: str) -> str | None:
    """Why `prompt` cannot stand for `group`, or None when it can."""
    if not isinstance(prompt, str) or len(prompt.split()) < 3:
        return "not a sentence"
    for attribute, value in zip((target, sensitive), parse_group_key(group)):
        named = values_named(prompt, attribute)
        if 1 - value in named:
            return f"names {attribute}={1 - value}, the wrong group"
        if value not in named:
            return f"does not name {attribute}={value}"
    return None


@dataclass
class Checked:
    """The prompts that passed, per group, and the ones that did not with the reason."""

    valid: dict[str, list[str]] = field(default_factory=dict)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (group, prompt, reason)


def check_prompts(prompts: dict[str, list[str]], target: str, sensitive: str, n_needed: int) -> Checked:
    """Validate every group's prompts; too few valid prompts in any group is an AimfairError."""
    missing = [g for g in GROUPS if g not in prompts]
    if missing:
        raise AimfairError(f"the prompts have no group {missing[0]}: every group of {', '.join(GROUPS)} needs "
                           "its own prompts (group key '{y}_{s}')")
    checked = Checked()
    for group in GROUPS:
        seen: set[str] = set()
        checked.valid[group] = []
        for prompt in prompts[group]:
            key = " ".join(str(prompt).lower().split())
            reason = "a duplicate" if key in seen else problem_with(prompt, target, sensitive, group)
            if reason:
                checked.rejected.append((group, str(prompt), reason))
            else:
                checked.valid[group].append(prompt)
                seen.add(key)
    short = {g: len(v) for g, v in checked.valid.items() if len(v) < n_needed}
    if short:
        group = next(iter(short))
        examples = "; ".join(f"{p!r}: {r}" for g, p, r in checked.rejected if g == group)[:300]
        raise AimfairError(f"only {short[group]} valid prompt(s) for group {group} ({target}, {sensitive}), "
                           f"{n_needed} needed; rejected: {examples or 'none'}")
    return checked
