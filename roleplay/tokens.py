"""Approximate token counting, the default wherever no model tokenizer is at hand.

Trade-off: a real tokenizer is exact but needs a loaded model; this counter needs
nothing and is close enough to fit prompt budgets. CJK characters (and other wide
scripts' ideographs, kana, hangul) count one token each — most BPE vocabularies spend
about one token per such character — and all other text about one token per four
characters. With a loaded backend, pass ``backend.count_tokens`` instead.
"""
from __future__ import annotations

import re

# CJK unified ideographs (+ext A, compatibility), kana, hangul, CJK punctuation and
# full-width forms: each is roughly one token in common vocabularies.
WIDE_CHAR = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                   r"\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def approx_tokens(text: str) -> int:
    """Estimated token count of ``text``: wide (CJK) characters 1 each, the rest ≈ len/4.

    >>> approx_tokens("")
    0
    >>> approx_tokens("你好")
    2
    >>> approx_tokens("hello world!")
    3
    """
    if not text:
        return 0
    wide = len(WIDE_CHAR.findall(text))
    rest = len(text) - wide
    return max(1, wide + (rest + 3) // 4)
