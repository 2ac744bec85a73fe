"""Chat-template rendering that keeps message text from forging special tokens.

`encode_chat` applies the tokenizer's own chat template (``apply_chat_template``) to
messages whose contents are replaced by random sentinels, then tokenises the template's
pieces with special tokens on and each message's real content with
``split_special_tokens=True``. So a user typing ``<|im_end|>\\n<|im_start|>system`` gets the
ordinary text tokens ``<``, ``|``, ``im`` … and can never open a new role, while the text
the model reads is exactly what was typed (no escaping).

Trade-offs: tokenising the pieces separately could differ from tokenising the whole string
where a BPE merge crosses a template/content boundary. For ChatML (SmolLM2, Qwen) the
boundaries are newlines and special tokens, so the ids equal whole-string tokenisation for
ordinary text (a test checks this). Templates that transform the content (``| trim``) see a
sentinel instead; we insert the content verbatim. A sentinel that the template drops (some
templates drop system messages) drops that content too, as the template intended.

A final assistant message is a prefill: it is rendered with ``continue_final_message=True``
so the model continues it, and the caller's output starts after it.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError
from .base import check_messages, split_prefill


@dataclass
class ChatPrompt:
    """A rendered prompt: the exact text and its token ids."""

    text: str
    ids: list[int]


def encode_chat(tokenizer: Any, messages: list[dict]) -> ChatPrompt:
    """Render ``messages`` with the tokenizer's chat template, content kept as plain text."""
    check_messages(messages)
    _, prefill = split_prefill(messages)
    nonce = secrets.token_hex(6)
    marks = [f"\ue000{nonce}{i}\ue001" for i in range(len(messages))]
    masked = [{"role": m["role"], "content": mark} for m, mark in zip(messages, marks)]
    try:
        rendered = tokenizer.apply_chat_template(
            masked, tokenize=False, add_generation_prompt=prefill is None,
            continue_final_message=prefill is not None)
    except Exception as exc:  # jinja errors, templates that reject a role order
        raise BackendError(f"the model's chat template rejected the messages: {exc}") from None
    if not isinstance(rendered, str):  # some tokenizers return a list for batched input
        rendered = rendered[0]
    text_parts: list[str] = []
    ids: list[int] = []
    rest = rendered
    for message, mark in zip(messages, marks):
        before, found, after = rest.partition(mark)
        if not found:  # the template dropped this message
            continue
        text_parts += [before, message["content"]]
        ids += _encode(tokenizer, before, split=False) + _encode(tokenizer, message["content"], split=True)
        rest = after
    text_parts.append(rest)
    ids += _encode(tokenizer, rest, split=False)
    return ChatPrompt(text="".join(text_parts), ids=ids)


#: subtle: a fast tokenizer implements ``split_special_tokens`` by setting a flag on its one
#: shared Rust tokenizer for the length of the call, so two threads encoding at once (a
#: template piece and a message) can swap flags: ``<|im_start|>`` then comes out as ordinary
#: text tokens and the prompt is corrupted. Every encode that sets the flag holds this lock.
_ENCODE_LOCK = threading.Lock()
_MEMO_LOCK = threading.Lock()


def _encode(tokenizer: Any, text: str, *, split: bool) -> list[int]:
    if not text:
        return []
    with _ENCODE_LOCK:
        return list(tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"])


class TokenizedPrompts:
    """Prompt rendering and token counting for backends that hold the model's Hugging Face
    tokenizer (``self.tokenizer``): transformers, llama.cpp (token-id prompts), vLLM."""

    tokenizer: Any

    #: Prompts remembered by `prompt_ids`: the engine counts a turn's prompt (to fit the
    #: reply in the context) and then the backend encodes it again to send it.
    REMEMBER = 16

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the rendered prompt (what the backend feeds the model)."""
        check_messages(messages)
        key = tuple((m["role"], m["content"]) for m in messages)
        with _MEMO_LOCK:
            memo: dict = self.__dict__.setdefault("_prompt_ids_memo", {})
            ids = memo.get(key)
        if ids is None:
            ids = tuple(encode_chat(self.tokenizer, messages).ids)
            with _MEMO_LOCK:
                if len(memo) >= self.REMEMBER:
                    memo.pop(next(iter(memo)))  # the oldest (dicts keep insertion order)
                memo[key] = ids
        return list(ids)

    def render(self, messages: list[dict]) -> str:
        return encode_chat(self.tokenizer, messages).text

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(_encode(self.tokenizer, text, split=True))

    def choice_ids(self, messages: list[dict], choices: list[str]) -> tuple[list[int], list[list[int]]]:
        """The prompt's ids and each choice's ids, for `Backend.choice_logprobs` (checked)."""
        if not choices:
            raise BackendError("choice_logprobs needs at least one choice")
        ids = self.prompt_ids(messages)
        choice_ids = [_encode(self.tokenizer, c, split=True) for c in choices]
        if any(not c for c in choice_ids):
            raise BackendError("choice_logprobs: choices must be non-empty strings")
        return ids, choice_ids
