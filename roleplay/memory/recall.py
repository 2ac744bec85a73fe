"""Which memories go into this turn's prompt: the one entry point the engine calls.

A first version that searches the store with the recent conversation; the memory work
(issue #17) replaces the ranking (relevance + recency, facts vs story events).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from ..config import Settings
from .store import Memory, get_store


def recall(settings: Settings, *, user: str, character: str, conversation: Sequence[str],
           budget_tokens: int, count_tokens: Callable[[str], int] | None = None) -> list[Memory]:
    """Memories of ``user`` with ``character`` for the prompt, within ``budget_tokens``.

    ``conversation`` is the recent messages' texts, oldest first; the last is the new one.
    """
    query = " ".join(t for t in conversation[-3:] if t)
    return get_store(settings).search(user, character, query, budget_tokens, count_tokens=count_tokens)
