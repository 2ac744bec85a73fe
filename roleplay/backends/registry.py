"""Which backends exist, which one ``auto`` picks, and one loaded backend per process.

One registry dict maps a name to its class; the classes import their heavy libraries
(torch, vllm, openai, xllamacpp) only in their constructors, so importing this module is
cheap. `get_backend` caches instances because loading a model is the slow part of every
entry point (CLI, server, web UI, evaluation, memory worker, tests); the openai backend is
also keyed by its server URL, since two servers are two different backends.

``auto`` (the default) resolves before the cache lookup, so ``auto`` and the name it
picks share one loaded model: vLLM when it is installed and CUDA is present; the
transformers backend for Hugging Face models and on CUDA; llama.cpp for GGUF files on
the CPU (about nine times faster there). Trade-off: finding CUDA means importing torch,
so `pick_backend` only does that where an NVIDIA device node or ``nvidia-smi`` exists.
"""
from __future__ import annotations

import shutil
import threading
from importlib.util import find_spec
from pathlib import Path

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

AUTO = "auto"

_cache: dict[tuple, Backend] = {}
_lock = threading.Lock()


def get_backend(settings: Settings) -> Backend:
    """The backend that ``settings`` names, loaded once per process.

    Raises:
        ConfigError: unknown backend name (the message lists the valid ones).
        BackendError: the backend or its model cannot be loaded.
    """
    name = pick_backend(settings)
    cls = BACKENDS.get(name)
    if cls is None:
        raise ConfigError(f"setting backend: unknown backend {settings.backend!r}; "
                          f"choose one of {AUTO}, {', '.join(BACKENDS)}")
    if name != settings.backend:
        settings = settings.model_copy(update={"backend": name})
    key: tuple = (name, settings.model, settings.device)
    if name == "openai":
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


def pick_backend(settings: Settings) -> str:
    """The backend name for ``settings``: itself, or what ``auto`` means on this machine.

    >>> pick_backend(Settings(backend="openai"))
    'openai'
    """
    if settings.backend != AUTO:
        return settings.backend
    cuda = has_cuda(settings.device)
    if cuda and find_spec("vllm") is not None:
        return "vllm"
    model = settings.model
    gguf = model is None or Path(model).expanduser().suffix.lower() == ".gguf"
    return "llamacpp" if gguf and not cuda else "transformers"


def has_cuda(device: str = "auto") -> bool:
    """Whether generation would run on a CUDA device (``device`` "cpu"/"cuda…" decide it)."""
    if device == "cpu" or device.startswith("cuda"):
        return device != "cpu"
    if not (Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi")) or find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())
