"""Leave-one-scene-out for retrievers that cannot leave a source out themselves (a bridge).

Canon continuation asks the engine not to retrieve the scene under test
(``EngineOptions.exclude_sources``), and the engine passes that on to
``Retriever.stories(..., exclude_sources=...)``. Until the store's retriever takes that
argument, evaluation engines get this subclass instead: it asks the real retriever for a
wider pool (twice the budget, a few more than ``k``), drops every story whose source —
or a near-duplicate collapsed into it — is excluded, and refills the budget in the
retriever's own order. `needs_bridge` decides; once ``Retriever.stories`` accepts
``exclude_sources`` the real one is used and this module is dead code to delete.

Trade-off: filtering after ranking can leave the budget a little emptier than a
retriever that excludes before ranking would (the wider pool makes that rare).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ..store.retriever import RetrievedStory, Retriever
from ..tokens import approx_tokens


def needs_bridge() -> bool:
    """True while ``Retriever.stories`` has no ``exclude_sources`` parameter."""
    return "exclude_sources" not in inspect.signature(Retriever.stories).parameters


class LeaveOutRetriever(Retriever):
    """A `Retriever` whose ``stories`` honours ``exclude_sources`` by filtering a wider pool."""

    def stories(self, card: Any, conversation: list[str], *, budget_tokens: int = 1500,  # type: ignore[override]
                count_tokens: Callable[[str], int] | None = None, k: int | None = None,
                method: str = "hybrid", exclude_sources: Sequence[str] = ()) -> list[RetrievedStory]:
        if not exclude_sources:
            return super().stories(card, conversation, budget_tokens=budget_tokens, count_tokens=count_tokens,
                                   k=k, method=method)
        excluded = set(exclude_sources)
        pool = super().stories(card, conversation, budget_tokens=2 * budget_tokens, count_tokens=count_tokens,
                               k=None if k is None else k + 8, method=method)
        count = count_tokens or approx_tokens
        kept: list[RetrievedStory] = []
        used = 0
        for story in pool:
            if story.source in excluded or excluded & set(story.duplicates):
                continue
            tokens = story.tokens or count(story.text)
            if used + tokens > budget_tokens:
                continue
            kept.append(story)
            used += tokens
            if k is not None and len(kept) >= k:
                break
        return kept
