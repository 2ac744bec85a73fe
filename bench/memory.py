"""Memory benchmark: fact-extraction quality, and what memory costs a turn's critical path.

Prints ONE JSON line. Measured in one run, on the default backend (the CPU SmolLM2-135M
model unless ROLEPLAY_BACKEND/ROLEPLAY_MODEL say otherwise), in a temporary ROLEPLAY_HOME:

1. quality on ``tests/data/memory_facts.yaml`` (≥50 labelled en/zh messages; a predicted
   fact is correct when it contains an expected fact's value): precision, recall and F1
   for the rules alone, and for rules + the LLM extraction prompt (greedy,
   ``--max-tokens``; the model's outputs are generated as one batch per ``--batch``);
2. latency: the hand-off a turn pays (`Worker.submit` of the extraction job, as
   `Session` does after a reply) against the extraction itself run inline (rules + LLM +
   Chroma decisions, what the turn would pay without the worker) on the same messages;
   ``handoff_vs_inline`` is their ratio (target ≈ 0: nothing beyond a queue put), and
   ``search_ms_p50`` is the one memory cost that stays on the critical path (the budgeted
   search before generation).

Usage: ``python bench/memory.py [--max-tokens 32] [--batch 16] [--latency-messages 8]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROLEPLAY_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def score(predicted: list[list[str]], expected: list[list[str]]) -> dict:
    """Precision/recall/F1 where a fact matches an expected value it contains."""
    tp = fp = fn = 0
    for facts, values in zip(predicted, expected):
        low = [f.lower() for f in facts]
        fp += sum(not any(v.lower() in f for v in values) for f in low)
        hit = sum(any(v.lower() in f for f in low) for v in values)
        tp, fn = tp + hit, fn + len(values) - hit
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f1, 3), "tp": tp, "fp": fp, "fn": fn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--latency-messages", type=int, default=8)
    args = ap.parse_args()

    import yaml

    home = tempfile.mkdtemp(prefix="roleplay-bench-memory-")
    os.environ["ROLEPLAY_HOME"] = home

    from roleplay.backends import get_backend
    from roleplay.backends.base import SamplingParams
    from roleplay.config import Settings
    from roleplay.memory.extract import extract_rules, llm_messages, parse_fact_lines
    from roleplay.memory.store import MemoryStore, remember
    from roleplay.memory.worker import Worker

    items = yaml.safe_load((REPO / "tests" / "data" / "memory_facts.yaml").read_text(encoding="utf-8"))
    texts = [i["text"] for i in items]
    expected = [[f["value"] for f in i["facts"]] for i in items]
    settings = Settings.from_env()
    backend = get_backend(settings)

    t0 = time.perf_counter()
    rule_facts = [[f.text for f in extract_rules(t)] for t in texts]
    rules_ms = (time.perf_counter() - t0) * 1000 / len(texts)

    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, repetition_penalty=1.05)
    outputs: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), args.batch):
        outputs += backend.generate_batch([llm_messages(t) for t in texts[i:i + args.batch]], params)
    llm_batch_ms = (time.perf_counter() - t0) * 1000 / len(texts)
    combined = []
    for text, rules, out in zip(texts, rule_facts, outputs):
        facts = list(rules)
        rule_values = [f.value.lower() for f in extract_rules(text) if f.value]
        for f in parse_fact_lines(out, message=text):
            if not any(v in f.lower() for v in rule_values):
                facts.append(f)
        combined.append(facts)

    # latency: hand-off (what a turn pays) vs the same extraction inline
    store = MemoryStore(settings)
    store.add("bench", "warmup", "The user's name is Warm.", "x", slot="user.name")  # loads the embedder
    sample = [t for t, e in zip(texts, expected) if e][: args.latency_messages]
    inline_ms = []
    for t in sample:
        t0 = time.perf_counter()
        remember(store, "inline", ["bench"], t, "bench", backend=backend, max_tokens=args.max_tokens)
        inline_ms.append((time.perf_counter() - t0) * 1000)
    worker = Worker(name="bench-memory")
    handoff_ms = []
    for t in sample:
        t0 = time.perf_counter()
        worker.submit(remember, store, "handoff", ["bench"], t, "bench", backend=backend,
                      max_tokens=args.max_tokens)
        handoff_ms.append((time.perf_counter() - t0) * 1000)
    worker.flush()
    search_ms = []
    for t in sample:
        t0 = time.perf_counter()
        store.search("inline", "bench", t, 300)
        search_ms.append((time.perf_counter() - t0) * 1000)

    handoff = statistics.median(handoff_ms)
    inline = statistics.median(inline_ms)
    print(json.dumps({
        "bench": "memory", "backend": backend.name, "model": backend.model_name,
        "messages": len(items), "expected_facts": sum(len(e) for e in expected),
        "rules": score(rule_facts, expected), "rules_llm": score(combined, expected),
        "rules_ms_per_message": round(rules_ms, 3), "llm_batched_ms_per_message": round(llm_batch_ms, 1),
        "handoff_ms_p50": round(handoff, 4), "inline_extraction_ms_p50": round(inline, 1),
        "handoff_vs_inline": float(f"{handoff / inline:.3g}") if inline else None,
        "search_ms_p50": round(statistics.median(search_ms), 2),
        "worker_errors": len(worker.errors), "max_tokens": args.max_tokens,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
