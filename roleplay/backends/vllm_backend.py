"""The vllm backend (being written)."""
from __future__ import annotations

from ..errors import BackendError
from .base import Backend


class VllmBackend(Backend):
    name = "vllm"

    def __init__(self, settings) -> None:
        raise BackendError("the vllm backend is not available yet")

    def stream(self, messages, params):
        raise BackendError("the vllm backend is not available yet")
