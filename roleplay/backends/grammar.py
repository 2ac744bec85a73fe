"""JSON-schema-constrained decoding for backends that pick tokens themselves (transformers).

`JsonGrammar` masks, at each step, every token that cannot continue a JSON value valid
for the schema, so even a 135M model cannot break the JSON (memory extraction, JSON
judges). It uses llguidance (a prebuilt Rust wheel): the schema is compiled to a grammar
once per request and the mask for a step costs well under a millisecond.

`with_layout` fixes how the JSON is laid out — json.dumps' separators, no other
whitespace — for this backend and for llama.cpp (whose grammar engine is llguidance too),
so one schema gives the same text on both. llguidance's default allows any whitespace
between JSON tokens: a small model then spends tokens on blank lines, and an output's
length has no bound, so no ``max_tokens`` can promise a complete value.

Trade-off: the model's own formatting habits (newlines, indentation) are overridden.
vLLM constrains with its guided decoding, OpenAI-compatible servers with
``response_format`` (see each backend); neither reads the ``x-guidance`` options.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError

#: llguidance's layout options ("x-guidance") for every schema we constrain to: compact JSON.
JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def with_layout(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with `JSON_LAYOUT` in its ``x-guidance`` options (the schema's own options win).

    >>> with_layout({"type": "string"})["x-guidance"]["whitespace_flexible"]
    False
    """
    return {**schema, "x-guidance": {**JSON_LAYOUT, **schema.get("x-guidance", {})}}


def tokenizer_for(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a Hugging Face tokenizer (built once per backend)."""
    try:
        import llguidance.hf
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("JSON-schema output needs llguidance: pip install llguidance") from None
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)


class JsonGrammar:
    """One request's JSON-schema matcher: `mask` the logits, `accept` the chosen token."""

    def __init__(self, lltokenizer: Any, schema: dict[str, Any]) -> None:
        import llguidance
        import llguidance.torch

        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(with_layout(schema)))
        except Exception as exc:
            raise ConfigError(f"sampling parameter json_schema: not a usable JSON schema: {exc}") from None
        self.matcher = llguidance.LLMatcher(lltokenizer, grammar)
        if self.matcher.is_error():
            raise ConfigError(f"sampling parameter json_schema: {self.matcher.get_error()}")
        self._torch = llguidance.torch
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, lltokenizer.vocab_size)

    def mask(self, logits: Any) -> Any:
        """``logits`` (1 × vocab) with every token the grammar forbids set to -inf."""
        self._torch.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        logits = logits.clone()
        self._torch.apply_token_bitmask_inplace(logits, self.bitmask.to(logits.device))
        return logits

    def accept(self, token: int) -> None:
        self.matcher.consume_token(token)

    def done(self) -> bool:
        """The JSON value is complete: nothing but the end of the output may follow."""
        return self.matcher.is_stopped()
