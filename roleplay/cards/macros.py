"""``{{char}}``/``{{user}}`` macros (case-insensitive; also ``<BOT>``/``<USER>``)."""
from __future__ import annotations

import re

_CHAR = re.compile(r"\{\{\s*char\s*\}\}|<BOT>", re.IGNORECASE)
_USER = re.compile(r"\{\{\s*user\s*\}\}|<USER>", re.IGNORECASE)


def expand(text: str, *, char: str, user: str) -> str:
    """Replace the macros in ``text``. Plain string replacement: never template evaluation."""
    text = _CHAR.sub(lambda _m: char, text)
    return _USER.sub(lambda _m: user, text)
