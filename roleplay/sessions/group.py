"""Group chat: who speaks next.

Strategies (a session setting, ``group_strategy``):

- ``auto`` (default): the character the user addresses by name — full name, any word of
  it, nickname or id, English case-insensitively on word boundaries, Chinese as a
  substring — the earliest mention wins; with no mention, the character with the highest
  talkativeness × turns since it last spoke (so a chatty character speaks often, but a
  quiet one is not starved), ties broken by card order;
- ``round_robin``: the one who spoke longest ago;
- ``random``: weighted by talkativeness (seedable for tests).

The caller may always pick the speaker explicitly (``Session.stream(speaker=…)``).
Trade-offs: name matching is lexical, so "holmes" in "Sherlock Holmes stories" counts as
addressing Sherlock — the user can override with ``speaker=``.
"""
from __future__ import annotations

import random
import re
from typing import Iterable, Literal, Sequence

from ..cards.schema import Character
from ..errors import SessionError

Strategy = Literal["auto", "round_robin", "random"]
STRATEGIES: tuple[str, ...] = ("auto", "round_robin", "random")

_CJK = re.compile(r"[\u3400-\u9fff]")


def name_variants(card: Character) -> list[str]:
    """Ways a user may address ``card``: name, its words, nickname(s), id."""
    out = [card.name, card.id]
    out += [w for w in re.split(r"[\s·・.]+", card.name) if len(w) >= 2]
    out += [n.strip() for n in re.split(r"[,，、/;；]", card.nickname or "") if n.strip()]
    seen: list[str] = []
    for v in out:
        if v and v.lower() not in (s.lower() for s in seen):
            seen.append(v)
    return seen


def mention_position(text: str, card: Character) -> int | None:
    """Where ``text`` first addresses ``card`` (character offset), or None."""
    best: int | None = None
    for v in name_variants(card):
        if _CJK.search(v):
            i = text.find(v)
        else:
            m = re.search(rf"(?<![\w]){re.escape(v)}(?![\w])", text, re.IGNORECASE)
            i = m.start() if m else -1
        if i >= 0 and (best is None or i < best):
            best = i
    return best


def addressed(text: str, cards: Sequence[Character]) -> Character | None:
    """The character named earliest in ``text``, if any."""
    hits = [(pos, i) for i, c in enumerate(cards) if (pos := mention_position(text or "", c)) is not None]
    return cards[min(hits)[1]] if hits else None


def choose_speaker(cards: Sequence[Character], text: str | None, recent: Iterable[str], *,
                   strategy: str = "auto", exclude: Iterable[str] = (), speaker: str | None = None,
                   rng: random.Random | None = None) -> Character:
    """The character who answers next.

    Args:
        cards: the session's characters, in order.
        text: the user's new message (None when the scene just continues).
        recent: character ids of the session's past speakers, oldest first.
        strategy: ``auto`` | ``round_robin`` | ``random``.
        exclude: ids that must not speak (the character the user is voicing).
        speaker: an explicit choice (id, name or nickname) that overrides the strategy.
    """
    if not cards:
        raise SessionError("the session has no characters")
    if strategy not in STRATEGIES:
        raise SessionError(f"unknown group strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if speaker:
        for c in cards:
            if speaker.lower() in (v.lower() for v in name_variants(c)):
                return c
        raise SessionError(f"speaker {speaker!r} is not in this session "
                           f"(characters: {', '.join(c.id for c in cards)})")
    excluded = set(exclude)
    pool = [c for c in cards if c.id not in excluded] or list(cards)
    if len(pool) == 1:
        return pool[0]
    recent = list(recent)
    if strategy == "auto" and text:
        hit = addressed(text, pool)
        if hit is not None:
            return hit

    def since(c: Character) -> int:
        # turns since c last spoke; never spoke → longer ago than anyone
        for back, cid in enumerate(reversed(recent)):
            if cid == c.id:
                return back
        return len(recent) + 1

    if strategy == "round_robin":
        return max(pool, key=lambda c: (since(c), -pool.index(c)))
    if strategy == "random":
        r = rng or random.Random()
        weights = [max(c.talkativeness, 0.01) for c in pool]
        return r.choices(pool, weights=weights, k=1)[0]
    last = recent[-1] if recent else None
    candidates = [c for c in pool if c.id != last] or pool
    return max(candidates, key=lambda c: (max(c.talkativeness, 0.01) * (since(c) + 1), -pool.index(c)))
