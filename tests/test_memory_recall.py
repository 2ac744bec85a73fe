"""Long-term memory end to end, with the real model and store: a fact told in one session
is in the prompt of a new session (in the system prompt); repeating it keeps one memory;
contradicting it updates the memory and keeps the old version as history; extraction is
off the critical path.
"""
from __future__ import annotations

import pytest

from roleplay.config import Settings
from roleplay.memory import get_store, get_worker, recall
from roleplay.sessions import Session

HOLMES = """\
id: holmes
name: Sherlock Holmes
user_name: Watson
persona: A consulting detective in London who reasons from small details.
greetings: ["(looks up) A visitor."]
"""
FEW = {"max_tokens": 8, "temperature": 0.0}


@pytest.fixture
def engine(roleplay_home, backend):
    from roleplay.engine import Engine

    folder = roleplay_home / "characters" / "holmes"
    folder.mkdir(parents=True)
    (folder / "character.yaml").write_text(HOLMES, encoding="utf-8")
    return Engine(Settings.from_env(), backend=backend)


def test_a_fact_told_in_one_session_is_recalled_kept_once_and_updated(engine):
    first = Session.new(engine, "holmes", user="lin")
    first.send("My name is Lin, I keep a cat called Mochi.", params=FEW)
    assert get_worker().flush(300), "memory extraction did not finish"
    assert not [e for e in get_worker().errors if "remember" in e[0]]
    store = get_store(engine.settings)
    texts = [m.text for m in store.list("lin", "holmes")]
    assert "The user's name is Lin." in texts and "The user has a cat called Mochi." in texts
    name = next(m for m in store.list("lin", "holmes") if m.slot == "user.name")
    assert name.source.startswith(first.id + ":")

    # a new session: the facts are in its prompt, at the start of the system message
    second = Session.new(engine, "holmes", user="lin", settings={"memory_llm": False})
    reply = second.send("Good evening. Do you remember me? My name is Lin.", params=FEW)
    assert "The user's name is Lin." in reply.memories and "The user has a cat called Mochi." in reply.memories
    system = reply.prompt.messages[0]
    assert system["role"] == "system" and "Lin" in system["content"] and "Mochi" in system["content"]
    assert second.messages[-1].memories == reply.memories  # saved with the reply

    # repeating the fact keeps one memory
    assert get_worker().flush(120)
    names = [m for m in store.list("lin", "holmes") if m.slot == "user.name"]
    assert [(m.id, m.text) for m in names] == [(name.id, "The user's name is Lin.")]

    # contradicting it updates that memory; the cat stays
    second.send("Actually, my name is Mei now.", params=FEW)
    assert get_worker().flush(120)
    names = [m for m in store.list("lin", "holmes") if m.slot == "user.name"]
    assert [(m.id, m.text) for m in names] == [(name.id, "The user's name is Mei.")]
    assert "The user has a cat called Mochi." in [m.text for m in store.list("lin", "holmes")]
    assert [m.text for m in store.history("lin", "holmes", slot="user.name")] == [
        "The user's name is Lin.", "The user's name is Mei."]

    # another user's memory stays apart
    assert recall(engine.settings, user="mei", character="holmes", conversation=["hello"], budget_tokens=300) == []


def test_the_turn_returns_before_extraction_runs(engine):
    """The reply is complete while the extraction job is still queued (worker held busy)."""
    import threading

    s = Session.new(engine, "holmes", user="lin", settings={"memory_llm": False})
    gate = threading.Event()
    worker = get_worker()
    worker.submit(gate.wait, 60)  # keeps the worker busy: later jobs must wait
    try:
        reply = s.send("My name is Lin and I live in Leeds.", params=FEW)
        assert reply.text and worker.pending >= 2  # the blocker + this turn's extraction job
        assert get_store(engine.settings).list("lin", "holmes") == []
    finally:
        gate.set()
    assert worker.flush(120)
    assert {m.slot for m in get_store(engine.settings).list("lin", "holmes")} >= {"user.name", "user.city"}
