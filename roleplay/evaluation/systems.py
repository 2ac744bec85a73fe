"""Systems under test: engine configurations (backend + model + engine options + sampling).

A system is data (`SystemSpec`), turned into a live `Engine` by a `SystemPool` that shares
one backend per (backend, model): the default comparison — full engine against the same
model with a plain persona prompt — loads the model once and differs only in options.

Presets name the common ablations so that ``--candidate engine --baseline plain`` needs no
config file: ``engine`` (everything on), ``plain`` (plain persona prompt), ``no-retrieval``,
``no-stage`` (no stage directions), ``instruct`` (stage note as an instruction instead of
a prefill).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Settings
from ..errors import ConfigError, invalid

PRESETS: dict[str, dict[str, Any]] = {
    "engine": {},
    "plain": {"plain": True},
    "no-retrieval": {"retrieval": False, "lorebook": False},
    "no-stage": {"stage_mode": "off"},
    "instruct": {"stage_mode": "instruct"},
}


class SystemSpec(BaseModel):
    """One engine configuration. ``backend``/``model`` None mean the run's defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@:+-]+$")
    backend: str | None = None
    model: str | None = None
    #: `EngineOptions` fields (retrieval, lorebook, stage_mode, template_dir, plain, story_k).
    options: dict[str, Any] = Field(default_factory=dict)
    #: `SamplingParams` overrides for this system's replies (max_tokens, temperature…).
    params: dict[str, Any] = Field(default_factory=dict)


def resolve_system(spec: str | dict | SystemSpec) -> SystemSpec:
    """A `SystemSpec` from a preset name (``plain``, ``plain@MODEL``), a mapping or a spec."""
    if isinstance(spec, SystemSpec):
        return spec
    if isinstance(spec, str):
        preset, _, model = spec.partition("@")
        if preset not in PRESETS:
            raise ConfigError(f"unknown system {spec!r}: use a preset ({', '.join(PRESETS)}), "
                              "optionally with @MODEL, or define it under `systems:` in a run config")
        return SystemSpec(name=spec, model=model or None, options=dict(PRESETS[preset]))
    if isinstance(spec, dict):
        data = dict(spec)
        preset = data.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"system {data.get('name', preset)!r}: unknown preset {preset!r}")
            data["options"] = {**PRESETS[preset], **data.get("options", {})}
            data.setdefault("name", preset)
        try:
            return SystemSpec.model_validate(data)
        except ValidationError as exc:
            raise invalid(exc, f"system {data.get('name', '?')!r}: ") from None
    raise ConfigError(f"a system is a preset name or a mapping, got {type(spec).__name__}")


class SystemPool:
    """Live engines and backends for a run, created lazily and shared where possible."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: dict[tuple[str, str | None], Any] = {}

    def settings_for(self, backend: str | None, model: str | None) -> Settings:
        return self.settings.model_copy(update={"backend": backend or self.settings.backend,
                                                "model": model if model is not None else self.settings.model})

    def backend(self, backend: str | None = None, model: str | None = None):
        """The backend for ``(backend, model)`` (`get_backend` caches it per process)."""
        from ..backends import get_backend

        return get_backend(self.settings_for(backend, model))

    def engine(self, spec: SystemSpec):
        """The `Engine` serving ``spec`` (one per backend/model; options go per request)."""
        s = self.settings_for(spec.backend, spec.model)
        key = (s.backend, s.model)
        if key not in self._engines:
            from ..engine import Engine

            self._engines[key] = Engine(s, backend=self.backend(spec.backend, spec.model))
        return self._engines[key]

    def options(self, spec: SystemSpec):
        """The `EngineOptions` of ``spec`` (validated; a typo names the system and field)."""
        from ..engine import EngineOptions

        try:
            return EngineOptions(**spec.options)
        except ValidationError as exc:
            raise invalid(exc, f"system {spec.name!r}: options.") from None
