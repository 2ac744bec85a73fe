"""MemoryStore on a real Chroma store with the real multilingual embedder: decisions
(ADD / UPDATE / NOOP), facts with history (valid_from / valid_to, the source of each
version), shared vs per-character facts, story events per character, list/forget/clear.
"""
from __future__ import annotations

import pytest

from roleplay.config import Settings
from roleplay.memory import MemoryStore, default_user, remember


@pytest.fixture
def store(settings):
    return MemoryStore(settings)


def test_the_same_fact_twice_keeps_one_memory(store):
    a = store.add("lin", "holmes", "The user's name is Lin.", "s1:1", slot="user.name")
    b = store.add("lin", "holmes", "The user's name is Lin.", "s2:1", slot="user.name")
    assert (a.action, b.action) == ("ADD", "NOOP") and b.id == a.id
    # free facts (no slot) dedupe by similarity: a near-paraphrase is the same memory
    c = store.add("lin", "holmes", "The user enjoys long walks by the sea.", "s1:2")
    d = store.add("lin", "holmes", "The user enjoys long walks by the sea!", "s1:3")
    assert (c.action, d.action) == ("ADD", "NOOP")
    assert len(store.list("lin", "holmes")) == 2 and len(store.list("lin", "holmes", history=True)) == 2


def test_a_change_keeps_the_old_version_as_history(store):
    first = store.add("lin", "holmes", "The user lives in Berlin.", "s1:4", slot="user.city", at=100.0)
    store.add("lin", "holmes", "The user has a cat called Mochi.", "s1:5", slot="pet.cat.name", at=101.0)
    moved = store.add("lin", "holmes", "The user moved to Hamburg in the spring.", "s2:2", slot="user.city", at=200.0)
    assert moved.action == "UPDATE" and moved.id == first.id and moved.old_text == "The user lives in Berlin."
    assert sorted(m.text for m in store.list("lin", "holmes")) == [
        "The user has a cat called Mochi.", "The user moved to Hamburg in the spring."]
    versions = store.history("lin", "holmes", slot="user.city")
    assert [(v.text, v.source, v.valid_from, v.valid_to, v.current) for v in versions] == [
        ("The user lives in Berlin.", "s1:4", 100.0, 200.0, False),
        ("The user moved to Hamburg in the spring.", "s2:2", 200.0, 0.0, True)]
    assert versions[0].replaced_by == first.id
    # a third change: two past versions, one current
    store.add("lin", "holmes", "The user moved to Lisbon.", "s3:1", slot="user.city", at=300.0)
    assert [v.valid_to for v in store.history("lin", "holmes", slot="user.city")] == [200.0, 300.0, 0.0]


def test_a_negated_fact_ends_only_the_fact_it_names(store):
    store.add("lin", "holmes", "The user lives in Paris.", "s1:1", slot="user.city", at=1.0)
    store.add("lin", "holmes", "The user likes tea.", "s1:1", slot="pref.tea", at=1.0)
    other = store.add("lin", "holmes", "The user no longer lives in Rome.", "s1:2", slot="user.city",
                      negated=True, value="Rome", at=2.0)
    assert other.action == "NOOP"  # it names a city we do not have: nothing changes
    gone = store.add("lin", "holmes", "The user no longer lives in Paris.", "s1:3", slot="user.city",
                     negated=True, value="Paris", at=3.0)
    assert gone.action == "UPDATE"
    assert sorted(m.text for m in store.list("lin", "holmes")) == ["The user likes tea.", "The user no longer lives in Paris."]
    assert [m.text for m in store.list("lin", "holmes", history=True) if not m.current] == ["The user lives in Paris."]
    # a negation with nothing to end is kept: "I don't drink coffee any more" is worth knowing
    assert store.add("lin", "holmes", "The user no longer drinks coffee.", "s1:4", slot="pref.coffee",
                     negated=True, value="coffee").action == "ADD"


def test_facts_are_shared_across_characters_and_events_are_not(store):
    remember(store, "lin", ["holmes"], "My name is Lin. You promised to bring me the map.", "s1:1")
    remember(store, "lin", ["ada"], "I live in Leeds.", "s2:1")
    holmes = {(m.kind, m.text) for m in store.list("lin", "holmes")}
    ada = {(m.kind, m.text) for m in store.list("lin", "ada")}
    assert holmes == {("fact", "The user's name is Lin."), ("fact", "The user lives in Leeds."),
                      ("event", "You promised to bring the user the map.")}
    assert ada == {("fact", "The user's name is Lin."), ("fact", "The user lives in Leeds.")}
    assert {m.character for m in store.list("lin") if m.kind == "fact"} == {"*"}


def test_per_character_facts_when_sharing_is_off(roleplay_home, monkeypatch):
    monkeypatch.setenv("ROLEPLAY_MEMORY_SHARED_FACTS", "false")
    settings = Settings.from_env()
    assert settings.memory_shared_facts is False
    store = MemoryStore(settings)
    remember(store, "lin", ["holmes"], "My name is Lin.", "s1:1")
    remember(store, "lin", ["ada"], "My name is Mei.", "s2:1")
    assert [m.text for m in store.list("lin", "holmes")] == ["The user's name is Lin."]
    assert [m.text for m in store.list("lin", "ada")] == ["The user's name is Mei."]
    # sharing turned on later: a shared change ends the per-character fact, no twin stays current
    shared = MemoryStore(Settings.from_env(memory_shared_facts=True))
    assert shared.add("lin", "holmes", "The user's name is Lena.", "s3:1", slot="user.name").action == "UPDATE"
    assert [m.text for m in shared.list("lin", "holmes")] == ["The user's name is Lena."]


def test_the_characters_promises_are_story_events(store):
    decisions = remember(store, "lin", ["holmes"], "Will you help me?", "s1:2",
                         reply="(nods) I promise I'll find your brother by Friday.")
    assert [d.action for d in decisions] == ["ADD"]
    (event,) = store.list("lin", "holmes")
    assert event.kind == "event" and event.text == "You promised to find the user's brother by Friday."


def test_users_are_isolated_and_forget_clear_work(store):
    store.add("lin", "holmes", "The user likes tea.", "s1:1", slot="pref.tea")
    moved = store.add("lin", "holmes", "The user lives in Leeds.", "s1:1", slot="user.city", at=1.0)
    store.add("lin", "holmes", "The user lives in York.", "s1:2", slot="user.city", at=2.0)
    store.add("mei", "holmes", "The user likes coffee.", "s9:1", slot="pref.coffee")
    assert [m.text for m in store.list("mei")] == ["The user likes coffee."]
    assert not store.forget(moved.id, user="mei")          # not hers
    assert store.forget(moved.id, user="lin")              # the current one and its past version go
    assert [m.text for m in store.list("lin", history=True)] == ["The user likes tea."]
    assert store.clear("lin") == 1 and store.list("lin") == []
    assert [m.text for m in store.list("mei")] == ["The user likes coffee."]
    assert default_user() == "local"


def test_search_is_budgeted_and_puts_the_users_name_first(store):
    store.add("lin", "holmes", "The user's name is Lin.", "s", slot="user.name")
    for i, hobby in enumerate(["chess", "tennis", "baking bread", "astronomy", "knitting"]):
        store.add("lin", "holmes", f"The user enjoys {hobby}.", "s", slot=f"pref.{i}")
    found = store.search("lin", "holmes", "Do you know much about astronomy?", budget_tokens=18)
    assert [m.text for m in found][0] == "The user's name is Lin."
    assert "The user enjoys astronomy." in [m.text for m in found] and len(found) < 6
    assert store.search("lin", "holmes", "hi", budget_tokens=0) == []


def test_cli_lists_the_history_of_a_changed_fact(capsys):
    import json

    from roleplay.cli import main

    for text in ("I live in Berlin.", "We moved to Hamburg in the spring."):
        assert main(["memory", "add", text, "--character", "sherlock", "--json"]) == 0
    capsys.readouterr()
    assert main(["memory", "list", "--character", "sherlock", "--json"]) == 0
    now = json.loads(capsys.readouterr().out)
    assert [m["text"] for m in now["memories"]] == ["The user moved to Hamburg in the spring."]
    assert main(["memory", "list", "--history", "--character", "sherlock", "--json"]) == 0
    past = json.loads(capsys.readouterr().out)["memories"]
    assert [(m["text"], m["current"], m["source"]) for m in past] == [
        ("The user lives in Berlin.", False, "cli"), ("The user moved to Hamburg in the spring.", True, "cli")]
    assert past[0]["valid_to"] == past[1]["valid_from"]
    assert main(["memory", "list", "--history", "--character", "sherlock"]) == 0
    assert "(past) The user lives in Berlin." in capsys.readouterr().out
