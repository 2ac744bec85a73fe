"""Generation benchmark: prints ONE JSON line.

Figures (all measured in this run, against a baseline measured in the same run):
- ``engine_tok_s`` vs ``raw_tok_s``: our transformers backend streaming a reply vs a bare
  ``model.generate`` on the very same token ids and decoding settings (greedy, 64 new
  tokens, KV reuse off so both compute the whole prompt) on the card's persona prompt
  without retrieved stories (so per-token cost, not a 2k-token prefill, dominates);
  ``ratio`` target ≥ 0.95. Repeated alternately; the best run of each side is reported (the machine is shared).
- ``kv_reuse_ttft_ms``: time to the first streamed chunk of a chat's next turn with and
  without reuse of the previous turn's KV cache.
- ``overhead_p50_ms``: per-turn work outside generation (`Engine.prepare`: retrieval, stage
  direction, composition), p50 over a 10-turn Sherlock chat, after one warm-up turn.
- ``prefix_stability``: over the same chat, the share of each turn's prompt tokens that
  equal the previous turn's prompt prefix (mean over turns 2–10; target ≥ 0.8) — what a
  prefix cache (ours, vLLM's, llama.cpp's) can reuse; with the default options, and on
  the same history with ``EngineOptions(cache_friendly=True)`` and with plain per-turn
  retrieval (``story_reuse=0``, the baseline).
- ``story_block_changes``: turns (of 9) whose story block after the system message
  differs from the previous turn's; ``fresh_top1_in_block``: share of turns whose freshly
  retrieved best story (plain per-turn retrieval) is in the prompt actually used (the
  block or an anchored block) — what keeping stories costs in relevance (1.0 = nothing).
- ``llamacpp``: the llamacpp backend (the CPU default) on the same GGUF and prompt ids,
  greedy: ``engine_tok_s`` (our `Backend.stream`: admission, worker thread, stop cutting)
  vs ``raw_tok_s`` (xllamacpp's ``Server.handle_completions`` called directly, same server,
  same request fields); ``ratio`` target ≥ 0.9. ``vs_transformers``: llama.cpp's engine
  tokens/s ÷ the transformers engine tokens/s above (its ``threads``: llama.cpp's workers).

Usage: ``python bench/generation.py [--tokens 64] [--repeats 3] [--llamacpp-only]``
(``--llamacpp-only`` skips the transformers KV-reuse and 10-turn chat figures, keeping
the throughput both ratios need). Runs in a temporary
ROLEPLAY_HOME; the converted model cache defaults to the repository's ``.cache``.
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

USER_TURNS = [
    "Good morning, Holmes. You look as if you have not slept.",
    "A client is waiting downstairs, a young woman in a grey cloak.",
    "She says her stepfather keeps a cheetah and a baboon on the grounds.",
    "Her sister died two years ago, whispering about a speckled band.",
    "Should we take the train to Stoke Moran this afternoon?",
    "The ventilator opens into the next room, not to the outside air. Odd, is it not?",
    "The bell-pull is a dummy, Holmes. It is not even attached to a wire.",
    "What do you make of the saucer of milk on the safe?",
    "I heard a low, clear whistle in the night.",
    "So the band was a swamp adder. How did you know?",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed_stream(stream) -> tuple[float, float, str]:
    """(seconds to first chunk, total seconds, text) of consuming ``stream``."""
    start = time.perf_counter()
    first = None
    parts = []
    for chunk in stream:
        if first is None:
            first = time.perf_counter() - start
        parts.append(chunk)
    return first or 0.0, time.perf_counter() - start, "".join(parts)


def throughput(backend, messages, *, tokens: int, repeats: int) -> dict:
    import torch

    from roleplay.backends import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.1)
    ids = backend.prompt_ids(messages)
    input_ids = torch.tensor([ids], device=backend.device)
    saved = backend.reuse_cache
    backend.reuse_cache = False
    engine, raw = [], []
    try:
        for _ in range(repeats):
            _, secs, _ = timed_stream(backend.stream(messages, params))
            engine.append(backend.last_usage["completion_tokens"] / secs)
            start = time.perf_counter()
            with torch.inference_mode():
                out = backend.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                             max_new_tokens=tokens, do_sample=False, repetition_penalty=1.1,
                                             pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids)
            raw.append((out.shape[1] - len(ids)) / (time.perf_counter() - start))
    finally:
        backend.reuse_cache = saved
    # Best of N: on a shared machine other work only ever slows a run down, so the fastest
    # run of each side is the closest to its true speed.
    e, r = max(engine), max(raw)
    return {"prompt_tokens": len(ids), "new_tokens": tokens, "engine_tok_s": round(e, 2),
            "raw_tok_s": round(r, 2), "ratio": round(e / r, 3)}


def chat_figures(engine, card, *, reply_tokens: int) -> dict:
    """Overhead p50 and prefix stability over a 10-turn chat with real (short) replies.

    The chat is played once with the default options (the model writes the replies); the
    same history is then re-composed with ``cache_friendly=True`` for its stability figure.
    """
    from roleplay.backends import SamplingParams
    from roleplay.engine import EngineOptions, Turn
    from roleplay.backends.kv import common_prefix

    backend = engine.backend
    params = SamplingParams(max_tokens=reply_tokens, temperature=0)
    engine.prepare(Turn(card, [], "Hello there."))  # warm-up: index the card, load the embedder
    history: list[dict] = []
    histories: list[list[dict]] = []
    overhead: list[float] = []
    prompts: list[list[int]] = []
    blocks: list[list[str]] = []  # ids of the story block after the system message, per turn
    shown: list[set[str]] = []  # ids of every story in the prompt (block and anchored blocks)
    for text in USER_TURNS:
        histories.append(list(history))
        start = time.perf_counter()
        prompt = engine.prepare(Turn(card, history, text))
        overhead.append((time.perf_counter() - start) * 1000)
        prompts.append(backend.prompt_ids(prompt.messages))
        blocks.append([s.id for s in prompt.stories])
        shown.append({s.id for s in prompt.shown_stories()})
        reply = engine.reply(Turn(card, history, text), params)
        history += [{"role": "user", "name": card.user_name, "content": text},
                    {"role": "assistant", "name": card.name, "content": reply.text}]
    # The same history re-composed with other options (story_reuse=0 remembers nothing,
    # so it does not disturb the default run's remembered story blocks).
    friendly = EngineOptions(cache_friendly=True)
    friendly_prompts = [backend.prompt_ids(engine.prepare(Turn(card, h, t, options=friendly)).messages)
                        for h, t in zip(histories, USER_TURNS)]
    plain = [engine.prepare(Turn(card, h, t, options=EngineOptions(story_reuse=0.0))) for h, t in zip(histories, USER_TURNS)]
    plain_prompts = [backend.prompt_ids(p.messages) for p in plain]

    def stability(ids: list[list[int]]) -> list[float]:
        return [common_prefix(prev, cur) / len(cur) for prev, cur in zip(ids, ids[1:])]

    shares, friendly_shares, plain_shares = stability(prompts), stability(friendly_prompts), stability(plain_prompts)
    top1 = [bool(p.stories) and p.stories[0].id in ids for p, ids in zip(plain, shown)]
    return {"overhead_p50_ms": round(statistics.median(overhead), 1),
            "prefix_stability": round(statistics.mean(shares), 3),
            "prefix_stability_min": round(min(shares), 3),
            "prefix_stability_cache_friendly": round(statistics.mean(friendly_shares), 3),
            "prefix_stability_plain_retrieval": round(statistics.mean(plain_shares), 3),
            "story_block_changes": sum(a != b for a, b in zip(blocks, blocks[1:])),
            "fresh_top1_in_block": round(sum(top1) / len(top1), 3),
            "final_prompt_tokens": len(prompts[-1])}


def kv_reuse(backend, messages, follow_up) -> dict:
    from roleplay.backends import SamplingParams

    params = SamplingParams(max_tokens=8, temperature=0)
    saved = backend.reuse_cache
    try:
        backend.reuse_cache = True
        backend.generate(messages, params)
        with_reuse, _, _ = timed_stream(backend.stream(follow_up, params))
        reused = backend.last_usage["reused_tokens"]
        backend.reuse_cache = False
        without, _, _ = timed_stream(backend.stream(follow_up, params))
    finally:
        backend.reuse_cache = saved
    return {"kv_reuse_ttft_ms": round(with_reuse * 1000, 1), "no_reuse_ttft_ms": round(without * 1000, 1),
            "kv_reused_tokens": reused}


def llamacpp_figures(settings, messages, *, tokens: int, repeats: int, transformers_tok_s: float) -> dict:
    """The llamacpp backend's stream vs xllamacpp called directly, alternately, best of N."""
    from roleplay.backends import SamplingParams, get_backend
    from roleplay.backends.llamacpp_backend import request_fields

    llama = get_backend(settings.model_copy(update={"backend": "llamacpp"}))
    params = SamplingParams(max_tokens=tokens, temperature=0, repetition_penalty=1.1)
    request = {"prompt": llama.prompt_ids(messages), "stream": True, **request_fields(params)}

    def raw() -> float:
        counts: list[int] = []
        start = time.perf_counter()
        llama.server.handle_completions(request, lambda chunk: counts.append(
            (chunk.get("usage") or {}).get("completion_tokens", 0)) and False)
        return max(counts) / (time.perf_counter() - start)

    llama.generate(messages, params)  # warm-up: both sides then read the prompt from llama.cpp's cache
    engine, direct = [], []
    for _ in range(repeats):
        _, secs, _ = timed_stream(llama.stream(messages, params))
        engine.append(llama.last_usage["completion_tokens"] / secs)
        direct.append(raw())
    e, r = max(engine), max(direct)
    return {"llamacpp": {"engine_tok_s": round(e, 2), "raw_tok_s": round(r, 2), "ratio": round(e / r, 3),
                         "threads": llama.threads, "vs_transformers": round(e / transformers_tok_s, 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reply-tokens", type=int, default=24, help="reply length in the 10-turn chat")
    parser.add_argument("--llamacpp-only", action="store_true",
                        help="skip the transformers KV-reuse and chat figures (keep both throughputs)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="roleplay-bench-") as home:
        os.environ["ROLEPLAY_HOME"] = home
        from roleplay.backends import SamplingParams, get_backend
        from roleplay.config import Settings
        from roleplay.engine import Engine, EngineOptions, Turn

        settings = Settings.from_env(backend="transformers")  # its internals; llama.cpp below
        start = time.perf_counter()
        backend = get_backend(settings)
        load_s = time.perf_counter() - start
        engine = Engine(settings, backend=backend)
        card = engine.card("sherlock")
        log(f"model loaded in {load_s:.1f}s; composing a real prompt")
        first = engine.prepare(Turn(card, [], USER_TURNS[0]))
        messages = first.messages
        # Throughput is measured on a persona-only prompt (no retrieved stories): a 2k-token
        # prefill would dominate the time and hide the per-token overhead we compare.
        short = engine.prepare(Turn(card, [], USER_TURNS[0], options=EngineOptions(retrieval=False))).messages
        result: dict = {"bench": "generation", "backend": backend.name, "model": backend.model_name,
                        "device": backend.device, "load_s": round(load_s, 2)}
        log("throughput: engine stream vs raw model.generate")
        result.update(throughput(backend, short, tokens=args.tokens, repeats=args.repeats))
        log("llama.cpp: our backend vs xllamacpp called directly")
        result.update(llamacpp_figures(settings, short, tokens=args.tokens, repeats=args.repeats,
                                       transformers_tok_s=result["engine_tok_s"]))
        result["targets"] = {"ratio": 0.95, "prefix_stability": 0.8, "llamacpp.ratio": 0.9}
        if args.llamacpp_only:
            print(json.dumps(result), flush=True)
            return
        log("KV reuse on a follow-up turn")
        reply = backend.generate(messages, SamplingParams(max_tokens=16, temperature=0))
        follow = engine.prepare(Turn(card, [{"role": "user", "name": card.user_name, "content": USER_TURNS[0]},
                                       {"role": "assistant", "name": card.name, "content": first.prefill + reply}],
                                USER_TURNS[1]))
        result.update(kv_reuse(backend, messages, follow.messages))
        log("10-turn chat: overhead and prefix stability")
        result.update(chat_figures(engine, card, reply_tokens=args.reply_tokens))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
