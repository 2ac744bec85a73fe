"""Generation backends: transformers (default), vllm, openai-compatible servers, llama.cpp.

>>> from roleplay.backends import get_backend, SamplingParams   # doctest: +SKIP
>>> backend = get_backend(Settings.from_env())                  # doctest: +SKIP
>>> backend.generate([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=16))  # doctest: +SKIP
"""
from __future__ import annotations

from .base import Backend, SamplingParams
from .registry import BACKENDS, clear_backends, get_backend

__all__ = ["BACKENDS", "Backend", "SamplingParams", "clear_backends", "get_backend"]
