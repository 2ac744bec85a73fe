"""`Fact`: one thing the extractor found in a message, before the store decides about it.

A fact is a short third-person sentence in the message's language ("The user has a cat
called Mochi.", "用户住在上海。") because the prompt shows it verbatim to the character,
plus the *slot* that says which question it answers ("user.city", "pet.cat.name",
"pref.piano"): two facts with the same slot and different values are a change, not two
facts. Facts without a slot (the model's, story events) are compared by similarity.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("fact", "event")


@dataclass
class Fact:
    """One durable fact: the sentence stored, its slot (None: free fact), value, origin.

    ``kind`` is ``"fact"`` for what is true of the user (their profile, shared across
    characters when the setting says so) or ``"event"`` for what happened or was promised
    in this story (kept per user and character). ``negated`` marks a fact that ends an
    earlier one ("I don't drink coffee any more"): the store closes the slot's current
    memory and keeps this sentence as the current one.
    """

    text: str
    slot: str | None = None
    value: str = ""
    source: str = "rule"          # "rule" | "llm"
    negated: bool = False
    kind: str = "fact"


def dedupe(found: list[Fact]) -> list[Fact]:
    """One fact per slot and value; a longer sentence about the same value wins."""
    best: dict[tuple, Fact] = {}
    for f in found:
        k = (f.slot, f.value.lower())
        if k not in best or len(f.text) > len(best[k].text):
            best[k] = f
    return list(best.values())
