"""The long-horizon memory test: a scripted chat of 22 sessions (en + zh, 176 user turns,
64 probes, 23 changed facts) played through the real extraction rules and the real Chroma
store; at every probe, the memories `recall` puts in the prompt (the default 300-token
budget) must hold the needed current fact and no outdated one shown as current.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from roleplay.config import Budgets
from roleplay.memory import MemoryStore, recall
from roleplay.memory.scoring import load_script, run_script, script_counts

SCRIPT = load_script(Path(__file__).parent / "data" / "memory" / "long_horizon.yaml")


def test_the_script_is_long_bilingual_and_full_of_changes():
    counts = script_counts(SCRIPT)
    assert counts["sessions"] >= 20 and counts["user_turns"] >= 150 and counts["probes"] >= 60
    assert counts["updates"] >= 15 and counts["zh_turns"] >= 60
    # probes come later than the facts they ask about: none in a session's first three turns
    assert all(not (isinstance(t, dict) and "probe" in t) for s in SCRIPT for t in s["turns"][:3])


def test_recall_at_budget_and_stale_rate_over_the_script(settings):
    store = MemoryStore(settings)
    result = run_script(SCRIPT, settings=settings, store=store, budget_tokens=Budgets().memories)
    assert result["recall_at_budget"] >= 0.9, result["failures"]
    assert result["stale_rate"] <= 0.05, result["failures"]
    assert result["probes_with_stale"] >= 15
    # the past stays answerable: every changed city is in the history, in order
    cities = [m.text for m in store.history("ana", "holmes", slot="user.city")]
    assert cities == ["The user lives in Berlin.", "The user moved to Hamburg in the spring.",
                      "The user moved to Lisbon."]
    past = recall(settings, user="ana", character="holmes", conversation=["Where did I use to live?"],
                  budget_tokens=300, store=store)
    assert any(m.text == "(no longer true) The user lives in Berlin." for m in past)
    # and a tiny budget still gets the asked-for fact in, right after the name and what to call her
    small = recall(settings, user="ana", character="holmes", conversation=["What's my dog called?"],
                   budget_tokens=34, store=store)
    slots = [m.slot for m in small]
    assert set(slots[:2]) == {"user.name", "user.callname"} and slots[2] == "pet.dog.name"


@pytest.mark.parametrize("budget", [0, -5])
def test_no_budget_no_memories(settings, budget):
    assert recall(settings, user="ana", character="holmes", conversation=["hi"], budget_tokens=budget) == []
