"""`ReplyRecord`: the one list of a reply's fields, shared by everything that keeps or shows one.

The engine's `Reply` and a saved `roleplay.sessions.Message` extend it; the sessions
database derives its reply columns from it, the CLI's ``--json``, the API's ``roleplay``
extras and evaluation results read `ReplyRecord.record`. Adding a field here adds it
everywhere (a new database column needs a migration in `sessions.db`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class ReplyRecord:
    """What a reply is, as stored and shown."""

    text: str = ""
    emotion: str = ""
    note: str = ""
    intent: str = ""
    story_ids: list[str] = field(default_factory=list)
    lore_names: list[str] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The reply's fields as a JSON-ready dict (copies, safe to change)."""
        return {name: copy.copy(getattr(self, name)) for name in REPLY_FIELDS}


#: The field names of `ReplyRecord`, in order.
REPLY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ReplyRecord))
