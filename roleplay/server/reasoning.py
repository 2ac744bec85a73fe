"""Separate ``<think>…</think>`` blocks from a reply: the reasoning is not the message.

Reasoning models (DeepSeek-R1, Qwen3 …) write their thoughts inside ``<think>`` tags before
the answer. OpenAI-compatible servers return them apart, as ``reasoning_content``, so a
client shows them folded or not at all; SillyTavern reads that field. `ThinkSplitter` does
it on a stream: each chunk is split into (content, reasoning), holding back the few
characters that could still become a tag, so a tag split across chunks is still found.

Trade-off: only the ``<think>`` spelling (and ``<thinking>``) is recognised; an unclosed
block at the end of the reply counts as reasoning (the model ran out of tokens while
thinking), so no half thought ever reaches the message.
"""
from __future__ import annotations

import re

_OPEN = ("<think>", "<thinking>")
_CLOSE = ("</think>", "</thinking>")
_HOLD = max(len(t) for t in _OPEN + _CLOSE) - 1


class ThinkSplitter:
    """Feed text chunks; get back ``(content, reasoning)`` safe to emit so far.

    >>> s = ThinkSplitter()
    >>> s.feed("<thi"), s.feed("nk>hm</think> Hello"), s.finish()
    (('', ''), (' Hello', 'hm'), ('', ''))
    """

    def __init__(self) -> None:
        self.buffer = ""
        self.thinking = False

    def feed(self, chunk: str) -> tuple[str, str]:
        self.buffer += chunk
        content: list[str] = []
        reasoning: list[str] = []
        while True:
            tags = _CLOSE if self.thinking else _OPEN
            found = [(i, t) for t in tags if (i := self.buffer.find(t)) >= 0]
            if not found:
                break
            at, tag = min(found)
            (reasoning if self.thinking else content).append(self.buffer[:at])
            self.buffer = self.buffer[at + len(tag):]
            self.thinking = not self.thinking
        # Keep back a tail that could be the start of a tag.
        keep = 0
        for n in range(min(_HOLD, len(self.buffer)), 0, -1):
            tail = self.buffer[-n:]
            if any(t.startswith(tail) for t in (_CLOSE if self.thinking else _OPEN)):
                keep = n
                break
        safe, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
        (reasoning if self.thinking else content).append(safe)
        return "".join(content), "".join(reasoning)

    def finish(self) -> tuple[str, str]:
        """What is still held back (an unfinished tag is plain text, or reasoning while thinking)."""
        rest, self.buffer = self.buffer, ""
        return ("", rest) if self.thinking else (rest, "")


def split_think(text: str) -> tuple[str, str]:
    """``(content, reasoning)`` of a whole reply; the content is stripped of the blocks.

    >>> split_think("(nods) <think>plan</think>Indeed.")
    ('(nods) Indeed.', 'plan')
    """
    s = ThinkSplitter()
    c1, r1 = s.feed(text)
    c2, r2 = s.finish()
    content = c1 + c2
    return (re.sub(r"[ \t]{2,}", " ", content) if r1 or r2 else content), (r1 + r2).strip()
