"""Benchmark: batched against one-at-a-time generation, and the bundled suite's wall time.

Prints ONE JSON line. Two measurements in the same run, on the default backend (the CPU
SmolLM2-135M model unless ROLEPLAY_BACKEND/ROLEPLAY_MODEL say otherwise):

1. throughput: the same ``--batch`` engine-composed prompts (the bundled suite's first
   turns, full engine) generated one at a time with ``Backend.generate`` and then together
   with ``Backend.generate_batch``; greedy, ``--max-tokens`` new tokens each. Reports
   completion tokens per second for both and their ratio (target ≥3× at batch 8).
2. suite: ``roleplay eval bundled`` end to end (engine vs plain, pairwise, logprob judge)
   with ``--turns`` turns and ``--max-tokens`` per reply, into ``--out`` (resumable; the
   folder is wiped first so the time is a cold run on a loaded model).

Usage: ``python bench/eval.py [--batch 8] [--max-tokens 32] [--turns 2] [--skip-suite]``
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--turns", type=int, default=2)
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
    from roleplay.engine import Engine, EngineOptions
    from roleplay.evaluation.runner import RunConfig, read_results, run_eval
    from roleplay.evaluation.suite import item_character, item_opening, load_suite

    from roleplay.config import Budgets

    settings = Settings.from_env(budgets=Budgets(stories=args.budget, lorebook=min(100, args.budget),
                                                 history=args.budget))
    t0 = time.perf_counter()
    backend = get_backend(settings)
    engine = Engine(settings, backend=backend)
    suite = load_suite("bundled")
    prompts = []
    for item in suite.items[: args.batch]:
        card = item_character(item, settings)
        opening = item_opening(item, card)
        history = [{"role": "assistant", "name": card.name, "content": opening}] if opening else []
        prompts.append(engine.prepare(card, history, item.first_message or "Hello.",
                                      user_name=item.user_name, options=EngineOptions()).messages)
    # subtle: min_tokens is not a SamplingParams field, so outputs may stop early at EOS;
    # we count the tokens actually generated, for both ways, so the ratio stays fair.
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, repetition_penalty=1.0)
    backend.generate(prompts[0], SamplingParams(max_tokens=4, temperature=0.0))  # warm-up
    load_s = time.perf_counter() - t0

    t = time.perf_counter()
    seq_out = [backend.generate(p, params) for p in prompts]
    seq_s = time.perf_counter() - t
    t = time.perf_counter()
    bat_out = backend.generate_batch(prompts, params)
    bat_s = time.perf_counter() - t
    seq_tok = sum(backend.count_tokens(o) for o in seq_out)
    bat_tok = sum(backend.count_tokens(o) for o in bat_out)
    result = {
        "bench": "eval", "backend": backend.name, "model": backend.model_name, "batch": len(prompts),
        "max_tokens": args.max_tokens, "budget": args.budget, "load_s": round(load_s, 2),
        "prompt_tokens_mean": round(sum(backend.count_tokens(backend.render(p)) for p in prompts) / len(prompts)),
        "sequential_s": round(seq_s, 2), "sequential_tok_s": round(seq_tok / seq_s, 2),
        "batched_s": round(bat_s, 2), "batched_tok_s": round(bat_tok / bat_s, 2),
        "speedup": round((bat_tok / bat_s) / (seq_tok / seq_s), 2),
        "cpu_count": os.cpu_count(),
    }
    if not args.skip_suite:
        out = Path(args.out)
        shutil.rmtree(out, ignore_errors=True)
        cfg = RunConfig(turns=args.turns, max_tokens=args.max_tokens, batch_size=args.batch,
                        judge={"method": args.method})
        t = time.perf_counter()
        run_eval(suite, cfg, out, settings=settings, progress=False)
        wall = time.perf_counter() - t
        records = read_results(out)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        comp = (summary.get("comparisons") or [{}])[0]
        result.update({"suite": "bundled", "suite_items": len(records), "suite_turns_per_item": args.turns,
                       "suite_judge": args.method, "suite_wall_s": round(wall, 1),
                       "suite_turns_judged": summary.get("turns"),
                       "suite_s_per_turn": round(wall / max(1, summary.get("turns") or 1), 2),
                       "engine_win_rate": comp.get("win_rate"), "engine_win_ci": comp.get("ci"),
                       "run_dir": str(out)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
