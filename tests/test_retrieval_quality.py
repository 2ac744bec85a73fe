"""Retrieval quality on the bundled characters: recall@1, recall@5 and MRR per method.

The test set is ``tests/data/retrieval/<id>.yaml`` (a list of ``{query, expect: [story
indices], lang, cross_lingual}``). Run with ``-s`` to see the table (it is also in
docs/retrieval.md). The floors below are set clearly under what the current method
reaches, so they catch a broken pipeline, not noise.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from roleplay.cards import load_card
from roleplay.config import BUNDLED_CHARACTERS, Settings
from roleplay.store import Retriever
from roleplay.store.scenes import story_index

DATA = Path(__file__).parent / "data" / "retrieval"
METHODS = ["vector", "keyword", "hybrid", "weighted", "rrf"]


def load_set() -> dict[str, list[dict]]:
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) or [] for p in sorted(DATA.glob("*.yaml"))}


def rank_of_expected(hits, expect: set[int]) -> list[int]:
    """1-based ranks at which expected story indices came back (duplicates count)."""
    ranks = []
    for r, h in enumerate(hits, 1):
        found = {story_index(h.source), *(story_index(d) for d in h.duplicates)}
        if found & expect:
            ranks.append(r)
    return ranks


def evaluate(retriever: Retriever, cards: dict, items: dict[str, list[dict]], method: str,
             subset=lambda item: True) -> dict[str, float]:
    r1 = r5 = rr = 0.0
    n = 0
    for cid, queries in items.items():
        for item in queries:
            if not subset(item):
                continue
            expect = set(item["expect"])
            hits = retriever.stories(cards[cid], [item["query"]], budget_tokens=1_000_000, k=10, method=method)
            got1 = {i for h in hits[:1] for i in {story_index(h.source), *map(story_index, h.duplicates)}}
            got5 = {i for h in hits[:5] for i in {story_index(h.source), *map(story_index, h.duplicates)}}
            r1 += len(expect & got1) / len(expect)
            r5 += len(expect & got5) / len(expect)
            ranks = rank_of_expected(hits, expect)
            rr += 1.0 / ranks[0] if ranks else 0.0
            n += 1
    return {"n": n, "recall@1": r1 / max(n, 1), "recall@5": r5 / max(n, 1), "mrr": rr / max(n, 1)}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    items = load_set()
    if not items:
        pytest.fail(f"no retrieval test set in {DATA}")
    retriever = Retriever(Settings(home=tmp_path_factory.mktemp("quality")))
    cards = {cid: load_card(BUNDLED_CHARACTERS / cid) for cid in items}
    for card in cards.values():
        retriever.index(card)
    subsets = {"all": lambda i: True,
               "same-language": lambda i: not i.get("cross_lingual"),
               "cross-lingual": lambda i: bool(i.get("cross_lingual"))}
    table = {(s, m): evaluate(retriever, cards, items, m, f) for s, f in subsets.items() for m in METHODS}
    lines = ["| queries | method | n | recall@1 | recall@5 | MRR |", "|---|---|---|---|---|---|"]
    for (s, m), v in table.items():
        lines.append(f"| {s} | {m} | {v['n']} | {v['recall@1']:.3f} | {v['recall@5']:.3f} | {v['mrr']:.3f} |")
    print("\n" + "\n".join(lines))
    return table


def test_set_is_big_enough():
    items = load_set()
    assert {"sherlock", "ada", "sunwukong", "daiyu"} <= set(items)
    flat = [i for q in items.values() for i in q]
    assert len(flat) >= 60
    assert any(i.get("cross_lingual") for i in flat) and {i["lang"] for i in flat} >= {"en", "zh"}


def test_quality_floors(results):
    hybrid = results[("all", "hybrid")]
    assert hybrid["recall@5"] >= 0.80 and hybrid["mrr"] >= 0.65 and hybrid["recall@1"] >= 0.55
    assert results[("cross-lingual", "vector")]["recall@5"] >= 0.5  # zh<->en through one space


def test_hybrid_beats_single_signals(results):
    hybrid, vector, keyword = (results[("all", m)] for m in ("hybrid", "vector", "keyword"))
    assert hybrid["recall@5"] >= vector["recall@5"]
    assert hybrid["mrr"] > vector["mrr"] and hybrid["mrr"] > keyword["mrr"]


def test_easy_set_not_worse_than_previous_default(results):
    """The new default (calibrated fusion, windows, bridges) keeps what ``weighted`` had here."""
    hybrid, weighted = results[("all", "hybrid")], results[("all", "weighted")]
    assert hybrid["recall@5"] >= weighted["recall@5"] and hybrid["mrr"] >= weighted["mrr"]
