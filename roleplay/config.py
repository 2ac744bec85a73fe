"""Settings: one validated object, read from ``ROLEPLAY_*`` environment variables.

Defaults are built at call time (never at import), so tests can point ``ROLEPLAY_HOME``
at a temporary folder. Unknown fields are errors (``extra="forbid"``): a typo in a setting
must not be silently ignored.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import invalid

#: The repository's bundled characters (``characters/`` beside the package).
BUNDLED_CHARACTERS = Path(__file__).resolve().parent.parent / "characters"


class Budgets(BaseModel):
    """Token budgets per prompt part (ChatHaruhi's defaults: 1500 stories, 1200 history)."""

    model_config = ConfigDict(extra="forbid")
    stories: int = Field(1500, ge=0)
    lorebook: int = Field(500, ge=0)
    memories: int = Field(300, ge=0)
    history: int = Field(1200, ge=0)
    summary: int = Field(200, ge=0)


class Settings(BaseModel):
    """Where data lives and which backend/model/embedder the engine uses."""

    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default_factory=lambda: Path(os.environ.get("ROLEPLAY_HOME") or "~/.roleplay").expanduser())
    #: Extra card folders (``ROLEPLAY_CHARACTERS``, os.pathsep-separated).
    character_dirs: list[Path] = Field(default_factory=list)
    #: Model cache (converted safetensors folders); defaults to ``home/cache``.
    cache_dir: Path | None = None
    #: Chroma server URL; None means an embedded PersistentClient under ``home/chroma``.
    chroma_url: str | None = None
    backend: str = "auto"
    #: Model name or path; None means the backend's default (SmolLM2-135M-Instruct).
    model: str | None = None
    #: "use" (multilingual USE v3, bundled) or a sentence-transformers model folder.
    embedder: str = "use"
    #: Story retrieval method (docs/retrieval.md): "hybrid" (fast default) or "e5" (adds the
    #: multilingual-e5 embedder: better on long scenes and across languages, ~20x slower to index).
    retrieval: Literal["hybrid", "e5", "weighted", "rrf", "vector", "keyword"] = "hybrid"
    device: str = "auto"
    #: Memory for kept KV caches of recent prompts (transformers backend), in MiB; 0 = off.
    kv_cache_mb: int = Field(1024, ge=0)
    #: llamacpp backend: the shortest run of cached prompt tokens llama.cpp moves to a new
    #: position instead of reading it again, when the prompt dropped tokens before it
    #: (a history trim, a story block leaving); 0 = off (docs/backends.md, "KV shifting").
    kv_shift: int = Field(32, ge=0)
    #: Concurrency limits of the backend (docs/backends.md, "Concurrency"): rows decoded
    #: together, requests waiting before new ones get `BackendBusy` (HTTP 429), prompt +
    #: reply tokens in flight (memory), prompt tokens read per scheduler step.
    max_batch: int = Field(8, ge=1, le=1024)
    max_waiting: int = Field(64, ge=0)
    max_tokens_in_flight: int = Field(65536, ge=256)
    prefill_chunk: int = Field(256, ge=16)
    #: OpenAI-compatible server for the ``openai`` backend.
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    budgets: Budgets = Field(default_factory=Budgets)
    #: Facts about a user are shared by every character (False: each character keeps its own).
    memory_shared_facts: bool = True
    #: API turns with a ``user`` also run the model pass of fact extraction (background);
    #: False keeps to the rules (sessions choose per session: ``SessionSettings.memory_llm``).
    memory_llm: bool = True

    def limits(self):
        """The backend's concurrency limits (`roleplay.backends.scheduler.Limits`)."""
        from .backends.scheduler import Limits

        return Limits(max_batch=self.max_batch, max_waiting=self.max_waiting,
                      max_tokens_in_flight=self.max_tokens_in_flight, prefill_chunk=self.prefill_chunk)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Build settings from ``ROLEPLAY_*`` variables, then apply non-None overrides."""
        env = os.environ
        values: dict = {}
        if env.get("ROLEPLAY_HOME"):
            values["home"] = Path(env["ROLEPLAY_HOME"]).expanduser()
        if env.get("ROLEPLAY_CHARACTERS"):
            values["character_dirs"] = [Path(p).expanduser() for p in env["ROLEPLAY_CHARACTERS"].split(os.pathsep) if p]
        for key, var in [("cache_dir", "ROLEPLAY_CACHE"), ("chroma_url", "ROLEPLAY_CHROMA_URL"),
                         ("backend", "ROLEPLAY_BACKEND"), ("model", "ROLEPLAY_MODEL"),
                         ("embedder", "ROLEPLAY_EMBEDDER"), ("retrieval", "ROLEPLAY_RETRIEVAL"),
                         ("device", "ROLEPLAY_DEVICE"),
                         ("openai_base_url", "ROLEPLAY_OPENAI_BASE_URL"),
                         ("openai_api_key", "ROLEPLAY_OPENAI_API_KEY"),
                         ("kv_cache_mb", "ROLEPLAY_KV_CACHE_MB"), ("kv_shift", "ROLEPLAY_KV_SHIFT"),
                         ("max_batch", "ROLEPLAY_MAX_BATCH"),
                         ("max_waiting", "ROLEPLAY_MAX_WAITING"),
                         ("max_tokens_in_flight", "ROLEPLAY_MAX_TOKENS_IN_FLIGHT"),
                         ("prefill_chunk", "ROLEPLAY_PREFILL_CHUNK"),
                         ("memory_shared_facts", "ROLEPLAY_MEMORY_SHARED_FACTS"),
                         ("memory_llm", "ROLEPLAY_MEMORY_LLM")]:
            if env.get(var):
                values[key] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise invalid(exc, "setting ") from None

    @property
    def models_dir(self) -> Path:
        return (self.cache_dir or self.home / "cache") / "models"

    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma"

    @property
    def sessions_db(self) -> Path:
        return self.home / "sessions.db"

    @property
    def user_characters(self) -> Path:
        return self.home / "characters"

    def card_dirs(self) -> list[Path]:
        """Folders searched for cards, in priority order (first match of an id wins)."""
        dirs = [self.user_characters, *self.character_dirs, BUNDLED_CHARACTERS]
        seen: list[Path] = []
        for d in dirs:
            if d not in seen:
                seen.append(d)
        return seen
