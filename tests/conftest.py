"""Shared fixtures: an isolated ROLEPLAY_HOME per test, one real model per test run.

The converted model cache lives in the repository's ``.cache/`` (git-ignored) so the
GGUF → safetensors conversion happens once per checkout, not once per test.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("ROLEPLAY_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(autouse=True)
def roleplay_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty ROLEPLAY_HOME (bundled characters stay visible)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ROLEPLAY_HOME", str(home))
    monkeypatch.delenv("ROLEPLAY_CHARACTERS", raising=False)
    monkeypatch.delenv("ROLEPLAY_CHROMA_URL", raising=False)
    return home


@pytest.fixture
def settings(roleplay_home):
    from roleplay.config import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def backend():
    """The real default backend: SmolLM2-135M-Instruct (on a CPU machine: llama.cpp, `auto`)."""
    from roleplay.backends import get_backend
    from roleplay.config import Settings

    return get_backend(Settings.from_env())


@pytest.fixture(scope="session")
def transformers_backend():
    """The transformers backend on the same SmolLM2 model (its scheduler, caches, kernels)."""
    from roleplay.backends import get_backend
    from roleplay.config import Settings

    return get_backend(Settings.from_env(backend="transformers"))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and reports (CI prints this path)."""
    d = Path(os.environ.get("ROLEPLAY_TEST_ARTIFACTS") or REPO / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d
