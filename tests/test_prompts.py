"""Contextual prompts: the built-in grammar backend and the validation every backend goes through."""

import pytest

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.prompts.grammar import grammar_prompts, single_prompt
from aimfair.csdg.prompts.validate import check_prompts, problem_with, values_named
from aimfair.csdg.prompts.vocabulary import CONTEXT

SETTINGS = [("tinyfaces", "Smiling", "Male"), ("celeba", "Smiling", "Male"), ("celeba", "Smiling", "Young"),
            ("celeba", "Young", "Male"), ("utkface", "Female", "White")]


@pytest.mark.parametrize("dataset, target, sensitive", SETTINGS)
def test_grammar_prompts_are_valid_distinct_and_seeded(dataset, target, sensitive):
    prompts = grammar_prompts(dataset, target, sensitive, 50, seed=3)
    checked = check_prompts(prompts, target, sensitive, 50)
    assert not checked.rejected and all(len(set(v)) == 50 for v in checked.valid.values())
    assert prompts == grammar_prompts(dataset, target, sensitive, 50, seed=3)
    assert prompts != grammar_prompts(dataset, target, sensitive, 50, seed=4)


def test_contextual_prompts_vary_the_context_and_single_mode_is_the_papers_plain_prompt():
    prompts = grammar_prompts("celeba", "Smiling", "Male", 50)["1_1"]
    assert len({p.split(", ")[1] for p in prompts}) >= 10  # many different first details
    assert single_prompt("Smiling", "Male", "1_1") == "Portrait face photo of a smiling man."
    single = grammar_prompts("celeba", "Smiling", "Male", 50, mode="single")
    assert single["0_0"] == ["Portrait face photo of a woman not smiling."]
    assert all(len(v) == 1 for v in single.values())


@pytest.mark.parametrize("prompt, attribute, named", [
    ("a woman not smiling", "Smiling", {0}),
    ("a smiling woman", "Smiling", {1}),
    ("a woman with a neutral expression", "Smiling", {0}),
    ("a woman", "Male", {0}),
    ("a gentleman", "Male", {1}),
    ("a man and a woman", "Male", {0, 1}),
    ("a female with black hair on a white background", "White", set()),
    ("a black woman", "White", {0}),
    ("an elderly man", "Young", {0}),
])
def test_values_named(prompt, attribute, named):
    assert values_named(prompt, attribute) == named


@pytest.mark.parametrize("prompt, reason", [
    ("Portrait of a smiling woman.", "names Male=0"),  # group 1_1 is smiling men
    ("Portrait of a man not smiling.", "names Smiling=0"),
    ("Portrait of a person smiling.", "does not name Male=1"),
    ("Portrait of a man.", "does not name Smiling=1"),
    ("<|endoftext|>", "not a sentence"),
    ("", "not a sentence"),
])
def test_problems_are_named(prompt, reason):
    assert reason in problem_with(prompt, "Smiling", "Male", "1_1")


def test_check_rejects_duplicates_garbage_and_contradictions_and_counts_what_is_left():
    prompts = grammar_prompts("celeba", "Smiling", "Male", 5)
    prompts["1_1"] = prompts["1_1"][:3] + [prompts["1_1"][0].upper(), "a smiling woman in a park", 42]
    checked = check_prompts(prompts, "Smiling", "Male", 3)
    assert len(checked.valid["1_1"]) == 3
    assert [r for _, _, r in checked.rejected] == ["a duplicate", "names Male=0, the wrong group", "not a sentence"]
    with pytest.raises(AimfairError, match=r"only 3 valid prompt\(s\) for group 1_1 .* 5 needed; rejected: .*duplicate"):
        check_prompts(prompts, "Smiling", "Male", 5)


def test_bad_requests_are_clear_errors(monkeypatch):
    prompts = grammar_prompts("tinyfaces", "Smiling", "Male", 2)
    del prompts["0_1"]
    with pytest.raises(AimfairError, match="no group 0_1"):
        check_prompts(prompts, "Smiling", "Male", 1)
    with pytest.raises(AimfairError, match="no prompt vocabulary for attribute 'Eyeglasses'"):
        grammar_prompts("celeba", "Eyeglasses", "Male", 5)
    with pytest.raises(AimfairError, match="no prompt context for dataset"):
        grammar_prompts("imagenet", "Smiling", "Male", 5)
    with pytest.raises(AimfairError, match="prompt mode"):
        grammar_prompts("celeba", "Smiling", "Male", 5, mode="few")
    with pytest.raises(AimfairError, match="must be positive"):
        grammar_prompts("celeba", "Smiling", "Male", 0)
    monkeypatch.setitem(CONTEXT, "tiny", {"pose": ("facing the camera",)})  # about 50 distinct prompts
    with pytest.raises(AimfairError, match=r"yields only \d+ distinct prompts for group 0_0, 1000 asked"):
        grammar_prompts("tiny", "Young", "Male", 1000)
    assert set(grammar_prompts("tinyfaces", "Smiling", "Male", 1)) == set(GROUPS)


def test_the_prompts_stage_writes_valid_prompts_and_their_diversity(tmp_path):
    import dataclasses
    import json

    from aimfair.config import parse_params
    from aimfair.pipeline.prompts import run_prompts

    params = parse_params({"prompts": {"n_per_group": 20}})
    result = run_prompts(params, tmp_path)
    saved = json.loads((tmp_path / "work" / "prompts" / "prompts.json").read_text())
    assert saved["groups"] == result.prompts and all(len(v) == 20 for v in saved["groups"].values())
    assert (result.diversity["distinct_words"] > 20).all() and (result.diversity["mean_jaccard_distance"] > 0.3).all()
    single = run_prompts(dataclasses.replace(params, prompts=dataclasses.replace(params.prompts, mode="single")),
                         tmp_path)
    assert all(len(v) == 1 for v in single.prompts.values())
    assert (single.diversity["mean_jaccard_distance"] == 0).all()


@pytest.mark.parametrize("section, message", [
    ({"backend": "gpt4"}, "prompts.backend is 'gpt4'"),
    ({"mode": "many"}, "prompts.mode is 'many'"),
    ({"n_per_group": 0}, "prompts.n_per_group must be positive"),
])
def test_prompt_params_are_checked(section, message):
    from aimfair.config import parse_params

    with pytest.raises(AimfairError, match=message):
        parse_params({"prompts": section})
