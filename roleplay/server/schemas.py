"""Request and response shapes of the OpenAI-compatible API (the subset we serve).

Trade-off: OpenAI clients (the SDK, SillyTavern, Open WebUI) send many optional fields
(``chat_completion_source``, ``reasoning_effort``, ``include_reasoning`` …). Rejecting them
would break those clients, so requests ignore unknown fields (``extra="ignore"``) while the
fields we use are validated with OpenAI's own ranges; an out-of-range value is a 400 naming
the field. ``max_tokens`` has no upper bound here: the server clamps it to what the model's
context allows and says so (see `roleplay.server.app`; the engine counts the room).
Responses are plain dicts built by helpers here so the wire format lives in one place.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Models are characters: ``roleplay/<card id>``.
MODEL_PREFIX = "roleplay/"
#: The model whose persona is the client's own system prompt.
CUSTOM_MODEL = "custom"
#: Most choices one request may ask for (``n``).
MAX_CHOICES = 8


class ChatMessage(BaseModel):
    """One message of the client's conversation."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    #: A string, or OpenAI's list of content parts (only the text parts are used).
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(None, max_length=256)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions, with OpenAI's ranges."""

    model_config = ConfigDict(extra="ignore")
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    #: 0 is legal (OpenAI accepts 0..1) and means "only the most likely token": greedy.
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    #: The newer OpenAI name for ``max_tokens``.
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    #: Token id (a string key in JSON) -> bias in -100..100.
    logit_bias: dict[str, float] | None = None
    #: The end user's id: selects whose memories are read (none are read without it).
    user: str | None = Field(None, max_length=256)
    # Extra sampling fields that vLLM-style clients (and SillyTavern) send along.
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=3.0)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [s for s in stops if s]

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if not v:
            return None
        if len(v) > 300:
            raise ValueError("at most 300 tokens may be biased")
        for key, bias in v.items():
            if not key.strip().isdigit():
                raise ValueError(f"keys are token ids (digits), got {key!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias for token {key} must be between -100 and 100, got {bias}")
        return v

    def card_id(self) -> str:
        return self.model[len(MODEL_PREFIX):] if self.model.startswith(MODEL_PREFIX) else self.model

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def top_logprobs_wanted(self) -> int | None:
        """None: no log-probabilities; N: each token's logprob and the N best alternatives."""
        return None

    def sampling(self) -> dict[str, Any]:
        """The fields that were set, under `SamplingParams` names (``max_tokens`` not included)."""
        out: dict[str, Any] = {}
        for key in ("temperature", "top_p", "seed", "top_k", "min_p", "repetition_penalty",
                    "presence_penalty", "frequency_penalty"):
            val = getattr(self, key)
            if val is not None:
                out[key] = val
        if self.top_p == 0.0:  # the limit of nucleus sampling: one token left, i.e. greedy
            out.update(top_p=1.0, temperature=0.0)
        if self.seed is not None and self.seed < 0:  # SillyTavern's "-1 = random" convention
            out.pop("seed")
        if self.stop:
            out["stop"] = self.stop
        if self.logit_bias:
            out["logit_bias"] = {int(k): float(v) for k, v in self.logit_bias.items()}
        top = self.top_logprobs_wanted()
        if top is not None:
            out["logprobs"] = top
        return out


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``; sampling fields map onto `SamplingParams`."""

    messages: list[ChatMessage] = Field(min_length=1)
    #: OpenAI: return each output token's log-probability (``top_logprobs`` alternatives).
    logprobs: bool | int | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    #: vLLM's scheduling priority (lower first); our plain-model route honours it (server/raw.py).
    priority: int | None = Field(None, ge=-1000, le=1000)
    #: vLLM's switch: continue the final assistant message (True) or answer after it
    #: (False). Unset: the server decides from the conversation (docs/api.md).
    continue_final_message: bool | None = None

    @field_validator("messages")
    @classmethod
    def _has_conversation(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.text().strip() for m in v):
            raise ValueError("needs at least one message with text (the conversation so far)")
        return v

    def top_logprobs_wanted(self) -> int | None:
        if self.logprobs is None or self.logprobs is False:
            return None
        if self.logprobs is True:
            return self.top_logprobs or 0
        # An integer (the legacy completions form) asks for that many alternatives.
        return max(0, min(20, int(self.logprobs)))


class CompletionRequest(SamplingFields):
    """``POST /v1/completions`` (text completion): the prompt is the user's message."""

    prompt: str | list[str] = ""
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("send exactly one prompt string")
        return v

    def prompt_text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    def top_logprobs_wanted(self) -> int | None:
        return self.logprobs


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


def model_entry(card_id: str, *, name: str, created: int = 0, tags: list[str] | None = None,
                context_length: int | None = None) -> dict:
    """One ``/v1/models`` item; ``name``/``tags`` ride along for UIs that show them."""
    entry = {"id": MODEL_PREFIX + card_id, "object": "model", "created": created,
             "owned_by": "roleplay", "name": name, "tags": list(tags or [])}
    if context_length:
        entry["context_length"] = context_length
    return entry


def logprobs_body(logprobs: list[Any] | None) -> dict | None:
    """Our `TokenLogprob` list in OpenAI's chat shape (``{"content": [...]}``)."""
    if logprobs is None:
        return None

    def item(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": float(logprob), "bytes": list(token.encode("utf-8"))}

    return {"content": [{**item(lp.token, lp.logprob), "top_logprobs": [item(t, v) for t, v in lp.top]}
                        for lp in logprobs]}


def text_logprobs_body(logprobs: list[Any] | None) -> dict | None:
    """The legacy completions shape: parallel lists of tokens, logprobs and top dicts."""
    if logprobs is None:
        return None
    return {"tokens": [lp.token for lp in logprobs], "token_logprobs": [float(lp.logprob) for lp in logprobs],
            "top_logprobs": [{t: float(v) for t, v in lp.top} for lp in logprobs], "text_offset": []}


def usage_body(prompt_tokens: int, completion_tokens: int, *, clamped_to: int | None = None) -> dict:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if clamped_to is not None:
        usage["max_tokens_clamped_to"] = clamped_to
    return usage


def message_body(content: str, *, reasoning: str = "") -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    return message


def completion_body(cid: str, model: str, choices: list[dict], *, usage: dict,
                    extra: dict | None = None) -> dict:
    """A whole chat completion; ``choices`` are ``{"message", "finish_reason", "logprobs"}``."""
    body: dict[str, Any] = {
        "id": "chatcmpl-" + cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, **c} for i, c in enumerate(choices)], "usage": usage,
    }
    if extra is not None:
        body["roleplay"] = extra
    return body


def chunk_body(cid: str, model: str, created: int, *, delta: dict, index: int = 0,
               finish_reason: str | None = None, logprobs: dict | None = None, usage: dict | None = None,
               extra: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "id": "chatcmpl-" + cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}],
    }
    if usage is not None:
        body["usage"] = usage
    if extra is not None:
        body["roleplay"] = extra
    return body


def text_completion_body(cid: str, model: str, choices: list[dict], *, usage: dict | None) -> dict:
    """A legacy text completion; ``choices`` are ``{"text", "finish_reason", "logprobs"}``."""
    return {"id": "cmpl-" + cid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, **c} for i, c in enumerate(choices)], "usage": usage}
