"""The llamacpp backend (being written)."""
from __future__ import annotations

from ..errors import BackendError
from .base import Backend


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self, settings) -> None:
        raise BackendError("the llamacpp backend is not available yet")

    def stream(self, messages, params):
        raise BackendError("the llamacpp backend is not available yet")
