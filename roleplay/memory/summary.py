"""The rolling story summary: history that falls out of the history budget is folded in.

The composer keeps the newest whole turns that fit the history budget; everything older
would be forgotten. `history_cut` finds that boundary with the composer's own rule (chunked,
oldest turns first), and `summarise` folds the messages that just fell out into the session's
summary: with the model (a few tokens, greedy) when one is given, else — or when the
model returns nothing usable — extractively (the first sentence of each message with its
speaker). Either way the result is cut to the summary budget, oldest sentences first,
so the summary never grows without bound. It runs in the background worker, off the
reply's critical path; a summary that lags one turn behind costs nothing. The prompt is
the ``memory_summary_*.j2`` template (rendered by the composer's strict environment) and
the model call goes to the backend at `Priority.BACKGROUND`.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from ..tokens import approx_tokens



def history_cut(texts: list[str], budget_tokens: int, *, count_tokens: Callable[[str], int] | None = None) -> int:
    """Index of the oldest message the composer keeps in the history window.

    Uses the composer's own chunked trimming rule (`history_start`), so the summary folds in
    exactly the messages that leave the prompt, and only every few turns: the summary sits
    in the system message, and changing it every turn would break the cached prompt prefix.
    """
    from ..compose.composer import history_start

    count = count_tokens or approx_tokens
    return history_start([count(t) + 4 for t in texts], budget_tokens)  # +4: role/name framing


_SENTENCE = re.compile(r"(.+?[.!?。！？…](?:[\"”」』)）])?)(?:\s|$)", re.S)


def first_sentence(text: str, *, limit: int = 160) -> str:
    text = " ".join(text.split())
    m = _SENTENCE.match(text)
    out = m.group(1) if m else text
    return out if len(out) <= limit else out[:limit].rstrip() + "…"


def _fit(sentences: list[str], budget_tokens: int, count: Callable[[str], int]) -> str:
    """Join the newest sentences that fit the budget (older ones drop first)."""
    kept: list[str] = []
    used = 0
    for s in reversed(sentences):
        cost = count(s) + 1
        if used + cost > budget_tokens:
            break
        kept.append(s)
        used += cost
    return " ".join(reversed(kept))


def extractive(previous: str, lines: list[tuple[str, str]], *, budget_tokens: int = 200,
               count_tokens: Callable[[str], int] | None = None) -> str:
    """The previous summary's sentences plus ``Name: first sentence`` per new line, cut to budget."""
    count = count_tokens or approx_tokens
    sentences = [s for s in re.split(r"(?<=[.!?。！？…])\s+", previous.strip()) if s]
    sentences += [f"{name}: {first_sentence(text)}" for name, text in lines if text.strip()]
    return _fit(sentences, budget_tokens, count)


def summarise(previous: str, lines: list[tuple[str, str]], *, backend: Any = None,
              budget_tokens: int = 200, max_tokens: int = 64,
              count_tokens: Callable[[str], int] | None = None) -> str:
    """The updated summary of ``previous`` + ``lines`` (speaker, text), within the budget."""
    count = count_tokens or approx_tokens
    if not lines:
        return previous
    if backend is not None:
        from ..backends.base import Priority, SamplingParams
        from .clauses import has_cjk
        from .extract import render_prompt

        transcript = [(name, " ".join(text.split())[:400]) for name, text in lines]
        lang = "zh" if has_cjk(previous + "".join(t for _, t in transcript)) else "en"
        messages = [{"role": "user", "content": render_prompt("memory_summary", lang, previous=previous,
                                                              lines=transcript)}]
        try:
            out = backend.generate(messages, SamplingParams(max_tokens=max_tokens, temperature=0.0),
                                   priority=Priority.BACKGROUND)
        except Exception:  # the extractive summary below is always available
            out = ""
        out = " ".join(out.split())
        if len(out) >= 20:
            sentences = [s for s in re.split(r"(?<=[.!?。！？…])\s+", out) if s]
            fitted = _fit(sentences, budget_tokens, count)
            if fitted:
                return fitted
    return extractive(previous, lines, budget_tokens=budget_tokens, count_tokens=count)
