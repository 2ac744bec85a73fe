"""The OpenAI-compatible API through the official ``openai`` client, against uvicorn on loopback.

Real parts: the SmolLM2 backend, Chroma retrieval of the bundled cards, uvicorn. Budgets
are small and replies a few tokens so the module stays quick on two CPU cores.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from support import free_port

API_KEY = "sk-test-key"


def small_settings(home):
    from roleplay.config import Budgets, Settings

    return Settings.from_env(home=home, budgets=Budgets(stories=120, lorebook=60, memories=40,
                                                        history=120, summary=40))


@contextmanager
def serving(engine, *, api_keys=(API_KEY,)):
    """uvicorn serving `create_app(engine)` in a thread; yields the base URL."""
    import uvicorn

    from roleplay.server.app import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(engine, api_keys=list(api_keys)), host="127.0.0.1",
                                        port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    """The API over the real model with small prompt budgets; yields the base URL."""
    from roleplay.engine import Engine

    with serving(Engine(small_settings(tmp_path_factory.mktemp("api-home")), backend=backend)) as url:
        yield url


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0, timeout=600)


def test_models_lists_characters(client):
    ids = [m.id for m in client.models.list().data]
    assert {"roleplay/sherlock", "roleplay/ada", "roleplay/sunwukong", "roleplay/daiyu"} <= set(ids)
    assert client.models.retrieve("roleplay/sherlock").id == "roleplay/sherlock"


def test_plain_completion(client):
    out = client.chat.completions.create(
        model="roleplay/sherlock", max_tokens=8, temperature=0, seed=1,
        messages=[{"role": "system", "content": "Answer in one short sentence."},
                  {"role": "user", "content": "Good morning, Holmes."}])
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < out.usage.completion_tokens <= 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    extra = out.model_extra["roleplay"]  # our emotion/stage note ride along for our clients
    assert extra["emotion"] and "note" in extra


def test_streamed_completion(client):
    stream = client.chat.completions.create(
        model="roleplay/ada", max_tokens=8, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hello Ada, what are you building?"},
                  ])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really streamed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [finishes[0]] and finishes[0] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_unknown_model_is_404_in_openai_format(client):
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="roleplay/nobody", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


def test_bad_request_is_400_naming_the_field(client):
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="roleplay/sherlock", temperature=7,
                                       messages=[{"role": "user", "content": "hi"}])
    assert info.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="roleplay/sherlock", messages=[{"role": "user", "content": "  "}])
    assert info.value.param == "messages"


def test_wrong_or_missing_key_is_401(server):
    import openai
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError) as info:
        OpenAI(base_url=server + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert info.value.code == "invalid_api_key"
    r = httpx.get(server + "/v1/models")
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_request_body_limit_is_413(settings):
    """Bodies over the limit get 413 whether sized up front or streamed (chunked)."""
    from fastapi.testclient import TestClient

    from roleplay.engine import Engine
    from roleplay.server.app import create_app

    client = TestClient(create_app(Engine(settings), max_body_bytes=1000))
    big = {"model": "roleplay/sherlock", "messages": [{"role": "user", "content": "a" * 2000}]}
    r = client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"

    def chunks():
        yield b'{"model": "roleplay/sherlock", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"a" * 100
        yield b'"}]}'

    r = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_concurrent_requests_stay_isolated(client):
    """Greedy replies made concurrently equal the same requests made one by one."""
    requests = [("roleplay/sherlock", "What do you deduce about my hat?"),
                ("roleplay/ada", "Tell me about your engine.")]

    def ask(req):
        model, text = req
        out = client.chat.completions.create(model=model, max_tokens=6, temperature=0, seed=3,
                                             messages=[{"role": "user", "content": text}])
        return out.model, out.choices[0].message.content

    alone = [ask(r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(ask, requests))
    assert [m for m, _ in together] == [m for m, _ in requests]
    assert together == alone


def test_conversation_maps_onto_the_engine_turn(settings):
    """Short system messages extend the card's instructions; earlier turns become history."""
    from roleplay.cards import get_card
    from roleplay.server.schemas import ChatCompletionRequest
    from roleplay.server.turns import build_turn

    card = get_card("sherlock", settings)
    body = ChatCompletionRequest.model_validate({"model": "roleplay/sherlock", "user": "u-7", "messages": [
        {"role": "system", "content": "Speak like a pirate to {{user}}."},
        {"role": "user", "content": "Hello.", "name": "Lin"},
        {"role": "assistant", "content": "(bows) Good day."},
        {"role": "user", "content": "Who are you?", "name": "Lin"},
        {"role": "system", "content": "Keep it short."}]})
    turn = build_turn(body, card=card)
    assert turn.user_text == "Who are you?" and turn.mode == "reply"
    assert turn.user_name == "Lin"
    assert turn.memory_user == "u-7"
    assert turn.card.system_prompt.endswith("Speak like a pirate to Lin.")
    assert turn.instructions == ["Keep it short."]  # after the history: stays there
    assert card.system_prompt == get_card("sherlock", settings).system_prompt  # the original is untouched
    assert turn.history == [{"role": "user", "name": "Lin", "content": "Hello."},
                            {"role": "assistant", "name": card.name, "content": "(bows) Good day."}]


def test_serve_refuses_to_bind_beyond_loopback_without_a_key(capsys, monkeypatch):
    from roleplay.cli import main

    monkeypatch.delenv("ROLEPLAY_API_KEYS", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and len(err.strip().splitlines()) == 1
