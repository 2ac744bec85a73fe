"""Reference-based text similarity: ROUGE-L and chrF, written out (no extra dependency).

Trade-offs:
- ROUGE-L is the F-measure of the longest common subsequence over tokens — words for
  English (lower-cased), characters for Chinese, the same tokenisation the judge-free
  metrics use (`metrics.tokens`). It rewards the right words in the right order and
  ignores everything else, so it is a floor, not a verdict: a fine paraphrase scores low.
- chrF (character n-gram F-score, n = 1…6, β = 2, recall weighted twice) needs no
  tokeniser at all, which makes it the fairer surface metric across en and zh and for
  short replies; whitespace is removed before counting, as the original definition does.
- Both are O(n·m) / O(n) in pure Python; a reply and a reference line are a few hundred
  characters, so this is microseconds, never the bottleneck next to generation.
"""
from __future__ import annotations

from collections import Counter

from .metrics import tokens


def rouge_l(candidate: str, reference: str, *, language: str = "en", beta: float = 1.0) -> float:
    """ROUGE-L F-measure of ``candidate`` against ``reference`` (0 when either is empty).

    >>> rouge_l("I did not know. I observed.", "I did not know, I observed", language="en")
    1.0
    >>> round(rouge_l("师父莫慌", "师父别慌", language="zh"), 2)
    0.75
    """
    a, b = tokens(candidate, language), tokens(reference, language)
    if not a or not b:
        return 0.0
    lcs = _lcs(a, b)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (two rows of the DP table)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def chrf(candidate: str, reference: str, *, n: int = 6, beta: float = 2.0) -> float:
    """chrF score in 0…1: character n-gram precision/recall averaged over n = 1…``n``.

    Orders for which either side has no n-grams (short texts) are left out of the average.

    >>> chrf("abc", "abc")
    1.0
    >>> chrf("xyz", "abc")
    0.0
    """
    a = "".join(candidate.split())
    b = "".join(reference.split())
    precisions, recalls = [], []
    for k in range(1, n + 1):
        ca, cb = _grams(a, k), _grams(b, k)
        if not ca or not cb:
            continue
        hit = sum((ca & cb).values())
        precisions.append(hit / sum(ca.values()))
        recalls.append(hit / sum(cb.values()))
    if not precisions:
        return 0.0
    p = sum(precisions) / len(precisions)
    r = sum(recalls) / len(recalls)
    if p == 0 and r == 0:
        return 0.0
    return (1 + beta**2) * p * r / (beta**2 * p + r)


def _grams(text: str, k: int) -> Counter:
    return Counter(text[i:i + k] for i in range(len(text) - k + 1))
