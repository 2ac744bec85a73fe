"""Retrieval quality: query sets with known answers, and recall@k / MRR per method.

A query set is YAML: a list of ``{card, query, expect, lang, cross_lingual}`` where
``query`` is the user's message (or a list of messages, oldest first), ``expect`` the
story labels that answer it (``stories/part_01.txt#7``, ``card:3``), ``lang`` the query's
language and ``cross_lingual`` whether the answers are in the other one. Used by the
tests (tests/data/retrieval_hard) and bench/retrieval.py (the wukong corpus).

Metrics, over queries: ``recall@k`` = share of queries with an answering story among
the first k results (near-duplicates collapsed into a result count as that result);
``mrr`` = mean of 1 / rank of the first answering story (0 when none is in the first
`DEPTH`). Trade-off: a query with several answers (a scene and its retelling) counts as
found when any one is, which is what a prompt needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..cards.schema import Character
from ..errors import CardError
from .retriever import RetrievedStory, Retriever

#: Results read per query (ranks beyond it count as not found).
DEPTH = 10


@dataclass
class Query:
    """One test query and the story labels that answer it."""

    card: str
    conversation: list[str]
    expect: list[str]
    lang: str = ""
    cross_lingual: bool = False


@dataclass
class Scores:
    """recall@1, recall@5 and MRR over ``n`` queries."""

    n: int = 0
    recall_at_1: float = 0.0
    recall_at_5: float = 0.0
    mrr: float = 0.0
    ranks: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "recall@1": round(self.recall_at_1, 3), "recall@5": round(self.recall_at_5, 3),
                "mrr": round(self.mrr, 3)}


def load_queries(path: str | Path, *, card: str | None = None,
                 label: Callable[[str], str] = lambda e: e) -> list[Query]:
    """Read a query set; ``label`` maps each ``expect`` entry to a story label.

    Raises:
        CardError: the file is not a list of queries, naming the entry and field.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise CardError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=path,
                        line=mark.line + 1 if mark else None) from None
    if not isinstance(data, list):
        raise CardError("a query set is a YAML list of {query, expect, …} entries", file=path)
    out: list[Query] = []
    for i, item in enumerate(data):
        where = f"entry {i + 1}"
        if not isinstance(item, dict):
            raise CardError(f"{where} is not a mapping", file=path, field="query")
        query = item.get("query")
        conversation = [query] if isinstance(query, str) else query
        if not (isinstance(conversation, list) and conversation and all(isinstance(q, str) for q in conversation)):
            raise CardError(f"{where}: 'query' must be a message or a list of messages", file=path, field="query")
        expect = item.get("expect")
        if not (isinstance(expect, list) and expect):
            raise CardError(f"{where}: 'expect' must list the answering story labels", file=path, field="expect")
        cid = item.get("card", card)
        if not isinstance(cid, str) or not cid:
            raise CardError(f"{where}: 'card' is missing", file=path, field="card")
        out.append(Query(card=cid, conversation=conversation, expect=[label(str(e)) for e in expect],
                         lang=str(item.get("lang", "")), cross_lingual=bool(item.get("cross_lingual", False))))
    return out


def labels(hit: RetrievedStory) -> set[str]:
    """The story labels a result stands for: its own and its collapsed near-duplicates'."""
    return {hit.source, *hit.duplicates}


def rank_of(hits: list[RetrievedStory], expect: set[str]) -> int | None:
    """1-based rank of the first result that answers (None when none does)."""
    for r, hit in enumerate(hits, 1):
        if labels(hit) & expect:
            return r
    return None


def ranks_for(retriever: Retriever, cards: dict[str, Character], queries: list[Query], *,
              method: str = "hybrid") -> list[int]:
    """For each query, the 1-based rank of its first answer (0 = not in the first `DEPTH`)."""
    return [rank_of(retriever.stories(cards[q.card], q.conversation, budget_tokens=1_000_000, k=DEPTH,
                                      method=method), set(q.expect)) or 0 for q in queries]


def evaluate(retriever: Retriever, cards: dict[str, Character], queries: list[Query], *,
             method: str = "hybrid") -> Scores:
    """recall@1, recall@5 and MRR of ``method`` over ``queries``."""
    return scores(ranks_for(retriever, cards, queries, method=method))


def scores(ranks: list[int]) -> Scores:
    """Scores from 1-based ranks (0 = not found)."""
    n = len(ranks)
    if not n:
        return Scores()
    return Scores(n=n, recall_at_1=sum(1 for r in ranks if r == 1) / n,
                  recall_at_5=sum(1 for r in ranks if 1 <= r <= 5) / n,
                  mrr=sum(1.0 / r for r in ranks if r) / n, ranks=ranks)


def table(retriever: Retriever, cards: dict[str, Character], queries: list[Query],
          methods: tuple[str, ...]) -> dict[tuple[str, str], Scores]:
    """Scores per (subset, method); subsets ``all``, ``same-language``, ``cross-lingual``."""
    out: dict[tuple[str, str], Scores] = {}
    for method in methods:
        ranks = ranks_for(retriever, cards, queries, method=method)
        out[("all", method)] = scores(ranks)
        out[("same-language", method)] = scores([r for r, q in zip(ranks, queries) if not q.cross_lingual])
        out[("cross-lingual", method)] = scores([r for r, q in zip(ranks, queries) if q.cross_lingual])
    return out


def markdown(results: dict[tuple[str, str], Scores]) -> str:
    """The results as a Markdown table (the one in README.md and docs/retrieval.md)."""
    lines = ["| queries | method | n | recall@1 | recall@5 | MRR |", "|---|---|---|---|---|---|"]
    for subset in ("all", "same-language", "cross-lingual"):
        for (sub, method), s in results.items():
            if sub == subset:
                lines.append(f"| {subset} | {method} | {s.n} | {s.recall_at_1:.3f} | {s.recall_at_5:.3f} "
                             f"| {s.mrr:.3f} |")
    return "\n".join(lines)
