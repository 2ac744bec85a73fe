"""Long-term memory: user facts and story events, with their history, recalled per turn.

``from roleplay.memory import MemoryStore, get_store, recall, remember`` — chromadb and the
embedder load only when a store is opened. Modules: `clauses` (what may state a fact),
`rules_en` / `rules_zh` (patterns), `extract` (rules + the constrained model pass),
`store` (Chroma, history with valid_from/valid_to), `recall` (what goes in a prompt),
`summary` (the rolling story summary), `worker` (the background queue), `fact` (the
`Fact` record), `scoring` (the labelled sets and the long-horizon script, scored).
"""
from __future__ import annotations

from .extract import extract, extract_rules, parse_llm_json
from .fact import Fact
from .recall import recall
from .store import Decision, Memory, MemoryStore, default_user, get_store, remember
from .worker import Worker, get_worker

__all__ = ["Decision", "Fact", "Memory", "MemoryStore", "Worker", "default_user", "extract",
           "extract_rules", "get_store", "get_worker", "parse_llm_json", "recall", "remember"]
