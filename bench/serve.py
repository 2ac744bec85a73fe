"""Concurrent streaming chats through the OpenAI-compatible API (issue 6).

Starts ``roleplay serve`` on a free loopback port (the default CPU model and bundled
cards, a fresh data folder), warms each character up, measures a single client's time to
first token as the baseline, then runs N concurrent streaming chats (default 8) for a
fixed time; requests in flight at the deadline finish, so the run is bounded. Each client
checks its replies are its own (see `roleplay.server.loadtest`). Prints ONE JSON line.

Every client count plays the same mix of characters: chat j is with the j-th of the four
bundled cards (cycling), and a client with fewer clients than cards plays several chats in
turn (`loadtest.client_chats`). So the first count's figures — the ratios' baseline, one
client unless told otherwise — come from chats with all four characters, like the
others'. (Until 2026-12-03 the lone client played Sherlock only: shorter prompts and
fewer new scenes per turn than the crowd's mix, so its ratios mixed the workload's
difference with the cost of sharing the model.)

On the llamacpp backend (the CPU default) each run also gets two raw baselines: after
the server stops, the bench process loads the same GGUF and drives xllamacpp directly,
the same number of parallel streams replaying the clients' chats (the same openers,
warm-up turns, time and ``max_tokens``; see `raw_llamacpp`):

- ``raw_tokens_per_s`` / ``raw_ratio`` (target ≥ 0.8): chats that start from the
  engine's first composed prompt and then only append, which llama.cpp's cache serves
  best. The server's prompts also change where retrieval brings new stories and where
  the history is trimmed, and its replies may be cut early (post-processing), so this
  ratio charges the engine for its prompts as well as for serving them.
- ``raw_composed_tokens_per_s`` / ``raw_composed_ratio``: every turn's prompt composed by
  the engine for the chat so far, sent straight to xllamacpp with the engine's stop
  strings: the same prompts, so the ratio is the cost of serving them (HTTP, admission,
  the prefill line, stream cleaning) alone.

    python bench/serve.py [--backend transformers] [--clients 1,4,8,16] [--seconds 30] [--max-tokens 64]
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


def log(msg: str) -> None:
    """Progress on stderr, so a run cut short by a timeout still leaves its figures so far."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def raw_llamacpp(home: Path, cards: list, *, clients: list[int], seconds: float, max_tokens: int,
                 warm_turns: int, composed: bool = False) -> dict[int, float]:
    """Aggregate generated tokens/s of xllamacpp driven directly, per parallel-stream count.

    Each stream replays a chat as the server's clients do (the same openers, the same
    ``max_tokens``, one call per turn, no HTTP, no engine in between):

    - ``composed=False`` (*append*): the first prompt is the one the engine composes for
      its card and opener; each later turn appends the reply and the next opener in the
      chat template, so llama.cpp's prompt cache reads only the new tokens — the best
      case, a chat whose prompt never changes (no new stories, no trims). The ratio
      against it charges the engine for its prompts and for serving them.
    - ``composed=True``: every turn's prompt is the one the engine composes for the chat
      so far (stories, lore, trims, the stage note prefilled) with the engine's stop
      strings, composed in the stream's thread as the server would; the ratio against it
      is the engine's serving overhead alone (HTTP, admission, the prefill line, stream
      cleaning), the prompts being the same.

    ``warm_turns`` turns per stream are not timed; then all streams run for ``seconds``
    together, and a turn under way at the deadline finishes and counts (as in `run_clients`).
    """
    import threading

    from roleplay.backends import SamplingParams, get_backend
    from roleplay.backends.llamacpp_backend import request_fields
    from roleplay.config import Settings
    from roleplay.engine import Engine, Turn
    from roleplay.server.loadtest import PROMPTS, client_chats

    settings = Settings.from_env(home=home, backend="llamacpp")
    llama = get_backend(settings)
    engine = Engine(settings, backend=llama)
    out: dict[int, float] = {}
    for n in clients:
        tokens = [0] * n
        gate = threading.Barrier(n, action=lambda: clock.update(start=time.perf_counter(),
                                                               deadline=time.monotonic() + seconds))
        clock: dict[str, float] = {}

        def client(i: int) -> None:
            chats = []  # (chat number, card, history, messages sent in append mode)
            for j in client_chats(i, n, len(cards)):
                card = cards[j % len(cards)]
                chats.append((j, card, [], [m for m in engine.prepare(Turn(card, [], PROMPTS[j % len(PROMPTS)])).messages
                                            if m["role"] != "assistant"]))  # the engine's prefill is not the raw model's
            for turn in range(10_000):
                j, card, history, messages = chats[turn % len(chats)]
                chat_turn = turn // len(chats)
                if turn == warm_turns * len(chats):
                    gate.wait()
                if chat_turn >= warm_turns and time.monotonic() >= clock["deadline"]:
                    return
                text = PROMPTS[(j + chat_turn) % len(PROMPTS)]
                params = SamplingParams(max_tokens=max_tokens)
                prefill = ""
                if composed:
                    prompt, params = engine.request(Turn(card, history, text), params)
                    messages, prefill = prompt.messages, prompt.prefill or ""
                pieces: list[str] = []
                counts: list[int] = []

                def on_chunk(chunk: dict) -> bool:
                    pieces.append(chunk["choices"][0].get("text") or "")
                    counts.append((chunk.get("usage") or {}).get("completion_tokens", 0))
                    return False

                llama.server.handle_completions(
                    {"prompt": llama.prompt_ids(messages), "stream": True, **request_fields(params)}, on_chunk)
                if chat_turn >= warm_turns:
                    tokens[i] += max(counts, default=0)
                reply = prefill + "".join(pieces)
                history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
                if not composed:
                    messages += [{"role": "assistant", "content": reply},
                                 {"role": "user", "content": PROMPTS[(j + chat_turn + 1) % len(PROMPTS)]}]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out[n] = round(sum(tokens) / (time.perf_counter() - clock["start"]), 2)
        log(f"raw xllamacpp ({'composed' if composed else 'append'}), {n} streams: {out[n]} tokens/s")
    return out


def run(name: str, *, clients: list[int], seconds: float, max_tokens: int, baseline_requests: int,
        raw: bool = False, warm_turns: int = 1) -> dict:
    """Shared by bench/serve.py and bench/soak.py: one server, a run per client count, as a dict.

    The first count is the baseline: aggregate generated tokens/s and time-to-first-token
    at every other count are divided by its figures (measured in the same run). Each
    client's first ``warm_turns`` turns are not measured (a chat's first turn reads its
    whole prompt; later turns reuse it): their TTFT is reported apart.
    """
    from roleplay.cards import get_card
    from roleplay.config import Settings
    from roleplay.server.loadtest import ServerProcess, median, run_clients, stream_once, summary

    import httpx

    home = Path(tempfile.mkdtemp(prefix=f"roleplay-bench-{name}-"))
    cards = [get_card(c, Settings.from_env(home=home)) for c in CARDS]
    server = ServerProcess(home, port=free_port())
    runs = []
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
        log(f"warm-up done in {warmup_s:.0f}s")
        rss_start = server.rss_mb()
        single, single_model = baseline(server.base, cards, requests=baseline_requests, max_tokens=max_tokens)
        log(f"lone-client baseline: ttft {single}, model ttft {single_model}")
        for n in clients:
            before: dict = {}
            stats, wall = run_clients(
                server.base, cards, clients=n, seconds=seconds, max_tokens=max_tokens, warm_turns=warm_turns,
                on_start=lambda: before.update(httpx.get(server.base + "/health", timeout=5).json()))
            before = before.get("scheduler")
            s = summary(stats)
            after = httpx.get(server.base + "/health", timeout=5).json().get("scheduler")
            runs.append({"clients": n, "requests": s["requests"], "errors": s["errors"], "crossed": s["crossed"],
                         "tokens_per_s": round(s["tokens"] / wall, 2) if wall else None,
                         "ttft_model_p50_s": s["ttft_model_p50_s"], "ttft_model_p95_s": s["ttft_model_p95_s"],
                         "ttft_p50_s": s["ttft_p50_s"], "ttft_p95_s": s["ttft_p95_s"],
                         "latency_p50_s": s["latency_p50_s"], "wall_s": round(wall, 1),
                         "first_turn_ttft_model_p50_s": s["first_turn_ttft_model_p50_s"],
                         "error_samples": s["error_samples"], "crossed_samples": s["crossed_samples"]})
            log(f"run: {json.dumps(runs[-1], ensure_ascii=False)}")
            if before and after:  # how the prompts were read; transformers: how full the batches were
                d = {k: after[k] - before[k] for k in after}
                prompt = d["read_tokens"] + d["reused_tokens"]
                runs[-1].update(prompt_tokens_read=d["read_tokens"],
                                prompt_reused_share=round(d["reused_tokens"] / prompt, 2) if prompt else None)
                if "steps" in d:
                    runs[-1].update(rows_per_step=round(d["rows"] / d["steps"], 2) if d["steps"] else None,
                                    preempted=d["preempted"])
        rss_end = server.rss_mb()
        health = httpx.get(server.base + "/health", timeout=5).json()
    finally:
        server.stop()
    base = runs[0]
    from roleplay.backends.registry import pick_backend

    backend = pick_backend(Settings.from_env(home=home, backend=health.get("backend")))
    if raw and backend == "llamacpp":  # the server is stopped: the CPU is the raw runs'
        for key, composed in (("raw", False), ("raw_composed", True)):
            figures = raw_llamacpp(home, cards, clients=clients, seconds=seconds, max_tokens=max_tokens,
                                   warm_turns=warm_turns, composed=composed)
            for r in runs:
                r[f"{key}_tokens_per_s"] = figures[r["clients"]]
                r[f"{key}_ratio"] = round(r["tokens_per_s"] / figures[r["clients"]], 2) \
                    if figures[r["clients"]] else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    for r in runs:
        r["tokens_per_s_ratio"] = ratio(r["tokens_per_s"], base["tokens_per_s"])
        r["ttft_model_p50_ratio"] = ratio(r["ttft_model_p50_s"], base["ttft_model_p50_s"])
        r["ttft_model_p95_ratio"] = ratio(r["ttft_model_p95_s"], base["ttft_model_p95_s"])
    return {
        "bench": name, "backend": backend, "seconds": seconds, "max_tokens": max_tokens, "warm_turns": warm_turns,
        "baseline_clients": base["clients"], "runs": runs,
        "errors": sum(r["errors"] for r in runs), "crossed": sum(r["crossed"] for r in runs),
        "baseline_single_ttft_model_p50_s": median(single_model), "baseline_single_ttft_p50_s": median(single),
        "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_growth_mb": round(rss_end - rss_start, 1),
        # RSS grows by up to this much by design: the backend's store of kept prompt caches
        "kv_cache_budget_mb": Settings.from_env().kv_cache_mb,
        "warmup_s": round(warmup_s, 1),
    }


def main(name: str = "serve", *, clients: str = "1,4,8,16", seconds: float = 30.0, description: str = "") -> int:
    """Parse the shared options (defaults per bench), run the load test, print one JSON line."""
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--clients", default=clients, help="client counts, comma-separated; the first is the baseline")
    ap.add_argument("--seconds", type=float, default=seconds, help="per client count")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--baseline-requests", type=int, default=3)
    ap.add_argument("--warm-turns", type=int, default=1,
                    help="turns of each chat before the clock starts (reported apart; 0: measure first turns)")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw xllamacpp baseline (llamacpp only)")
    ap.add_argument("--backend", default=None, help="roleplay backend for the server (default: the default)")
    a = ap.parse_args()
    if a.backend:
        os.environ["ROLEPLAY_BACKEND"] = a.backend
    counts = [int(c) for c in str(a.clients).split(",") if c.strip()]
    result = run(name, clients=counts, seconds=a.seconds, max_tokens=a.max_tokens,
                 baseline_requests=a.baseline_requests, raw=name == "serve" and not a.no_raw,
                 warm_turns=a.warm_turns)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 and result["crossed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
