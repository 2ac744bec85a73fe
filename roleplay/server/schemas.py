"""Request and response shapes of the OpenAI-compatible API (the subset we serve).

Trade-off: OpenAI clients (the SDK, SillyTavern, Open WebUI) send many optional fields we
do not use (``presence_penalty``, ``logit_bias``, ``stream_options`` …). Rejecting them
would break those clients, so requests ignore unknown fields (``extra="ignore"``) while the
fields we do use are validated strictly; an out-of-range value is a 400 naming the field.
Responses are plain dicts built by helpers here so the wire format lives in one place.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Models are characters: ``roleplay/<card id>``.
MODEL_PREFIX = "roleplay/"


class ChatMessage(BaseModel):
    """One message of the client's conversation."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    #: A string, or OpenAI's list of content parts (only the text parts are used).
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``; sampling fields map onto `SamplingParams`."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192)
    #: The newer OpenAI name for ``max_tokens``.
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1)
    #: The end user's id: selects whose memories are read (none are read without it).
    user: str | None = Field(None, max_length=256)
    # Extra sampling fields that vLLM-style clients send along.
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

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" for m in v):
            raise ValueError("needs at least one user message (the new message to answer)")
        return v

    def card_id(self) -> str:
        return self.model[len(MODEL_PREFIX):] if self.model.startswith(MODEL_PREFIX) else self.model

    def sampling(self) -> dict[str, Any]:
        """The fields that were set, under `SamplingParams` names."""
        out: dict[str, Any] = {}
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            out["max_tokens"] = max_tokens
        for key in ("temperature", "top_p", "seed", "top_k", "min_p", "repetition_penalty"):
            val = getattr(self, key)
            if val is not None:
                out[key] = val
        if self.stop:
            out["stop"] = self.stop
        return out


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def model_entry(card_id: str, *, name: str, created: int = 0, tags: list[str] | None = None) -> dict:
    """One ``/v1/models`` item; ``name``/``tags`` ride along for UIs that show them."""
    return {"id": MODEL_PREFIX + card_id, "object": "model", "created": created,
            "owned_by": "roleplay", "name": name, "tags": list(tags or [])}


def completion_body(cid: str, model: str, text: str, *, finish_reason: str, prompt_tokens: int,
                    completion_tokens: int, extra: dict | None = None) -> dict:
    body = {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish_reason, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    if extra is not None:
        body["roleplay"] = extra
    return body


def chunk_body(cid: str, model: str, created: int, *, delta: dict, finish_reason: str | None = None,
               usage: dict | None = None, extra: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    if extra is not None:
        body["roleplay"] = extra
    return body
