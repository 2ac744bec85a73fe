"""Escaping for everything the UI renders from cards and replies.

Card fields and model output are untrusted (cards come from strangers; replies echo chat
text). Gradio renders Chatbot and Markdown content as Markdown with HTML allowed, so every
untrusted string passes through `text` before display: ``<``, ``>``, ``&`` and quotes
become entities and show literally (``<script>`` reads as ``<script>``, never runs).
Markdown emphasis is kept on purpose — ``*smiles*`` actions render in italics — since
Markdown alone cannot run script. Only our own fixed markup is added around escaped text.
"""
from __future__ import annotations

import html as _html


def text(value: object) -> str:
    """Escape ``value`` for a Markdown/HTML context (None becomes "")."""
    if value is None:
        return ""
    return _html.escape(str(value), quote=True)


def inline(value: object, *, limit: int = 200) -> str:
    """Escape and shorten to one line (for captions, labels and table cells)."""
    s = " ".join(str(value or "").split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return text(s).replace("|", "&#124;")  # keep Markdown tables intact


def badge(label: str) -> str:
    """A small badge: ``label`` in an inline code span (Markdown shows code literally)."""
    return f"`{label.replace('`', '')}`" if label else ""


def code_block(value: object) -> str:
    """A fenced block; inside fences Markdown shows text literally, so only fences are guarded."""
    body = str(value or "").replace("```", "ˋˋˋ")
    return f"```text\n{body}\n```"
