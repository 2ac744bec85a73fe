"""Incremental indexing of one character's stories into its Chroma collection.

One collection per character and embedder (``rp-<id>-<embedder tag>``): queries can never
mix characters, and switching the embedder never mixes vector spaces. Each item's id is
the hash of its text, so "what changed" is a set difference of ids:
1. the card fingerprint (stories, labels, embedder, format version) is stored in the
   collection metadata; when it matches, indexing is one metadata read (no-op);
2. otherwise only new items are embedded (batches, optional tqdm bar on stderr) and
   added, changed metadata (labels, duplicate lists) is updated, removed items deleted;
3. the fingerprint is written last.
Long stories also get line windows (`scenes.line_windows`) in a second collection,
``rp-<id>-<embedder tag>-w``, each window's metadata naming its story item (``parent``);
windows follow their story (added with it, deleted with it) and are synced before the
fingerprint is written.
Crash safety: new items are written before old ones are deleted and the fingerprint is
updated last, so an interrupted run leaves the old index usable and the next run
finishes the job (already-added items are not embedded again).
"""
from __future__ import annotations

import time
from typing import Any

from ..cards.schema import Character
from .embeddings import Embedder, embedder_tag
from .scenes import (WINDOW_LINES, WINDOW_MIN_LINES, WINDOW_STEP, Item, build_items, content_hash, fingerprint,
                     line_windows)

#: 2: line windows of long stories in the ``-w`` collection.
INDEX_VERSION = 2
BATCH = 128
ADD_BATCH = 1024


def collection_name(card_id: str, embedder: Embedder) -> str:
    """Chroma collection name for a character (ids are already ``[a-z0-9_-]``)."""
    return f"rp-{card_id}-{embedder_tag(embedder)}"


def windows_name(card_id: str, embedder: Embedder) -> str:
    """Name of the collection holding the line windows of a character's long stories."""
    return f"{collection_name(card_id, embedder)}-w"


def second_name(card_id: str, embedder: Embedder) -> str:
    """Name of the collection holding the second embedder's vectors (``e5`` method)."""
    return f"{collection_name(card_id, embedder)}-e5"


def card_fingerprint(card: Character, embedder: Embedder) -> str:
    # The window shape is part of the index: changing it re-syncs the windows.
    return fingerprint(card.all_stories(), embedder=embedder.name,
                       version=f"{INDEX_VERSION}.{WINDOW_LINES}.{WINDOW_STEP}.{WINDOW_MIN_LINES}")


def open_collection(client: Any, name: str, *, embedding_function: Any, create: bool,
                    metadata: dict | None = None) -> Any | None:
    """The collection, or None when it does not exist and ``create`` is false."""
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=embedding_function)
    except (NotFoundError, ValueError) as exc:
        # chromadb raises NotFoundError (1.x) or ValueError (older) for a missing name.
        if isinstance(exc, ValueError) and "does not exist" not in str(exc):
            raise
    if not create:
        return None
    return client.get_or_create_collection(
        name, embedding_function=embedding_function, metadata=metadata or {},
        configuration={"hnsw": {"space": "cosine"}})


def window_items(items: list[Item]) -> list[Item]:
    """The line windows of ``items`` as index items (``source`` = the parent item's id)."""
    out: list[Item] = []
    for it in items:
        for k, text in enumerate(line_windows(it.text)):
            out.append(Item(id=content_hash(f"{it.id}:{k}:{text}"), text=text, source=it.id, chunk=k))
    return out


def sync_collection(collection: Any, card: Character, embedder: Embedder, *, fp: str,
                    progress: bool = False, windows: Any | None = None) -> dict:
    """Bring ``collection`` (and ``windows``, the line-window collection) in line with
    ``card``'s stories; returns stats."""
    t0 = time.perf_counter()
    items, duplicates = build_items(card.all_stories())
    wanted = {it.id: it for it in items}
    existing = collection.get(include=["metadatas"])
    have = dict(zip(existing["ids"], existing["metadatas"] or [{}] * len(existing["ids"])))

    new = [it for it in items if it.id not in have]
    stale_meta = [it for it in items if it.id in have and _meta_differs(have[it.id], it.metadata(card.id))]
    removed = [i for i in have if i not in wanted]
    wins = window_items(items) if windows is not None else []
    have_w = set(windows.get(include=[])["ids"]) if windows is not None else set()
    new_w = [w for w in wins if w.id not in have_w]
    removed_w = sorted(have_w - {w.id for w in wins})

    bar = None
    if progress and (new or new_w):
        from tqdm import tqdm

        bar = tqdm(total=len(new) + len(new_w), desc=f"index {card.id}", unit="text", leave=False)
    timer = [0.0]
    try:
        _embed_into(collection, new, embedder, lambda it: it.metadata(card.id), timer, bar)
        if windows is not None:
            _embed_into(windows, new_w, embedder, lambda w: {"parent": w.source, "window": w.chunk}, timer, bar)
    finally:
        if bar is not None:
            bar.close()
    for start in range(0, len(stale_meta), 1000):
        batch = stale_meta[start:start + 1000]
        collection.update(ids=[it.id for it in batch], metadatas=[it.metadata(card.id) for it in batch])
    for start in range(0, len(removed), 1000):
        collection.delete(ids=removed[start:start + 1000])
    for start in range(0, len(removed_w), 1000):
        windows.delete(ids=removed_w[start:start + 1000])
    # Last: only now does the index claim to match this card.
    collection.modify(metadata=collection_metadata(card, embedder, fp=fp, items=len(items)))
    return {"character": card.id, "collection": collection.name, "stories": len(card.all_stories()),
            "items": len(items), "added": len(new), "updated": len(stale_meta), "removed": len(removed),
            "duplicates": duplicates, "split": sum(1 for it in items if it.chunks > 1 and it.chunk == 0),
            "windows": len(wins), "windows_added": len(new_w), "unchanged": False,
            "embed_seconds": round(timer[0], 3), "seconds": round(time.perf_counter() - t0, 3)}


def sync_second(collection: Any, card: Character, embedder: Embedder, *, fp: str,
                progress: bool = False) -> dict:
    """Bring ``collection`` (the second embedder's units) in line with ``card``: one unit
    per line window of a long story and one per short story (the story itself), each
    with its story item's id as ``parent``. A no-op when its fingerprint is ``fp``."""
    if (collection.metadata or {}).get("fingerprint") == fp:
        return {"units": int((collection.metadata or {}).get("items", 0)), "units_added": 0}
    t0 = time.perf_counter()
    items, _dups = build_items(card.all_stories())
    units: list[Item] = []
    for it in items:
        wins = window_items([it])
        units.extend(wins or [Item(id=it.id, text=it.text, source=it.id, chunk=0)])
    have = set(collection.get(include=[])["ids"])
    new = [u for u in units if u.id not in have]
    removed = sorted(have - {u.id for u in units})
    bar = None
    if progress and new:
        from tqdm import tqdm

        bar = tqdm(total=len(new), desc=f"index {card.id} (e5)", unit="text", leave=False)
    timer = [0.0]
    try:
        _embed_into(collection, new, embedder, lambda u: {"parent": u.source, "window": u.chunk}, timer, bar,
                    batch=16)
    finally:
        if bar is not None:
            bar.close()
    for start in range(0, len(removed), 1000):
        collection.delete(ids=removed[start:start + 1000])
    collection.modify(metadata={"character": card.id, "embedder": embedder.name, "fingerprint": fp,
                                "items": len(units)})
    return {"units": len(units), "units_added": len(new), "units_embed_seconds": round(timer[0], 3),
            "units_seconds": round(time.perf_counter() - t0, 3)}


def _embed_into(collection: Any, items: list[Item], embedder: Embedder, metadata: Any,
                timer: list[float], bar: Any, *, batch: int | None = None) -> None:
    """Embed ``items`` in batches and add them to ``collection`` (time inside the embedder
    is added to ``timer[0]``)."""
    pending: list[tuple[Item, Any]] = []

    def flush() -> None:
        if pending:
            collection.add(ids=[it.id for it, _ in pending], embeddings=[v for _, v in pending],
                           documents=[it.text for it, _ in pending],
                           metadatas=[metadata(it) for it, _ in pending])
            pending.clear()

    batch = batch or BATCH  # read at call time (tests shrink it)
    for start in range(0, len(items), batch):
        chunk = items[start:start + batch]
        te = time.perf_counter()
        vectors = embedder.embed([it.text for it in chunk])
        timer[0] += time.perf_counter() - te
        pending.extend(zip(chunk, vectors))
        # Each Chroma add has a large fixed cost (measured: 16 adds of 128 rows took
        # 4.9 s, 2 adds of 1,000 took 2.9 s): embed in small batches for a live
        # progress bar, write in large ones.
        if len(pending) >= ADD_BATCH:
            flush()
        if bar is not None:
            bar.update(len(chunk))
    flush()


def collection_metadata(card: Character, embedder: Embedder, *, fp: str, items: int) -> dict:
    return {"character": card.id, "embedder": embedder.name, "fingerprint": fp,
            "items": items, "version": INDEX_VERSION}


def _meta_differs(old: dict | None, new: dict) -> bool:
    old = old or {}
    return any(old.get(k) != v for k, v in new.items())
