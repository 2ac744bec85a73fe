"""Memory benchmark: extraction quality, recall over a long chat, and the turn's hand-off cost.

Prints ONE JSON line. Measured in one run, on the default backend (the CPU SmolLM2-135M
model unless ROLEPLAY_BACKEND/ROLEPLAY_MODEL say otherwise), in a temporary ROLEPLAY_HOME:

1. extraction on the labelled set ``tests/data/memory/extraction_{en,zh}.yaml`` (324
   messages; `roleplay.memory.scoring.score`): precision, recall, F1 and lost objects for
   the rules alone and for rules + the model pass (JSON-schema constrained, greedy,
   batched by ``--batch``), with how many model outputs parse and validate against
   `FACT_SCHEMA` (``llm_json_valid_n``) and the longest output in tokens against the
   pass's ``max_tokens`` (the schema's worst case); and the
   rules on the held-out ``heldout_{en,zh}.yaml`` (44 messages never used to tune them);
2. the long-horizon script ``tests/data/memory/long_horizon.yaml`` (22 sessions, 64
   probes): recall@budget and stale rate of `recall` at the default memory budget, against
   a baseline in the same run — the store's plain similarity search (`MemoryStore.search`,
   the first version of recall) — and at a tight budget (``--small-budget``);
3. latency: the hand-off a turn pays (`Worker.submit` of `remember`, as `Session` does
   after a reply) against the same extraction run inline (rules + model + Chroma);
   ``handoff_vs_inline`` is their ratio; ``recall_ms_p50`` is the memory cost that stays on
   the critical path (`recall` before generation).

Usage: ``python bench/memory.py [--batch 16] [--llm-every N] [--latency-messages 6]``
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
DATA = REPO / "tests" / "data" / "memory"


def figures(s: dict) -> dict:
    return {k: v for k, v in s.items() if k not in ("misses", "extras", "failures")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--llm-every", type=int, default=1,
                    help="model pass on every Nth message only (1: all; 3 keeps both languages and every case)")
    ap.add_argument("--small-budget", type=int, default=120)
    ap.add_argument("--latency-messages", type=int, default=6)
    args = ap.parse_args()

    os.environ["ROLEPLAY_HOME"] = tempfile.mkdtemp(prefix="roleplay-bench-memory-")
    from roleplay.backends import get_backend
    from roleplay.config import Settings
    from roleplay.memory import MemoryStore, recall, remember
    import jsonschema

    from roleplay.memory.extract import FACT_SCHEMA, LLM_MAX_TOKENS, extract_llm_batch, extract_rules, merge
    from roleplay.memory.scoring import HELDOUT_FILES, load_labelled, load_script, run_script, score
    from roleplay.memory.worker import Worker

    settings = Settings.from_env()
    items = load_labelled(DATA)
    t0 = time.perf_counter()
    rule_facts = [extract_rules(i["text"]) for i in items]
    rules_ms = (time.perf_counter() - t0) * 1000 / len(items)
    heldout = load_labelled(DATA, HELDOUT_FILES)
    heldout_rules = figures(score(heldout, [extract_rules(i["text"]) for i in heldout]))
    by_lang = {lang: figures(score([i for i in items if i["lang"] == lang],
                                   [f for i, f in zip(items, rule_facts) if i["lang"] == lang]))
               for lang in ("en", "zh")}

    # the long chat: recall vs the plain similarity search, same store contents
    script = load_script(DATA / "long_horizon.yaml")
    budget = settings.budgets.memories

    def baseline(settings_, *, user, character, conversation, budget_tokens, count_tokens=None, store=None):
        return store.search(user, character, " ".join(conversation[-3:]), budget_tokens, count_tokens=count_tokens)

    long = {}
    for name, fn, b in (("recall", None, budget), ("baseline_search", baseline, budget),
                        ("recall_small_budget", None, args.small_budget)):
        os.environ["ROLEPLAY_HOME"] = tempfile.mkdtemp(prefix="roleplay-bench-memory-")
        s = Settings.from_env()
        long[name] = figures(run_script(script, settings=s, store=MemoryStore(s), budget_tokens=b, recall_fn=fn))

    # the model pass, batched, on the whole set
    backend = get_backend(settings)
    picked = [i for i in range(len(items)) if i % max(1, args.llm_every) == 0]
    subset = [items[i] for i in picked]
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(subset), args.batch):
        results += extract_llm_batch(backend, [x["text"] for x in subset[i:i + args.batch]])
    llm_ms = (time.perf_counter() - t0) * 1000 / len(subset)
    valid, invalid, looped = 0, [], []
    limits = FACT_SCHEMA["properties"]["facts"]["items"]["properties"]
    for item, (raw, _) in zip(subset, results):
        try:
            data = json.loads(raw)
            jsonschema.validate(data, FACT_SCHEMA)
        except (ValueError, jsonschema.ValidationError) as exc:
            invalid.append(f"{item['text'][:40]} → {raw[-80:]!r} ({len(raw)} chars): {str(exc)[:80]}")
            continue
        valid += 1
        # the model looped until a string hit its maxLength (what failed before)
        if any(len(f[k]) >= limits[k]["maxLength"] for f in data["facts"] for k in ("text", "evidence")):
            looped.append(item["text"])
    longest = max(backend.count_tokens(raw) for raw, _ in results)
    combined = [merge(rule_facts[i], m) for i, (_, m) in zip(picked, results)]

    # latency: hand-off vs inline, and the critical-path recall
    store = MemoryStore(settings)
    store.add("bench", "warmup", "The user's name is Warm.", "x", slot="user.name")  # loads the embedder
    sample = [i["text"] for i in items if i["facts"]][: args.latency_messages]
    inline_ms, handoff_ms, recall_ms = [], [], []
    for t in sample:
        t0 = time.perf_counter()
        remember(store, "inline", ["bench"], t, "bench", backend=backend)
        inline_ms.append((time.perf_counter() - t0) * 1000)
    worker = Worker(name="bench-memory")
    for t in sample:
        t0 = time.perf_counter()
        worker.submit(remember, store, "handoff", ["bench"], t, "bench", backend=backend)
        handoff_ms.append((time.perf_counter() - t0) * 1000)
    worker.flush()
    for t in sample:
        t0 = time.perf_counter()
        recall(settings, user="inline", character="bench", conversation=["Hello again.", t], budget_tokens=budget,
               store=store)
        recall_ms.append((time.perf_counter() - t0) * 1000)

    handoff, inline = statistics.median(handoff_ms), statistics.median(inline_ms)
    print(json.dumps({
        "bench": "memory", "backend": backend.name, "model": backend.model_name,
        "messages": len(items), "rules": figures(score(items, rule_facts)), "rules_by_lang": by_lang,
        "heldout_messages": len(heldout), "rules_heldout": heldout_rules,
        "llm_messages": len(subset), "llm_json_valid": round(valid / len(subset), 3), "llm_json_valid_n": valid,
        "llm_invalid_examples": invalid[:3], "llm_longest_output_tokens": longest, "llm_max_tokens": LLM_MAX_TOKENS,
        "llm_looped_to_max_length": looped,
        "rules_llm": figures(score(subset, combined)),
        "rules_only_same_messages": figures(score(subset, [rule_facts[i] for i in picked])),
        "long_horizon": long, "budget_tokens": budget, "small_budget_tokens": args.small_budget,
        "recall_vs_baseline": round(long["recall"]["recall_at_budget"] / long["baseline_search"]["recall_at_budget"], 3)
        if long["baseline_search"]["recall_at_budget"] else None,
        "rules_ms_per_message": round(rules_ms, 3), "llm_batched_ms_per_message": round(llm_ms, 1),
        "handoff_ms_p50": round(handoff, 4), "inline_extraction_ms_p50": round(inline, 1),
        "handoff_vs_inline": float(f"{handoff / inline:.3g}") if inline else None,
        "recall_ms_p50": round(statistics.median(recall_ms), 2), "worker_errors": len(worker.errors),
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
