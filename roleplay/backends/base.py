"""The backend interface: one abstract streaming method, everything else built on it.

A backend turns chat messages into a stream of text. `Backend.stream` is a template
method: it validates the messages, calls the subclass's one abstract method `_pieces`
(the raw stream of `Piece`s), and wraps it in a `Generation` that cuts stop strings and
turns foreign exceptions into `BackendError` — once, here, for every backend. A
`Generation` is an iterator of text chunks that also tells, once done, why it finished
(``stop`` or ``length``), the token counts and, where the backend can, log-probabilities.

Concurrency belongs to the backend (no lock outside it): any number of threads may call
`stream` at once; each backend decides how they share the model (a continuous-batching
scheduler for transformers, llama.cpp's slots, vLLM's scheduler, bounded concurrent HTTP
for OpenAI-compatible servers). `Priority.USER` requests go before `Priority.BACKGROUND`
work (memory extraction, summaries). A backend whose wait queue is full raises
`BackendBusy` (the API answers 429 with ``Retry-After``) instead of queueing forever.
`generate_batch` is one path for every backend: submit every conversation, collect.

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
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BackendError, ConfigError, invalid

ROLES = ("system", "user", "assistant")


#: Tokens the repetition penalty looks back over (the end of the prompt and the reply so
#: far): llama.cpp's ``repeat_last_n`` default, used by both local backends so that the same
#: settings mean the same thing on them. Over a whole role-play prompt (persona and the
#: character's own retrieved lines, 2,000+ tokens) a penalty would push the model away from
#: the very words that keep it in voice. vLLM and OpenAI-compatible servers apply their own
#: rule (vLLM: every prompt and reply token).
REPETITION_WINDOW = 64


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
    #: OpenAI's penalties: subtract ``presence`` once per token already generated and
    #: ``frequency`` × its count (on the logits, before temperature).
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    #: Token id -> bias added to its logit (-100 bans, +100 forces).
    logit_bias: dict[int, float] = Field(default_factory=dict, max_length=300)
    #: None: no log-probabilities; N >= 0: each chosen token's logprob and the N best.
    logprobs: int | None = Field(None, ge=0, le=20)
    #: Constrain the output to this JSON schema (memory extraction, JSON judges).
    json_schema: dict[str, Any] | None = None

    def __init__(self, **data: Any) -> None:
        # subtle: pydantic's ValidationError is not one of our errors; turn it into the
        # one-line ConfigError every caller (CLI, API, UI) already knows how to show.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid(exc, "sampling parameter ", default_field="params", show_input=True) from None
        if any(not s for s in self.stop):
            raise ConfigError("sampling parameter stop: stop strings must not be empty")
        if any(not -100.0 <= b <= 100.0 for b in self.logit_bias.values()):
            raise ConfigError("sampling parameter logit_bias: each bias must be between -100 and 100")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Priority(IntEnum):
    """Who waits for a generation: a user's reply goes before background work."""

    USER = 0
    BACKGROUND = 10


class BackendBusy(BackendError):
    """The backend's wait queue is full; try again after ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class TokenLogprob:
    """One generated token's log-probability and the best alternatives at that step."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Piece:
    """What a backend's raw stream yields: text (with its token's logprob, if asked), or,
    last, the finish reason and token counts."""

    text: str = ""
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None  # "stop" (end of turn / stop string) | "length"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens taken from a kept cache


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


class Generation:
    """A running generation: iterate it for text chunks (stop strings already cut).

    Once exhausted: ``finish_reason`` is ``"stop"`` (end of turn or a stop string) or
    ``"length"`` (``max_tokens`` cut it); ``prompt_tokens``/``completion_tokens`` count
    tokens (None where the backend cannot tell); ``logprobs`` lists the generated tokens'
    log-probabilities when ``params.logprobs`` asked for them and the backend gives them.
    `close` (or leaving a ``for`` loop over it early and dropping it) cancels the work.
    """

    def __init__(self, pieces: Iterator[Piece], params: SamplingParams, *, backend: str) -> None:
        self._pieces = pieces
        self._cutter = StopCutter(params.stop)
        self._backend = backend
        self._want_logprobs = params.logprobs is not None
        self._done = False
        self._error: BaseException | None = None
        self.text = ""
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.logprobs: list[TokenLogprob] | None = None

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> str:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc
        while not self._done:
            try:
                piece = next(self._pieces)
            except StopIteration:
                self._done = True
                out = self._cutter.flush()
                if self.finish_reason is None:
                    self.finish_reason = "stop"
                if out:
                    self.text += out
                    return out
                break
            except Exception as exc:  # one wrapping for every backend
                self._finish()
                if not isinstance(exc, BackendError):
                    wrapped = BackendError(f"generation failed in the {self._backend} backend: "
                                           f"{type(exc).__name__}: {exc}".splitlines()[0])
                    wrapped.__cause__ = exc
                    exc = wrapped
                held = self._cutter.flush()
                if held:  # subtle: text that came before the failure is still the caller's
                    self._error = exc
                    self.text += held
                    return held
                raise exc from exc.__cause__
            if piece.prompt_tokens is not None:
                self.prompt_tokens = piece.prompt_tokens
            if piece.completion_tokens is not None:
                self.completion_tokens = piece.completion_tokens
            if piece.cached_tokens is not None:
                self.cached_tokens = piece.cached_tokens
            if piece.finish_reason is not None:
                self.finish_reason = piece.finish_reason
            if piece.logprob is not None and self._want_logprobs:
                self.logprobs = (self.logprobs or []) + [piece.logprob]
            if not piece.text:
                continue
            out = self._cutter.feed(piece.text)
            if self._cutter.done:
                self.finish_reason = "stop"  # a stop string, whatever the backend says
                self._finish()
            if out:
                self.text += out
                return out
        raise StopIteration

    def _finish(self) -> None:
        self._done = True
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        """Stop generating (the backend frees the request's slot at its next step)."""
        if not self._done:
            self._finish()
            if self.finish_reason is None:
                self.finish_reason = "stop"

    def collect(self) -> str:
        """Run to the end; the whole text."""
        for _ in self:
            pass
        return self.text


class Backend(ABC):
    """A text generator for chat messages. Subclasses implement `_pieces` only.

    ``messages`` are ``[{"role": "system"|"user"|"assistant", "content": str}]``; when the
    last one is ``assistant`` it is a prefill that the model continues, and the prefill
    itself is not repeated in the output. Safe to call from many threads at once.
    """

    name: str = "base"
    model_name: str = ""
    #: How many requests `generate_batch` keeps in flight at once.
    max_concurrency: int = 8
    #: Whether `Generation.logprobs` can be filled (``params.logprobs``).
    supports_logprobs: bool = False
    #: The wait line in front of the backend's slots, if it has one: `stream` refuses a
    #: request with `BackendBusy` at once when it is full (before anything is streamed).
    admission: "Admission | None" = None
    #: Token counts of the last request that finished (tests and benchmarks on an idle
    #: backend; under concurrency read `Generation`'s counts instead).
    last_usage: dict[str, int] = {}

    def stream(self, messages: list[dict], params: SamplingParams | None = None, *,
               priority: int = Priority.USER) -> Generation:
        """Start generating; iterate the result for the reply's text chunks.

        Raises:
            BackendError: invalid messages, or the backend failed (also while iterating).
            BackendBusy: the backend's wait queue is full (before anything was generated).
        """
        check_messages(messages)
        params = params or SamplingParams()
        if self.admission is not None:
            self.admission.check()
        try:
            pieces = iter(self._pieces(messages, params, priority=int(priority)))
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"generation failed in the {self.name} backend: "
                               f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        return Generation(pieces, params, backend=self.name)

    @abstractmethod
    def _pieces(self, messages: list[dict], params: SamplingParams, *, priority: int) -> Iterator[Piece]:
        """The raw stream for validated ``messages``: text pieces, then (optionally) a
        last `Piece` with the finish reason and token counts. Stop strings may be left in
        (`Generation` cuts them); stopping early on them saves work."""

    def generate(self, messages: list[dict], params: SamplingParams | None = None, *,
                 priority: int = Priority.USER) -> str:
        """The whole reply as one string."""
        return self.stream(messages, params, priority=priority).collect()

    def generate_batch(self, batch: list[list[dict]], params: SamplingParams | None = None, *,
                       priority: int = Priority.USER) -> list[str]:
        """One reply per conversation: all submitted at once (up to ``max_concurrency`` in
        flight), so the backend batches them its own way; results in input order."""
        if len(batch) <= 1:
            return [self.generate(messages, params, priority=priority) for messages in batch]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batch)),
                                thread_name_prefix=f"roleplay-{self.name}-batch") as pool:
            return list(pool.map(lambda messages: self.generate(messages, params, priority=priority), batch))

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
                           "transformers or llamacpp backend, or a text judge")

    def close(self) -> None:
        """Release models, threads and connections (optional)."""


class Admission:
    """A priority wait line in front of a fixed number of slots (llama.cpp, HTTP servers).

    ``with admission.slot(priority):`` waits for a free slot — lower priority values first,
    then arrival order — and raises `BackendBusy` when ``max_waiting`` requests already
    wait. ``reserve_user`` slots are kept for `Priority.USER` requests, so background work
    can never occupy every slot a user's reply needs; ``background_slots`` caps how many it
    holds at once (default: all the others).
    """

    def __init__(self, slots: int, *, max_waiting: int = 64, reserve_user: int = 0,
                 background_slots: int | None = None, name: str = "backend") -> None:
        self.slots, self.max_waiting, self.name = max(1, slots), max_waiting, name
        self.reserve_user = min(reserve_user, self.slots - 1)
        others = self.slots - self.reserve_user
        self.background_slots = others if background_slots is None else max(1, min(background_slots, others))
        self._cond = threading.Condition()
        self._busy = 0
        self._busy_background = 0
        self._waiting: list[tuple[int, int]] = []  # (priority, ticket)
        self._ticket = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> int:
        return self._busy

    def _may_start(self, entry: tuple[int, int]) -> bool:
        background_full = self._busy_background >= self.background_slots
        # the first in line among those allowed to start: background work over its cap
        # waits without holding up anyone behind it
        first = min((e for e in self._waiting if e[0] <= Priority.USER or not background_full), default=None)
        limit = self.slots - (self.reserve_user if entry[0] > Priority.USER else 0)
        return self._busy < limit and first == entry

    def check(self) -> None:
        """Raise `BackendBusy` now if a new request would find the wait line full."""
        with self._cond:
            self._refuse_if_full()

    def _refuse_if_full(self) -> None:
        if len(self._waiting) >= self.max_waiting and self._busy >= self.slots:
            raise BackendBusy(f"the {self.name} backend has {len(self._waiting)} requests waiting "
                              f"(limit {self.max_waiting}); try again shortly", retry_after=2.0)

    def acquire(self, priority: int = Priority.USER) -> None:
        with self._cond:
            self._refuse_if_full()
            self._ticket += 1
            entry = (int(priority), self._ticket)
            self._waiting.append(entry)
            try:
                while not self._may_start(entry):
                    self._cond.wait()
            finally:
                self._waiting.remove(entry)
                self._cond.notify_all()
            self._busy += 1
            self._busy_background += entry[0] > Priority.USER

    def release(self, priority: int = Priority.USER) -> None:
        with self._cond:
            self._busy -= 1
            self._busy_background -= int(priority) > Priority.USER
            self._cond.notify_all()

    def slot(self, priority: int = Priority.USER) -> "_Slot":
        return _Slot(self, priority)


class _Slot:
    def __init__(self, admission: Admission, priority: int) -> None:
        self.admission, self.priority = admission, priority

    def __enter__(self) -> None:
        self.admission.acquire(self.priority)

    def __exit__(self, *exc: Any) -> None:
        self.admission.release(self.priority)
