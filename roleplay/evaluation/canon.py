"""Canon continuation: cut a character's own scenes just before one of its lines, compare.

``roleplay eval canon sherlock daiyu --systems engine,plain --n 20`` picks N cut points per
character; at each one the system gets the scene so far as history (the line just before
as the user's message, earlier lines of other speakers as other characters, narration as
``旁白``) and writes the character's next turn, which is compared with the real one
(`reference`). The scene under test is left out of retrieval (leave-one-scene-out).

Trade-offs:
- A cut point is the start of one of the character's turns with at least one line of
  someone else right before it; the reference is the whole turn (consecutive lines of the
  character), because the engine writes a turn, not a sentence.
- Cut points are spread over scenes (shuffled scenes, one cut per scene per round, fixed
  seed), so N stays bounded on corpora of hundreds of scenes and the bootstrap, which
  resamples scenes, has as many clusters as possible.
- Attribution is a nearest-centroid classifier over the embedded lines of every speaker
  with at least ``min_lines`` lines in the *other* scenes (the held-out scene's lines are
  subtracted from the centroids): the share of replies closest to the character's own
  centroid, and the character's mean rank among the speakers. It asks "does this sound
  like this character rather than the others around it", which overlap metrics cannot.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cards.chatharuhi import NARRATION, speaker_of
from ..cards.schema import Character
from ..config import Settings
from ..errors import ConfigError
from .reference import RefItem, RefRun, resolve_systems

#: Speakers with fewer lines than this (outside the held-out scene) are not classes.
MIN_LINES = 5
#: Lines embedded per speaker at most (bounds the work on huge corpora).
MAX_LINES_PER_SPEAKER = 400


@dataclass
class Line:
    speaker: str
    text: str


def scene_lines(text: str) -> list[Line]:
    """The ``Name:「…」`` lines of a scene; the 「」 quotes dropped, action notes kept.

    A line without a speaker continues the previous one.

    >>> [(l.speaker, l.text) for l in scene_lines("Watson:「Hm?」\\nSherlock: (smiles) Quite.")]
    [('Watson', 'Hm?'), ('Sherlock', '(smiles) Quite.')]
    """
    out: list[Line] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        speaker = speaker_of(raw)
        if speaker is None:
            if out:
                out[-1].text = (out[-1].text + " " + _clean(raw)).strip()
            continue
        body = raw.split(":", 1) if ":" in raw.split("：", 1)[0] else raw.split("：", 1)
        content = _clean(body[1] if len(body) > 1 else "")
        if content:
            out.append(Line(speaker, content))
    return out


def _clean(text: str) -> str:
    return text.replace("「", "").replace("」", "").strip()


def _names(card: Character) -> set[str]:
    """Spellings of the character's name in its own scenes (name, aliases, nickname, first name)."""
    names = {n.lower() for n in card.names()} | {card.id.lower()}
    first = card.name.split()[0].lower() if card.name.split() else ""
    if first:
        names.add(first)
    return names


def _is_narration(speaker: str) -> bool:
    return speaker.strip().lower() in NARRATION


def cut_points(card: Character, *, n: int, seed: int = 0) -> list[RefItem]:
    """Up to ``n`` cut points from ``card``'s scenes, spread over scenes (see module doc)."""
    if n < 1:
        raise ConfigError("--n must be at least 1 (cut points per character)")
    mine = _names(card)
    by_scene: list[list[RefItem]] = []
    for source, text in card.all_stories():
        lines = scene_lines(text)
        cuts: list[RefItem] = []
        for i in range(1, len(lines)):
            if lines[i].speaker.lower() not in mine or lines[i - 1].speaker.lower() in mine:
                continue
            j = i
            turn: list[str] = []
            while j < len(lines) and lines[j].speaker.lower() in mine:
                turn.append(lines[j].text)
                j += 1
            sep = "" if card.language.lower().startswith("zh") else " "
            user = lines[i - 1].speaker
            history = []
            for ln in lines[: i - 1]:
                if ln.speaker.lower() in mine:
                    history.append({"role": "assistant", "name": card.name, "content": ln.text})
                elif ln.speaker == user:
                    history.append({"role": "user", "name": user, "content": ln.text})
                else:
                    history.append({"role": "assistant", "name": ln.speaker, "content": ln.text})
            others = sorted({ln.speaker for ln in lines if ln.speaker.lower() not in mine and ln.speaker != user})
            cuts.append(RefItem(id=f"{card.id}:{source}:{i}", card=card, history=history,
                                user_text=lines[i - 1].text, user_name=user, reference=sep.join(turn),
                                group=f"{card.id}:{source}", exclude=[source], others=others))
        if cuts:
            by_scene.append(cuts)
    rng = random.Random(f"{seed}:{card.id}")
    rng.shuffle(by_scene)
    for cuts in by_scene:
        rng.shuffle(cuts)
    picked: list[RefItem] = []
    depth = 0
    while len(picked) < n and any(len(c) > depth for c in by_scene):
        for cuts in by_scene:
            if depth < len(cuts) and len(picked) < n:
                picked.append(cuts[depth])
        depth += 1
    return picked


class Attributor:
    """Nearest-centroid speaker classifier over one card's scenes, leave-one-scene-out."""

    def __init__(self, card: Character, *, embedder: Any, min_lines: int = MIN_LINES, seed: int = 0) -> None:
        self.card = card
        self.embedder = embedder
        self.min_lines = min_lines
        mine = _names(card)
        per_speaker: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for source, text in card.all_stories():
            for ln in scene_lines(text):
                if _is_narration(ln.speaker):
                    continue
                who = card.name if ln.speaker.lower() in mine else ln.speaker
                per_speaker[who].append((source, ln.text))
        rng = random.Random(seed)
        lines: list[tuple[str, str, str]] = []
        for who, items in per_speaker.items():
            if len(items) > MAX_LINES_PER_SPEAKER:
                items = rng.sample(items, MAX_LINES_PER_SPEAKER)
            lines.extend((who, src, t) for src, t in items)
        self.speakers = sorted({w for w, _, _ in lines})
        pos = {w: i for i, w in enumerate(self.speakers)}
        dim = None
        vecs = embedder.embed([t for _, _, t in lines]) if lines else np.zeros((0, 1), dtype=np.float32)
        dim = vecs.shape[1] if len(lines) else 1
        self.total = np.zeros((len(self.speakers), dim))
        self.count = np.zeros(len(self.speakers))
        self.by_source: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for (who, src, _t), v in zip(lines, vecs):
            k = pos[who]
            self.total[k] += v
            self.count[k] += 1
            sums, counts = self.by_source.setdefault(src, (np.zeros_like(self.total), np.zeros_like(self.count)))
            sums[k] += v
            counts[k] += 1

    def rank(self, vec: np.ndarray, *, exclude: list[str]) -> dict | None:
        """``{"attributed": rank == 1, "attribution_rank": rank}`` of the card's character, or None
        when it or fewer than two speakers have enough lines outside ``exclude``."""
        sums, counts = self.total.copy(), self.count.copy()
        for src in exclude:
            if src in self.by_source:
                s, c = self.by_source[src]
                sums -= s
                counts -= c
        ok = counts >= self.min_lines
        if ok.sum() < 2 or self.card.name not in self.speakers or not ok[self.speakers.index(self.card.name)]:
            return None
        cent = sums[ok] / np.linalg.norm(sums[ok], axis=1, keepdims=True).clip(1e-12)
        names = [w for w, keep in zip(self.speakers, ok) if keep]
        scores = cent @ vec
        mine = scores[names.index(self.card.name)]
        rank = int((scores > mine).sum()) + 1
        return {"attributed": rank == 1, "attribution_rank": rank}


def attribution_for(cards: list[Character], *, embedder: Any, min_lines: int = MIN_LINES):
    """An ``attribute(items, replies)`` callable for `RefRun`, one classifier per card."""
    classifiers: dict[str, Attributor] = {}

    def attribute(items: list[RefItem], replies: list[str]) -> list[dict | None]:
        vecs = embedder.embed([r if r.strip() else "." for r in replies]) if replies else []
        out: list[dict | None] = []
        for item, v in zip(items, vecs):
            cid = item.card.id
            if cid not in classifiers:
                classifiers[cid] = Attributor(item.card, embedder=embedder, min_lines=min_lines)
            out.append(classifiers[cid].rank(v, exclude=item.exclude))
        return out

    return attribute


def canon_run(card_ids: list[str], *, systems: list[Any] | None = None, n: int = 20,
              settings: Settings | None = None, out_dir: str | Path | None = None, max_tokens: int = 60,
              batch_size: int = 8, seed: int = 0, progress: bool = False, embedder: Any = None,
              cards: list[Character] | None = None) -> RefRun:
    """A `RefRun` of canon continuation for ``card_ids`` (or ready ``cards``); call ``.run()``."""
    settings = settings or Settings.from_env()
    if cards is None:
        from ..cards.library import get_card

        cards = [get_card(cid, settings) for cid in card_ids]
    if not cards:
        raise ConfigError("name at least one character: roleplay eval canon ID [ID…]")
    items: list[RefItem] = []
    for card in cards:
        cuts = cut_points(card, n=n, seed=seed)
        if not cuts:
            raise ConfigError(f"character {card.id!r}: no cut points — its stories have no line of "
                              f"{card.name} that follows someone else's line (format `Name:「line」`)")
        items.extend(cuts)
    if embedder is None:
        from ..store.embeddings import get_embedder

        embedder = get_embedder(settings.embedder)
    specs = systems or ["engine", "plain"]
    live = resolve_systems(specs, settings, batch_size=batch_size)
    name = "canon-" + "-".join(c.id for c in cards)
    out = Path(out_dir) if out_dir else Path("runs") / name
    return RefRun(name=name, items=items, systems=live, out_dir=out, max_tokens=max_tokens, seed=seed,
                  batch_size=batch_size, attribute=attribution_for(cards, embedder=embedder), embedder=embedder,
                  progress=progress, meta={"kind": "canon", "characters": [c.id for c in cards], "n": n})
