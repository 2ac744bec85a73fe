"""Lorebook (world info): which entries the recent conversation triggers, and why.

SillyTavern/V3 semantics, kept small:
- An entry fires when one of its ``keys`` occurs in the last ``scan_depth`` messages
  (the entry's own ``scan_depth`` overrides the call's). Plain keys match whole words
  for Latin text (``cat`` does not fire on "concatenate") and as substrings for CJK
  (no word boundaries there); ``case_sensitive`` is off by default.
- ``regex: true`` keys are regular expressions (``/pattern/flags`` or a bare pattern);
  an invalid one never matches and is reported by `invalid_keys`, never raised mid-chat.
- ``selective`` with ``secondary_keys``: a secondary key must match too.
- ``constant`` entries are always included; ``enabled: false`` entries never.
- ``vector: true`` entries also fire when the conversation embedding's cosine with the
  entry content reaches `VECTOR_THRESHOLD` (measured with USE v3 on the bundled cards'
  lorebooks: a question about an entry's subject scores ≈0.3–0.4 against its content,
  in English or Chinese; unrelated small talk stays below ≈0.2).
- Order: constant entries first, then higher ``priority``, then lower ``order``, then card
  order; entries are added while they fit ``budget_tokens`` (constant ones always).
Trade-off: matching is plain Python over a handful of messages (microseconds); compiled
patterns are cached per (key, flags).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from ..cards.schema import Character, LoreEntry
from ..tokens import approx_tokens

VECTOR_THRESHOLD = 0.30

_REGEX_LITERAL = re.compile(r"^/(.*)/([imsx]*)$", re.DOTALL)


@dataclass
class LoreHit:
    """A lorebook entry selected for the prompt, with the reasons it fired."""

    index: int
    name: str
    content: str
    why: list[str]
    tokens: int
    constant: bool
    priority: int
    order: int = 100
    position: str = "before_char"
    similarity: float | None = field(default=None)


@lru_cache(maxsize=4096)
def _compile(key: str, regex: bool, case_sensitive: bool) -> re.Pattern | None:
    flags = 0 if case_sensitive else re.IGNORECASE
    if regex:
        m = _REGEX_LITERAL.match(key)
        pattern = key
        if m:
            pattern = m.group(1)
            for ch in m.group(2):
                flags |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}[ch]
        try:
            return re.compile(pattern, flags)
        except (re.error, RecursionError, OverflowError):
            return None
    key = key.strip()
    if not key:
        return None
    body = re.escape(key)
    # Whole-word edges only where the key starts/ends with an ASCII word character;
    # CJK keys (and keys like "C++") match as substrings.
    left = r"(?<!\w)" if re.match(r"\w", key[0], re.ASCII) else ""
    right = r"(?!\w)" if re.match(r"\w", key[-1], re.ASCII) else ""
    return re.compile(left + body + right, flags)


def _first_match(keys: list[str], text: str, entry: LoreEntry) -> str | None:
    for key in keys:
        pat = _compile(key, entry.regex, entry.case_sensitive)
        if pat is not None and pat.search(text):
            return key
    return None


def invalid_keys(card: Character) -> list[str]:
    """Human-readable notes for regex keys that do not compile (for `cards validate`)."""
    out = []
    for i, e in enumerate(card.lorebook):
        if e.regex:
            for key in [*e.keys, *e.secondary_keys]:
                if _compile(key, True, e.case_sensitive) is None:
                    out.append(f"lorebook[{i}]: invalid regular expression {key!r}")
    return out


def match_lore(card: Character, conversation: list[str], *, budget_tokens: int = 500,
               count_tokens: Callable[[str], int] | None = None, scan_depth: int = 4,
               similarity: Callable[[list[int]], dict[int, float]] | None = None,
               threshold: float = VECTOR_THRESHOLD) -> list[LoreHit]:
    """Entries of ``card.lorebook`` triggered by ``conversation`` (oldest first).

    ``similarity(indices)`` returns the cosine between the conversation and each given
    entry's content; it is called only for enabled, not key-triggered ``vector`` entries.
    """
    count = count_tokens or approx_tokens
    scanned: dict[int, str] = {}

    def window(depth: int) -> str:
        if depth not in scanned:
            scanned[depth] = "\n".join(conversation[-depth:]) if depth > 0 else ""
        return scanned[depth]

    candidates: list[tuple[int, LoreEntry, list[str], float | None]] = []
    vector_wanted: list[int] = []
    for i, entry in enumerate(card.lorebook):
        if not entry.enabled or not entry.content.strip():
            continue
        if entry.constant:
            candidates.append((i, entry, ["constant entry"], None))
            continue
        text = window(entry.scan_depth if entry.scan_depth is not None else scan_depth)
        key = _first_match(entry.keys, text, entry) if text else None
        if key is not None:
            why = [f"key {key!r}"]
            if entry.selective and entry.secondary_keys:
                second = _first_match(entry.secondary_keys, text, entry)
                if second is None:
                    key = None
                else:
                    why.append(f"secondary key {second!r}")
            if key is not None:
                candidates.append((i, entry, why, None))
                continue
        if entry.vector:
            vector_wanted.append(i)
    if vector_wanted and similarity is not None:
        sims = similarity(vector_wanted)
        for i in vector_wanted:
            s = sims.get(i)
            if s is not None and s >= threshold:
                candidates.append((i, card.lorebook[i], [f"vector similarity {s:.2f} ≥ {threshold:.2f}"], s))

    candidates.sort(key=lambda c: (not c[1].constant, -c[1].priority, c[1].order, c[0]))
    hits: list[LoreHit] = []
    used = 0
    for i, entry, why, sim in candidates:
        tokens = count(entry.content)
        if not entry.constant and used + tokens > budget_tokens:
            continue
        used += tokens
        hits.append(LoreHit(index=i, name=entry.name or (entry.keys[0] if entry.keys else f"entry {i}"),
                            content=entry.content, why=why, tokens=tokens, constant=entry.constant,
                            priority=entry.priority, order=entry.order, position=entry.position,
                            similarity=sim))
    return hits

