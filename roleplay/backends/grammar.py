"""JSON-schema-constrained decoding for backends that pick tokens themselves (transformers).

`JsonGrammar` masks, at each step, every token that cannot continue a JSON value valid
for the schema, so even a 135M model cannot break the JSON (memory extraction, JSON
judges). It uses llguidance (a prebuilt Rust wheel): the schema is compiled to a grammar
once per request and the mask for a step costs well under a millisecond.

Trade-off: the mask forbids whitespace between JSON tokens beyond what the grammar allows,
so outputs are compact; the model's own formatting habits (newlines, indentation) are
overridden. llama.cpp constrains with its own grammar engine, vLLM with guided decoding,
OpenAI-compatible servers with ``response_format`` (see each backend).
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError


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
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
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
