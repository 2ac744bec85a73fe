"""Which memories go into this turn's prompt: the one entry point the engine calls.

`recall` ranks the user's *current* memories — profile facts (shared across characters
or this character's) and this story's events — for the turn, then fills the token budget
in rank order. A memory's rank is:

- **relevance**: the best cosine similarity to the new message (weight 1.0) or to the
  recent conversation joined (weight 0.8), from the same embedder as the store, plus a
  lexical bonus for content words (CJK character pairs) the message and the memory share
  — "what's my cat called?" finds "… a cat called Mochi" even when the embedding is vague;
- **recency**: newer memories (by ``valid_from``) get up to `RECENCY_WEIGHT` more;
- **core**: the user's name and what to call them are always in (`CORE_SLOTS`).

Past versions of facts stay out of the prompt (no stale fact is shown as current),
except when the message asks about the past ("what did I use to …", "以前") — then the
nearest past versions come in, marked ``(no longer true)`` / ``（已不再如此）``.

Trade-offs: candidates are the nearest `CANDIDATES` per query plus the core slots and
the newest events, so a memory nothing points at can be left out even with budget to
spare; the weights were set on the long-horizon script
(tests/data/memory/long_horizon.yaml), not tuned per model.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..config import Settings
from ..tokens import approx_tokens
from .clauses import CJK
from .store import CORE_SLOTS, Memory, MemoryStore, fit_budget, get_store

#: Nearest memories fetched per query before ranking.
CANDIDATES = 24
#: Most a memory gains for being the newest.
RECENCY_WEIGHT = 0.08
#: Most a memory gains for sharing content words with the new message.
LEXICAL_WEIGHT = 0.35
#: Newest events always considered (a story's latest promises).
RECENT_EVENTS = 3

_PAST = re.compile(r"\b(used? to|before|previously|formerly|in the past|no longer|any more|anymore|originally|"
                   r"first|old)\b|以前|原来|过去|之前|曾经|从前|不再", re.I)
_STOP = {"the", "a", "an", "and", "or", "is", "are", "was", "were", "be", "to", "of", "in", "on", "at", "for",
         "with", "my", "your", "you", "me", "i", "i'm", "what", "which", "who", "where", "when", "how", "do",
         "does", "did", "remember", "still", "that", "this", "it", "about", "tell", "know", "user", "user's",
         "called", "name", "has", "have", "there", "can", "again", "now", "any", "some", "from", "like", "so"}


def _units(text: str) -> set[str]:
    """Content words (singular-ish) and CJK character pairs of ``text``."""
    low = text.lower().replace("’", "'")
    words = {w[:-1] if len(w) > 3 and w.endswith("s") else w
             for w in re.findall(r"[a-z0-9']{3,}", low) if w not in _STOP}
    cjk = re.sub(f"[^{CJK}]", " ", text.replace("用户", " "))
    pairs = {run[i:i + 2] for run in cjk.split() for i in range(len(run) - 1)}
    return words | pairs


def rank(memories: list[Memory], message: str) -> list[Memory]:
    """Order ``memories`` (``score`` = similarity) by relevance, recency and core slots."""
    if not memories:
        return []
    asked = _units(message)
    order = sorted(memories, key=lambda m: m.valid_from)
    newest = {m.id: i / max(1, len(order) - 1) for i, m in enumerate(order)}
    for m in memories:
        shared = asked & _units(m.text + " " + m.value)
        lexical = LEXICAL_WEIGHT * min(1.0, len(shared) / 2) if asked else 0.0
        m.score = m.score + lexical + RECENCY_WEIGHT * newest[m.id] + (10.0 if m.slot in CORE_SLOTS and m.current else 0.0)
    return sorted(memories, key=lambda m: -m.score)


def _past_text(m: Memory) -> str:
    zh = bool(re.search(f"[{CJK}]", m.text))
    return ("（已不再如此）" if zh else "(no longer true) ") + m.text


def recall(settings: Settings, *, user: str, character: str, conversation: Sequence[str],
           budget_tokens: int, count_tokens: Callable[[str], int] | None = None,
           store: MemoryStore | None = None) -> list[Memory]:
    """Memories of ``user`` with ``character`` for the prompt, within ``budget_tokens``.

    ``conversation`` is the recent messages' texts, oldest first; the last is the new one.
    Returns current facts and events, best first (``Memory.kind`` says which); ``text`` is
    what the prompt shows.
    """
    count = count_tokens or approx_tokens
    texts = [t for t in conversation if t and t.strip()]
    if budget_tokens <= 0 or not texts:
        return []
    store = store or get_store(settings)
    message = texts[-1]
    queries = [message] + ([" ".join(texts[-3:])] if len(texts) > 1 else [])
    found = {m.id: m for m in store.nearest(user, character, queries[:1], k=CANDIDATES)}
    if len(queries) > 1:
        for m in store.nearest(user, character, queries[1:], k=CANDIDATES):
            m.score *= 0.8
            if m.id not in found or m.score > found[m.id].score:
                found[m.id] = m
    core = [m for slot in CORE_SLOTS for m in store._get(store._where(user, character, slot=slot))]
    events = sorted(store._get(store._where(user, character, kind="event")), key=lambda m: -m.valid_from)
    for m in core + events[:RECENT_EVENTS]:
        found.setdefault(m.id, m)
    if _PAST.search(message):
        for m in store.nearest(user, character, [message], k=6, current=False):
            m.text = _past_text(m)
            m.score -= 0.05  # the current version first when both fit
            found.setdefault(m.id, m)
    return fit_budget(rank(list(found.values()), message), budget_tokens, count)
