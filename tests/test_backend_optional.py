"""The optional vllm backend (CUDA + the ``vllm`` extra); llama.cpp is tested in test_backend_llamacpp.py.

Where the extra is missing — as on the CI machines — the tests check the one clear error
that names the extra; where it is installed they run it for real.
"""
from __future__ import annotations

from importlib.util import find_spec

import pytest

from roleplay.backends import get_backend
from roleplay.errors import BackendError, ConfigError

HAS_VLLM = find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed; the missing-extra error cannot occur")
def test_missing_vllm_names_the_extra(settings):
    with pytest.raises(BackendError, match=r"pip install 'roleplay\[vllm\]'"):
        get_backend(settings.model_copy(update={"backend": "vllm"}))


def test_vllm_options_are_validated(monkeypatch):
    from roleplay.backends.vllm_backend import VllmOptions

    monkeypatch.setenv("ROLEPLAY_VLLM_OPTIONS", '{"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5}')
    assert VllmOptions.from_env().tensor_parallel_size == 2
    monkeypatch.setenv("ROLEPLAY_VLLM_OPTIONS", '{"tensor_paralel_size": 2}')
    with pytest.raises(ConfigError, match="tensor_paralel_size"):
        VllmOptions.from_env()
    monkeypatch.setenv("ROLEPLAY_VLLM_OPTIONS", "tp=2")
    with pytest.raises(ConfigError, match="JSON"):
        VllmOptions.from_env()
