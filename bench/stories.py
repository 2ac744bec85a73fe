"""Story-block policies played as chats: relevance against prompt tokens read per turn.

Each bundled card's retrieval test set (``tests/data/retrieval/<id>.yaml``, 163 queries)
is played as one long chat: every query opens a new topic (the worst case for keeping
stories) and is followed by "Tell me more about that."; each character turn is a fixed
short line (no model: the figures are about the prompt). Per policy and turn:

- ``expected_new`` / ``expected_follow``: share of new-topic / follow-up turns whose
  prompt shows a story the query set expects (the block or an anchored block);
- ``fresh_top1``: share of turns whose prompt shows the story that plain per-turn
  retrieval ranks first;
- ``read_per_turn``: prompt tokens (the model's tokenizer, chat template applied) after
  the longest prefix shared with the previous turn's prompt — what a prefix cache (vLLM,
  llama.cpp, ours) must read anew; ``read_ratio`` is that ÷ the same figure of plain
  per-turn retrieval in this run (the baseline); ``read_shift_per_turn``: the same when
  the cache may also move runs of ≥ ``settings.kv_shift`` tokens after a dropped part
  (llama.cpp's KV shifting, `prefill.reused_with_shift`); ``block_rebuilds``: turns whose story
  block after the system message changed.

Policies: ``plain`` (``story_reuse=0``: retrieval every turn), ``rebuild``
(``story_anchor=0``: the sticky block, rebuilt when the topic moves on — the default
until 2026-12-02), ``default`` (sticky block + anchored blocks) and ``anchor_0.25`` /
``anchor_0.6`` (other anchored shares).

    python bench/stories.py [--cards sherlock,ada,sunwukong,daiyu] [--limit N]

Prints ONE JSON line.
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

DATA = REPO / "tests" / "data" / "retrieval"
FOLLOW = {"en": "Tell me more about that.", "zh": "再多说说这件事。"}
REPLY = {"en": "(nods slowly) Go on.", "zh": "（点点头）你接着说。"}
POLICIES = {"plain": {"story_reuse": 0.0}, "rebuild": {"story_anchor": 0.0}, "default": {},
            "anchor_0.25": {"story_anchor": 0.25}, "anchor_0.6": {"story_anchor": 0.6}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def play(engine, card, queries: list[dict], options) -> list[dict]:
    """One chat over ``queries``; per turn: shown story indices, prompt ids, block ids."""
    from roleplay.compose.composer import card_language
    from roleplay.engine import Turn
    from roleplay.store.scenes import story_index

    lang = card_language(card)
    history: list[dict] = []
    turns = []
    for item in queries:
        for kind, text in (("new", item["query"]), ("follow", FOLLOW.get(lang, FOLLOW["en"]))):
            prompt = engine.prepare(Turn(card, history, text, options=options))
            shown = prompt.shown_stories()
            turns.append({"kind": kind, "expect": set(item["expect"]),
                          "shown": {story_index(s.source) for s in shown},
                          "shown_ids": {s.id for s in shown}, "block": [s.id for s in prompt.stories],
                          "ids": engine.backend.prompt_ids(prompt.messages)})
            history += [{"role": "user", "name": card.user_name, "content": text},
                        {"role": "assistant", "name": card.name, "content": REPLY.get(lang, REPLY["en"])}]
    return turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", default="sherlock,ada,sunwukong,daiyu")
    ap.add_argument("--limit", type=int, default=0, help="queries per card (0: all)")
    a = ap.parse_args()
    import yaml

    with tempfile.TemporaryDirectory(prefix="roleplay-bench-stories-") as home:
        os.environ["ROLEPLAY_HOME"] = home
        from roleplay.backends import get_backend
        from roleplay.backends.kv import common_prefix
        from roleplay.backends.prefill import reused_with_shift
        from roleplay.config import Settings
        from roleplay.engine import Engine, EngineOptions

        settings = Settings.from_env()
        backend = get_backend(settings)  # the default backend's tokenizer and chat template
        runs: dict[str, list[dict]] = {}
        plain_top: dict[str, list] = {}
        for name, opts in POLICIES.items():
            turns_all = []
            for cid in a.cards.split(","):
                engine = Engine(settings, backend=backend)  # a fresh story memory per chat
                card = engine.card(cid)
                queries = yaml.safe_load((DATA / f"{cid}.yaml").read_text(encoding="utf-8"))
                queries = queries[:a.limit] if a.limit else queries
                start = time.perf_counter()
                turns = play(engine, card, queries, EngineOptions(**opts))
                log(f"{name} {cid}: {len(turns)} turns in {time.perf_counter() - start:.0f}s")
                if name == "plain":
                    plain_top[cid] = [t["block"][0] if t["block"] else None for t in turns]
                for t, top in zip(turns, plain_top[cid]):
                    t["top"] = top
                for prev, cur in zip(turns, turns[1:]):
                    cur["read"] = len(cur["ids"]) - common_prefix(prev["ids"], cur["ids"])
                    cur["read_shift"] = len(cur["ids"]) - reused_with_shift(prev["ids"], cur["ids"], settings.kv_shift)
                    cur["rebuilt"] = cur["block"] != prev["block"]
                turns_all += turns[1:]  # a chat's first turn reads its whole prompt under every policy
            runs[name] = turns_all

        def share(turns, test) -> float:
            return round(sum(map(test, turns)) / len(turns), 3) if turns else 0.0

        out: dict = {"bench": "stories", "backend": backend.name, "cards": a.cards.split(","),
                     "turns": len(runs["plain"]), "policies": {}}
        base = statistics.mean(t["read"] for t in runs["plain"])
        for name, turns in runs.items():
            new = [t for t in turns if t["kind"] == "new"]
            follow = [t for t in turns if t["kind"] == "follow"]
            read = statistics.mean(t["read"] for t in turns)
            out["policies"][name] = {
                "expected_new": share(new, lambda t: bool(t["expect"] & t["shown"])),
                "expected_follow": share(follow, lambda t: bool(t["expect"] & t["shown"])),
                "fresh_top1": share(turns, lambda t: t["top"] is None or t["top"] in t["shown_ids"]),
                "read_per_turn": round(read, 1), "read_p95": sorted(t["read"] for t in turns)[int(0.95 * (len(turns) - 1))],
                "read_ratio": round(read / base, 3),
                "read_shift_per_turn": round(statistics.mean(t["read_shift"] for t in turns), 1),
                "read_shift_p95": sorted(t["read_shift"] for t in turns)[int(0.95 * (len(turns) - 1))],
                "block_rebuilds": sum(t["rebuilt"] for t in turns),
                "prompt_tokens_mean": round(statistics.mean(len(t["ids"]) for t in turns), 1)}
        print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
