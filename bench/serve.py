"""Concurrent streaming chats through the OpenAI-compatible API (issue 6).

Starts ``roleplay serve`` on a free loopback port (the default CPU model and bundled
cards, a fresh data folder), warms each character up, measures a single client's time to
first token as the baseline, then runs N concurrent streaming chats (default 8) for a
fixed time; requests in flight at the deadline finish, so the run is bounded. Each client
checks its replies are its own (see `roleplay.server.loadtest`). Prints ONE JSON line.

    python bench/serve.py [--clients 8] [--seconds 30] [--max-tokens 16]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROLEPLAY_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

CARDS = ["sherlock", "ada", "sunwukong", "daiyu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline(base: str, cards: list, *, requests: int, max_tokens: int) -> tuple[list[float], list[float]]:
    """TTFTs (first content, first model text) of a lone client, sequential requests."""
    import httpx

    from roleplay.server.loadtest import PROMPTS, stream_once

    out, model = [], []
    with httpx.Client() as http:
        for i in range(requests):
            card = cards[i % len(cards)]
            res = stream_once(http, base, "roleplay/" + card.id,
                              [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=max_tokens)
            if res["error"] is None and res["ttft"] is not None:
                out.append(res["ttft"])
            if res["error"] is None and res["ttft_model"] is not None:
                model.append(res["ttft_model"])
    return out, model


def run(name: str, *, clients: int, seconds: float, max_tokens: int, baseline_requests: int) -> dict:
    """Shared by bench/serve.py and bench/soak.py: one measured run, as a dict."""
    from roleplay.cards import get_card
    from roleplay.config import Settings
    from roleplay.server.loadtest import ServerProcess, median, run_clients, stream_once, summary

    import httpx

    home = Path(tempfile.mkdtemp(prefix=f"roleplay-bench-{name}-"))
    cards = [get_card(c, Settings.from_env(home=home)) for c in CARDS]
    server = ServerProcess(home, port=free_port())
    try:
        t0 = time.perf_counter()
        server.wait_ready()
        with httpx.Client() as http:  # warm-up: model load, indexing, first prompts (not measured)
            for card in cards:
                res = stream_once(http, server.base, "roleplay/" + card.id,
                                  [{"role": "user", "content": "Hello."}], max_tokens=4)
                if res["error"]:
                    raise RuntimeError(f"warm-up failed: {res['error']}")
        warmup_s = time.perf_counter() - t0
        rss_start = server.rss_mb()
        single, single_model = baseline(server.base, cards, requests=baseline_requests, max_tokens=max_tokens)
        t1 = time.perf_counter()
        stats = run_clients(server.base, cards, clients=clients, seconds=seconds, max_tokens=max_tokens)
        wall = time.perf_counter() - t1
        rss_end = server.rss_mb()
    finally:
        server.stop()
    s = summary(stats)
    base_p50, base_model_p50 = median(single), median(single_model)
    return {
        "bench": name, "clients": clients, "seconds": seconds, "max_tokens": max_tokens,
        "backend": os.environ.get("ROLEPLAY_BACKEND", "transformers"), "cards": CARDS,
        **{k: v for k, v in s.items() if not k.endswith("_samples") or v},
        "wall_s": round(wall, 1), "requests_per_s": round(s["requests"] / wall, 3) if wall else None,
        "baseline_single_ttft_p50_s": base_p50,
        "ttft_p50_ratio_vs_single": round(s["ttft_p50_s"] / base_p50, 2) if base_p50 and s["ttft_p50_s"] else None,
        "baseline_single_ttft_model_p50_s": base_model_p50,
        "ttft_model_p50_ratio_vs_single": (round(s["ttft_model_p50_s"] / base_model_p50, 2)
                                           if base_model_p50 and s["ttft_model_p50_s"] else None),
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_mb": round(rss_end - rss_start, 1),
        # RSS grows by up to this much by design: the backend's store of kept prompt caches
        "kv_cache_budget_mb": Settings.from_env().kv_cache_mb,
        "warmup_s": round(warmup_s, 1),
    }


def main(name: str = "serve", *, clients: int = 8, seconds: float = 30.0, description: str = "") -> int:
    """Parse the shared options (defaults per bench), run the load test, print one JSON line."""
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=clients)
    ap.add_argument("--seconds", type=float, default=seconds)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--baseline-requests", type=int, default=3)
    a = ap.parse_args()
    result = run(name, clients=a.clients, seconds=a.seconds, max_tokens=a.max_tokens,
                 baseline_requests=a.baseline_requests)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 and result["crossed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
