"""Fact extraction from a chat turn: rules (en/zh) first, then a schema-constrained model pass.

Rules (`rules_en`, `rules_zh`, applied per clause of `clauses.clauses`) are instant and
precise, keep the object of what was said, and give each fact a *slot* so the store can
tell a change ("we moved to Hamburg") from a new fact. They also find story *events*:
promises and agreements, in the user's message and in the character's reply.

The model pass asks the backend, at `Priority.BACKGROUND` and with a JSON schema that the
backend enforces while decoding (logits processor / grammar / guided decoding /
``response_format``), for ``{"facts": [{"kind", "text", "evidence"}]}``. A small model can
then not break the JSON; it can still invent, so a model fact is kept only when its
``evidence`` is a span of the message and its content words occur there
(`_grounded`). The prompt is the ``memory_extract_*.j2`` template, rendered by the
composer's strict environment.

Trade-offs: model facts carry no slot (a change they describe cannot close an old fact;
the rules cover the common changes), and a model fact is dropped when a rule fact already
names the same value. The rules miss what they have no pattern for; the set in
``tests/data/memory/extraction.yaml`` measures by how much (README, docs/memory.md).
"""
from __future__ import annotations

import json
import re
from typing import Any

from . import rules_en, rules_zh
from .clauses import CJK, clauses, has_cjk
from .fact import Fact

#: Limits of the model pass: facts per message, characters of a fact and of its evidence.
MAX_FACTS, TEXT_CHARS, EVIDENCE_CHARS = 3, 100, 80
#: Characters of the message the model pass reads (a longer message's tail is left to the
#: rules), so the prompt (~500 tokens in Chinese) plus `LLM_MAX_TOKENS` fits a 4,096-token
#: context even at three tokens per character.
MESSAGE_CHARS = 600
# subtle: a string value may hold any character of the Basic Multilingual Plane except `"`,
# `\`, control characters and DEL (which llguidance writes as the escape \u007f: six bytes), so
# every character is written as itself in at most three UTF-8 bytes; with the fixed layout
# (`grammar.with_layout`) the longest JSON this schema admits is then a known number of
# bytes, hence of tokens (`worst_case_tokens`).
_PLAIN = r"^[\x20\x21\x23-\x5b\x5d-\x7e\x80-\uffff]*$"

#: The JSON schema the model pass is constrained to.
FACT_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array", "maxItems": MAX_FACTS,
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["fact", "event"]},
                    "text": {"type": "string", "maxLength": TEXT_CHARS, "pattern": _PLAIN},
                    "evidence": {"type": "string", "maxLength": EVIDENCE_CHARS, "pattern": _PLAIN},
                },
                "required": ["kind", "text", "evidence"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["facts"],
    "additionalProperties": False,
}


def worst_case_tokens() -> int:
    """Tokens of the longest output `FACT_SCHEMA` admits, plus the end-of-turn token.

    The longest value — every array full, every string at its limit in three-byte
    characters — written with the separators the grammar fixes; a token is at least one
    byte, so no output of the constrained pass has more tokens than this has bytes. A
    model that loops inside a string (SmolLM2-135M does, on a few messages) is cut at
    ``maxLength`` and still closes the JSON before this many tokens.
    """
    item = {"kind": "event", "text": "\uffff" * TEXT_CHARS, "evidence": "\uffff" * EVIDENCE_CHARS}
    longest = json.dumps({"facts": [item] * MAX_FACTS}, ensure_ascii=False, separators=(", ", ": "))
    return len(longest.encode("utf-8")) + 1


#: ``max_tokens`` of the model pass: enough for every output the schema admits (1,773).
LLM_MAX_TOKENS = worst_case_tokens()


def extract_rules(text: str, *, speaker: str = "user") -> list[Fact]:
    """Facts and events found by patterns in a message of ``speaker`` ("user" or "character").

    Only the user's messages give user facts; the character's reply gives only events
    (its promises), since what a character says of itself is canon, not memory.

    >>> [f.text for f in extract_rules("My name is Lin, I keep a cat called Mochi.")]
    ["The user's name is Lin.", 'The user has a cat called Mochi.']
    """
    if not text or not text.strip():
        return []
    zh = has_cjk(text)
    rules = rules_zh if zh else rules_en
    out: list[Fact] = []
    for clause in clauses(text):
        if speaker == "user":
            out += rules.facts(clause)
            if zh and re.search(r"[A-Za-z]{3,}", clause):
                out += rules_en.facts(clause)  # mixed messages ("我叫Lin")
        out += rules.events(clause, speaker=speaker)
    seen: set[tuple] = set()
    kept: list[Fact] = []
    for f in out:
        k = (f.kind, f.slot, f.value.lower())
        if k not in seen:
            seen.add(k)
            kept.append(f)
    return kept


# -- the model pass --------------------------------------------------------------------------
_COMPOSER: Any = None


def render_prompt(part: str, language: str, **context: Any) -> str:
    """Render ``{part}_{language}.j2`` with the composer's strict template environment."""
    global _COMPOSER
    if _COMPOSER is None:
        from ..compose.composer import Composer

        _COMPOSER = Composer()
    return _COMPOSER.render(part, language, **context)


def llm_messages(text: str) -> list[dict]:
    """The chat messages of the extraction prompt (template ``memory_extract_{en,zh}.j2``);
    the message is cut at `MESSAGE_CHARS`."""
    lang = "zh" if has_cjk(text) else "en"
    message = text.strip()[:MESSAGE_CHARS]
    return [{"role": "user", "content": render_prompt("memory_extract", lang, message=message)}]


def parse_llm_json(output: str, *, message: str) -> list[Fact]:
    """Facts from the model's JSON, each supported by ``message``; [] for unusable output."""
    try:
        data = json.loads(output)
    except (ValueError, TypeError):
        return []
    items = data.get("facts") if isinstance(data, dict) else None
    facts: list[Fact] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        text, evidence = str(item.get("text", "")).strip(), str(item.get("evidence", "")).strip()
        kind = item.get("kind") if item.get("kind") in ("fact", "event") else "fact"
        if not text or len(text) > 200 or not evidence or _norm(evidence) not in _norm(message):
            continue
        if not _grounded(text, message):
            continue
        if not text.endswith((".", "。", "!", "！")):
            text += "。" if re.search(f"[{CJK}]$", text) else "."
        if text not in [f.text for f in facts]:
            facts.append(Fact(text, None, "", source="llm", kind=kind))
    return facts


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower().replace("’", "'")).split())


_FACT_STOP = {"the", "user", "user's", "users", "is", "are", "has", "have", "likes", "like", "and",
              "their", "they", "with", "for", "from", "that", "this", "was", "will", "not", "called",
              "named", "lives", "works", "name", "you", "promised", "用户"}


def _grounded(fact: str, message: str) -> bool:
    """At least two thirds of the fact's content words (or CJK pairs) occur in the message."""
    msg = message.lower()
    words = [w for w in re.findall(r"[a-z0-9']{3,}", fact.lower()) if w not in _FACT_STOP]
    cjk = re.sub(f"[^{CJK}]", "", fact.replace("用户", ""))
    pairs = [cjk[i:i + 2] for i in range(len(cjk) - 1)]
    units = [w in msg for w in words] + [p in message for p in pairs]
    return bool(units) and sum(units) * 3 >= len(units) * 2


def llm_params() -> Any:
    """Greedy sampling constrained to `FACT_SCHEMA`, with room for its longest output."""
    from ..backends.base import SamplingParams

    return SamplingParams(max_tokens=LLM_MAX_TOKENS, temperature=0.0, repetition_penalty=1.0,
                          json_schema=FACT_SCHEMA)


def extract_llm(backend: Any, text: str) -> list[Fact]:
    """Facts the model finds in ``text`` (background priority, JSON-schema constrained)."""
    from ..backends.base import Priority

    out = backend.generate(llm_messages(text), llm_params(), priority=Priority.BACKGROUND)
    return parse_llm_json(out, message=text)


def extract_llm_batch(backend: Any, texts: list[str]) -> list[tuple[str, list[Fact]]]:
    """``(raw output, facts)`` per text, generated as one batch (benchmarks, tests)."""
    from ..backends.base import Priority

    outs = backend.generate_batch([llm_messages(t) for t in texts], llm_params(), priority=Priority.BACKGROUND)
    return [(out, parse_llm_json(out, message=t)) for out, t in zip(outs, texts)]


def merge(rule_facts: list[Fact], model_facts: list[Fact]) -> list[Fact]:
    """Rule facts, then the model's facts that no rule fact already covers."""
    facts = list(rule_facts)
    for f in model_facts:
        low = f.text.lower()
        if any(r.value and r.value.lower() in low for r in rule_facts):
            continue  # the rule's sentence (with its slot) says it better
        facts.append(f)
    return facts


def extract(text: str, *, backend: Any = None) -> list[Fact]:
    """Rule facts, then (with a backend) the model's facts that no rule fact already covers."""
    facts = extract_rules(text)
    if backend is None or not text.strip():
        return facts
    return merge(facts, extract_llm(backend, text))
