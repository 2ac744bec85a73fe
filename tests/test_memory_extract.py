"""Fact extraction: rule patterns (en/zh) against the labelled set, robust parsing of the
model's "- fact" lines, one real LLM extraction, the worker hand-off, and summaries.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from roleplay.memory import Worker, extract_rules, parse_fact_lines
from roleplay.memory.extract import Fact, extract_llm
from roleplay.memory.summary import extractive, history_cut, summarise

LABELLED = yaml.safe_load((Path(__file__).parent / "data" / "memory_facts.yaml").read_text(encoding="utf-8"))


def _matches(fact: Fact, expected: dict) -> bool:
    return expected["value"].lower() in fact.text.lower()


def test_the_labelled_set_is_big_enough_and_bilingual():
    assert len(LABELLED) >= 50
    assert {i["lang"] for i in LABELLED} == {"en", "zh"}
    assert sum(not i["facts"] for i in LABELLED) >= 10  # negatives too


def test_rules_are_precise_on_the_labelled_set():
    tp = fp = fn = 0
    for item in LABELLED:
        facts = extract_rules(item["text"])
        fp += sum(not any(_matches(f, e) for e in item["facts"]) for f in facts)
        hit = sum(any(_matches(f, e) for f in facts) for e in item["facts"])
        tp, fn = tp + hit, fn + len(item["facts"]) - hit
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert precision >= 0.95, (tp, fp)
    assert recall >= 0.75, (tp, fn)


@pytest.mark.parametrize("text,slot,value,sentence", [
    ("My name is Lin, I keep a cat called Mochi.", "user.name", "Lin", "The user's name is Lin."),
    ("My name is Lin, I keep a cat called Mochi.", "pet.cat.name", "Mochi", "The user has a cat called Mochi."),
    ("call me jo", "user.callname", "Jo", "The user wants to be called Jo."),
    ("I hate coffee", "pref.coffee", "coffee", "The user dislikes coffee."),
    ("我叫林，我养了一只猫叫年糕。", "pet.cat.name", "年糕", "用户养了一只猫，叫年糕。"),
    ("我住在上海。", "user.city", "上海", "用户住在上海。"),
])
def test_rule_facts_carry_slots(text, slot, value, sentence):
    facts = {f.slot: f for f in extract_rules(text)}
    assert facts[slot].value == value and facts[slot].text == sentence


def test_cat_and_猫_share_a_slot_so_a_chinese_fact_updates_an_english_one():
    en = extract_rules("I have a cat named Mochi")[0]
    zh = extract_rules("我的猫叫豆豆")[0]
    assert en.slot == zh.slot == "pet.cat.name"


def test_negation_is_marked():
    (f,) = extract_rules("I no longer live in Paris.")
    assert f.negated and f.slot == "user.city" and f.value == "Paris"


def test_fact_lines_are_parsed_robustly():
    out = ("Here are the facts:\n- The user's name is Lin\n* The user keeps a cat called Mochi.\n"
           "2) The user lives in Leeds\n- none\n- The user is an astronaut on Mars.\nThanks!")
    facts = parse_fact_lines(out, message="I'm Lin from Leeds and my cat Mochi sleeps all day")
    assert facts == ["The user's name is Lin.", "The user keeps a cat called Mochi.", "The user lives in Leeds."]
    assert parse_fact_lines("- none") == [] and parse_fact_lines("") == []
    assert parse_fact_lines("- 用户喜欢火锅", message="我喜欢吃火锅") == ["用户喜欢火锅。"]


def test_llm_extraction_with_the_real_model(backend):
    facts = extract_llm(backend, "I'm allergic to peanuts, so no cake for me.", max_tokens=16)
    assert isinstance(facts, list)
    for f in facts:  # whatever it found is grounded in the message and has no slot
        assert f.source == "llm" and f.slot is None
        assert parse_fact_lines(f"- {f.text}", message="I'm allergic to peanuts, so no cake for me.")


def test_worker_runs_jobs_off_the_callers_thread_in_order():
    w = Worker(name="test-worker")
    seen: list[tuple[int, str]] = []
    gate = threading.Event()

    def job(i: int) -> None:
        gate.wait(5)
        seen.append((i, threading.current_thread().name))

    t0 = time.perf_counter()
    for i in range(3):
        w.submit(job, i)
    handed_off = time.perf_counter() - t0
    assert seen == [] and w.pending == 3  # submit returned while the jobs wait
    assert handed_off < 5
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
