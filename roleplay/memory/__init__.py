"""Long-term memory per (user, character): extraction, the Chroma store, the worker, summaries.

``from roleplay.memory import MemoryStore, get_store, default_user`` — chromadb and the
embedder load only when a store is opened.
"""
from __future__ import annotations

from .extract import Fact, extract, extract_rules, parse_fact_lines
from .recall import recall
from .store import Decision, Memory, MemoryStore, default_user, get_store, remember
from .worker import Worker, generation_lock, get_worker

__all__ = ["Decision", "Fact", "Memory", "MemoryStore", "Worker", "default_user", "extract",
           "extract_rules", "generation_lock", "get_store", "get_worker", "parse_fact_lines", "recall", "remember"]
