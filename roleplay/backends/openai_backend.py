"""The openai backend: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, …).

Uses the official ``openai`` client with streaming. Settings: ``openai_base_url``
(e.g. ``http://127.0.0.1:8000/v1``), ``openai_api_key`` (optional) and ``model`` (default:
the first model the server lists).

Trade-offs:
- Prefill. OpenAI's protocol has no "continue this assistant message". vLLM (and SGLang)
  accept ``continue_final_message=True, add_generation_prompt=False`` in the request body,
  so we send those, together with ``top_k``/``min_p``/``repetition_penalty``, as extra body
  fields. A server that rejects them (HTTP 400/422, as OpenAI itself does) is asked again
  without them, and this backend stays in plain mode from then on: the prefill message is
  left out and, if the model happens to start with the prefill anyway, that copy is cut.
  Servers that silently ignore the fields start a new turn after the prefill instead.
- Chat-template injection. The server renders and tokenises the text itself, so a
  ``<|im_start|>`` inside a message would become a real special token there. We cannot
  tokenise for it, so we neutralise such spellings first (`base.neutralize_special`: a
  zero-width space after the opening bracket); the model reads nearly the same characters
  and no tokenizer matches them as special tokens.
- Token counts are approximate (`roleplay.tokens.approx_tokens`): the server's tokenizer
  is not available here. ``render`` shows the messages in ChatML, not the server's template.
- Concurrency: any number of threads stream at once; at most ``max_batch`` requests are in
  flight to the server (`base.Admission`, user replies before background work, a full wait
  line raises `BackendBusy`), so a server with continuous batching (vLLM) batches them.
- ``json_schema`` goes as ``response_format`` (a server that rejects it is asked again
  without; the caller validates), ``logprobs``/``top_logprobs``, the penalties and
  ``logit_bias`` as OpenAI fields; the finish reason and token counts come from the
  server (``stream_options.include_usage``).
- A server that is down or unreachable is one `BackendError` naming its URL.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..config import Settings
from ..errors import BackendError, ConfigError
from .base import (Admission, Backend, Piece, SamplingParams, TokenLogprob, check_messages, neutralize_special,
                   split_prefill)


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible server; see the module docstring."""

    name = "openai"

    def __init__(self, settings: Settings, *, timeout: float = 600.0) -> None:
        import openai

        if not settings.openai_base_url:
            raise ConfigError("setting openai_base_url: the openai backend needs a server URL; set "
                              "ROLEPLAY_OPENAI_BASE_URL, e.g. http://127.0.0.1:8000/v1")
        self.base_url = settings.openai_base_url.rstrip("/")
        self._openai = openai
        # subtle: no client-side retries: a down server should fail fast with one clear error.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=settings.openai_api_key or "not-needed",
                                    max_retries=0, timeout=timeout)
        #: False once the server rejected our extension fields (prefill, top_k …).
        self.extensions = True
        self.max_concurrency = settings.max_batch
        self.supports_logprobs = True
        self.admission = Admission(settings.max_batch, max_waiting=settings.max_waiting, reserve_user=1,
                                    name=self.name)
        self.model_name = settings.model or self._first_model()

    def _first_model(self) -> str:
        try:
            models = list(self.client.models.list())
        except self._openai.OpenAIError as exc:
            raise self._error(exc, "listing models") from None
        if not models:
            raise BackendError(f"the server at {self.base_url} lists no models; pass --model NAME")
        return models[0].id

    def _error(self, exc: Exception, doing: str) -> BackendError:
        """One clear error for anything the client raises."""
        openai = self._openai
        if isinstance(exc, openai.APIConnectionError):
            return BackendError(f"cannot reach the OpenAI-compatible server at {self.base_url} while {doing} "
                                f"({type(exc).__name__}); start the server or fix ROLEPLAY_OPENAI_BASE_URL")
        if isinstance(exc, openai.AuthenticationError):
            return BackendError(f"the server at {self.base_url} rejected the API key; set ROLEPLAY_OPENAI_API_KEY")
        if isinstance(exc, openai.NotFoundError):
            return BackendError(f"the server at {self.base_url} has no model {self.__dict__.get('model_name')!r} "
                                f"or no such endpoint ({exc.message})")
        if isinstance(exc, openai.APIStatusError):
            return BackendError(f"the server at {self.base_url} answered HTTP {exc.status_code} while {doing}: "
                                f"{exc.message}")
        return BackendError(f"the server at {self.base_url} failed while {doing}: {exc}")

    # -- generation -------------------------------------------------------------------------
    def _pieces(self, messages: list[dict], params: SamplingParams, *, priority: int) -> Iterator[Piece]:
        safe = [{"role": m["role"], "content": neutralize_special(m["content"])} for m in messages]
        with self.admission.slot(priority):
            yield from self._stream(safe, params, priority)

    def _stream(self, messages: list[dict], params: SamplingParams, priority: int = 0) -> Iterator[Piece]:
        response, prefill_dropped = self._open(messages, params, priority)
        _, prefill = split_prefill(messages)
        # In plain mode the model starts a new turn; if it repeats the prefill, cut that copy:
        # hold the first characters back until they can no longer be the prefill.
        expect = prefill.strip() if prefill_dropped and prefill else ""
        held = ""
        try:
            for piece in self._chunks(response):
                text = piece.text
                if expect and text:
                    held += text
                    if len(held.lstrip()) < len(expect) and expect.startswith(held.lstrip()):
                        continue
                    text, expect = _drop_repeat(held, expect), ""
                piece.text = text
                yield piece
            if expect and held:
                yield Piece(text=_drop_repeat(held, expect))
        finally:
            response.close()

    def _chunks(self, response: Any) -> Iterator[Piece]:
        try:
            for chunk in response:
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    yield Piece(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                text = (choice.delta.content if choice.delta else None) or ""
                lps = getattr(getattr(choice, "logprobs", None), "content", None) or []
                if lps:
                    for i, lp in enumerate(lps):
                        yield Piece(text=text if i == 0 else "", logprob=TokenLogprob(
                            lp.token, lp.logprob, [(t.token, t.logprob) for t in (lp.top_logprobs or [])]))
                elif text:
                    yield Piece(text=text)
                if choice.finish_reason:
                    yield Piece(finish_reason="length" if choice.finish_reason == "length" else "stop")
        except self._openai.OpenAIError as exc:
            raise self._error(exc, "streaming") from None
        except Exception as exc:  # httpx errors when the server dies mid-stream
            raise BackendError(f"the stream from {self.base_url} broke off: {type(exc).__name__}: {exc}") from None

    def _open(self, messages: list[dict], params: SamplingParams, priority: int = 0) -> tuple[Any, bool]:
        """Start a streaming request; ``(response, prefill_dropped)``."""
        head, prefill = split_prefill(messages)
        extra = _extension_fields(params, prefill=prefill is not None, priority=priority) if self.extensions else {}
        if extra:
            try:
                return self._create(messages if prefill is not None else head, params, extra), False
            except (self._openai.BadRequestError, self._openai.UnprocessableEntityError):
                self.extensions = False  # this server speaks plain OpenAI only: ask again
        try:
            return self._create(head, params, {}), prefill is not None
        except self._openai.OpenAIError as exc:
            raise self._error(exc, "requesting a chat completion") from None

    def _create(self, messages: list[dict], params: SamplingParams, extra: dict) -> Any:
        """One streaming request; 400/422 pass through (they trigger the plain fallback)."""
        kwargs: dict[str, Any] = {"model": self.model_name, "messages": messages, "stream": True,
                                  "max_tokens": params.max_tokens, "temperature": params.temperature,
                                  "top_p": params.top_p, "stream_options": {"include_usage": True}}
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = params.stop[:4]  # OpenAI's limit; Generation cuts all of them
        if params.presence_penalty:
            kwargs["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            kwargs["frequency_penalty"] = params.frequency_penalty
        if params.logit_bias:
            kwargs["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
        if params.logprobs is not None:
            kwargs.update(logprobs=True, top_logprobs=params.logprobs)
        if params.json_schema is not None and self.extensions:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "output", "schema": params.json_schema}}
        if extra:
            kwargs["extra_body"] = extra
        try:
            return self.client.chat.completions.create(**kwargs)
        except (self._openai.BadRequestError, self._openai.UnprocessableEntityError):
            raise
        except self._openai.OpenAIError as exc:
            raise self._error(exc, "requesting a chat completion") from None

    def render(self, messages: list[dict]) -> str:
        check_messages(messages)
        return super().render([{"role": m["role"], "content": neutralize_special(m["content"])} for m in messages])

    def close(self) -> None:
        self.client.close()


def _extension_fields(params: SamplingParams, *, prefill: bool, priority: int = 0) -> dict:
    """vLLM's extra request fields for what plain OpenAI cannot express (``priority``: vLLM's
    priority scheduling, and our own server's — background work after users' replies)."""
    extra: dict[str, Any] = {}
    if priority:
        extra["priority"] = priority
    if params.top_k:
        extra["top_k"] = params.top_k
    if params.min_p:
        extra["min_p"] = params.min_p
    if params.repetition_penalty != 1.0:
        extra["repetition_penalty"] = params.repetition_penalty
    if prefill:
        extra.update(continue_final_message=True, add_generation_prompt=False)
    return extra


def _drop_repeat(text: str, prefill: str) -> str:
    """``text`` without a leading copy of ``prefill`` (whitespace before it ignored)."""
    stripped = text.lstrip()
    return stripped[len(prefill):] if stripped.startswith(prefill) else text
