"""The vllm backend: vLLM's engine in process, for CUDA machines (``pip install 'roleplay[vllm]'``).

One ``AsyncLLM`` engine (vLLM 0.32's V1 engine) runs on a private asyncio loop in a
background thread. `stream` submits one request with ``RequestOutputKind.DELTA`` and
yields its deltas; `generate_batch` submits all requests at once and vLLM's continuous
batching runs them together (``max_tokens`` always set: vLLM's default is 16).

Trade-offs:
- One engine for both paths. The offline ``LLM`` class would be the classic batch API,
  but a second engine would load the weights and reserve KV memory twice on the GPU;
  concurrent requests on the async engine are batched just the same.
- Prompts are rendered and tokenised here with the model's Hugging Face tokenizer
  (`chat.encode_chat`) and sent as token ids (``TokensPrompt``), so special-token strings in
  message text stay text exactly as in the transformers backend, and the stable prefix of
  our prompts hits vLLM's prefix cache (``enable_prefix_caching=True``).
- Options that `Settings` does not hold (parallelism, memory) come from the
  ``ROLEPLAY_VLLM_OPTIONS`` environment variable as JSON, validated by `VllmOptions`, e.g.
  ``{"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8}``.
- vLLM runs on CUDA only; it is imported lazily, and a missing install is one clear error.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Settings
from ..errors import BackendError, ConfigError
from .base import Backend, SamplingParams, StopCutter, cut_at_stop
from .chat import encode_chat
from .gguf import DEFAULT_MODEL_NAME, resolve_model


class VllmOptions(BaseModel):
    """Engine options (``ROLEPLAY_VLLM_OPTIONS`` as JSON); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, ge=256)
    dtype: str = "auto"
    enable_prefix_caching: bool = True

    @classmethod
    def from_env(cls) -> "VllmOptions":
        raw = os.environ.get("ROLEPLAY_VLLM_OPTIONS") or "{}"
        try:
            return cls(**json.loads(raw))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"ROLEPLAY_VLLM_OPTIONS: not a JSON object ({exc})") from None
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"ROLEPLAY_VLLM_OPTIONS: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class VllmBackend(Backend):
    """vLLM on CUDA; see the module docstring."""

    name = "vllm"

    def __init__(self, settings: Settings, *, options: VllmOptions | None = None) -> None:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise BackendError(f"the vllm backend needs vLLM on a CUDA machine: pip install 'roleplay[vllm]' "
                               f"({exc})") from None
        from transformers import AutoTokenizer

        options = options or VllmOptions.from_env()
        folder = resolve_model(settings.model, models_dir=settings.models_dir)
        self.model_name = DEFAULT_MODEL_NAME if settings.model is None else str(settings.model)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        args = AsyncEngineArgs(model=str(folder), tokenizer=str(folder), **options.model_dump(exclude_none=True))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="roleplay-vllm", daemon=True)
        self._thread.start()

        async def start() -> Any:
            return AsyncLLM.from_engine_args(args)

        try:
            self.engine = self._run(start())
        except Exception as exc:
            self._stop_loop()
            raise BackendError(f"vLLM could not start {self.model_name}: {type(exc).__name__}: {exc}") from None

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _sampling(self, params: SamplingParams, *, delta: bool) -> Any:
        from vllm import SamplingParams as VSampling
        from vllm.sampling_params import RequestOutputKind

        return VSampling(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                         top_k=params.top_k or 0, min_p=params.min_p, repetition_penalty=params.repetition_penalty,
                         seed=params.seed, stop=list(params.stop), skip_special_tokens=True,
                         output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY)

    def _prompt(self, messages: list[dict]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=encode_chat(self.tokenizer, messages).ids)

    def render(self, messages: list[dict]) -> str:
        return encode_chat(self.tokenizer, messages).text

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if text else 0

    def stream(self, messages: list[dict], params: SamplingParams) -> Iterator[str]:
        prompt, sampling = self._prompt(messages), self._sampling(params, delta=True)
        return self._stream(prompt, sampling, params.stop)

    def _stream(self, prompt: Any, sampling: Any, stop: list[str]) -> Iterator[str]:
        import queue

        chunks: queue.Queue = queue.Queue()
        request_id = uuid.uuid4().hex
        end = object()

        async def produce() -> None:
            try:
                async for out in self.engine.generate(prompt, sampling, request_id):
                    if out.outputs and out.outputs[0].text:
                        chunks.put(out.outputs[0].text)
            except Exception as exc:  # reported to the consumer
                chunks.put(BackendError(f"vLLM generation failed: {type(exc).__name__}: {exc}"))
            finally:
                chunks.put(end)

        future = asyncio.run_coroutine_threadsafe(produce(), self._loop)
        cutter = StopCutter(stop)  # vLLM stops on them too; this keeps the cut identical everywhere
        try:
            while (item := chunks.get()) is not end:
                if isinstance(item, BackendError):
                    raise item
                out = cutter.feed(item)
                if out:
                    yield out
                if cutter.done:
                    break
            tail = cutter.flush()
            if tail:
                yield tail
        finally:
            if not future.done():  # the consumer left early: stop spending GPU time on it
                self._run(self.engine.abort(request_id))
                future.cancel()

    def generate_batch(self, batch: list[list[dict]], params: SamplingParams) -> list[str]:
        prompts = [self._prompt(messages) for messages in batch]
        sampling = self._sampling(params, delta=False)

        async def one(prompt: Any) -> str:
            text = ""
            async for out in self.engine.generate(prompt, sampling, uuid.uuid4().hex):
                text = out.outputs[0].text if out.outputs else text
            return text

        async def run_all() -> list[str]:
            return list(await asyncio.gather(*(one(p) for p in prompts)))

        try:
            texts = self._run(run_all())
        except Exception as exc:
            raise BackendError(f"vLLM batch generation failed: {type(exc).__name__}: {exc}") from None
        return [cut_at_stop(t, params.stop) for t in texts]

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
        self._stop_loop()
