"""The character card schema (pydantic), shared by the YAML format and every importer.

A `Character` is plain data: text fields, an emotion palette, a lorebook, dialogue
stories. Unknown top-level keys in a hand-written card are errors (typos must not vanish);
fields from imported formats that have no home here go to ``extensions``, never dropped.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Style(_Model):
    """How actions and speech are written: ``(…)``/``（…）`` or ``*…*``; quotes."""

    action_style: Literal["paren", "asterisk"] = "paren"
    quote_style: Literal["none", "corner", "double"] = "none"


class Knowledge(_Model):
    """The knowledge boundary: topics the character cannot know (answer "I do not know")."""

    unknown: list[str] = Field(default_factory=list)
    known: list[str] = Field(default_factory=list)


class LoreEntry(_Model):
    """One lorebook (world info) entry, SillyTavern/V3 compatible."""

    keys: list[str] = Field(default_factory=list)
    content: str
    secondary_keys: list[str] = Field(default_factory=list)
    #: With ``selective``, the entry fires only when a secondary key matches too.
    selective: bool = False
    #: Keys are regular expressions (V3 ``use_regex``).
    regex: bool = False
    case_sensitive: bool = False
    #: Always inserted (into the system part), whatever the conversation.
    constant: bool = False
    enabled: bool = True
    priority: int = 10
    #: V2 ``insertion_order``; lower goes first among equal priority.
    order: int = 100
    position: Literal["before_char", "after_char"] = "before_char"
    name: str = ""
    comment: str = ""
    #: Also fire when the conversation is semantically close to ``content`` (embeddings).
    vector: bool = False
    #: Messages scanned for keys; None means the retriever's default.
    scan_depth: int | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)


class Character(_Model):
    """A character card. See docs/cards.md for every field."""

    id: str
    name: str
    language: str = "en"
    user_name: str = "User"
    nickname: str = ""
    #: Other names of the character (孙悟空 / 悟空 / 行者 / 大圣): story lines under any of
    #: them count as the character's own (retrieval, stage notes, imports, authoring).
    aliases: list[str] = Field(default_factory=list)
    persona: str = ""
    scenario: str = ""
    greetings: list[str] = Field(default_factory=list)
    group_greetings: list[str] = Field(default_factory=list)
    #: A card's own system prompt override/extra and post-history instructions (V2).
    system_prompt: str = ""
    post_history_instructions: str = ""
    style: Style = Field(default_factory=Style)
    #: emotion -> typical action notes, e.g. ``amused: ["(a thin smile)"]``.
    emotions: dict[str, list[str]] = Field(default_factory=dict)
    #: user intent -> character emotion, e.g. ``praise: smug``.
    reactions: dict[str, str] = Field(default_factory=dict)
    knowledge: Knowledge = Field(default_factory=Knowledge)
    lorebook: list[LoreEntry] = Field(default_factory=list)
    #: Dialogue samples (ChatHaruhi scenes, lines ``Name:「…」``); the retrieval corpus.
    stories: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    creator_notes: str = ""
    version: str = "1.0"
    #: Avatar file name beside the card, and per-emotion images (emotion -> file name).
    avatar: str | None = None
    emotion_images: dict[str, str] = Field(default_factory=dict)
    #: How often this character speaks in group chats (0..1).
    talkativeness: float = Field(0.5, ge=0.0, le=1.0)
    extensions: dict[str, Any] = Field(default_factory=dict)

    # Where the card was loaded from (not part of the data; not compared).
    _path: Path | None = PrivateAttr(default=None)
    # Stories read from ``stories/*.txt`` beside the card: (file name, scene text).
    _file_stories: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not ID_RE.match(v):
            raise ValueError("must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit")
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @property
    def path(self) -> Path | None:
        """The card file this character was loaded from, if any."""
        return self._path

    @property
    def folder(self) -> Path | None:
        return self._path.parent if self._path else None

    def names(self) -> list[str]:
        """The character's name, then its aliases and nickname, without repeats or blanks."""
        out: list[str] = []
        for n in [self.name, *self.aliases, self.nickname]:
            n = n.strip()
            if n and n not in out:
                out.append(n)
        return out

    def all_stories(self) -> list[tuple[str, str]]:
        """Every story with a source label: ``("card:3", text)`` or ``("stories/a.txt#2", text)``."""
        out = [(f"card:{i}", s) for i, s in enumerate(self.stories)]
        out.extend(self._file_stories)
        return out

    def asset(self, name: str | None) -> Path | None:
        """Path of an asset file beside the card (avatar, emotion image), if it exists."""
        if not name or not self.folder:
            return None
        from .safety import safe_join  # local: safety imports nothing from here

        p = safe_join(self.folder, name)
        return p if p.is_file() else None
