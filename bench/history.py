"""History trimming played as chats: prompt tokens read per turn against history kept.

Each bundled card gets one long chat (default 40 turns) of the load test's rotating
openers (`roleplay.server.loadtest.PROMPTS`, what `bench/serve.py`'s clients send) and a
fixed ~50-word reply (no model: the figures are about the prompt). Budgets are fitted to
the default backend's context as in a real chat. Per ``history_trim_to`` policy and turn:

- ``read_per_turn``: prompt tokens (the model's tokenizer, chat template applied) after
  the longest prefix shared with the previous turn's prompt — what a prefix cache reads
  anew; ``excess_per_turn``: that minus the new exchange itself (the reply and the next
  message: what a chat that only appends would read); ``read_ratio``: read_per_turn ÷
  the same figure at 0.65 (the default until 2026-12-03), measured in this run;
- ``history_mean`` / ``history_min``: history tokens the prompt shows (after the chat's
  history first overflows its budget: before that every policy shows all of it);
- ``trims``: turns whose history start moved.

    python bench/history.py [--turns 40] [--cards sherlock,ada,sunwukong,daiyu]

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

POLICIES = [0.65, 0.5, 0.4, 0.3, 1.0]
BASELINE = 0.65
REPLY = {"en": "(smiles faintly) I have been turning the matter over all evening, and I confess the details "
               "refuse to settle. Tell me again what you saw, slowly, and leave nothing out this time.",
         "zh": "（笑了笑）这件事我想了一整晚，细节总是对不上。你再仔细说说当时的情形吧，一点也别漏掉。"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", default="sherlock,ada,sunwukong,daiyu")
    ap.add_argument("--turns", type=int, default=40)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="roleplay-bench-history-") as home:
        os.environ["ROLEPLAY_HOME"] = home
        from roleplay.backends import get_backend
        from roleplay.backends.kv import common_prefix
        from roleplay.compose.composer import card_language
        from roleplay.config import Settings
        from roleplay.engine import Engine, EngineOptions, Turn
        from roleplay.server.loadtest import PROMPTS

        settings = Settings.from_env()
        backend = get_backend(settings)  # the default backend's tokenizer, template and context
        ids = backend.prompt_ids
        out: dict = {"bench": "history", "backend": backend.name, "cards": a.cards.split(","), "turns": a.turns,
                     "policies": {}}
        for trim in POLICIES:
            reads, excess, shown, trims = [], [], [], 0
            start = time.perf_counter()
            for cid in a.cards.split(","):
                engine = Engine(settings, backend=backend)  # a fresh story memory per chat
                card = engine.card(cid)
                reply = REPLY["zh" if card_language(card) == "zh" else "en"]
                history: list[dict] = []
                prev_ids, prev_history, full = None, None, False
                for i in range(a.turns):
                    text = PROMPTS[i % len(PROMPTS)]
                    prompt = engine.prepare(Turn(card, history, text, options=EngineOptions(history_trim_to=trim)))
                    now = ids(prompt.messages)
                    kept = prompt.parts.get("history", 0)
                    if prev_ids is not None:
                        read = len(now) - common_prefix(prev_ids, now)
                        # the new exchange alone, in the chat template (a chat that only appends reads this)
                        new = len(ids([{"role": "user", "content": "."}, {"role": "assistant", "content": reply},
                                       {"role": "user", "content": text}])) - len(ids([{"role": "user", "content": "."}]))
                        reads.append(read)
                        excess.append(max(0, read - new))
                        full = full or kept < prev_history
                        trims += kept < prev_history
                        if full:
                            shown.append(kept)
                    prev_ids, prev_history = now, kept
                    history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
            log(f"trim_to {trim}: {len(reads)} turns in {time.perf_counter() - start:.0f}s")
            out["policies"][str(trim)] = {
                "read_per_turn": round(statistics.mean(reads), 1), "excess_per_turn": round(statistics.mean(excess), 1),
                "history_mean": round(statistics.mean(shown), 1) if shown else None,
                "history_min": min(shown) if shown else None, "trims": trims}
        base = out["policies"][str(BASELINE)]["read_per_turn"]
        for figures in out["policies"].values():
            figures["read_ratio"] = round(figures["read_per_turn"] / base, 3) if base else None
        print(json.dumps(out, ensure_ascii=False), flush=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
