"""The prompt backends beyond the grammar: a local causal LM (transformers), an OpenAI-compatible endpoint
and a prompts file, all through the real code paths (a tiny random LM built here, an HTTP server started
here), plus answer parsing, the MiniLM diversity column and the params checks."""

import dataclasses
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from aimfair.config import parse_params
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.prompts import llm
from aimfair.csdg.prompts.diversity import diversity, mean_cosine_distance
from aimfair.csdg.prompts.grammar import grammar_prompts
from aimfair.csdg.prompts.llm import OpenAIChat, TransformersChat, parse_answer
from aimfair.csdg.prompts.promptfile import read_prompts_file
from aimfair.csdg.prompts.validate import check_prompts
from aimfair.pipeline.prompts import run_prompts


def _params(**prompts):
    return parse_params({"prompts": prompts})


# --- a tiny random causal LM with a tokenizer built here -----------------------------------------------


def _tiny_lm(folder, vocabulary, chat_template=None):
    """A 2-layer Llama (hidden size 32) with random weights and a word-level tokenizer, saved to `folder`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>"] + vocabulary
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    if all(" " not in w for w in vocabulary):
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    if chat_template:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=1, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


CHAT = "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}<|assistant|>"
# each token is a whole bulleted line, so whatever the random model emits parses as a list of prompts;
# none of the lines stands for any group (no gender, both genders, or no person at all)
BULLETS = ["\n- a cat sleeping on a mat", "\n- portrait of a smiling person", "\n- a man and a woman, both smiling",
           "\n- portrait of a person not smiling", "\n- a blue sky over the sea"]


def test_transformers_backend_garbage_is_rejected_by_validation(tmp_path):
    folder = _tiny_lm(tmp_path / "lm", BULLETS, chat_template=CHAT)
    chat = TransformersChat(folder, device="cpu", max_new_tokens=8)
    assert chat.prompt_text("Write prompts.") == "<|user|> Write prompts.\n<|assistant|>"  # its chat template
    answer = chat("Write prompts.", seed=1)
    assert parse_answer(answer) and answer == chat("Write prompts.", seed=1)  # seeded sampling

    params = _params(backend="transformers", model_path=str(folder), device="cpu", n_per_group=2, rounds=2,
                     max_new_tokens=8)
    with pytest.raises(AimfairError, match=r"only 0 valid prompt\(s\) for group 0_0 .*2 round\(s\) of the "
                                           r"transformers backend; rejected: .*(does not name|names)"):
        run_prompts(params, tmp_path)
    assert not (tmp_path / "work" / "prompts" / "prompts.json").exists()


def test_transformers_backend_without_chat_template_reads_the_plain_instruction_and_needs_a_list(tmp_path):
    folder = _tiny_lm(tmp_path / "lm", "photo of the sky blue cat on mat dog runs fast".split())
    chat = TransformersChat(folder, device="cpu", max_new_tokens=10)
    assert chat.prompt_text("Write prompts.") == "Write prompts."
    answers = {chat("Write prompts.", seed=s) for s in range(3)}
    assert len(answers) > 1  # different seeds, different samples
    params = _params(backend="transformers", model_path=str(folder), device="cpu", n_per_group=2, rounds=2,
                     max_new_tokens=10)
    with pytest.raises(AimfairError, match=r"the transformers backend's answer for group 0_0 is not a list of "
                                           r"prompts in 2 round\(s\) \(the last one begins '\w+"):
        run_prompts(params, tmp_path)


def test_a_missing_or_incomplete_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AimfairError, match="cannot load a causal language model from .*nowhere.*prompts.model_path"):
        TransformersChat(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(AimfairError, match="cannot load a causal language model from .*empty"):
        TransformersChat(tmp_path / "empty")


# --- an OpenAI-compatible endpoint, served here ----------------------------------------------------------


def _good_answer(instruction):
    """Three valid prompts for the group the instruction asks about, in chatter and a code fence."""
    example = re.search(r'like this one: "(.*?)\."', instruction)[1]
    prompts = [f"{example}, {detail}." for detail in ("wearing glasses", "in soft daylight", "against a brick wall")]
    return "Sure! Here they are:\n```json\n" + json.dumps(prompts) + "\n```\nEnjoy."


class _Endpoint:
    """A chat-completions server on 127.0.0.1; `reply(request) -> (status, content or error body)`."""

    def __init__(self, reply):
        self.reply, self.requests = reply, []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(dict(path=self.path, headers=dict(self.headers), body=body))
                status, payload = endpoint.reply(body)
                if status == 200:
                    payload = {"choices": [{"message": {"role": "assistant", "content": payload}}]}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # talk to 127.0.0.1 directly
    started = []

    def start(reply):
        started.append(_Endpoint(reply))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _scripted(*statuses):
    """Answer with these HTTP statuses in turn (200: a good answer), then good answers."""
    queue = list(statuses)

    def reply(body):
        status = queue.pop(0) if queue else 200
        if status == 200:
            return 200, _good_answer(body["messages"][0]["content"])
        return status, {"error": {"message": f"scripted failure {status}"}}

    return reply


def test_openai_backend_gives_valid_prompts_per_group_and_sends_the_key(tmp_path, endpoint, monkeypatch):
    server = endpoint(_scripted())
    monkeypatch.setenv("AIMFAIR_TEST_KEY", "sk-test-secret")
    params = _params(backend="openai", url=server.url, model="tiny-chat", api_key_env="AIMFAIR_TEST_KEY",
                     n_per_group=3, seed=7)
    result = run_prompts(params, tmp_path)
    check_prompts(result.prompts, "Smiling", "Male", 3)  # valid, 3 per group
    assert all(len(v) == 3 for v in result.prompts.values())
    assert "glasses" in result.prompts["1_1"][0] and "smiling man" in result.prompts["1_1"][0]
    assert len(server.requests) == 4  # one question per group was enough
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["body"]["model"] == "tiny-chat"
    assert first["headers"]["Authorization"] == "Bearer sk-test-secret"
    assert "a woman not smiling" in first["body"]["messages"][0]["content"]  # group 0_0's instruction
    assert len({r["body"]["seed"] for r in server.requests}) == 4
    saved = (tmp_path / "work" / "prompts" / "prompts.json").read_text()
    assert json.loads(saved)["settings"]["url"] == server.url and "sk-test-secret" not in saved
    assert "mean_embedding_distance" in result.diversity

    monkeypatch.delenv("AIMFAIR_TEST_KEY")
    OpenAIChat(server.url, "tiny-chat", api_key_env="AIMFAIR_TEST_KEY")("Give 2 prompts. like this one: \"a man.\"", 0)
    assert "Authorization" not in server.requests[-1]["headers"]  # no key: none sent (local servers)


def test_openai_backend_retries_server_errors_with_exponential_backoff(endpoint, monkeypatch):
    sleeps = []
    monkeypatch.setattr(llm.time, "sleep", sleeps.append)
    server = endpoint(_scripted(500, 429))
    chat = OpenAIChat(server.url, "m", retries=2, backoff_s=0.01)
    assert parse_answer(chat('like this one: "Portrait face photo of a smiling man."', 0))
    assert len(server.requests) == 3 and sleeps == [0.01, 0.02]


def test_openai_backend_retries_a_timeout(endpoint):
    calls = []

    def slow_once(body):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.6)
        return 200, '["one two three"]'

    server = endpoint(slow_once)
    assert OpenAIChat(server.url, "m", timeout_s=0.2, retries=1, backoff_s=0)("q", 0) == '["one two three"]'
    assert len(calls) == 2


def test_openai_backend_that_keeps_failing_is_a_clear_error(endpoint):
    server = endpoint(_scripted(*[500] * 10))
    with pytest.raises(AimfairError, match=rf"no answer from {re.escape(server.url)}/chat/completions after 3 "
                                           r"attempt\(s\) \(last error: HTTP 500 scripted failure 500\): start"):
        OpenAIChat(server.url, "m", retries=2, backoff_s=0)("q", 0)
    assert len(server.requests) == 3


def _dead_url():
    """The URL of a port that was free a moment ago: nothing listens there now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_openai_backend_where_nothing_listens_is_a_clear_error():
    url = _dead_url()
    with pytest.raises(AimfairError, match=rf"no answer from {re.escape(url)}/chat/completions after 2 attempt\(s\) "
                                           r"\(last error: .*refused.*\): start the server or fix prompts.url"):
        OpenAIChat(url, "m", retries=1, backoff_s=0)("q", 0)


def test_openai_client_errors_fail_at_once_with_the_servers_message(endpoint):
    server = endpoint(lambda body: (401, {"error": {"message": "Incorrect API key provided"}}))
    with pytest.raises(AimfairError, match=r"failed with HTTP 401 Incorrect API key provided: check prompts.model"):
        OpenAIChat(server.url, "m", retries=3, backoff_s=0)("q", 0)
    assert len(server.requests) == 1


def test_an_answer_that_is_not_a_list_of_prompts_is_a_clear_error(tmp_path, endpoint):
    server = endpoint(lambda body: (200, "I'm sorry, but I can't help with that request."))
    params = _params(backend="openai", url=server.url, model="m", n_per_group=2, rounds=2)
    with pytest.raises(AimfairError, match=r"the openai backend's answer for group 0_0 is not a list of prompts in "
                                           r"2 round\(s\) \(the last one begins \"I'm sorry, but"):
        run_prompts(params, tmp_path)


def test_a_chatty_answer_is_recorded_and_the_next_round_asks_again(tmp_path, endpoint):
    answers = iter(["Let me think about that first."])

    def reply(body):
        return 200, next(answers, None) or _good_answer(body["messages"][0]["content"])

    server = endpoint(reply)
    result = run_prompts(_params(backend="openai", url=server.url, model="m", n_per_group=3), tmp_path)
    assert len(server.requests) == 5 and all(len(v) == 3 for v in result.prompts.values())
    assert result.rejected.values.tolist() == [["0_0", "Let me think about that first.", "not a list of prompts"]]
    assert "not a list of prompts" in (tmp_path / "work" / "prompts" / "rejected.csv").read_text()


def test_a_users_template_is_filled_in_and_checked(tmp_path, endpoint):
    server = endpoint(lambda body: (200, '["Portrait face photo of a woman not smiling, wearing a hat."]'))
    (tmp_path / "mine.txt").write_text('Give {n} prompts of {group_description} as JSON, e.g. ["a", "b"].')
    params = _params(backend="openai", url=server.url, model="m", n_per_group=1, template="mine.txt")
    with pytest.raises(AimfairError, match="group 0_1"):  # the canned answer only suits group 0_0
        run_prompts(params, tmp_path)
    asked = server.requests[0]["body"]["messages"][0]["content"]
    assert asked == 'Give 1 prompts of a woman not smiling as JSON, e.g. ["a", "b"].'
    (tmp_path / "mine.txt").write_text("Give {count} prompts of {group_description}.")
    with pytest.raises(AimfairError, match=r"mine.txt has an unknown placeholder \{count\}"):
        run_prompts(params, tmp_path)
    (tmp_path / "mine.txt").write_text("Give {n} prompts.")
    with pytest.raises(AimfairError, match="never names the group"):
        run_prompts(params, tmp_path)


def test_a_failing_backend_leaves_the_last_prompts_untouched(tmp_path):
    run_prompts(_params(n_per_group=3), tmp_path)
    out = tmp_path / "work" / "prompts"
    before = {name: (out / name).read_bytes() for name in ("prompts.json", "rejected.csv", "diversity.csv")}
    params = _params(backend="openai", url=_dead_url(), model="m", n_per_group=3, retries=1, backoff_s=0)
    with pytest.raises(AimfairError, match="no answer from"):
        run_prompts(params, tmp_path)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary files left behind


# --- answers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, prompts", [
    ('["a b c", "d e f"]', ["a b c", "d e f"]),
    ('Here you go:\n```json\n["a b c",\n "d e f"]\n```\nAnything else?', ["a b c", "d e f"]),
    ('I wrote [2] prompts: ["a b c", "d e f"] -- enjoy', ["a b c", "d e f"]),
    ('{"prompts": ["a b c"]}', ["a b c"]),
    ('["a b c", "d e f", "g h', ["a b c", "d e f"]),  # cut short by the token limit
    ('Prompts:\n1. "a b c",\n2) d e f\n- g h i\n* j k l', ["a b c", "d e f", "g h i", "j k l"]),
    ("I'm sorry, I cannot do that.", None),
    ("[1, 2, 3]", None),
    ("[]", None),
    ("", None),
])
def test_parse_answer(answer, prompts):
    assert parse_answer(answer) == prompts


# --- the file backend -------------------------------------------------------------------------------------


def test_file_backend_takes_a_users_prompts(tmp_path):
    written = grammar_prompts("tinyfaces", "Smiling", "Male", 4, seed=5)
    (tmp_path / "mine.json").write_text(json.dumps(written))
    result = run_prompts(_params(backend="file", file="mine.json", n_per_group=4), tmp_path)
    assert result.prompts == written and result.rejected.empty
    saved = json.loads((tmp_path / "work" / "prompts" / "prompts.json").read_text())
    assert saved["backend"] == "file" and saved["settings"] == {"file": "mine.json"}

    # YAML reads unquoted keys such as 1_0 as numbers; they still mean their groups
    (tmp_path / "mine.yaml").write_text("".join(f"{g}: {json.dumps(v)}\n" for g, v in written.items()))
    assert read_prompts_file(tmp_path / "mine.yaml") == written


def test_file_backend_missing_groups_are_named(tmp_path):
    written = grammar_prompts("tinyfaces", "Smiling", "Male", 2)
    (tmp_path / "mine.json").write_text(json.dumps({"0_0": written["0_0"], "1_0": written["1_0"]}))
    with pytest.raises(AimfairError, match=r"prompts file .*mine.json has no prompts for group\(s\) 0_1, 1_1"):
        run_prompts(_params(backend="file", file="mine.json", n_per_group=2), tmp_path)
    with pytest.raises(AimfairError, match="prompts file .*absent.yaml does not exist"):
        run_prompts(_params(backend="file", file="absent.yaml", n_per_group=2), tmp_path)


def test_file_backend_rejects_a_prompt_that_contradicts_its_group(tmp_path):
    written = grammar_prompts("tinyfaces", "Smiling", "Male", 3)
    written["1_1"][1] = "Portrait face photo of a smiling woman, wearing glasses."  # group 1_1: smiling men
    (tmp_path / "mine.json").write_text(json.dumps(written))
    result = run_prompts(_params(backend="file", file="mine.json", n_per_group=2), tmp_path)
    assert result.prompts["1_1"] == [written["1_1"][0], written["1_1"][2]]
    rejected = (tmp_path / "work" / "prompts" / "rejected.csv").read_text()
    assert "smiling woman" in rejected and "names Male=0, the wrong group" in rejected
    with pytest.raises(AimfairError, match=r"only 2 valid prompt\(s\) for group 1_1 .* 3 needed.*mine.json: add "
                                           r"prompts to that group or lower prompts.n_per_group"):
        run_prompts(_params(backend="file", file="mine.json", n_per_group=3), tmp_path)


# --- diversity --------------------------------------------------------------------------------------------


def test_mean_cosine_distance_matches_the_pairwise_mean():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pairwise = [1 - vectors[i] @ vectors[j] for i in range(7) for j in range(i + 1, 7)]
    assert mean_cosine_distance(vectors) == pytest.approx(np.mean(pairwise))
    assert mean_cosine_distance(vectors[:1]) == 0.0 and mean_cosine_distance(np.repeat(vectors[:1], 3, 0)) == 0.0


def test_embedding_distance_sees_paraphrases_and_varied_prompts():
    near = ["a smiling man", "a grinning man", "a man who smiles", "a smiling guy"]
    far = ["a smiling man on a beach at sunset", "portrait of a laughing gentleman wearing a red hat",
           "close-up of a smiling male astronaut", "a smiling old man playing chess in a park"]
    frame = diversity({"0_0": near, "0_1": far, "1_0": ["one prompt only"], "1_1": near[:2]})
    distance = dict(zip(frame["group"], frame["mean_embedding_distance"]))
    assert 0 < distance["0_0"] < distance["0_1"] and distance["1_0"] == 0.0
    assert list(frame.columns) == ["group", "prompts", "distinct_words", "mean_jaccard_distance",
                                   "mean_embedding_distance"]


# --- params -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("section, message", [
    ({"backend": "transformer"}, r"prompts.backend is 'transformer' \(did you mean transformers\?\)"),
    ({"backend": "gpt4"}, "prompts.backend is 'gpt4'.*grammar, transformers, openai, file"),
    ({"backend": "transformers"}, "prompts.model_path must name a local model folder"),
    ({"backend": "openai", "model": "m", "url": "localhost:8000"}, "prompts.url must be the endpoint's base URL"),
    ({"backend": "openai"}, "prompts.model must name the served model"),
    ({"backend": "file"}, "prompts.file must name a prompts file"),
    ({"rounds": 0}, "prompts.rounds must be positive"),
    ({"max_new_tokens": -5}, "prompts.max_new_tokens must be positive"),
    ({"temperature": -0.1}, "prompts.temperature must be 0"),
    ({"timeout_s": 0}, "prompts.timeout_s must be positive"),
    ({"retries": -1}, "prompts.retries must be 0 or more"),
    ({"backoff_s": -1}, "prompts.backoff_s must be 0 or more"),
    ({"device": "gpu"}, "prompts.device must be auto"),
    ({"api_key_env": "sk-abc123-secret"}, "prompts.api_key_env must be the NAME of an environment variable"),
    ({"retries": "many"}, "prompts.retries must be an integer"),
    ({"api_key": "x"}, "unknown key prompts.api_key"),
])
def test_bad_prompt_params_are_one_line_errors_naming_the_key(section, message):
    with pytest.raises(AimfairError, match=message) as raised:
        parse_params({"prompts": section})
    assert "\n" not in str(raised.value) and "sk-abc123-secret" not in str(raised.value)


def test_the_defaults_keep_the_grammar_backends_prompts(tmp_path):
    params = parse_params({})
    assert params.prompts.backend == "grammar"
    result = run_prompts(dataclasses.replace(params, prompts=dataclasses.replace(params.prompts, n_per_group=5)),
                         tmp_path)
    assert result.prompts == grammar_prompts("tinyfaces", "Smiling", "Male", 5, seed=0)
    assert set(result.prompts) == set(GROUPS)


@pytest.mark.parametrize("url, refused", [("http://10.0.0.5:8000/v1", True), ("http://llm.example.org/v1", True),
                                          ("https://llm.example.org/v1", False), ("http://localhost:8000/v1", False),
                                          ("http://127.0.0.1:8000/v1", False)])
def test_a_key_is_never_sent_over_plain_http_to_another_machine(monkeypatch, url, refused):
    monkeypatch.setenv("AIMFAIR_TEST_KEY", "secret")
    if refused:
        with pytest.raises(AimfairError, match=r"plain http:// to another machine.*allow_plain_http"):
            OpenAIChat(url, "m", api_key_env="AIMFAIR_TEST_KEY")
        OpenAIChat(url, "m", api_key_env="AIMFAIR_TEST_KEY", allow_plain_http=True)  # the user's own network
    else:
        OpenAIChat(url, "m", api_key_env="AIMFAIR_TEST_KEY")
    monkeypatch.delenv("AIMFAIR_TEST_KEY")
    OpenAIChat("http://10.0.0.5:8000/v1", "m", api_key_env="AIMFAIR_TEST_KEY")  # no key, nothing to leak


def test_a_missing_model_folder_does_not_speak_of_the_hub(tmp_path):
    with pytest.raises(AimfairError) as error:
        TransformersChat(tmp_path / "nowhere")
    assert "huggingface.co" not in str(error.value) and "nothing is downloaded" in str(error.value)
