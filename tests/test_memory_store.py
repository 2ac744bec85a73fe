"""MemoryStore on a real Chroma store with the real multilingual embedder:
ADD / UPDATE / DELETE / NOOP decisions, budgeted search, per-user isolation, list/forget/clear.
"""
from __future__ import annotations

import pytest

from roleplay.memory import MemoryStore, default_user


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
    assert len(store.list("lin", "holmes")) == 2


def test_a_contradicting_fact_replaces_the_old_one_and_never_drops_both(store):
    first = store.add("lin", "holmes", "The user has a cat called Mochi.", "s1:1", slot="pet.cat.name")
    store.add("lin", "holmes", "The user lives in Leeds.", "s1:1", slot="user.city")
    upd = store.add("lin", "holmes", "The user has a cat called Tofu.", "s2:4", slot="pet.cat.name")
    assert upd.action == "UPDATE" and upd.id == first.id and upd.old_text.endswith("Mochi.")
    texts = sorted(m.text for m in store.list("lin", "holmes"))
    assert texts == ["The user has a cat called Tofu.", "The user lives in Leeds."]
    updated = next(m for m in store.list("lin", "holmes") if m.slot == "pet.cat.name")
    assert updated.source == "s2:4" and updated.updated >= updated.created


def test_a_negated_fact_deletes_only_the_memory_it_names(store):
    store.add("lin", "holmes", "The user lives in Paris.", "s1:1", slot="user.city")
    store.add("lin", "holmes", "The user likes tea.", "s1:1", slot="pref.tea")
    other = store.add("lin", "holmes", "The user no longer lives in Rome.", "s1:2", slot="user.city",
                      negated=True, value="Rome")
    assert other.action == "NOOP"  # it names a city we do not have: nothing goes
    gone = store.add("lin", "holmes", "The user no longer lives in Paris.", "s1:3", slot="user.city",
                     negated=True, value="Paris")
    assert gone.action == "DELETE"
    assert [m.text for m in store.list("lin", "holmes")] == ["The user likes tea."]


def test_search_is_budgeted_relevant_and_puts_the_users_name_first(store):
    store.add("lin", "holmes", "The user likes Darjeeling tea.", "x", slot="pref.tea")
    store.add("lin", "holmes", "The user is training for a marathon in autumn.", "x")
    store.add("lin", "holmes", "The user's name is Lin.", "x", slot="user.name")
    found = store.search("lin", "holmes", "What shall we drink this afternoon?", budget_tokens=300)
    assert found[0].text == "The user's name is Lin."
    assert found[1].text == "The user likes Darjeeling tea."  # closest to the query after the profile
    small = store.search("lin", "holmes", "tea", budget_tokens=9)
    assert [m.text for m in small] == ["The user's name is Lin."]
    assert store.search("lin", "holmes", "tea", budget_tokens=0) == []


def test_memories_belong_to_one_user_and_character(store):
    store.add("lin", "holmes", "The user's name is Lin.", "x", slot="user.name")
    store.add("mei", "holmes", "The user's name is Mei.", "x", slot="user.name")
    store.add("lin", "ada", "The user likes engines.", "x")
    assert [m.text for m in store.search("mei", "holmes", "name", 100)] == ["The user's name is Mei."]
    assert [m.text for m in store.list("lin", "holmes")] == ["The user's name is Lin."]
    assert len(store.list("lin")) == 2 and len(store.list()) == 3


def test_forget_and_clear(store):
    a = store.add("lin", "holmes", "The user's name is Lin.", "x", slot="user.name")
    store.add("lin", "holmes", "The user likes tea.", "x", slot="pref.tea")
    store.add("lin", "ada", "The user likes engines.", "x")
    store.add("mei", "holmes", "The user likes cake.", "x")
    assert store.forget(a.id, user="mei") is False  # not hers to forget
    assert store.forget(a.id) is True and store.forget(a.id) is False
    assert store.clear("lin", "holmes") == 1
    assert store.clear("lin") == 1
    assert [m.text for m in store.list()] == ["The user likes cake."]


def test_memories_persist_across_store_instances(settings, store):
    store.add("lin", "holmes", "The user's name is Lin.", "x", slot="user.name")
    from roleplay.store.client import forget_client

    forget_client(settings)
    again = MemoryStore(settings)
    assert [m.text for m in again.list("lin")] == ["The user's name is Lin."]


def test_default_user(monkeypatch):
    monkeypatch.delenv("ROLEPLAY_USER", raising=False)
    assert default_user() == "local"
    monkeypatch.setenv("ROLEPLAY_USER", "lin")
    assert default_user() == "lin"
