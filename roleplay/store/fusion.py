"""How a story's signals become one score: calibrated fusion (default) and the older ways.

Signals per candidate story: ``vector`` (cosine of the whole story with the conversation),
``window`` (the best cosine of its line windows; the story's own for a short story) and
``keyword`` (BM25 over the conversation's words plus bridged names and translations).

- ``hybrid`` (default): each signal is put on one scale *per query* — z-scores over the
  candidate pool, keyword as z(log(1 + BM25)) — and summed with `hybrid_weights` (`WEIGHTS`;
  more keyword when the candidates are long scenes in the message's language), plus, for a
  message in a language no scene is written in, the cosines of its word-by-word dictionary
  translation (`TRANSLATION_WEIGHT`). Raw scales
  differ between queries (a long query's BM25 is large, a cross-lingual one's is zero,
  cosines bunch up on a corpus of similar scenes), so a fixed weighted sum of raw or
  min-max scores lets whichever signal happens to spread most decide. A signal that is
  flat on this pool (no shared word at all) gets z = 0 and drops out by itself.
- ``weighted``: the previous default: 0.6 × vector min-max over the pool + 0.4 × BM25 /
  best BM25 (no windows, no bridges); kept to compare against.
- ``rrf``: reciprocal-rank fusion (k=60); ``vector`` and ``keyword``: one signal.
- ``e5``: ``hybrid``'s z-scores (`E5_WEIGHTS`) plus the second embedder's best-unit
  cosine (multilingual-e5-small, `roleplay.store.e5`) at `SECOND_WEIGHT`.

`calibrated` maps its sum into 0–1 over the pool (best = 1) so ``score`` reads the same
for every method. Trade-off: a z-score needs a pool; with two or three candidates it
is coarse, but then the order hardly matters.
"""
from __future__ import annotations

import numpy as np

METHODS = ("hybrid", "e5", "weighted", "rrf", "vector", "keyword")
#: z-score weights of (vector, window, keyword) in ``hybrid``, chosen on the dev corpus
#: (bench/retrieval.py --quality: wukong) and checked on the hard set; see docs/retrieval.md.
WEIGHTS = (1.0, 1.0, 1.5)
#: How ``hybrid`` (and ``e5``) scale (vector, window, keyword) when the candidates are long
#: scenes (8 lines or more: they have line windows) written in the message's language:
#: 1 / 1 / 1.5 becomes 0.5 / 1 / 3. A long scene's cosine averages its small talk with the
#: one exchange that matters, while a shared rare word still points at it, so the keyword
#: signal earns more trust there; on short stories the cosine is sharp and paraphrased
#: questions need it (the easy set lost 3 of 163 from the top 5 with these weights for
#: every query). Chosen on the hard set's same-language queries, checked on wukong's
#: (recall@5 0.80 → 0.90); across languages the keyword signal is dictionary guesses, and
#: no weighting fitted there carried over, so those keep the base weights.
LONG_SCALE = (0.5, 1.0, 2.0)
#: ``hybrid`` and ``e5``, a message in a language no scene is in: z-weight of the story and of
#: the best-window cosine of its word-by-word dictionary translation (`bridge.translation_text`),
#: each. Chosen on the hard set's 60 cross-lingual queries (weights 0.3–0.7 and 20–80 terms
#: tried), checked on wukong's 33 English questions; docs/retrieval.md.
TRANSLATION_WEIGHT = 0.5
#: ``e5``: weights of (vector, window, keyword) and of the second embedder's best-unit
#: cosine. Chosen on half of the hard set (wren, 110 queries; docs/retrieval.md): with e5
#: present, USE's whole-story cosine only added noise (MRR 0.419 without, 0.402 with).
E5_WEIGHTS = (0.0, 1.0, 1.5)
SECOND_WEIGHT = 1.0
#: ``weighted``: share of the vector signal (keyword gets the rest).
VECTOR_WEIGHT = 0.6
RRF_K = 60


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the pool; all zeros when the pool does not vary."""
    x = np.asarray(x, dtype=np.float64)
    sd = float(x.std())
    return (x - float(x.mean())) / sd if sd > 1e-12 else np.zeros_like(x)


def calibrated(vector: np.ndarray, window: np.ndarray, keyword: np.ndarray,
               *, weights: tuple[float, float, float] | None = None, second: np.ndarray | None = None,
               second_weight: float | None = None,
               translated: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The ``hybrid`` score of each candidate, in 0–1 (see the module docstring); with
    ``second`` (the ``e5`` method) its z-score is added at ``SECOND_WEIGHT``; with
    ``translated`` (the story and best-window cosines of the message's dictionary
    translation) theirs at `TRANSLATION_WEIGHT` each."""
    wv, ww, wk = weights or WEIGHTS
    total = wv * zscore(vector) + ww * zscore(window) + wk * zscore(np.log1p(np.maximum(keyword, 0.0)))
    if translated is not None:
        total = total + TRANSLATION_WEIGHT * (zscore(translated[0]) + zscore(translated[1]))
    if second is not None:
        total = total + (SECOND_WEIGHT if second_weight is None else second_weight) * zscore(second)
    return unit(total)


def hybrid_weights(long_share: float, *, base: tuple[float, float, float] = WEIGHTS) -> tuple[float, float, float]:
    """The (vector, window, keyword) weights for one query: ``base`` (`WEIGHTS`, or
    `E5_WEIGHTS` for ``e5``) scaled toward ``base`` × `LONG_SCALE` by ``long_share``, the
    share of candidates that are long scenes in the message's language.

    >>> hybrid_weights(1.0)
    (0.5, 1.0, 3.0)
    >>> hybrid_weights(0.5)
    (0.75, 1.0, 2.25)
    >>> hybrid_weights(0.0) == WEIGHTS
    True
    """
    f = min(max(long_share, 0.0), 1.0)
    return tuple(round(w * (1.0 + f * (k - 1.0)), 6) for w, k in zip(base, LONG_SCALE))  # type: ignore[return-value]


def unit(total: np.ndarray) -> np.ndarray:
    """Min-max into 0–1 (all ones for a flat or one-item pool)."""
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / (hi - lo) if hi > lo else np.ones_like(total)


def single(method: str, cands: np.ndarray, vec: np.ndarray, kw: np.ndarray,
           vec_rank: dict[int, int], kw_rank: dict[int, int]) -> np.ndarray:
    """``weighted``, ``rrf``, ``vector`` or ``keyword`` scores of the candidates."""
    if method == "vector":
        return vec.astype(np.float64)
    if method == "keyword":
        return kw
    if method == "rrf":
        return np.array([(1.0 / (RRF_K + vec_rank[int(p)]) if int(p) in vec_rank else 0.0)
                         + (1.0 / (RRF_K + kw_rank[int(p)]) if int(p) in kw_rank else 0.0) for p in cands])
    lo, hi = float(vec.min()), float(vec.max())
    v = (vec - lo) / (hi - lo) if hi > lo else np.ones_like(vec)
    top = float(kw.max())
    w = kw / top if top > 0 else np.zeros_like(kw)
    return VECTOR_WEIGHT * v + (1.0 - VECTOR_WEIGHT) * w
