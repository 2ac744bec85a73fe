"""The Chroma client: embedded (``PersistentClient`` under ROLEPLAY_HOME) or a server.

``settings.chroma_url`` (``--chroma-url`` / ``ROLEPLAY_CHROMA_URL``) selects an
``HttpClient`` (``chroma run``); otherwise the store lives in ``settings.chroma_dir``.
The rest of the code is the same for both. Trade-offs: clients are cached per target
(Chroma itself shares one system per path, and opening one costs ~100 ms); every
failure to open becomes one `StoreError` that says how to fix it. A corrupted embedded
store is never repaired in place: `rebuild_client` moves it aside (kept for inspection)
and starts an empty one, which `roleplay index` then fills.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..config import Settings
from ..errors import StoreError

_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()

REBUILD_HINT = "run `roleplay index` to rebuild it"


def _target(settings: Settings) -> str:
    return settings.chroma_url or f"file:{Path(settings.chroma_dir).resolve()}"


def _chroma_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    # No telemetry and no network from an embedded store; allow_reset is off (never
    # wipe data through the API).
    return ChromaSettings(anonymized_telemetry=False)


def _http_client(url: str) -> Any:
    import chromadb

    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise StoreError(f"invalid Chroma URL {url!r}: use http://HOST:PORT (ROLEPLAY_CHROMA_URL / --chroma-url)")
    ssl = parsed.scheme == "https"
    port = parsed.port or (443 if ssl else 8000)
    try:
        client = chromadb.HttpClient(host=parsed.hostname, port=port, ssl=ssl, settings=_chroma_settings())
        client.heartbeat()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"cannot reach the Chroma server at {url} ({reason}); start it with "
                         "`chroma run --path DIR --port PORT`, or unset ROLEPLAY_CHROMA_URL to use the "
                         "embedded store") from None
    return client


def _persistent_client(path: Path) -> Any:
    import chromadb

    try:
        path.mkdir(parents=True, exist_ok=True)
        client = chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
        client.heartbeat()
        client.list_collections(limit=1)  # touches the sqlite catalogue: fails if corrupted
    except StoreError:
        raise
    except Exception as exc:
        raise corrupted_error(path, exc) from None
    return client


def corrupted_error(path: Path | str, exc: BaseException | None = None) -> StoreError:
    """The one error for an unreadable embedded store."""
    reason = ""
    if exc is not None:
        reason = f" ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return StoreError(f"the retrieval index at {path} is missing or corrupted{reason}; {REBUILD_HINT}")


def get_client(settings: Settings) -> Any:
    """The cached Chroma client for these settings.

    Raises:
        StoreError: the server is unreachable, or the embedded store cannot be opened.
    """
    from . import embeddings

    embeddings.embedding_function()  # register ours before any collection is opened
    key = _target(settings)
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            if settings.chroma_url:
                client = _http_client(settings.chroma_url)
            else:
                client = _persistent_client(Path(settings.chroma_dir))
            _CLIENTS[key] = client
        return client


def forget_client(settings: Settings) -> None:
    """Drop the cached client (and Chroma's shared system) for these settings."""
    key = _target(settings)
    with _LOCK:
        _CLIENTS.pop(key, None)
    if not settings.chroma_url:
        try:
            from chromadb.api.client import SharedSystemClient

            # subtle: Chroma caches one system per path; a stale one keeps the sqlite
            # handle of a deleted or moved folder, so it must go too.
            SharedSystemClient._identifier_to_system.pop(str(settings.chroma_dir), None)
        except Exception:
            pass


def rebuild_client(settings: Settings) -> tuple[Any, Path | None]:
    """Move an unreadable embedded store aside and open a fresh one.

    Returns the new client and where the old folder went (None when there was none).
    Only the embedded store is rebuilt; a server's data is never touched.
    """
    if settings.chroma_url:
        return get_client(settings), None
    forget_client(settings)
    path = Path(settings.chroma_dir)
    moved: Path | None = None
    if path.exists():
        moved = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            path.rename(moved)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            moved = None
    return get_client(settings), moved
