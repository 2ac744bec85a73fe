"""The extraction pipeline: a book in, every quote attributed, one character's material out.

Two passes over the text. Pass one counts the names that speech tags give (`discover`)
into a `Cast`; pass two walks the chapters lazily, scene by scene, attributes each
quote and keeps only what the draft needs: speaker counts, the chosen character's lines,
gestures and stories, a few unresolved samples, the narration that describes the
character. Scenes are dropped as soon as they are turned into stories, so memory stays
bounded by the book itself plus the character's own material, not by the number of
chapters. A tqdm bar on stderr counts chapters.

`Extraction` is plain data: the CLI prints its report, the web UI shows it, `draft`
turns it into a card.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CardError
from .attribution import ProseAttributor, discover
from .lines import Line
from .reading import Book, read_book
from .scenes import chapters, count_chapters, scene_texts, stories_for
from .script import discover_script, looks_like_script, script_scene
from .speakers import Cast

#: Quotes decided with less confidence than this are not put in anyone's mouth.
MIN_CONFIDENCE = 0.6
#: Bounds on what is kept of one character (a main character of a long saga stays inside them).
MAX_CHARACTER_LINES = 20_000
MAX_STORIES = 5_000
MAX_SAMPLES = 20


@dataclass
class Extraction:
    """What a book yields: counts for every speaker, material for one character."""

    title: str
    source: str
    kind: str
    encoding: str
    language: str
    character: str | None
    aliases: list[str]
    chars: int = 0
    chapters: int = 0
    scenes: int = 0
    quotes: int = 0
    attributed: int = 0
    unresolved: int = 0
    speakers: Counter = field(default_factory=Counter)
    rules: Counter = field(default_factory=Counter)
    #: The character's own lines (text, action, confidence, rule).
    lines: list[Line] = field(default_factory=list)
    stories: list[str] = field(default_factory=list)
    unresolved_samples: list[str] = field(default_factory=list)
    #: Narration sentences that mention the character (for the persona).
    descriptions: list[str] = field(default_factory=list)
    #: The narration before the character's first line (for the scenario).
    first_scene: str = ""
    #: Written forms merged into the character (aliases found in the book).
    forms: list[str] = field(default_factory=list)
    mentions: Counter = field(default_factory=Counter)
    book_text: str = field(default="", repr=False)

    def confidence(self) -> float:
        """Mean confidence of the character's lines (0 when none)."""
        return sum(ln.confidence for ln in self.lines) / len(self.lines) if self.lines else 0.0

    def report(self) -> dict[str, Any]:
        """The extraction report as JSON-ready data."""
        return {"title": self.title, "source": self.source, "kind": self.kind, "encoding": self.encoding,
                "language": self.language, "characters": self.chars, "chapters": self.chapters,
                "scenes": self.scenes, "quotes": self.quotes, "attributed": self.attributed,
                "unresolved": self.unresolved, "rules": dict(self.rules.most_common()),
                "speakers": dict(self.speakers.most_common(40)),
                "character": self.character, "aliases": self.aliases, "forms": self.forms,
                "character_lines": len(self.lines), "character_confidence": round(self.confidence(), 3),
                "stories": len(self.stories), "unresolved_samples": self.unresolved_samples}


def detect_language(text: str) -> str:
    """``zh`` when CJK characters dominate a sample of ``text``, else ``en``."""
    from ..cards.chatharuhi import detect_language as detect

    return "zh" if detect(text) in ("zh", "ja") else "en"


def extract(book: str | Path | Book, *, character: str | None = None, aliases: list[str] | tuple[str, ...] = (),
            language: str = "auto", narrator: str = "I", min_confidence: float = MIN_CONFIDENCE,
            progress: bool = False) -> Extraction:
    """Attribute every quote of ``book``; keep ``character``'s lines and stories.

    Without ``character`` only the counts are kept (the speakers to pick from).

    >>> extract("study_in_scarlet.txt", character="Holmes", aliases=["Sherlock Holmes"])  # doctest: +SKIP
    """
    if not isinstance(book, Book):
        book = read_book(book)
    run = Attribution(book, character=character, aliases=aliases, language=language, narrator=narrator)
    out = Extraction(title=book.title, source=book.source, kind=run.kind, encoding=book.encoding,
                     language=run.language, character=character.strip() if character else None,
                     aliases=list(aliases), chars=len(book.text), book_text=book.text)
    names = {out.character} if out.character else set()
    name_re = _name_pattern([character, *aliases], zh=run.language == "zh") if character else None
    from tqdm import tqdm

    bar = tqdm(total=run.total, unit="chapter", disable=not progress, file=sys.stderr, desc="extracting",
               mininterval=0.5)
    try:
        last = -1
        for chapter, lines in run.scenes():
            if chapter != last:
                out.chapters += 1
                if last >= 0:
                    bar.update(1)
                last = chapter
            out.scenes += 1
            _collect(out, lines, names=names, name_re=name_re, min_confidence=min_confidence, lang=run.language)
        bar.update(max(0, run.total - bar.n))
    finally:
        bar.close()
    cast = run.cast
    if character:
        out.forms = sorted({f for f in cast.counts if cast.canonical(f) == out.character} - {out.character})
    return out


class Attribution:
    """One book's quotes attributed scene by scene: `scenes` yields ``(chapter index, lines)`` lazily."""

    def __init__(self, book: Book, *, character: str | None = None, aliases: list[str] | tuple[str, ...] = (),
                 language: str = "auto", narrator: str = "I") -> None:
        if language not in ("auto", "en", "zh"):
            raise CardError(f"unknown language {language!r}; use auto, en or zh", field="language")
        text = book.text
        if not text.strip():
            raise CardError("the book holds no text", file=book.source or None)
        self.book = book
        self.language = detect_language(text) if language == "auto" else language
        self.script = book.kind == "subtitles" or looks_like_script(text)
        self.kind = book.kind if book.kind != "prose" else ("play" if self.script else "prose")
        self.cast = Cast(character=character, aliases=list(aliases), narrator=narrator)
        if self.script:
            discover_script(text, self.cast)
        else:
            discover(text, self.cast, language=self.language)
        self.cast.finish(min_count=2 if self.language == "zh" and not self.script else 1)
        self.attributor = None if self.script else ProseAttributor(self.cast, language=self.language)
        self.total = len(book.chapters) if book.chapters else count_chapters(text)

    def scenes(self) -> Iterator[tuple[int, list[Line]]]:
        for ch in chapters(self.book.text, given=self.book.chapters or None):
            for paras in scene_texts(ch.text):
                yield ch.index, (script_scene(paras, self.cast) if self.script else self.attributor.scene(paras))


def _name_pattern(names: list[str | None], *, zh: bool) -> re.Pattern | None:
    alts = "|".join(re.escape(n) for n in sorted({n for n in names if n}, key=len, reverse=True))
    if not alts:
        return None
    return re.compile(alts if zh else rf"(?<![\w’'-])(?:{alts})(?![\w’'-])")


def _collect(out: Extraction, lines: list[Line], *, names: set[str], name_re: re.Pattern | None,
             min_confidence: float, lang: str) -> None:
    for i, ln in enumerate(lines):
        if not ln.quote:
            if name_re and len(out.descriptions) < 40 and name_re.search(ln.text):
                for sent in re.split(r"(?<=[.!?。！？])\s*", ln.text):
                    if name_re.search(sent) and 8 <= len(sent) <= 240 and sent not in out.descriptions:
                        out.descriptions.append(sent.strip())
                        break
            continue
        out.quotes += 1
        if ln.speaker is not None and ln.confidence >= min_confidence:
            out.attributed += 1
            out.speakers[ln.speaker] += 1
            out.rules[ln.how] += 1
            if ln.speaker in names:
                if not out.lines and not out.first_scene:
                    prev = [p.text for p in lines[max(0, i - 3):i] if not p.quote]
                    out.first_scene = " ".join(prev)[-600:]
                if len(out.lines) < MAX_CHARACTER_LINES:
                    out.lines.append(ln)
        else:
            out.unresolved += 1
            out.rules["unresolved"] += 1
            if len(out.unresolved_samples) < MAX_SAMPLES:
                out.unresolved_samples.append(ln.text[:160])
    if names and len(out.stories) < MAX_STORIES:
        out.stories.extend(stories_for(lines, names=names, language=lang, min_confidence=min_confidence))
        del out.stories[MAX_STORIES:]
