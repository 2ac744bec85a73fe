"""Long-term memory per (user, character) in Chroma, with ADD / UPDATE / DELETE / NOOP.

Memories live in their own collection of the retriever's Chroma client, embedded with
the same embedder, with metadata ``user``, ``character``, ``slot``, ``source`` (the
session and message a fact came from) and times. Before a fact is stored it is compared
with what is known:

- same *slot* (from the rule extractor: "user.name", "pet.cat.name") and same text → NOOP;
  other text → UPDATE that memory in place (a contradiction replaces, never adds a twin);
  a negated fact ("I no longer live in Paris") → DELETE the slot's memory when it names
  that value — the new fact itself is not stored, so at most one memory goes;
- no slot (LLM facts): the nearest memory at cosine ≥ `DUPLICATE_SIMILARITY` is the same
  fact → NOOP; otherwise ADD.

This avoids mem0's two failure modes: a repeated fact never deletes the original (a
duplicate is a NOOP, not DELETE+ADD), and a contradiction never drops both memories
(UPDATE keeps the id and writes the new text in one call).

Trade-offs: slot matching needs the rules to have named the slot; free facts dedupe by
similarity only (a paraphrase below the threshold becomes a second memory, which is
harmless in the prompt). Search ranks the user's core profile (name, what to call them)
first, then by similarity, and fills a token budget.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..errors import StoreError
from ..tokens import approx_tokens

#: Cosine similarity from which two free facts count as the same memory.
DUPLICATE_SIMILARITY = 0.9
#: Slots shown first in every prompt, whatever the query.
CORE_SLOTS = ("user.name", "user.callname")


def default_user() -> str:
    """The memory owner when none is given: ``$ROLEPLAY_USER``, else ``"local"``."""
    return os.environ.get("ROLEPLAY_USER") or "local"


@dataclass
class Memory:
    """One remembered fact."""

    id: str
    user: str
    character: str
    text: str
    slot: str = ""
    source: str = ""
    created: float = 0.0
    updated: float = 0.0
    score: float = 0.0

    def to_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "character": self.character, "text": self.text,
                "slot": self.slot, "source": self.source, "created": self.created,
                "updated": self.updated, "score": round(self.score, 4)}


@dataclass
class Decision:
    """What `MemoryStore.add` did: ``action`` ADD|UPDATE|DELETE|NOOP on memory ``id``."""

    action: str
    id: str | None = None
    old_text: str = ""
    text: str = ""
    similar: list[tuple[str, float]] = field(default_factory=list)


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("。", ".").split()).rstrip(".!")


def _where(user: str | None, character: str | None, slot: str | None = None) -> dict | None:
    parts = [{k: v} for k, v in (("user", user), ("character", character), ("slot", slot)) if v is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


class MemoryStore:
    """Memories in the Chroma collection ``memories_<embedder tag>``.

    >>> store = MemoryStore(Settings.from_env())  # doctest: +SKIP
    >>> store.add("local", "sherlock", "The user's name is Lin.", "s1:3", slot="user.name").action  # doctest: +SKIP
    'ADD'
    """

    def __init__(self, settings: Settings, *, embedder: Any = None, client: Any = None) -> None:
        from ..store.client import get_client
        from ..store.embeddings import embedding_function, get_embedder

        self.settings = settings
        self.embedder = embedder or get_embedder(settings.embedder)
        self.client = client or get_client(settings)
        self._lock = threading.RLock()
        try:
            self.collection = self.client.get_or_create_collection(
                f"memories_{self.embedder.tag}",
                embedding_function=embedding_function(settings.embedder),
                configuration={"hnsw": {"space": "cosine"}})
        except Exception as exc:
            raise StoreError(f"cannot open the memory collection in {settings.chroma_dir}: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0]) from None

    # -- writing -------------------------------------------------------------------------
    def add(self, user: str, character: str, text: str, source: str = "", *,
            slot: str | None = None, negated: bool = False, value: str = "") -> Decision:
        """Store a fact after comparing it with the closest memories (see module doc).

        ``negated`` with ``slot`` and ``value`` deletes the slot's memory that names ``value``.
        """
        text = text.strip()
        if not text:
            return Decision("NOOP")
        with self._lock:
            now = time.time()
            if slot:
                same = self._get(_where(user, character, slot))
                if negated:
                    for m in same:
                        if value and value.lower() in m.text.lower():
                            self.collection.delete(ids=[m.id])
                            return Decision("DELETE", m.id, old_text=m.text, text=text)
                    return Decision("NOOP", text=text)
                if same:
                    keep, extra = same[0], same[1:]
                    if _norm(keep.text) == _norm(text):
                        return Decision("NOOP", keep.id, old_text=keep.text, text=text)
                    vec = self.embedder.embed([text])
                    self.collection.update(ids=[keep.id], documents=[text], embeddings=vec,
                                           metadatas=[self._meta(user, character, slot, source, keep.created, now)])
                    if extra:  # an older duplicate slot (should not happen): keep one
                        self.collection.delete(ids=[m.id for m in extra])
                    return Decision("UPDATE", keep.id, old_text=keep.text, text=text)
            elif negated:
                return Decision("NOOP", text=text)
            vec = self.embedder.embed([text])
            similar = self._nearest(vec, user, character, k=3)
            for m in similar:
                if _norm(m.text) == _norm(text) or (not slot and m.score >= DUPLICATE_SIMILARITY):
                    return Decision("NOOP", m.id, old_text=m.text, text=text,
                                    similar=[(s.id, s.score) for s in similar])
            mid = uuid.uuid4().hex[:16]
            self.collection.add(ids=[mid], documents=[text], embeddings=vec,
                                metadatas=[self._meta(user, character, slot or "", source, now, now)])
            return Decision("ADD", mid, text=text, similar=[(s.id, s.score) for s in similar])

    def forget(self, memory_id: str, *, user: str | None = None) -> bool:
        """Delete one memory by id (only the given user's, when ``user`` is set)."""
        with self._lock:
            got = self.collection.get(ids=[memory_id], include=["metadatas"])
            if not got["ids"]:
                return False
            if user is not None and (got["metadatas"][0] or {}).get("user") != user:
                return False
            self.collection.delete(ids=[memory_id])
            return True

    def clear(self, user: str | None = None, character: str | None = None) -> int:
        """Delete every memory of ``user`` (and ``character``); all of them when both are None."""
        with self._lock:
            ids = [m.id for m in self.list(user, character)]
            if ids:
                self.collection.delete(ids=ids)
            return len(ids)

    # -- reading -------------------------------------------------------------------------
    def list(self, user: str | None = None, character: str | None = None) -> list[Memory]:
        """Memories of ``user``/``character`` (None: any), oldest first."""
        return sorted(self._get(_where(user, character)), key=lambda m: (m.created, m.id))

    def search(self, user: str, character: str, query: str, budget_tokens: int = 300, *,
               k: int = 12, count_tokens: Any = None) -> list[Memory]:
        """The memories most relevant to ``query`` that fit ``budget_tokens``.

        Core profile facts (the user's name) come first; then by similarity.
        """
        count = count_tokens or approx_tokens
        if budget_tokens <= 0:
            return []
        vec = self.embedder.embed([query or " "])
        found = self._nearest(vec, user, character, k=k)
        found.sort(key=lambda m: (m.slot not in CORE_SLOTS, -m.score))
        out, used = [], 0
        for m in found:
            cost = count(m.text) + 2  # "- " and the newline
            if used + cost > budget_tokens:
                continue
            out.append(m)
            used += cost
        return out

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _meta(user: str, character: str, slot: str, source: str, created: float, updated: float) -> dict:
        return {"user": user, "character": character, "slot": slot or "", "source": source or "",
                "created": created, "updated": updated}

    @staticmethod
    def _memory(mid: str, doc: str, meta: dict | None, score: float = 0.0) -> Memory:
        meta = meta or {}
        return Memory(id=mid, user=str(meta.get("user", "")), character=str(meta.get("character", "")),
                      text=doc or "", slot=str(meta.get("slot", "")), source=str(meta.get("source", "")),
                      created=float(meta.get("created", 0.0)), updated=float(meta.get("updated", 0.0)),
                      score=score)

    def _get(self, where: dict | None) -> list[Memory]:
        got = self.collection.get(where=where, include=["documents", "metadatas"])
        return [self._memory(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])]

    def _nearest(self, vec: Any, user: str, character: str, *, k: int) -> list[Memory]:
        where = _where(user, character)
        n = self.collection.count()
        if n == 0:
            return []
        res = self.collection.query(query_embeddings=vec, n_results=min(k, n), where=where,
                                    include=["documents", "metadatas", "distances"])
        out = []
        for i, d, m, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0]):
            out.append(self._memory(i, d, m, score=1.0 - float(dist)))
        return out


_STORES: dict[tuple, MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def get_store(settings: Settings) -> MemoryStore:
    """The cached `MemoryStore` for these settings' Chroma target and embedder."""
    key = (settings.chroma_url or str(settings.chroma_dir.resolve()), settings.embedder)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = MemoryStore(settings)
        return store


def remember(store: MemoryStore, user: str, characters: list[str], text: str, source: str = "", *,
             backend: Any = None, max_tokens: int = 48) -> list[Decision]:
    """Extract facts from a user's message and store them for each character (a worker job).

    With ``backend``, the LLM pass runs under `generation_lock` so it never overlaps a
    turn's generation on the same model.
    """
    from .extract import extract_llm, extract_rules
    from .worker import generation_lock

    facts = extract_rules(text)
    if backend is not None and text.strip():
        with generation_lock(backend):
            llm_facts = extract_llm(backend, text, max_tokens=max_tokens)
        facts += [f for f in llm_facts
                  if not any(r.value and r.value.lower() in f.text.lower() for r in facts)]
    decisions = []
    for character in characters:
        for f in facts:
            decisions.append(store.add(user, character, f.text, source, slot=f.slot,
                                       negated=f.negated, value=f.value))
    return decisions
