"""Which backends exist, and one loaded backend per (backend, model, device) per process.

One registry dict maps a name to its class; the classes import their heavy libraries
(torch, vllm, openai, llama_cpp) only in their constructors, so importing this module is
cheap. `get_backend` caches instances because loading a model is the slow part of every
entry point (CLI, server, web UI, tests); the openai backend is also keyed by its server
URL, since two servers are two different backends.
"""
from __future__ import annotations

import threading

from ..config import Settings
from ..errors import ConfigError
from .base import Backend
from .llamacpp_backend import LlamaCppBackend
from .openai_backend import OpenAIBackend
from .transformers_backend import TransformersBackend
from .vllm_backend import VllmBackend

BACKENDS: dict[str, type[Backend]] = {
    "transformers": TransformersBackend,
    "vllm": VllmBackend,
    "openai": OpenAIBackend,
    "llamacpp": LlamaCppBackend,
}

_cache: dict[tuple, Backend] = {}
_lock = threading.Lock()


def get_backend(settings: Settings) -> Backend:
    """The backend that ``settings`` names, loaded once per process.

    Raises:
        ConfigError: unknown backend name (the message lists the valid ones).
        BackendError: the backend or its model cannot be loaded.
    """
    cls = BACKENDS.get(settings.backend)
    if cls is None:
        raise ConfigError(f"setting backend: unknown backend {settings.backend!r}; "
                          f"choose one of {', '.join(BACKENDS)}")
    key: tuple = (settings.backend, settings.model, settings.device)
    if settings.backend == "openai":
        key += (settings.openai_base_url,)
    with _lock:  # subtle: held while loading, so two threads never load the same model twice
        backend = _cache.get(key)
        if backend is None:
            backend = _cache[key] = cls(settings)
        return backend


def clear_backends() -> None:
    """Forget (and close) the cached backends, e.g. between benchmark configurations."""
    with _lock:
        for backend in _cache.values():
            backend.close()
        _cache.clear()
