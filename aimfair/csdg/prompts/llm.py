"""Contextual prompts from a language model: the paper asks GPT-4; here a local model or any chat endpoint.

  instruction       the question for one group, filled in from a template per dataset that users can edit
  parse_answer      the prompts inside an answer: a JSON list of strings, or a numbered or bulleted list
  TransformersChat  a local causal LM folder, through transformers, offline
  OpenAIChat        any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, Ollama, a hosted API)
  ask_for_prompts   asks group by group, in bounded rounds, until every group has enough valid prompts

Both models are callables (instruction, seed) -> answer text, so the loop does not care which one it drives.
Whatever a model answers goes through aimfair.csdg.prompts.validate like the grammar's prompts do.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.csdg.prompts.grammar import single_prompt
from aimfair.csdg.prompts.validate import check_prompts
from aimfair.csdg.prompts.vocabulary import attribute_words, context_words

Ask = Callable[[str, int], str]  # (instruction, seed) -> the model's answer

# ---------------------------------------------------------------------------------------------------------
# The instruction

PLACEHOLDERS = ("n", "group_description", "example", "required", "avoid", "context", "dataset")
_GROUP_PLACEHOLDERS = ("group_description", "example", "required")  # a template needs one to tell groups apart


def packaged_template(dataset: str) -> Path:
    """The instruction template shipped for `dataset`: aimfair/csdg/prompts/templates/<dataset>.txt."""
    return Path(str(resources.files("aimfair.csdg.prompts") / "templates" / f"{dataset}.txt"))


def read_template(path: str | os.PathLike) -> str:
    """A template's text, checked: only known {placeholders}, and at least one that names the group."""
    path = Path(path)
    if not path.is_file():
        raise AimfairError(f"instruction template {path} does not exist: fix prompts.template in params.yaml "
                           "(empty: the packaged template of the dataset)")
    text = path.read_text(encoding="utf-8")
    names = set(re.findall(r"\{(\w+)\}", text))  # JSON examples such as ["a", "b"] hold no {word}
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise AimfairError(f"instruction template {path} has an unknown placeholder {{{unknown[0]}}}: use only "
                           + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
    if not names & set(_GROUP_PLACEHOLDERS):
        raise AimfairError(f"instruction template {path} never names the group, so every group would get the "
                           "same question: add {group_description} to it")
    return text


def _quoted(phrases) -> str:
    return ", ".join(f'"{p}"' for p in phrases)


def instruction(template: str, dataset: str, target: str, sensitive: str, group: str, n: int) -> str:
    """The question for `n` prompts of one group, e.g. for group 1_1 of Smiling/Male: 'a smiling man'."""
    pairs = list(zip((target, sensitive), parse_group_key(group)))
    example = single_prompt(target, sensitive, group)  # "Portrait face photo of a smiling man."
    values = dict(
        n=str(n),
        dataset=dataset,
        group_description=example.removeprefix("Portrait face photo of ").rstrip("."),
        example=example,
        # the words validation reads back (aimfair.csdg.prompts.vocabulary), so a good answer also passes it
        required=" and ".join(f"one of {_quoted(attribute_words(a).recognised(v))}" for a, v in pairs),
        avoid=" or as ".join(f'"{attribute_words(a).says[1 - v][0]}"' for a, v in pairs),
        context="; ".join(p for phrases in context_words(dataset).values() for p in phrases),
    )
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), template)


# ---------------------------------------------------------------------------------------------------------
# Reading the answer

_FENCE = re.compile(r"```[\w-]*[ \t]*\n(.*?)```", re.S)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_ITEM = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•])\s+(.+?)\s*$")  # "1. ...", "2) ...", "- ...", "* ..."


def parse_answer(answer: str) -> list[str] | None:
    """The prompts in a model's answer, or None when it holds no list of prompts.

    Accepted, in this order: a JSON list of strings anywhere in the answer (also inside a ```json fence or
    between chatter); a JSON list cut short by the token limit (its complete strings); a numbered or
    bulleted list, one prompt a line.
    """
    text = answer if isinstance(answer, str) else ""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\[", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value]
    opened = re.search(r'\[\s*"', text)
    if opened and "]" not in text[opened.start():]:
        complete = []
        for literal in _STRING.findall(text, opened.start()):
            try:
                complete.append(json.loads(literal).strip())
            except json.JSONDecodeError:
                pass
        if complete:
            return complete
    items = [m[1].rstrip(",").strip().strip('"').strip() for line in text.splitlines() if (m := _ITEM.match(line))]
    return [item for item in items if item] or None


def _start(answer: str, chars: int = 120) -> str:
    """The beginning of an answer on one line, for error messages and rejected.csv."""
    return " ".join(str(answer).split())[:chars]


# ---------------------------------------------------------------------------------------------------------
# The models


class TransformersChat:
    """A local causal LM (a folder, or a model id in the local Hugging Face cache), never downloaded."""

    def __init__(self, model_path: str | os.PathLike, device: str = "auto", max_new_tokens: int = 2048,
                 temperature: float = 0.9):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from aimfair.core.device import resolve_device

        self.device = resolve_device(device)  # before loading: a wrong device fails at once
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(model_path), local_files_only=True)
        except (OSError, ValueError, KeyError, ImportError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if not Path(model_path).exists():  # transformers would speak of the hub, which it never reached
                first = "no such folder, and no such model id in the local Hugging Face cache; nothing is downloaded"
            raise AimfairError(f"cannot load a causal language model from {model_path} ({first}): prompts.model_path "
                               "must be a local folder with config.json, the weights and the tokenizer, or a model "
                               "id in the local Hugging Face cache") from None
        self.model = model.to(self.device).eval()
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def prompt_text(self, instruction: str) -> str:
        """What the model reads: the instruction in the tokenizer's chat template, if it has one."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": instruction}], tokenize=False,
                                                      add_generation_prompt=True)
        return instruction

    def __call__(self, instruction: str, seed: int) -> str:
        import torch

        # a chat template writes its own special tokens (BOS...); a plain instruction gets the usual ones
        tokens = self.tokenizer(self.prompt_text(instruction), return_tensors="pt",
                                add_special_tokens=not self.has_chat_template)
        inputs = {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask") if k in tokens}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        sampling = dict(do_sample=True, temperature=self.temperature) if self.temperature > 0 else dict(do_sample=False)
        torch.manual_seed(seed)  # generate() samples from torch's global generator
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, pad_token_id=pad, **sampling)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint, through the standard library.

    Connection errors, timeouts, HTTP 429 and 5xx are retried with exponential backoff (backoff_s, 2x, 4x,
    ...); any other HTTP error is a mistake in the request (model name, key) and fails at once.
    """

    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 120.0,
                 retries: int = 4, backoff_s: float = 2.0, max_new_tokens: int = 2048, temperature: float = 0.9,
                 allow_plain_http: bool = False):
        if os.environ.get(api_key_env) and not allow_plain_http and _exposes_key(url):
            raise AimfairError(f"prompts.url {url} is plain http:// to another machine, so the key in ${api_key_env} "
                               "would travel unencrypted: use https://, or a server on this machine, or set "
                               "prompts.allow_plain_http: true if the network is yours")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def __call__(self, instruction: str, seed: int) -> str:
        body = json.dumps(dict(model=self.model, messages=[{"role": "user", "content": instruction}],
                               temperature=self.temperature, max_tokens=self.max_new_tokens, seed=seed)).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:  # local servers need none
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return self._content(response.read())
            except urllib.error.HTTPError as e:  # before URLError: it is one
                last = f"HTTP {e.code} {_server_message(e)}"
                if e.code != 429 and e.code < 500:
                    raise AimfairError(f"the openai backend's request to {self.endpoint} failed with {last}: check "
                                       f"prompts.model, prompts.url and the key in ${self.api_key_env}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
                last = str(getattr(e, "reason", "") or e) or type(e).__name__
        raise AimfairError(f"the openai backend got no answer from {self.endpoint} after {self.retries + 1} "
                           f"attempt(s) (last error: {last}): start the server or fix prompts.url, or raise "
                           "prompts.retries or prompts.timeout_s")

    def _content(self, reply: bytes) -> str:
        try:
            content = json.loads(reply)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise AimfairError(f"{self.endpoint} did not answer like an OpenAI-compatible chat endpoint (it sent "
                               f"{_start(reply.decode(errors='replace'), 100)!r}): check prompts.url, which usually "
                               "ends in /v1") from None
        return content if isinstance(content, str) else ""


def _exposes_key(url: str) -> bool:
    """Whether a key sent to `url` would cross a network unencrypted: plain http to a host other than this one."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1")


def _server_message(error: urllib.error.HTTPError) -> str:
    """The reason a server gives with an HTTP error: its JSON error message, or the start of its body."""
    try:
        text = error.read().decode(errors="replace")
    except OSError:
        text = ""
    try:
        data = json.loads(text)
        detail = data.get("error", data.get("detail", data.get("message", text)))
        text = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        pass
    return _start(text or error.reason or "", 300)


# ---------------------------------------------------------------------------------------------------------
# Asking until every group has enough


@dataclass
class Drafts:
    """Every prompt a backend drafted per group (before validation), and answers that held no list."""

    prompts: dict[str, list] = field(default_factory=lambda: {g: [] for g in GROUPS})
    unparsed: list[tuple[str, str, str]] = field(default_factory=list)  # (group, start of the answer, reason)


def _round_seed(seed: int, group: str, round_: int) -> int:
    """A seed per (base seed, group, round): rounds must differ, or a seeded model repeats itself."""
    return int(np.random.SeedSequence([seed, GROUPS.index(group), round_]).generate_state(1)[0] >> 1)


def _checked_alone(prompts: list, group: str, target: str, sensitive: str):
    """Validate one group's drafts on their own (the other groups empty)."""
    return check_prompts({g: prompts if g == group else [] for g in GROUPS}, target, sensitive, 0)


def ask_for_prompts(ask: Ask, backend: str, template: str, template_source: str, dataset: str, target: str,
                    sensitive: str, n: int, rounds: int, seed: int = 0) -> Drafts:
    """Ask `ask` for each group's prompts, at most `rounds` times a group, until `n` of them are valid.

    A group whose answers never held a list of prompts, or that has fewer than `n` valid prompts after the
    last round, stops the run with an AimfairError (the groups after it are not asked).
    """
    drafts = Drafts()
    for group in GROUPS:
        parsed_any = False
        for round_ in range(rounds):
            missing = n - len(_checked_alone(drafts.prompts[group], group, target, sensitive).valid[group])
            if missing <= 0:
                break
            question = instruction(template, dataset, target, sensitive, group, missing)
            answer = ask(question, _round_seed(seed, group, round_))
            prompts = parse_answer(answer)
            if prompts is None:
                drafts.unparsed.append((group, _start(answer), "not a list of prompts"))
            else:
                parsed_any = True
                drafts.prompts[group].extend(prompts)
        if not parsed_any:
            start = next(a for g, a, _ in reversed(drafts.unparsed) if g == group)
            raise AimfairError(f"the {backend} backend's answer for group {group} is not a list of prompts in "
                               f"{rounds} round(s) (the last one begins {start!r}): use an instruction-following "
                               f"(chat) model, or make the template {template_source} ask for a JSON list of strings")
        checked = _checked_alone(drafts.prompts[group], group, target, sensitive)
        if len(checked.valid[group]) < n:
            examples = "; ".join(f"{p!r}: {r}" for _, p, r in checked.rejected)[:300]
            raise AimfairError(f"only {len(checked.valid[group])} valid prompt(s) for group {group} ({target}, "
                               f"{sensitive}), {n} needed, after {rounds} round(s) of the {backend} backend; rejected: "
                               f"{examples or 'none'}; raise prompts.rounds, try another model or temperature, or "
                               f"edit the template {template_source}")
    return drafts
