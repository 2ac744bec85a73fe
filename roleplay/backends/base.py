"""The backend interface: one abstract streaming method, everything else built on it.

A backend turns chat messages into a stream of text. Subclasses implement only
`Backend.stream`; `generate`, `generate_batch`, `count_tokens` and `render` have generic
fallbacks here (sequential batch, approximate token counts, a ChatML-like rendering) that
real backends override where they can do better (the transformers backend batches for real
and counts with the model's tokenizer).

Trade-offs:
- `SamplingParams` is validated on construction and raises `ConfigError` naming the field,
  so a typo or a negative temperature never reaches a model. ``temperature=0`` means greedy.
- Stop sequences are cut here, on text (`StopCutter`), not on tokens: a stop string may span
  several tokens and arrive split across stream chunks, so the cutter holds back the few
  characters that could still become a stop string. Backends also stop generation early
  where their engine supports it; the cut here makes every backend's output identical.
- Special-token strings in message text (``<|im_start|>`` …) must stay text. Backends that
  tokenise themselves do it exactly (see `chat.encode_chat`); backends that send text to a
  server neutralise such strings with `neutralize_special` (a zero-width space after the
  opening bracket), because the server's template would otherwise turn them into tokens.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BackendError, ConfigError

ROLES = ("system", "user", "assistant")


class SamplingParams(BaseModel):
    """How to sample one reply. ``temperature=0`` is greedy decoding; ``top_k=0`` is off.

    >>> SamplingParams(max_tokens=16, temperature=0).max_tokens
    16
    """

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(200, ge=1, le=32768)
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.1, gt=0.0, le=5.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=16)

    def __init__(self, **data: Any) -> None:
        # subtle: pydantic's ValidationError is not one of our errors; turn it into the
        # one-line ConfigError every caller (CLI, API, UI) already knows how to show.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "params"
            raise ConfigError(f"sampling parameter {field}: {err['msg']} "
                              f"(got {err.get('input')!r})") from None
        if any(not s for s in self.stop):
            raise ConfigError("sampling parameter stop: stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def check_messages(messages: list[dict]) -> None:
    """Raise `BackendError` unless ``messages`` is a non-empty list of role/content dicts."""
    if not isinstance(messages, list) or not messages:
        raise BackendError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BackendError(f"messages[{i}]: expected {{'role': one of {'/'.join(ROLES)}, "
                               f"'content': str}}, got {str(m)[:80]!r}")


def split_prefill(messages: list[dict]) -> tuple[list[dict], str | None]:
    """``(messages without the final assistant prefill, prefill or None)``."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


# Special-token spellings of the common chat templates: ChatML / Llama 3 / Phi (<|…|>),
# DeepSeek (full-width bars), Llama 2 / Mistral ([INST], <s>), Gemma (<start_of_turn>).
_SPECIAL = re.compile(r"<\|[^<>|\n]{1,64}\|>|<｜[^<>｜\n]{1,64}｜>|\[/?INST\]|\[/?SYS\]|"
                      r"</?s>|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk)>|<</?SYS>>")
ZWSP = "\u200b"


def neutralize_special(text: str) -> str:
    """Break special-token spellings with a zero-width space so no tokenizer matches them.

    Used where we send text to a server that applies its own chat template (openai).

    >>> neutralize_special("hi <|im_start|>system") == "hi <" + ZWSP + "|im_start|>system"
    True
    """
    return _SPECIAL.sub(lambda m: m.group(0)[0] + ZWSP + m.group(0)[1:], text)


class StopCutter:
    """Cut a text stream at the first stop string, holding back possible partial matches.

    >>> c = StopCutter(["\\nUser:"])
    >>> c.feed("Hello\\nUs"), c.feed("er: hi"), c.done
    ('Hello', '', True)
    """

    def __init__(self, stop: list[str]) -> None:
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buffer = ""
        self.done = False

    def feed(self, chunk: str) -> str:
        """Add ``chunk``; return the text now safe to emit (empty once a stop was seen)."""
        if self.done:
            return ""
        self.buffer += chunk
        cut = min((i for i in (self.buffer.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.done = self.buffer[:cut], "", True
            return out
        if not self.hold:
            out, self.buffer = self.buffer, ""
            return out
        out, self.buffer = self.buffer[:-self.hold], self.buffer[-self.hold:]
        return out

    def flush(self) -> str:
        """Text still held back at the end of the stream (no stop string completed)."""
        out, self.buffer = ("" if self.done else self.buffer), ""
        return out


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cutter = StopCutter(stop)
    return cutter.feed(text) + cutter.flush()


class Backend(ABC):
    """A text generator for chat messages. Subclasses implement `stream` only.

    ``messages`` are ``[{"role": "system"|"user"|"assistant", "content": str}]``; when the
    last one is ``assistant`` it is a prefill that the model continues, and the prefill
    itself is not repeated in the output.
    """

    name: str = "base"
    model_name: str = ""

    @abstractmethod
    def stream(self, messages: list[dict], params: SamplingParams) -> Iterator[str]:
        """Yield the reply's text in chunks as it is generated."""

    def generate(self, messages: list[dict], params: SamplingParams) -> str:
        """The whole reply as one string."""
        return "".join(self.stream(messages, params))

    def generate_batch(self, batch: list[list[dict]], params: SamplingParams) -> list[str]:
        """One reply per conversation (sequential here; batched where the backend can)."""
        return [self.generate(messages, params) for messages in batch]

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (approximate unless the backend has the model's tokenizer)."""
        from ..tokens import approx_tokens

        return approx_tokens(text)

    def render(self, messages: list[dict]) -> str:
        """The prompt text the model sees (ChatML here; real backends use the model's template)."""
        check_messages(messages)
        head, prefill = split_prefill(messages)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in head)
        return text + "<|im_start|>assistant\n" + (prefill or "")

    def choice_logprobs(self, messages: list[dict], choices: list[str]) -> dict[str, float]:
        """Log-probability of each choice as the continuation of the prompt."""
        raise BackendError(f"the {self.name} backend cannot score choices; use the "
                           "transformers backend or a text judge")

    def close(self) -> None:
        """Release models, threads and connections (optional)."""
