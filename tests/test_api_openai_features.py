"""OpenAI API features through the official ``openai`` client: n, continue, exact finish
reasons, top_p 0, logit_bias, logprobs, penalties, max_tokens clamping (and the 400 of a
prompt that fills the context), names and memory users, text completions, request ids and
the access log, ``<think>`` separation.

Real parts: the SmolLM2 backend, Chroma, uvicorn, the ``openai`` client. One test uses a
stand-in backend (`thinking_backend`, named so) because SmolLM2 never writes ``<think>``.
"""
from __future__ import annotations

import logging

import httpx
import pytest

from test_api_server import API_KEY, serving, small_settings

SHERLOCK = "roleplay/sherlock"


@pytest.fixture(scope="module")
def api(tmp_path_factory, backend):
    """``(base URL, engine)``: the engine's settings are needed to plant memories."""
    from roleplay.engine import Engine

    engine = Engine(small_settings(tmp_path_factory.mktemp("api-features")), backend=backend)
    with serving(engine) as url:
        yield url, engine


@pytest.fixture
def client(api):
    from openai import OpenAI

    return OpenAI(base_url=api[0] + "/v1", api_key=API_KEY, max_retries=0, timeout=600)


def ask(client, text="Good morning, Holmes. What do you see?", **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(model=SHERLOCK, messages=[{"role": "user", "content": text}], **kw)


def test_n_gives_different_choices_generated_together(client):
    out = ask(client, n=2, temperature=1.0, seed=42, max_tokens=12)
    assert [c.index for c in out.choices] == [0, 1]
    texts = [c.message.content for c in out.choices]
    assert all(t.strip() for t in texts) and texts[0] != texts[1]


def test_n_streams_both_choices(client):
    stream = ask(client, n=2, temperature=1.0, seed=7, stream=True)
    texts = {0: "", 1: ""}
    finished = []
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.append(c.index)
    assert sorted(finished) == [0, 1]
    assert texts[0].strip() and texts[1].strip() and texts[0] != texts[1]


def test_finish_reason_is_exact(client):
    cut = ask(client, max_tokens=3, temperature=0)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 3
    stopped = ask(client, max_tokens=40, temperature=0, stop=[" ", "e", "a", "o"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens < 40


def test_top_p_zero_is_accepted_and_greedy(client):
    zero = ask(client, top_p=0, temperature=1.0, seed=3)
    greedy = ask(client, temperature=0, seed=3)
    assert zero.choices[0].message.content == greedy.choices[0].message.content


def test_logit_bias_forces_a_token(client, backend):
    bang = backend.tokenizer.encode("!", add_special_tokens=False)
    assert len(bang) == 1
    out = ask(client, max_tokens=4, temperature=0, logit_bias={str(bang[0]): 100})
    assert out.choices[0].message.content.endswith("!!!!")


def test_logprobs_and_top_logprobs(client):
    # log-probabilities are the model's own, before penalties; without a repetition penalty
    # greedy must pick the top one (the transformers backend, like vLLM, penalises every
    # token of the prompt; llama.cpp only the last 64, so only it passed with the default)
    out = ask(client, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
              extra_body={"repetition_penalty": 1.0})
    items = out.choices[0].logprobs.content
    assert len(items) == out.usage.completion_tokens
    for item in items:
        assert len(item.top_logprobs) == 2
        assert item.token == item.top_logprobs[0].token  # greedy picks the most likely token
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob, abs=1e-4)
    assert out.choices[0].message.content.endswith("".join(i.token for i in items).rstrip())


def test_penalties_are_validated_and_used(client):
    import openai

    plain = ask(client, max_tokens=12, temperature=0)
    penalised = ask(client, max_tokens=12, temperature=0, frequency_penalty=2.0, presence_penalty=2.0)
    assert plain.choices[0].message.content.strip() and penalised.choices[0].message.content.strip()
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, presence_penalty=2.5)
    assert info.value.param == "presence_penalty"


def test_max_tokens_above_the_context_is_clamped_to_the_exact_room(api, monkeypatch):
    url, engine = api
    composed = []
    real = engine._prepare
    monkeypatch.setattr(engine, "_prepare", lambda turn: composed.append(1) or real(turn))
    r = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=600,
                   json={"model": SHERLOCK, "max_tokens": 1_000_000, "temperature": 0, "stop": [" ", "e", "a", "o"],
                         "messages": [{"role": "user", "content": "Hello?"}]})
    assert r.status_code == 200, r.text
    used = int(r.headers["x-roleplay-max-tokens"])
    usage = r.json()["usage"]
    assert usage["max_tokens_clamped_to"] == used
    # counted on the prompt the turn really sent, not estimated: prompt + reply fill the context
    assert used + usage["prompt_tokens"] == engine.backend.context_length
    assert len(composed) == 1  # the turn is composed once (no second composition to count it)


def test_a_prompt_that_fills_the_context_is_a_400_naming_the_messages(client, api):
    import openai

    _url, engine = api
    words = engine.backend.context_length  # a word is at least one token: the message alone overflows
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, text="Holmes, listen: " + "fog " * words)
    assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
    assert "no room for a reply" in str(info.value)
    assert ask(client).choices[0].message.content is not None  # the server serves the next request


def test_names_and_memory_users(client, api):
    from roleplay.memory import MemoryStore

    _url, engine = api
    MemoryStore(engine.settings).add("alice", "sherlock", "Alice keeps a pet iguana named Rex.")
    messages = [{"role": "user", "name": "Alice", "content": "Do you remember my iguana Rex?"}]
    mine = client.chat.completions.create(model=SHERLOCK, messages=messages, max_tokens=4, user="alice")
    other = client.chat.completions.create(model=SHERLOCK, messages=messages, max_tokens=4, user="bob")
    anonymous = client.chat.completions.create(model=SHERLOCK, messages=messages, max_tokens=4)
    assert mine.model_extra["roleplay"]["user_name"] == "Alice"
    assert any("iguana" in m for m in mine.model_extra["roleplay"]["memories"])
    assert other.model_extra["roleplay"]["memories"] == []
    assert anonymous.model_extra["roleplay"]["memories"] == []


def test_continue_final_message_switch(client):
    messages = [{"role": "user", "content": "What is in the box?"},
                {"role": "assistant", "content": "(lifts the lid) Inside, Watson, lies"}]
    cont = client.chat.completions.create(model=SHERLOCK, messages=messages, max_tokens=6, temperature=0)
    assert cont.model_extra["roleplay"]["mode"] == "continue"
    assert cont.model_extra["roleplay"]["note"] == ""
    assert not cont.choices[0].message.content.startswith("(lifts")
    fresh = client.chat.completions.create(model=SHERLOCK, messages=messages, max_tokens=6, temperature=0,
                                           extra_body={"continue_final_message": False})
    assert fresh.model_extra["roleplay"]["mode"] == "reply"
    assert fresh.choices[0].message.content.startswith(fresh.model_extra["roleplay"]["note"])


def test_text_completions(client):
    out = client.completions.create(model=SHERLOCK, prompt="Good evening, Holmes.", max_tokens=5, temperature=0)
    assert out.object == "text_completion"
    assert out.choices[0].text.strip()
    assert out.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.completions.create(model=SHERLOCK, prompt="Good evening, Holmes.", max_tokens=5,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == out.choices[0].text  # greedy: the same text
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == [
        out.choices[0].finish_reason]


def test_model_lookup_and_custom_entry(client):
    assert client.models.retrieve("roleplay/custom").id == "roleplay/custom"
    assert client.models.retrieve(SHERLOCK).model_extra["name"] == "Sherlock Holmes"


def test_request_ids_and_access_log(api, caplog):
    url, _engine = api
    caplog.set_level(logging.INFO, logger="roleplay.server.access")
    r = httpx.get(url + "/v1/models/roleplay/nobody", headers={"Authorization": f"Bearer {API_KEY}",
                                                               "X-Request-Id": "trace-42"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "trace-42"
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "roleplay.server.access"]
    assert any(line.startswith("trace-42 GET /v1/models/roleplay/nobody 404 ") and line.endswith("ms")
               for line in lines), lines


def thinking_backend():
    """A stand-in backend (SmolLM2 never writes ``<think>``): streams a fixed reasoning reply."""
    from roleplay.backends.base import Backend, Piece

    class StandInThinking(Backend):
        name = "stand-in-thinking"

        def _pieces(self, messages, params, *, priority):
            for text in [" <thi", "nk>The visitor is nervous.", "</th", "ink> Sit down, please."]:
                yield Piece(text=text)
            yield Piece(finish_reason="stop", prompt_tokens=10, completion_tokens=6)

    return StandInThinking()


@pytest.mark.parametrize("stream", [False, True])
def test_think_blocks_become_reasoning_content(settings, stream):
    from fastapi.testclient import TestClient

    from roleplay.engine import Engine
    from roleplay.server.app import create_app

    client = TestClient(create_app(Engine(settings, backend=thinking_backend())))
    r = client.post("/v1/chat/completions", json={"model": SHERLOCK, "stream": stream, "messages": [
        {"role": "user", "content": "Holmes, I need your help."}]})
    assert r.status_code == 200, r.text
    if stream:
        import json

        events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
        content = "".join(d.get("content") or "" for d in deltas)
        reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    else:
        message = r.json()["choices"][0]["message"]
        content, reasoning = message["content"], message["reasoning_content"]
    assert "The visitor is nervous." in reasoning
    assert "think" not in content and "nervous" not in content
    assert content.endswith("Sit down, please.")


@pytest.mark.parametrize("field, value", [("n", 9), ("top_p", 1.5), ("logit_bias", {"abc": 1}),
                                          ("logit_bias", {"5": 101}), ("top_logprobs", 21), ("max_tokens", 0),
                                          ("frequency_penalty", -2.5)])
def test_really_invalid_values_are_400_naming_the_field(settings, field, value):
    from fastapi.testclient import TestClient

    from roleplay.engine import Engine
    from roleplay.server.app import create_app

    client = TestClient(create_app(Engine(settings), access_log=False))
    r = client.post("/v1/chat/completions", json={"model": SHERLOCK, field: value,
                                                  "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == field and error["code"] == "invalid_value"
    assert field in error["message"]


def test_a_full_backend_is_429_with_retry_after(settings):
    """A stand-in backend whose wait line is full (the real one needs a flood of requests).

    It refuses at submission, as the transformers scheduler does. A continuation is asked
    for because the engine yields a fresh reply's stage note before it submits (reported).
    """
    from fastapi.testclient import TestClient

    from roleplay.backends.base import Backend, BackendBusy
    from roleplay.engine import Engine
    from roleplay.server.app import create_app

    class StandInBusy(Backend):
        name = "stand-in-busy"

        def _pieces(self, messages, params, *, priority):  # not a generator: refuses on submission
            raise BackendBusy("the stand-in backend has 64 requests waiting", retry_after=3.0)

    client = TestClient(create_app(Engine(settings, backend=StandInBusy()), access_log=False))
    r = client.post("/v1/chat/completions", json={"model": SHERLOCK, "n": 2, "stream": True, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "(nods) Good"}]})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    plain = client.post("/v1/chat/completions", json={"model": SHERLOCK, "messages": [
        {"role": "user", "content": "Hi"}]})
    assert plain.status_code == 429 and plain.headers["retry-after"] == "3"
