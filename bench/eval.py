"""Benchmark: batched against one-at-a-time generation, and the bundled suite's wall time.

Prints ONE JSON line. Two measurements in the same run, on the default backend (the CPU
SmolLM2-135M model unless ROLEPLAY_BACKEND/ROLEPLAY_MODEL say otherwise):

1. throughput: the first ``--batch`` items of the bundled suite played for ``--turns``
   turns (engine-composed prompts, fixed follow-up messages), once one request at a time
   (``Backend.generate``) and once a turn at a time (``Backend.generate_batch``); greedy,
   ``--max-tokens`` new tokens per reply, kept caches cleared before each way. Reports
   completion tokens per second for both and their ratio (target ≥3× at batch 8), also
   for the first turn alone (cold prompts) and the later turns (continuing chats), and
   for the items' first messages alone as ~20-token prompts (decoding-bound reference).
2. suite: ``roleplay eval bundled`` end to end (engine vs plain, pairwise, logprob judge)
   with ``--suite-turns`` turns and ``--max-tokens`` per reply, into ``--out`` (the folder
   is wiped first so the time is a cold run on a loaded model).

Usage: ``python bench/eval.py [--batch 8] [--max-tokens 120] [--turns 3] [--suite-turns 1] [--skip-suite]``
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROLEPLAY_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


#: The user's next messages after the first (fixed, so both ways do the same work).
FOLLOW_UP = {"en": ["Go on, tell me more.", "And what would you do next?"],
             "zh": ["请接着说下去。", "那你接下来打算怎么办？"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=120, help="new tokens per reply (the eval runner's default)")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--suite-turns", type=int, default=1)
    ap.add_argument("--method", choices=["json", "logprob"], default="logprob")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-bundled"))
    ap.add_argument("--skip-suite", action="store_true")
    ap.add_argument("--budget", type=int, default=300,
                    help="token budget for retrieved stories and for history (default 300; the engine's own "
                         "defaults are 1500/1200, which costs ~2300 prompt tokens per reply on the CPU)")
    args = ap.parse_args()

    from roleplay.backends import get_backend
    from roleplay.backends.base import SamplingParams
    from roleplay.config import Settings
    from roleplay.engine import Engine, EngineOptions, Turn
    from roleplay.evaluation.runner import RunConfig, read_results, run_eval
    from roleplay.evaluation.suite import item_character, item_opening, load_suite

    from roleplay.config import Budgets

    settings = Settings.from_env(budgets=Budgets(stories=args.budget, lorebook=min(100, args.budget),
                                                 history=args.budget))
    t0 = time.perf_counter()
    backend = get_backend(settings)
    engine = Engine(settings, backend=backend)
    suite = load_suite("bundled")
    items = suite.items[: args.batch]
    cards = [item_character(item, settings) for item in items]
    # subtle: min_tokens is not a SamplingParams field, so outputs may stop early at EOS;
    # we count the tokens actually generated, for both ways, so the ratio stays fair.
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, repetition_penalty=1.0)

    def workload(batched: bool) -> dict:
        """``--turns`` turns of the first ``--batch`` items, from cold kept caches."""
        backend.clear_kv_cache()  # neither way may reuse the other's prompts
        histories = []
        for item, card in zip(items, cards):
            opening = item_opening(item, card)
            histories.append([{"role": "assistant", "name": card.name, "content": opening}] if opening else [])
        users = [item.first_message or "Hello." for item in items]
        turns, replies, prompt_tokens = [], [], []
        for turn in range(args.turns):
            prompts = [engine.prepare(Turn(card, hist, user, user_name=item.user_name, options=EngineOptions())).messages
                       for item, card, hist, user in zip(items, cards, histories, users)]
            prompt_tokens += [len(backend.prompt_ids(p)) for p in prompts]
            t = time.perf_counter()
            outs = backend.generate_batch(prompts, params) if batched else [backend.generate(p, params)
                                                                            for p in prompts]
            turns.append({"s": time.perf_counter() - t, "tokens": sum(backend.count_tokens(o) for o in outs)})
            replies += outs
            for k, (card, out) in enumerate(zip(cards, outs)):
                histories[k] = histories[k] + [{"role": "user", "content": users[k]},
                                               {"role": "assistant", "name": card.name, "content": out}]
                users[k] = FOLLOW_UP.get(card.language, FOLLOW_UP["en"])[turn % 2]
        return {"turns": turns, "replies": replies, "prompt_tokens": prompt_tokens}

    backend.generate([{"role": "user", "content": "Hello."}], SamplingParams(max_tokens=4, temperature=0))  # warm-up
    load_s = time.perf_counter() - t0
    seq, bat = workload(batched=False), workload(batched=True)

    def rate(run: dict, turns: slice) -> float:
        chosen = run["turns"][turns]
        return sum(t["tokens"] for t in chosen) / sum(t["s"] for t in chosen)

    # Decoding-bound reference: the same items' first user messages alone (~20-token prompts).
    short = [[{"role": "user", "content": item.first_message or "Hello."}] for item in items]
    backend.clear_kv_cache()
    t = time.perf_counter()
    short_seq = [backend.generate(p, params) for p in short]
    short_seq_s = time.perf_counter() - t
    backend.clear_kv_cache()
    t = time.perf_counter()
    short_bat = backend.generate_batch(short, params)
    short_bat_s = time.perf_counter() - t
    short_speedup = (sum(map(backend.count_tokens, short_bat)) / short_bat_s) / \
        (sum(map(backend.count_tokens, short_seq)) / short_seq_s)

    result = {
        "bench": "eval", "backend": backend.name, "model": backend.model_name, "batch": len(items),
        "max_tokens": args.max_tokens, "turns": args.turns, "budget": args.budget, "load_s": round(load_s, 2),
        "prompt_tokens_mean": round(sum(seq["prompt_tokens"]) / len(seq["prompt_tokens"])),
        "sequential_s": round(sum(t["s"] for t in seq["turns"]), 2), "sequential_tok_s": round(rate(seq, slice(None)), 2),
        "batched_s": round(sum(t["s"] for t in bat["turns"]), 2), "batched_tok_s": round(rate(bat, slice(None)), 2),
        "speedup": round(rate(bat, slice(None)) / rate(seq, slice(None)), 2),
        "speedup_first_turn": round(rate(bat, slice(0, 1)) / rate(seq, slice(0, 1)), 2),
        "speedup_later_turns": (round(rate(bat, slice(1, None)) / rate(seq, slice(1, None)), 2)
                                if args.turns > 1 else None),
        "speedup_short_prompts": round(short_speedup, 2),
        "same_replies": round(sum(a == b for a, b in zip(seq["replies"], bat["replies"])) / len(seq["replies"]), 3),
        "cpu_count": os.cpu_count(),
    }
    if not args.skip_suite:
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)
        cfg = RunConfig(turns=args.suite_turns, max_tokens=args.max_tokens, batch_size=args.batch,
                        judge={"method": args.method})
        t = time.perf_counter()
        run_eval(suite, cfg, out, settings=settings, progress=False)
        wall = time.perf_counter() - t
        records = read_results(out)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        comp = (summary.get("comparisons") or [{}])[0]
        result.update({"suite": "bundled", "suite_items": len(records), "suite_turns_per_item": args.suite_turns,
                       "suite_judge": args.method, "suite_wall_s": round(wall, 1),
                       "suite_turns_judged": summary.get("turns"),
                       "suite_s_per_turn": round(wall / max(1, summary.get("turns") or 1), 2),
                       "engine_win_rate": comp.get("win_rate"), "engine_win_ci": comp.get("ci"),
                       "run_dir": str(out)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
