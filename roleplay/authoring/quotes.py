"""Finding quoted speech in a paragraph: ``“…”``, ``"…"``, ``「…」``, ``『…』``, ``‘…’``.

`split_quotes` cuts a paragraph into narration and quote segments at the top level only:
a quote nested inside another (``“He said ‘go’.”``, ``「他说『走』。」``) stays part of the
outer quote. Straight double quotes toggle; curly and corner quotes nest. Single curly
quotes count as quotes only in a paragraph without double or corner quotes, and a ``’``
followed by a letter is an apostrophe (``don’t``), not a closing quote.

A quote left open at the end of a paragraph is closed there and flagged ``open``: English
prose leaves the closing mark off when one speech runs over several paragraphs, so the
next paragraph's quote continues the same speaker.

Trade-off: a hand-written scanner instead of one regular expression, because nesting and
apostrophes need state; it is linear in the paragraph's length.
"""
from __future__ import annotations

from dataclasses import dataclass

_PAIRS = {"“": "”", "「": "」", "『": "』", "‘": "’", '"': '"', "„": "“", "«": "»"}


@dataclass
class Segment:
    """A piece of a paragraph: narration, or a quote (text without its marks)."""

    text: str
    quote: bool
    #: The quote had no closing mark before the paragraph ended.
    open: bool = False


def _single_quotes_ok(par: str) -> bool:
    return "‘" in par and not any(c in par for c in "“\"「『«")


def split_quotes(par: str) -> list[Segment]:
    """Narration and top-level quote segments of ``par``, in order (empty narration dropped)."""
    singles = _single_quotes_ok(par)
    out: list[Segment] = []
    buf: list[str] = []
    opener = closer = ""
    depth = 0
    n = len(par)
    i = 0
    while i < n:
        ch = par[i]
        if not opener:
            if ch in _PAIRS and (ch != "‘" or singles) and ch != "”":
                if ch == "‘" and i > 0 and par[i - 1].isalnum():
                    buf.append(ch)  # subtle: an apostrophe written as an opening mark (rock ‘n’ roll)
                    i += 1
                    continue
                if buf:
                    out.append(Segment("".join(buf), False))
                    buf = []
                opener, closer, depth = ch, _PAIRS[ch], 1
            else:
                buf.append(ch)
        else:
            if ch == closer and (closer != "’" or i + 1 >= n or not par[i + 1].isalpha()):
                depth -= 1 if opener != closer else depth
                if depth <= 0:
                    out.append(Segment("".join(buf), True))
                    buf, opener, closer = [], "", ""
                    i += 1
                    continue
            elif ch == opener and opener != closer:
                depth += 1
            buf.append(ch)
        i += 1
    if buf:
        if opener:
            out.append(Segment("".join(buf), True, open=True))
        else:
            out.append(Segment("".join(buf), False))
    return [s for s in out if s.quote or s.text.strip()]


def has_quotes(text: str) -> bool:
    """Whether ``text`` holds any quote mark this module reads."""
    return any(c in text for c in "“「『\"«") or "‘" in text
