"""Long-term memory in Chroma: current facts, their history, and story events.

Memories live in their own collection of the retriever's Chroma client, embedded with
the same embedder. Each record's metadata: ``user``, ``character`` (a character id, or
``"*"`` for a user fact shared with every character — `Settings.memory_shared_facts`),
``kind`` (``fact`` about the user | ``event`` of this story), ``slot``, ``value``,
``source`` (the session and message it came from), ``valid_from``, ``valid_to`` (0 while
current), ``current``, ``replaced_by``, ``created``, ``updated``.

Deciding what a new fact does (`MemoryStore.add`):

- same *slot* as a current memory, same text → NOOP;
- same slot, other text ("we moved to Hamburg" after "I live in Berlin") → UPDATE: the
  old version is kept as a closed record (``valid_to`` = now, its own source) and the
  current memory keeps its id with the new text, source and ``valid_from``;
- a negated fact ("I don't drink coffee any more") closes the slot's current memory when
  that names the value, and becomes the current text; naming another value → NOOP;
- no slot (model facts, events): a current memory of the same kind at cosine ≥
  `DUPLICATE_SIMILARITY`, or with the same text, is the same fact → NOOP; else ADD.

So a repeated fact never deletes the original, a contradiction never drops both, and an
outdated fact is never shown as current while "what did I use to …?" stays answerable
(`history`, `roleplay memory list --history`, the Memory tab).

Trade-offs: slot matching needs the rules to have named the slot; free facts dedupe by
similarity only. Shared facts are stored once under ``"*"``; clearing a character's
memories clears what is listed for it, shared facts included. Records written before
history existed are upgraded in place when the store opens (they become current facts).
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
#: The ``character`` of a user fact shared across characters.
SHARED = "*"


def default_user() -> str:
    """The memory owner when none is given: ``$ROLEPLAY_USER``, else ``"local"``."""
    return os.environ.get("ROLEPLAY_USER") or "local"


@dataclass
class Memory:
    """One remembered fact or story event (or, with ``valid_to`` set, a past version)."""

    id: str
    user: str
    character: str
    text: str
    slot: str = ""
    source: str = ""
    created: float = 0.0
    updated: float = 0.0
    score: float = 0.0
    kind: str = "fact"
    value: str = ""
    valid_from: float = 0.0
    valid_to: float = 0.0
    replaced_by: str = ""

    @property
    def current(self) -> bool:
        return not self.valid_to

    def validity(self) -> str:
        """When it was true, local time: ``"2026-05-01 10:00 → now"``."""
        def when(seconds: float) -> str:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds)) if seconds else "now"

        return f"{when(self.valid_from)} → {when(self.valid_to)}"

    def to_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "character": self.character, "text": self.text,
                "kind": self.kind, "slot": self.slot, "value": self.value, "source": self.source,
                "valid_from": self.valid_from, "valid_to": self.valid_to or None, "current": self.current,
                "replaced_by": self.replaced_by or None, "created": self.created, "updated": self.updated,
                "score": round(self.score, 4)}


@dataclass
class Decision:
    """What `MemoryStore.add` did: ``action`` ADD|UPDATE|NOOP on memory ``id``."""

    action: str
    id: str | None = None
    old_text: str = ""
    text: str = ""
    similar: list[tuple[str, float]] = field(default_factory=list)
    archived: str | None = None   # the id of the closed old version (UPDATE)


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("。", ".").split()).rstrip(".!")


def _and(*parts: dict | None) -> dict | None:
    parts_ = [p for p in parts if p]
    if not parts_:
        return None
    return parts_[0] if len(parts_) == 1 else {"$and": parts_}


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
        self.shared_facts = bool(getattr(settings, "memory_shared_facts", True))
        self.embedder = embedder or get_embedder(settings.embedder)
        self.client = client or get_client(settings)
        self._lock = threading.RLock()
        try:
            self.collection = self.client.get_or_create_collection(
                f"memories_{self.embedder.tag}",
                embedding_function=embedding_function(settings.embedder),
                configuration={"hnsw": {"space": "cosine"}})
            self._upgrade()
        except Exception as exc:
            raise StoreError(f"cannot open the memory collection in {settings.chroma_dir}: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0]) from None

    # -- scopes ---------------------------------------------------------------------------
    def scope(self, character: str, kind: str = "fact") -> str:
        """Where a memory of ``kind`` told to ``character`` is kept."""
        return SHARED if (kind == "fact" and self.shared_facts) else character

    def _where(self, user: str | None, character: str | None, *, kind: str | None = None,
               slot: str | None = None, current: bool | None = True, exact: str | None = None) -> dict | None:
        """Filter for ``user``'s memories seen by ``character`` (its own and shared ones), or
        kept exactly under ``exact``."""
        chars = None
        if character is not None:
            chars = {"character": character} if character == SHARED else {"character": {"$in": [character, SHARED]}}
        elif exact is not None:
            chars = {"character": exact}
        return _and({"user": user} if user is not None else None, chars,
                    {"kind": kind} if kind else None, {"slot": slot} if slot is not None else None,
                    {"current": current} if current is not None else None)

    # -- writing -------------------------------------------------------------------------
    def add(self, user: str, character: str, text: str, source: str = "", *, slot: str | None = None,
            negated: bool = False, value: str = "", kind: str = "fact", at: float | None = None) -> Decision:
        """Store a fact or event after comparing it with what is known (see module doc)."""
        text = text.strip()
        if not text:
            return Decision("NOOP")
        kind = kind if kind in ("fact", "event") else "fact"
        scope = self.scope(character, kind)
        # subtle: a shared fact is compared with this character's own ones too (written
        # while sharing was off), or an old per-character value would stay current beside it
        mine = character if scope == SHARED else None
        with self._lock:
            now = time.time() if at is None else at
            if slot:
                same = self._get(self._where(user, mine, kind=kind, slot=slot, exact=scope))
                same.sort(key=lambda m: -m.valid_from)
                if same:
                    keep, extra = same[0], same[1:]
                    if _norm(keep.text) == _norm(text):
                        return Decision("NOOP", keep.id, old_text=keep.text, text=text)
                    if negated and value and value.lower() not in keep.text.lower():
                        return Decision("NOOP", keep.id, old_text=keep.text, text=text)
                    archived = self._archive(keep, now)
                    self.collection.update(ids=[keep.id], documents=[text], metadatas=[self._meta(
                        user, keep.character, kind, slot, value, source, created=keep.created, updated=now,
                        valid_from=now)])
                    if extra:  # an older duplicate current memory of the slot (should not happen): close it
                        for m in extra:
                            self._close(m, now, replaced_by=keep.id)
                    return Decision("UPDATE", keep.id, old_text=keep.text, text=text, archived=archived)
            else:
                vec = self.embedder.embed([text])
                similar = self._nearest(vec, self._where(user, mine, kind=kind, exact=scope), k=3)
                for m in similar:
                    if _norm(m.text) == _norm(text) or m.score >= DUPLICATE_SIMILARITY:
                        return Decision("NOOP", m.id, old_text=m.text, text=text,
                                        similar=[(s.id, s.score) for s in similar])
            mid = uuid.uuid4().hex[:16]
            self.collection.add(ids=[mid], documents=[text], metadatas=[self._meta(
                user, scope, kind, slot or "", value, source, created=now, updated=now, valid_from=now)])
            return Decision("ADD", mid, text=text)

    def _archive(self, m: Memory, now: float) -> str:
        """Keep ``m``'s current version as a closed record; returns its new id."""
        aid = uuid.uuid4().hex[:16]
        meta = self._meta(m.user, m.character, m.kind, m.slot, m.value, m.source, created=m.created,
                          updated=now, valid_from=m.valid_from or m.created, valid_to=now, replaced_by=m.id)
        self.collection.add(ids=[aid], documents=[m.text], metadatas=[meta])
        return aid

    def _close(self, m: Memory, now: float, *, replaced_by: str = "") -> None:
        meta = self._meta(m.user, m.character, m.kind, m.slot, m.value, m.source, created=m.created,
                          updated=now, valid_from=m.valid_from or m.created, valid_to=now, replaced_by=replaced_by)
        self.collection.update(ids=[m.id], metadatas=[meta])

    def forget(self, memory_id: str, *, user: str | None = None) -> bool:
        """Delete one memory (and, for a current one, its past versions) by id."""
        with self._lock:
            got = self.collection.get(ids=[memory_id], include=["metadatas"])
            if not got["ids"]:
                return False
            if user is not None and (got["metadatas"][0] or {}).get("user") != user:
                return False
            past = self.collection.get(where={"replaced_by": memory_id}, include=[])["ids"]
            self.collection.delete(ids=[memory_id, *past])
            return True

    def clear(self, user: str | None = None, character: str | None = None) -> int:
        """Delete what `list` shows for ``user``/``character`` (history too); returns how many current ones."""
        with self._lock:
            mine = self._get(self._where(user, character, current=None))
            if mine:
                self.collection.delete(ids=[m.id for m in mine])
            return sum(m.current for m in mine)

    # -- reading -------------------------------------------------------------------------
    def list(self, user: str | None = None, character: str | None = None, *, history: bool = False,
             kind: str | None = None) -> list[Memory]:
        """Current memories of ``user``/``character`` (None: any; shared facts included), oldest first.

        ``history=True`` adds the past versions (``valid_to`` set).
        """
        found = self._get(self._where(user, character, kind=kind, current=None if history else True))
        return sorted(found, key=lambda m: (m.created, m.valid_from, m.id))

    def history(self, user: str, character: str | None = None, *, slot: str | None = None) -> list[Memory]:
        """Every version of ``user``'s facts (of ``slot``), by slot, oldest version first."""
        found = self._get(self._where(user, character, slot=slot, current=None))
        return sorted(found, key=lambda m: (m.slot or "~", m.valid_from, m.id))

    def search(self, user: str, character: str, query: str, budget_tokens: int = 300, *,
               k: int = 12, count_tokens: Any = None) -> list[Memory]:
        """The current memories most relevant to ``query`` that fit ``budget_tokens``.

        Core profile facts (the user's name) come first; then by similarity.
        """
        count = count_tokens or approx_tokens
        if budget_tokens <= 0:
            return []
        found = self.nearest(user, character, [query or " "], k=k)
        found.sort(key=lambda m: (m.slot not in CORE_SLOTS, -m.score))
        return fit_budget(found, budget_tokens, count)

    def nearest(self, user: str, character: str, queries: list[str], *, k: int = 24,
                current: bool | None = True) -> list[Memory]:
        """The ``k`` memories nearest each query (best score per memory)."""
        vec = self.embedder.embed(queries)
        best: dict[str, Memory] = {}
        for row in range(len(queries)):
            for m in self._nearest(vec[row:row + 1], self._where(user, character, current=current), k=k):
                if m.id not in best or m.score > best[m.id].score:
                    best[m.id] = m
        return list(best.values())

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _meta(user: str, character: str, kind: str, slot: str | None, value: str, source: str, *,
              created: float, updated: float, valid_from: float, valid_to: float = 0.0,
              replaced_by: str = "") -> dict:
        return {"user": user, "character": character, "kind": kind, "slot": slot or "", "value": value or "",
                "source": source or "", "created": created, "updated": updated, "valid_from": valid_from,
                "valid_to": valid_to, "current": not valid_to, "replaced_by": replaced_by}

    @staticmethod
    def _memory(mid: str, doc: str, meta: dict | None, score: float = 0.0) -> Memory:
        meta = meta or {}
        created = float(meta.get("created", 0.0))
        return Memory(id=mid, user=str(meta.get("user", "")), character=str(meta.get("character", "")),
                      text=doc or "", slot=str(meta.get("slot", "")), source=str(meta.get("source", "")),
                      created=created, updated=float(meta.get("updated", 0.0)), score=score,
                      kind=str(meta.get("kind", "fact")), value=str(meta.get("value", "")),
                      valid_from=float(meta.get("valid_from", created)), valid_to=float(meta.get("valid_to", 0.0)),
                      replaced_by=str(meta.get("replaced_by", "")))

    def _get(self, where: dict | None) -> list[Memory]:
        got = self.collection.get(where=where, include=["documents", "metadatas"])
        return [self._memory(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])]

    def _nearest(self, vec: Any, where: dict | None, *, k: int) -> list[Memory]:
        if self.collection.count() == 0:
            return []
        # subtle: n_results above the number of matching records is fine for Chroma's
        # filtered query, but not above the collection size.
        res = self.collection.query(query_embeddings=vec, n_results=min(k, self.collection.count()), where=where,
                                    include=["documents", "metadatas", "distances"])
        return [self._memory(i, d, m, score=1.0 - float(dist))
                for i, d, m, dist in zip(res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0])]

    def _upgrade(self) -> None:
        """Give records written before history existed the fields `_where` filters on."""
        got = self.collection.get(include=["metadatas"])
        old = [(i, m or {}) for i, m in zip(got["ids"], got["metadatas"]) if "current" not in (m or {})]
        if old:
            self.collection.update(ids=[i for i, _ in old], metadatas=[self._meta(
                str(m.get("user", "")), str(m.get("character", "")), "fact", str(m.get("slot", "")), "",
                str(m.get("source", "")), created=float(m.get("created", 0.0)), updated=float(m.get("updated", 0.0)),
                valid_from=float(m.get("created", 0.0))) for _, m in old])


_STORES: dict[tuple, MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def fit_budget(memories: list[Memory], budget_tokens: int, count: Any) -> list[Memory]:
    """The memories, in order, that fit ``budget_tokens`` as prompt lines (a longer one is
    skipped and a shorter one after it may still fit)."""
    out, used = [], 0
    for m in memories:
        cost = count(m.text) + 2  # "- " and the newline
        if used + cost > budget_tokens:
            continue
        out.append(m)
        used += cost
    return out


def get_store(settings: Settings) -> MemoryStore:
    """The cached `MemoryStore` for these settings' Chroma target, embedder and sharing."""
    key = (settings.chroma_url or str(settings.chroma_dir.resolve()), settings.embedder,
           bool(getattr(settings, "memory_shared_facts", True)))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = MemoryStore(settings)
        return store


def remember(store: MemoryStore, user: str, characters: list[str], text: str, source: str = "", *,
             backend: Any = None, reply: str = "", at: float | None = None) -> list[Decision]:
    """Extract facts and events from a turn and store them (a worker job).

    ``text`` is the user's message (user facts and their promises); ``reply`` the
    character's reply (its promises, stored as events). With ``backend`` the model pass
    runs too, at background priority (the backend serves a user's reply first).
    """
    from .extract import extract_llm, extract_rules, merge

    facts = extract_rules(text) if text else []
    if backend is not None and text and text.strip():
        facts = merge(facts, extract_llm(backend, text))
    said = extract_rules(reply, speaker="character") if reply else []
    decisions = []
    for i, character in enumerate(characters):
        for f in facts + said:
            if i and f.kind == "fact" and store.shared_facts:
                continue  # stored once, shared by every character
            decisions.append(store.add(user, character, f.text, source, slot=f.slot, negated=f.negated,
                                       value=f.value, kind=f.kind, at=at))
    return decisions
