"""Stage 01_prompts: contextual prompts per group (CSDG), validated, with their diversity.

The backend drafts prompts (grammar: composed from the vocabulary; transformers or openai: asked from a
language model; file: written by hand), validation keeps those that stand for their group, and the three
files are written only once everything succeeded, so a failing endpoint leaves the last prompts in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair.config import DataParams, Params, PromptParams
from aimfair.core import io, paths
from aimfair.core.errors import AimfairError
from aimfair.csdg.prompts.diversity import diversity
from aimfair.csdg.prompts.grammar import grammar_prompts
from aimfair.csdg.prompts.llm import (
    Drafts,
    OpenAIChat,
    TransformersChat,
    ask_for_prompts,
    packaged_template,
    read_template,
)
from aimfair.csdg.prompts.promptfile import read_prompts_file
from aimfair.csdg.prompts.validate import check_prompts


@dataclass
class PromptSet:
    """The valid prompts per group, the rejected ones with reasons, and the diversity per group."""

    prompts: dict[str, list[str]]
    rejected: pd.DataFrame  # group, prompt, reason
    diversity: pd.DataFrame


def _path(root: Path, name: str) -> Path:
    """A path from params.yaml: relative ones are relative to the repository root."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else root / path


def _template(p: PromptParams, dataset: str, root: Path) -> tuple[str, str]:
    """The instruction template's text and, for messages and provenance, where it came from."""
    if p.template:
        return read_template(_path(root, p.template)), p.template
    return read_template(packaged_template(dataset)), f"aimfair/csdg/prompts/templates/{dataset}.txt"


def draft(p: PromptParams, d: DataParams, n: int, root: Path) -> Drafts:
    """`n` or more prompts per group from the chosen backend, not yet validated."""
    if p.mode == "single" or p.backend == "grammar":  # single: the paper's plain prompt, whatever the backend
        return Drafts(grammar_prompts(d.dataset, d.target, d.sensitive, n, seed=p.seed, mode=p.mode))
    if p.backend == "file":
        return Drafts(read_prompts_file(_path(root, p.file)))
    template, source = _template(p, d.dataset, root)
    if p.backend == "transformers":
        folder = _path(root, p.model_path)
        ask = TransformersChat(folder if folder.exists() else p.model_path,  # else a model id in the local HF cache
                               device=p.device, max_new_tokens=p.max_new_tokens, temperature=p.temperature)
    elif p.backend == "openai":
        ask = OpenAIChat(p.url, p.model, api_key_env=p.api_key_env, timeout_s=p.timeout_s, retries=p.retries,
                         backoff_s=p.backoff_s, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                         allow_plain_http=p.allow_plain_http)
    else:  # config.PromptParams lets no other name through
        raise AimfairError(f"unknown prompt backend {p.backend!r}: choose grammar, transformers, openai or file")
    return ask_for_prompts(ask, p.backend, template, source, d.dataset, d.target, d.sensitive, n, p.rounds, p.seed)


def settings(p: PromptParams, dataset: str) -> dict:
    """The backend's settings for prompts.json (the API key's variable name, never the key)."""
    if p.mode == "single" or p.backend == "grammar":
        return {}
    if p.backend == "file":
        return dict(file=p.file)
    common = dict(template=p.template or f"aimfair/csdg/prompts/templates/{dataset}.txt", rounds=p.rounds,
                  max_new_tokens=p.max_new_tokens, temperature=p.temperature)
    if p.backend == "transformers":
        return dict(model_path=p.model_path, device=p.device, **common)
    return dict(url=p.url, model=p.model, api_key_env=p.api_key_env, timeout_s=p.timeout_s, retries=p.retries,
                backoff_s=p.backoff_s, **common)


def run_prompts(params: Params, root: Path) -> PromptSet:
    """Write work/prompts/prompts.json (+ rejected.csv, diversity.csv) for the setting in params."""
    p, d = params.prompts, params.data
    n = 1 if p.mode == "single" else p.n_per_group
    drafts = draft(p, d, n, root)
    try:
        checked = check_prompts(drafts.prompts, d.target, d.sensitive, n)
    except AimfairError as e:
        if p.backend == "file" and p.mode != "single":
            raise AimfairError(f"{e}; in {p.file}: add prompts to that group or lower prompts.n_per_group") from None
        raise
    prompts = {g: v[:n] for g, v in checked.valid.items()}
    result = PromptSet(prompts=prompts,
                       rejected=pd.DataFrame(drafts.unparsed + checked.rejected, columns=["group", "prompt", "reason"]),
                       diversity=diversity(prompts))
    out = root / paths.PROMPTS
    io.write_json(out / "prompts.json", dict(dataset=d.dataset, target=d.target, sensitive=d.sensitive,
                                             backend=p.backend, mode=p.mode, seed=p.seed, n_per_group=n,
                                             settings=settings(p, d.dataset), groups=result.prompts))
    io.write_csv(out / "rejected.csv", result.rejected)
    io.write_csv(out / "diversity.csv", result.diversity)
    return result
