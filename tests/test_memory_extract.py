"""Fact extraction: the rules against the labelled set (en + zh, ≥300 messages), the cases
the issue names one by one, the model pass constrained to JSON on the real CPU model, the
worker hand-off, and the summary (its prompt a template).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import pytest

from roleplay.errors import ConfigError
from roleplay.memory import Worker, extract_rules, parse_llm_json
from roleplay.memory.extract import (EVIDENCE_CHARS, FACT_SCHEMA, LLM_MAX_TOKENS, MAX_FACTS, MESSAGE_CHARS, TEXT_CHARS,
                                     _grounded, extract_llm_batch, llm_messages, llm_params)
from roleplay.memory.scoring import load_labelled, score
from roleplay.memory.summary import extractive, history_cut, summarise

DATA = Path(__file__).parent / "data" / "memory"
LABELLED = load_labelled(DATA)
CASES = ("basic", "object", "multi", "change", "third", "event", "question", "hypothetical", "joke", "quote",
         "story", "chitchat")


def test_the_labelled_set_is_big_bilingual_and_covers_every_case():
    assert len(LABELLED) >= 300
    for lang in ("en", "zh"):
        mine = [i for i in LABELLED if i["lang"] == lang]
        assert len(mine) >= 120
        assert {i["case"] for i in mine} == set(CASES), lang
        assert sum(not (i["facts"] or i["events"]) for i in mine) >= 40  # things that must not be stored
        assert all(set(i["ended"]) <= set(i["facts"]) for i in mine)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_rules_reach_f1_09_and_never_lose_an_object(lang):
    items = [i for i in LABELLED if i["lang"] == lang]
    s = score(items, [extract_rules(i["text"]) for i in items])
    assert s["f1"] >= 0.9, (s["misses"], s["extras"])
    assert s["lost_object"] == 0, s["extras"]
    assert s["wrong_negation"] == 0


@pytest.mark.parametrize("text,expected", [
    # the object stays, with its articles and modifiers
    ("I love playing the piano.", ["The user loves playing the piano."]),
    ("My old grey cat Mochi sleeps on my keyboard.", ["The user has an old grey cat called Mochi."]),
    ("I live in a flat above a bakery.", ["The user lives in a flat above a bakery."]),
    ("I spend my weekends restoring the old clocks.", ["The user spends their weekends restoring the old clocks."]),
    ("我叫小雨，最喜欢弹吉他。", ["用户叫小雨。", "用户最喜欢弹吉他。"]),
    # several facts, third parties
    ("I'm Lin and I love hiking.", ["The user's name is Lin.", "The user loves hiking."]),
    ("Actually, my name is Mei now.", ["The user's name is Mei."]),
    ("Call me Jo please, everyone does.", ["The user wants to be called Jo."]),
    ("My sister Mei is a nurse.", ["The user's sister Mei is a nurse.", "The user's sister is called Mei."]),
    ("我妹妹小梅是护士。", ["用户的妹妹小梅是护士。"]),
    # change
    ("We moved to Hamburg in the spring.", ["The user moved to Hamburg in the spring."]),
    ("I don't drink coffee any more.", ["The user no longer drinks coffee."]),
    # story events, from the user and from the character
    ("You promised to bring me the map.", ["You promised to bring the user the map."]),
    ("你答应过我要带我去看海。", ["你答应过：带用户去看海。"]),
])
def test_rule_sentences(text, expected):
    assert sorted(f.text for f in extract_rules(text)) == sorted(expected)


def test_changes_share_the_slot_of_what_they_end():
    before = {f.slot for f in extract_rules("I drink coffee every morning.")}
    after = extract_rules("I don't drink coffee any more.")
    assert before == {after[0].slot} == {"pref.coffee"} and after[0].negated
    assert extract_rules("I live in Berlin.")[0].slot == extract_rules("We moved to Hamburg.")[0].slot == "user.city"
    assert extract_rules("我的猫叫豆豆")[0].slot == extract_rules("I have a cat named Mochi")[0].slot == "pet.cat.name"
    gone = extract_rules("I no longer keep a cat.")[0]
    assert gone.slot == "pet.cat.name" and gone.negated and gone.value == ""  # ends the cat whatever its name


@pytest.mark.parametrize("text", [
    "Do you like tea?", "If I had a dog, I'd call him Rex.", "I wish I lived by the sea.",
    "My name is Batman. Just kidding.", "She told me \"my name is Irene\" and walked away.",
    "My boss says I'm lazy.", "In the story I'm a knight of the realm.", "(draws my sword) I am the guardian!",
    "I love it when you do that.", "I'm a bit tired today.",
    "你住在哪里？", "如果我有一只狗，我就叫它旺财。", "我叫孙悟空，开玩笑的。", "她说“我叫白骨精”。",
    "在故事里我是一个剑客。", "我很喜欢你。",
])
def test_what_must_not_be_stored(text):
    assert extract_rules(text) == []


def test_a_question_keeps_the_facts_before_it_and_a_joke_drops_the_one_before():
    assert [f.value for f in extract_rules("My name is Lin, what's yours?")] == ["Lin"]
    assert [f.value for f in extract_rules("I live on the moon, just kidding, I live in Bath.")] == ["Bath"]


def test_a_characters_reply_gives_events_only():
    said = extract_rules("(bows) I promise I'll teach you to fence. My name is Holmes.", speaker="character")
    assert [(f.kind, f.text) for f in said] == [("event", "You promised to teach the user to fence.")]


def test_the_model_output_is_kept_only_when_the_message_supports_it():
    out = json.dumps({"facts": [
        {"kind": "fact", "text": "The user's name is Lin", "evidence": "I'm Lin"},
        {"kind": "fact", "text": "The user lives in Leeds.", "evidence": "from Leeds"},
        {"kind": "fact", "text": "The user is an astronaut on Mars.", "evidence": "I'm Lin"},   # unsupported
        {"kind": "fact", "text": "The user keeps a cat.", "evidence": "I keep a cat"},         # evidence not in message
        {"kind": "event", "text": "You promised to bring the map.", "evidence": "bring the map"}]})
    facts = parse_llm_json(out, message="I'm Lin from Leeds; you said you'd bring the map")
    assert [(f.kind, f.text) for f in facts] == [("fact", "The user's name is Lin."), ("fact", "The user lives in Leeds."),
                                                 ("event", "You promised to bring the map.")]
    assert all(f.source == "llm" and f.slot is None for f in facts)
    assert parse_llm_json('{"facts": [', message="x") == [] and parse_llm_json("[]", message="x") == []


def test_the_extraction_prompt_is_a_strict_template():
    en, zh = llm_messages("I love tea {{ 7*7 }}"), llm_messages("我叫小雨")
    assert en[-1]["content"].endswith("Message: I love tea {{ 7*7 }}\nAnswer:")  # data, not template source
    assert "消息：我叫小雨" in zh[-1]["content"]
    from roleplay.memory.extract import render_prompt

    with pytest.raises(ConfigError, match="memory_extract"):
        render_prompt("memory_extract", "en")  # a missing variable is an error, not a blank


# -- the model pass always gives complete JSON ---------------------------------------------------
# Why it could not before: SmolLM2-135M loops inside a string on a few messages ("I'm a baker.
# I'm a baker. ..."); the grammar stopped each string at maxLength, but six strings of 120
# characters did not fit in max_tokens=300, so the JSON was cut off (7 of 324 in the bench).
# Now max_tokens is the schema's worst case in tokens (`worst_case_tokens`).
LONGEST = json.dumps({"facts": [{"kind": "event", "text": "字" * TEXT_CHARS, "evidence": "字" * EVIDENCE_CHARS}] * MAX_FACTS},
                     ensure_ascii=False, separators=(", ", ": "))


@pytest.fixture(scope="module")
def fact_grammar(backend):
    from roleplay.backends.grammar import JsonGrammar, tokenizer_for

    lltok = tokenizer_for(backend.tokenizer, len(backend.tokenizer))
    return lambda: JsonGrammar(lltok, FACT_SCHEMA)


def test_max_tokens_covers_the_longest_json_the_schema_admits(backend, fact_grammar):
    """Every token is at least one byte: room for the longest output's bytes is room for it."""
    assert llm_params().max_tokens == LLM_MAX_TOKENS == len(LONGEST.encode()) + 1
    g = fact_grammar()
    ids = backend.tokenizer.encode(LONGEST, add_special_tokens=False)
    assert g.matcher.validate_tokens(ids) == len(ids)
    for t in ids:
        g.accept(t)
    assert g.done()  # complete: nothing may follow
    jsonschema.validate(json.loads(LONGEST), FACT_SCHEMA)


FIRST = LONGEST[LONGEST.index('{"kind"'):LONGEST.index("}") + 1]


@pytest.mark.parametrize("beyond", [
    LONGEST.replace('字"', '字字"', 1),             # a string one character too long
    LONGEST.replace("字", '\\"', 1),              # an escaped quote: two bytes for one character
    LONGEST.replace("字", "\\n", 1),              # an escaped control character
    LONGEST.replace('", "', '",\n "', 1),          # whitespace beyond the fixed separators
    LONGEST[:-2] + ", " + FIRST + "]}",            # a fourth fact
])
def test_the_grammar_admits_nothing_longer(backend, fact_grammar, beyond):
    ids = backend.tokenizer.encode(beyond, add_special_tokens=False)
    assert fact_grammar().matcher.validate_tokens(ids) < len(ids)


@pytest.mark.parametrize("long", ["龘" * 5000, "I keep bees. " * 900])
def test_a_long_message_still_fits_the_context_with_room_for_the_longest_json(backend, long):
    messages = llm_messages(long)
    assert long[:MESSAGE_CHARS] in messages[0]["content"] and long[:MESSAGE_CHARS + 1] not in messages[0]["content"]
    assert len(backend.prompt_ids(messages)) + LLM_MAX_TOKENS <= backend.context_length


@pytest.mark.parametrize("which", ["backend", "transformers_backend"])
def test_each_backend_enforces_the_limits_while_decoding(which, request):
    """A model pushed (logit bias) to write backslashes, newlines and endless a's still
    writes the compact JSON the schema allows: llama.cpp's grammar and ours (grammar.py)."""
    from roleplay.backends.base import SamplingParams

    b = request.getfixturevalue(which)
    tok = b.tokenizer
    push = {tok.convert_tokens_to_ids(t): bias for t, bias in (("a", 30.0), ("\\", 40.0), ("Ċ", 40.0))}
    schema = {"type": "object", "properties": {"t": {"type": "string", "maxLength": 5, "pattern": FACT_SCHEMA[
        "properties"]["facts"]["items"]["properties"]["text"]["pattern"]}}, "required": ["t"], "additionalProperties": False}
    out = b.generate([{"role": "user", "content": "Write anything."}],
                     SamplingParams(max_tokens=24, temperature=0.0, logit_bias=push, json_schema=schema))
    assert out == '{"t": "aaaaa"}'


# The messages whose output was cut off before (bench/memory.py, max_tokens 300), and one
# message per case and language; the full set (324 messages) runs in bench/memory.py.
FAILED_BEFORE = ["I'm allergic to peanuts.", "I brew my own ginger beer.", "I'm 41, married, and I teach history."]
SAMPLE = [next(i for i in LABELLED if i["lang"] == lang and i["case"] == case) for lang in ("en", "zh") for case in CASES]


def test_constrained_decoding_gives_valid_json_on_the_cpu_model(backend):
    """The real SmolLM2-135M on the default backend, JSON-schema constrained: every output
    parses and validates, also where the model loops (FAILED_BEFORE)."""
    assert len(SAMPLE) == 2 * len(CASES) and set(FAILED_BEFORE) <= {i["text"] for i in LABELLED}
    texts = FAILED_BEFORE + [i["text"] for i in SAMPLE]
    results = extract_llm_batch(backend, texts)
    for text, (raw, facts) in zip(texts, results):
        data = json.loads(raw)  # never raises: the backend cannot produce anything else
        jsonschema.validate(data, FACT_SCHEMA)
        assert all(_grounded(f.text, text) for f in facts)  # what survives is supported


def test_worker_runs_jobs_off_the_callers_thread_in_order():
    w = Worker(name="test-worker")
    seen: list[tuple[int, str]] = []
    gate = threading.Event()

    def job(i: int) -> None:
        gate.wait(5)
        seen.append((i, threading.current_thread().name))

    for i in range(3):
        w.submit(job, i)
    assert seen == [] and w.pending == 3  # submit returned while the jobs wait
    gate.set()
    assert w.flush(10)
    assert [i for i, _ in seen] == [0, 1, 2] and {n for _, n in seen} == {"test-worker"}
    w.submit(lambda: 1 / 0)
    assert w.flush(10) and w.errors[-1][1].startswith("ZeroDivisionError")


def test_history_cut_and_extractive_summary():
    texts = ["a" * 400, "b" * 400, "c" * 40]  # ≈100, 100, 10 tokens
    assert history_cut(texts, 1000) == 0
    assert history_cut(texts, 120) == 1
    assert history_cut(texts, 20) == 2
    s = extractive("Earlier, Lin arrived.", [("Lin", "I found a boot print. It was muddy."), ("Holmes", "Capital!")],
                   budget_tokens=200)
    assert s == "Earlier, Lin arrived. Lin: I found a boot print. Holmes: Capital!"
    assert extractive("", [("A", "x " * 500)], budget_tokens=10) == ""  # never over budget


def test_model_summary_stays_within_budget(backend):
    lines = [("Watson", "I found a muddy boot print by the museum door."),
             ("Sherlock Holmes", "(kneels) A size nine, and the wearer limps on the left.")]
    out = summarise("", lines, backend=backend, budget_tokens=60, max_tokens=16)
    assert out.strip()
    from roleplay.tokens import approx_tokens

    assert approx_tokens(out) <= 60
