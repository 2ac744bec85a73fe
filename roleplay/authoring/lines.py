"""The records extraction passes around: a `Line` of a scene and a `Scene`.

A line is narration (``speaker`` None, ``quote`` False) or speech (``quote`` True) with
the speaker decided (``speaker`` set, ``how`` saying by which rule, ``confidence`` how
sure) or undecided (``speaker`` None, ``how == "unresolved"``): an undecided quote is
kept and counted, never guessed into someone's mouth.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Line:
    """One narration passage or one quote."""

    text: str
    quote: bool = False
    speaker: str | None = None
    #: tag | tag-before | beat | pronoun | alternation | paragraph | continued | script | unresolved
    how: str = ""
    confidence: float = 0.0
    #: A gesture written with the line (``smiling``, ``笑``), shown as an action note.
    action: str = ""


@dataclass
class Scene:
    """A stretch of a chapter between scene breaks, as lines."""

    chapter: int
    chapter_title: str
    index: int
    lines: list[Line] = field(default_factory=list)
