"""SillyTavern against `roleplay serve`: its exact request bodies, replayed over HTTP.

The bodies in tests/data/sillytavern/ are what SillyTavern's server forwards to a
"Custom (OpenAI-compatible)" chat-completion source (see the README there): its prompt
manager's system messages, example dialogue, the chat, and its parameter set. Each test
checks what the reply *is*, not only the status: a continuation has no new stage note
and does not restart the message, an impersonation is written as the user, ``n: 2``
gives two different swipes, the custom persona retrieves from the client's examples.

Real parts: the SmolLM2 backend, Chroma retrieval, uvicorn, httpx. Replies are a few tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from test_api_server import API_KEY, serving, small_settings

DATA = Path(__file__).parent / "data" / "sillytavern"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    from roleplay.engine import Engine

    with serving(Engine(small_settings(tmp_path_factory.mktemp("st-home")), backend=backend)) as url:
        yield url


def body(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def post(server: str, name: str, **override) -> httpx.Response:
    payload = {**body(name), **override}
    r = httpx.post(server + "/v1/chat/completions", json=payload, headers=HEADERS, timeout=600)
    assert r.status_code == 200, r.text
    return r


def sse_events(r: httpx.Response) -> list[dict]:
    lines = [ln[len("data: "):] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


# -- the mapping alone (no model) ------------------------------------------------------------

@pytest.mark.parametrize("name, mode, user_text, partial", [
    ("chat.json", "reply", "I have indeed.", ""),
    ("continue.json", "continue", "", "*sets down the microscope"),
    ("continue_prefill.json", "continue", "", "*sets down the microscope"),
    ("impersonate.json", "impersonate", "", ""),
    ("empty_send.json", "reply", "", ""),
])
def test_sillytavern_bodies_map_onto_turns(settings, name, mode, user_text, partial):
    from roleplay.cards import get_card
    from roleplay.server.schemas import ChatCompletionRequest
    from roleplay.server.turns import build_turn, dropped_context

    card = get_card("sherlock", settings)
    request = ChatCompletionRequest.model_validate(body(name))
    turn = build_turn(request, card=card)
    assert turn.mode == mode
    assert turn.user_text.startswith(user_text) and bool(turn.user_text) == bool(user_text)
    assert turn.partial.startswith(partial) and bool(turn.partial) == bool(partial)
    assert turn.user_name == "User"  # from SillyTavern's main prompt, not the card's "Watson"
    assert turn.instructions == []   # the nudge / impersonation prompt became the mode
    # The client's own long character description and its example dialogue are dropped.
    assert dropped_context(request) == 2
    assert "221B Baker Street in London" not in turn.card.system_prompt
    assert "fictional chat between Sherlock Holmes and User" in turn.card.system_prompt  # short: kept
    assert all(m["role"] in ("user", "assistant") for m in turn.history)
    assert not any("example" in str(m.get("name", "")) for m in turn.history)


def test_custom_persona_is_built_from_the_client_prompt():
    from roleplay.server.schemas import ChatCompletionRequest
    from roleplay.server.turns import build_turn

    turn = build_turn(ChatCompletionRequest.model_validate(body("custom.json")), card=None)
    card = turn.card
    assert card.name == "Mira Vale" and turn.user_name == "Tomas"
    assert "airship Kestrel" in card.persona
    assert card.style.action_style == "asterisk"
    assert card.stories == [
        "Tomas: Captain, the port engine is smoking again.\nMira Vale: *kicks the housing twice* By the winds, "
        "she only smokes when she likes you. Fetch the grease.",
        "Tomas: The Skyguard wants to board us.\nMira Vale: *flips her coin without looking* Heads, we run. "
        "It's always heads."]
    assert card.id.startswith("custom-")


# -- replayed against the server with the real model -----------------------------------------

def test_status_check_lists_the_characters(server):
    spec = body("status.json")
    headers = {k: v.format(api_key=API_KEY) for k, v in spec["headers"].items()}
    r = httpx.request(spec["method"], server + spec["path"], headers=headers)
    assert r.status_code == 200
    ids = {m["id"] for m in r.json()["data"]}
    assert {"roleplay/sherlock", "roleplay/ada", "roleplay/custom"} <= ids
    assert r.headers["x-request-id"]


def test_plain_chat(server):
    r = post(server, "chat.json")
    out = r.json()
    extra = out["roleplay"]
    content = out["choices"][0]["message"]["content"]
    assert extra["mode"] == "reply" and extra["user_name"] == "User"
    assert extra["note"] and content.startswith(extra["note"])  # our stage note opens the reply
    assert len(content) > len(extra["note"])
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert r.headers["x-roleplay-dropped-messages"] == "2"
    assert out["id"] == "chatcmpl-" + r.headers["x-request-id"]


def test_streamed_chat(server):
    r = post(server, "chat_stream.json")
    events = sse_events(r)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    finish = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] in ("stop", "length")
    assert text.startswith(finish[0]["roleplay"]["note"]) and len(text) > len(finish[0]["roleplay"]["note"])


@pytest.mark.parametrize("name", ["continue.json", "continue_prefill.json"])
def test_continue_extends_the_partial_message(server, name):
    partial = body(name)["messages"][-1 if name == "continue_prefill.json" else -2]["content"]
    out = post(server, name).json()
    added = out["choices"][0]["message"]["content"]
    extra = out["roleplay"]
    assert extra["mode"] == "continue"
    assert extra["note"] == ""  # no fresh stage note: the message goes on where it stopped
    assert added.strip()
    assert not added.lstrip().startswith(partial[:12])  # only the new text, never the partial again
    assert not added.lstrip().startswith("*")  # nor a new action note glued onto the partial


def test_impersonate_writes_the_users_line(server):
    out = post(server, "impersonate.json").json()
    line = out["choices"][0]["message"]["content"]
    extra = out["roleplay"]
    assert extra["mode"] == "impersonate" and extra["user_name"] == "User"
    assert extra["note"] == ""
    assert line.strip()
    assert not line.startswith(("Sherlock", "*sets")), line  # not the character's voice or its note


def test_empty_send_lets_the_character_speak(server):
    out = post(server, "empty_send.json").json()
    content = out["choices"][0]["message"]["content"]
    extra = out["roleplay"]
    assert extra["mode"] == "reply"
    assert extra["note"] and content.startswith(extra["note"]) and len(content) > len(extra["note"])


def test_swipes_with_n_are_different(server):
    out = post(server, "swipes_n2.json").json()
    choices = out["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    texts = [c["message"]["content"] for c in choices]
    assert all(t.strip() for t in texts)
    assert texts[0] != texts[1]
    assert out["usage"]["completion_tokens"] == sum(c["roleplay"]["completion_tokens"] for c in choices)


def test_parameter_set_with_logprobs(server):
    out = post(server, "parameters.json").json()
    choice = out["choices"][0]
    content = choice["logprobs"]["content"]
    assert 1 <= len(content) <= 6 == body("parameters.json")["max_tokens"]
    assert len(content) == out["usage"]["completion_tokens"]
    for item in content:
        assert item["logprob"] <= 0.0
        assert len(item["top_logprobs"]) == 3
        assert item["top_logprobs"][0]["logprob"] >= item["top_logprobs"][-1]["logprob"]
    generated = "".join(item["token"] for item in content)
    assert generated.strip()[:4] in choice["message"]["content"]


def test_custom_persona_speaks_with_notes_from_its_examples(server):
    out = post(server, "custom.json").json()
    extra = out["roleplay"]
    content = out["choices"][0]["message"]["content"]
    assert extra["user_name"] == "Tomas"
    assert extra["story_ids"]  # retrieval ran over the client's example dialogue
    # The stage note is an action from those examples, in their *asterisk* style.
    assert extra["note"] in ("*kicks the housing twice*", "*flips her coin without looking*")
    assert content.startswith(extra["note"])


def test_open_webui_user_headers_fill_the_gaps(settings):
    """Open WebUI names its signed-in user in headers: memory user and name, lowest precedence."""
    from roleplay.cards import get_card
    from roleplay.server.schemas import ChatCompletionRequest
    from roleplay.server.turns import build_turn

    card = get_card("sherlock", settings)
    plain = ChatCompletionRequest.model_validate({"model": "roleplay/sherlock",
                                                  "messages": [{"role": "user", "content": "Hi."}]})
    turn = build_turn(plain, card=card, client_user="owui-17", client_name="Mei")
    assert (turn.memory_user, turn.user_name) == ("owui-17", "Mei")
    assert (build_turn(plain, card=card).memory_user, build_turn(plain, card=card).user_name) == (None, "Watson")
    named = ChatCompletionRequest.model_validate({"model": "roleplay/sherlock", "user": "u-1", "messages": [
        {"role": "user", "name": "Lin", "content": "Hi."}]})
    turn = build_turn(named, card=card, client_user="owui-17", client_name="Mei")
    assert (turn.memory_user, turn.user_name) == ("u-1", "Lin")  # the body wins


@pytest.mark.parametrize("name, mode", [("impersonate.json", "impersonate"), ("empty_send.json", "reply"),
                                        ("continue.json", "continue")])
def test_the_same_bodies_through_the_openai_client(server, name, mode):
    """The official client sends SillyTavern's bodies too (its extra fields as ``extra_body``)."""
    from openai import OpenAI

    client = OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=600)
    payload = body(name)
    known = {"messages", "model", "temperature", "max_tokens", "stream", "presence_penalty",
             "frequency_penalty", "top_p", "seed", "n", "stop", "logit_bias", "logprobs", "top_logprobs"}
    out = client.chat.completions.create(**{k: v for k, v in payload.items() if k in known},
                                         extra_body={k: v for k, v in payload.items() if k not in known})
    extra = out.model_extra["roleplay"]
    assert extra["mode"] == mode
    assert out.choices[0].message.content.strip()
    assert (extra["note"] == "") == (mode != "reply")  # only a fresh reply opens with a stage note
