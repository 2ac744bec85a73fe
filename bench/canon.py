"""Benchmark: canon continuation, full engine vs plain persona prompt, on the bundled characters.

Prints ONE JSON line. Both systems run in the same process on the same cut points (the
baseline is measured in the same run): ``--n`` cut points per character from each of the
four bundled characters (sherlock, ada in English; sunwukong, daiyu in Chinese), each
scene under test left out of retrieval, greedy, ``--max-tokens`` per reply, prompts kept
small with ``--budget`` (stories and history) because every prompt token costs on a CPU.

Figures: per system and metric the mean and its 95 % scene-bootstrap interval; per metric
the paired difference engine − plain with its interval and sign-test p; seconds per cut
point (batch wall time shared out) for each system; ratios engine/plain for semantic
similarity, chrF, attribution and time.

Usage: ``python bench/canon.py [--n 6] [--max-tokens 48] [--batch 8] [--budget 300] [--out runs/bench-canon]``
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

CHARACTERS = ["sherlock", "ada", "sunwukong", "daiyu"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="cut points per character")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--budget", type=int, default=300, help="token budget for retrieved stories and for history")
    ap.add_argument("--systems", default="engine,plain", help="comma-separated, baseline last")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-canon"))
    args = ap.parse_args()

    from roleplay.config import Budgets, Settings
    from roleplay.evaluation.canon import canon_run

    settings = Settings.from_env(budgets=Budgets(stories=args.budget, lorebook=min(100, args.budget),
                                                 history=args.budget, memories=0, summary=0))
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a cold run: nothing resumed
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    t0 = time.perf_counter()
    run = canon_run(CHARACTERS, systems=systems, n=args.n, settings=settings, out_dir=out,
                    max_tokens=args.max_tokens, batch_size=args.batch)
    summary = run.run()
    wall = time.perf_counter() - t0

    def fig(v: dict | None) -> list | None:
        return None if v is None else [round(v["mean"], 4), round(v["ci"][0], 4), round(v["ci"][1], 4)]

    base = systems[-1]
    result = {
        "bench": "canon", "characters": CHARACTERS, "n_per_character": args.n, "items": summary["items"],
        "scenes": summary["groups"], "max_tokens": args.max_tokens, "budget": args.budget,
        "systems": {s: {k: fig(v) for k, v in m.items()} for s, m in summary["metrics"].items()},
        "paired": {c["system"] + "-" + c["baseline"]: {k: [round(pc["diff"], 4), round(pc["ci"][0], 4),
                                                             round(pc["ci"][1], 4), round(pc["p_sign"], 4)]
                                                         for k, pc in c["metrics"].items()}
                   for c in summary["comparisons"]},
        "seconds_per_cut": {s: round(v, 3) if v is not None else None for s, v in summary["seconds_per_item"].items()},
        "wall_s": round(wall, 1),
    }
    for s in systems[:-1]:
        for key in ("semantic", "chrf", "attributed"):
            a, b = summary["metrics"][s].get(key), summary["metrics"][base].get(key)
            if a and b and b["mean"]:
                result[f"ratio_{key}_{s}_vs_{base}"] = round(a["mean"] / b["mean"], 3)
        ta, tb = summary["seconds_per_item"].get(s), summary["seconds_per_item"].get(base)
        if ta and tb:
            result[f"ratio_time_{s}_vs_{base}"] = round(ta / tb, 3)
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
