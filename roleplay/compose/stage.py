"""The StageDirector: how the character feels this turn and what they visibly do.

Pipeline: classify the user's message into one of the shared intents by its nearest
labelled prototype sentences (`prototypes.PROTOTYPES`, en + zh) in the multilingual
embedding space → map the intent through the card's ``reactions`` to an emotion → pick
an action note from the card's palette ``emotions[emotion]`` (or, when the palette has
none, from the actions inside the retrieved canonical lines of this character) → wrap it
in the card's bracket style.

Trade-offs: nearest prototypes need no training and work across languages with one
embedding call per message (the prototype matrix is embedded once per embedder and
cached); they are weaker than a trained classifier on subtle messages — the measured
accuracy is in docs/prompting.md. The score of an intent is the mean of its two best
prototype similarities, which is steadier than the single nearest neighbour. Note choice
is deterministic (a hash of the message and the seed) and skips the previous note when
another exists, so replays are reproducible and consecutive turns vary.
"""
from __future__ import annotations

import random
import re
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..cards.schema import Character
from .postprocess import format_note
from .prototypes import INTENTS, PROTOTYPES

#: An action note inside a line: (…), （…） or *…*, short enough to be a gesture.
_ACTION = re.compile(r"\(([^()\n]{1,60})\)|（([^（）\n]{1,60})）|\*([^*\n]{1,60})\*")
#: A story line ``Name:「text」`` or ``Name: text`` (half- or full-width colon).
_LINE = re.compile(r"^\s*([^:：\n]{1,40})\s*[:：]\s*(.*)$")

_PROTO_CACHE: dict[str, tuple[list[str], Any]] = {}
_PROTO_LOCK = threading.Lock()


@dataclass
class StageNote:
    """The director's decision for one turn."""

    intent: str
    intent_score: float
    emotion: str
    note: str


def story_actions(stories: Iterable[Any], card: Character) -> list[str]:
    """Action notes found in the lines that ``card`` speaks in the given stories.

    ``stories`` holds `RetrievedStory` objects (their ``.text``) or plain strings.
    """
    # Lines under any of the character's names (aliases too: 孙悟空 / 悟空 / 行者) are its own.
    names = {n.strip() for n in (*card.names(), card.id, card.name.split()[0]) if n and n.strip()}
    found: list[str] = []
    for story in stories:
        text = getattr(story, "text", story)
        if not isinstance(text, str):
            continue
        for line in text.splitlines():
            m = _LINE.match(line)
            if not m or m.group(1).strip() not in names:
                continue
            for a in _ACTION.finditer(m.group(2)):
                note = next(g for g in a.groups() if g is not None).strip()
                if note and note not in found:
                    found.append(note)
    return found


class StageDirector:
    """Decides the emotion and action note of a turn.

    Args:
        embedder: an object with ``embed(list[str]) -> (n, dim)`` L2-normalised vectors;
            None means `roleplay.store.embeddings.get_embedder()` on first use.
    """

    def __init__(self, embedder: Any | None = None) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from ..store.embeddings import get_embedder

            self._embedder = get_embedder()
        return self._embedder

    def _prototypes(self) -> tuple[list[str], Any]:
        """(labels, matrix) of the prototype sentences, embedded once per embedder."""
        emb = self.embedder
        key = getattr(emb, "name", "") or f"id:{id(emb)}"
        with _PROTO_LOCK:
            cached = _PROTO_CACHE.get(key)
            if cached is None:
                labels = [intent for intent in INTENTS for _ in PROTOTYPES[intent]]
                texts = [s for intent in INTENTS for s in PROTOTYPES[intent]]
                cached = (labels, emb.embed(texts))
                _PROTO_CACHE[key] = cached
        return cached

    def scores(self, text: str) -> dict[str, float]:
        """Similarity of ``text`` to each intent (mean of its two nearest prototypes)."""
        import numpy as np

        labels, matrix = self._prototypes()
        vec = self.embedder.embed([text[:2000] if text.strip() else "..."])[0]
        sims = matrix @ vec
        out: dict[str, float] = {}
        for intent in INTENTS:
            own = np.sort(sims[[i for i, lab in enumerate(labels) if lab == intent]])[::-1]
            out[intent] = float(own[:2].mean())
        return out

    def classify(self, text: str) -> tuple[str, float]:
        """The user's intent and its score (cosine, -1..1); empty text is ``neutral``."""
        if not text or not text.strip():
            return "neutral", 0.0
        scores = self.scores(text)
        best = max(INTENTS, key=lambda k: scores[k])
        return best, scores[best]

    def direct(self, card: Character, user_text: str, stories: Sequence[Any] = (), *,
               seed: int | None = None, previous: str | None = None) -> StageNote:
        """Classify ``user_text``, map it to the card's emotion and pick a note.

        Args:
            card: the character; ``reactions`` maps intents to its emotions and
                ``emotions`` holds the palette of notes per emotion.
            user_text: the user's new message.
            stories: the retrieved stories (their actions are the fallback palette).
            seed: varies the choice among equally good notes (deterministic per seed).
            previous: the last note used; skipped when another candidate exists.

        Returns:
            A `StageNote`; ``note`` is "" when the card offers nothing to pick from.
        """
        intent, score = self.classify(user_text)
        emotion = card.reactions.get(intent) or card.reactions.get("neutral") or ""
        candidates = list(card.emotions.get(emotion, [])) if emotion else []
        if not candidates:
            candidates = story_actions(stories, card)
        if not candidates and not emotion:
            # No reaction mapped: a neutral palette entry still keeps the character in voice.
            for fallback in ("neutral", "calm", "default"):
                if card.emotions.get(fallback):
                    emotion, candidates = fallback, list(card.emotions[fallback])
                    break
        emotion = emotion or "neutral"
        notes = [n for n in (format_note(c, card) for c in candidates) if n]
        prev = format_note(previous, card) if previous else ""
        if prev and len(notes) > 1:
            notes = [n for n in notes if n != prev] or notes
        note = ""
        if notes:
            # subtle: crc32, not hash(): str hashes are salted per process.
            rng = random.Random(zlib.crc32(user_text.encode("utf-8", "replace")) ^ (seed or 0))
            note = rng.choice(notes)
        return StageNote(intent=intent, intent_score=round(score, 4), emotion=emotion, note=note)
