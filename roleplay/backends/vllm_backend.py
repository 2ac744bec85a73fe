"""The vllm backend: vLLM's engine in process, for CUDA machines (``pip install 'roleplay[vllm]'``).

One ``AsyncLLM`` engine (vLLM 0.32's V1 engine) runs on a private asyncio loop in a
background thread. Each `stream` call submits one request with ``RequestOutputKind.DELTA``
and yields its deltas; concurrent calls (the API, the web UI, `generate_batch`'s threads)
are batched by vLLM's own scheduler, with no lock of ours (``max_tokens`` always set:
vLLM's default is 16). Priorities map to vLLM's ``priority`` where the engine runs the
priority scheduling policy; JSON schemas to guided decoding.

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
from ..errors import BackendError, ConfigError, invalid
from .base import Backend, Piece, SamplingParams, TokenLogprob
from .chat import TokenizedPrompts
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
            raise invalid(exc, "ROLEPLAY_VLLM_OPTIONS: ") from None


class VllmBackend(TokenizedPrompts, Backend):
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

    supports_logprobs = True
    #: vLLM schedules (and bounds) concurrent requests itself; `generate_batch` submits this many at once.
    max_concurrency = 256

    def _sampling(self, params: SamplingParams) -> Any:
        from vllm import SamplingParams as VSampling
        from vllm.sampling_params import RequestOutputKind

        extra: dict[str, Any] = {}
        if params.json_schema is not None:
            from vllm.sampling_params import GuidedDecodingParams

            extra["guided_decoding"] = GuidedDecodingParams(json=params.json_schema)
        return VSampling(max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                         top_k=params.top_k or 0, min_p=params.min_p, repetition_penalty=params.repetition_penalty,
                         presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty,
                         logit_bias=dict(params.logit_bias) or None, logprobs=params.logprobs,
                         seed=params.seed, stop=list(params.stop), skip_special_tokens=True,
                         output_kind=RequestOutputKind.DELTA, **extra)

    def _prompt(self, messages: list[dict]) -> Any:
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=self.prompt_ids(messages))

    def _pieces(self, messages: list[dict], params: SamplingParams, *, priority: int) -> Iterator[Piece]:
        import queue

        prompt, sampling = self._prompt(messages), self._sampling(params)
        chunks: queue.Queue = queue.Queue()
        request_id = uuid.uuid4().hex
        end = object()

        async def produce() -> None:
            try:
                async for out in self.engine.generate(prompt, sampling, request_id):
                    if not out.outputs:
                        continue
                    o = out.outputs[0]
                    for lp in (o.logprobs or []) if params.logprobs is not None else []:
                        top = sorted(lp.values(), key=lambda x: -x.logprob)
                        chunks.put(Piece(logprob=TokenLogprob(top[0].decoded_token or "", top[0].logprob,
                                                               [(t.decoded_token or "", t.logprob) for t in top])))
                    chunks.put(Piece(text=o.text))
                    if o.finish_reason:
                        chunks.put(Piece(finish_reason="length" if o.finish_reason == "length" else "stop",
                                         prompt_tokens=len(out.prompt_token_ids or []),
                                         completion_tokens=len(o.token_ids or [])))
            except Exception as exc:  # reported to the consumer
                chunks.put(BackendError(f"vLLM generation failed: {type(exc).__name__}: {exc}"))
            finally:
                chunks.put(end)

        future = asyncio.run_coroutine_threadsafe(produce(), self._loop)
        try:
            while (item := chunks.get()) is not end:
                if isinstance(item, BackendError):
                    raise item
                yield item
        finally:
            if not future.done():  # the consumer left early: stop spending GPU time on it
                self._run(self.engine.abort(request_id))
                future.cancel()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
        self._stop_loop()
