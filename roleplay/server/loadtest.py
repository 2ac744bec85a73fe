"""Load generation against a running API: N streaming chat clients, checked for isolation.

Used by ``bench/serve.py`` (8 clients, 30 s) and ``bench/soak.py`` (16 clients, 60 s).
Each client holds its own conversations (one per client, or several played in turn when
there are fewer clients than characters: `client_chats`) and streams completions until
the deadline. It records the time to first token twice — to the first content (the stage
note, sent as soon as the turn gets the model) and to the model's first generated text —
and checks that what came back is its own:

- every chunk of a stream carries the same completion id, and ids never repeat across
  clients (a chunk from another stream would break this);
- the streamed text starts with the stage note reported in its own final chunk, and that
  note belongs to the client's character (it comes from the card's emotion palette or its
  canonical lines), so a reply built for another character is caught.

Trade-off: threads with blocking ``httpx`` streams rather than asyncio — simpler, and with
at most a few dozen clients the GIL is irrelevant next to the model's time per token.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

#: Openers the clients cycle through (English and Chinese, as the bundled cards are).
PROMPTS = ["Good evening. What are you working on today?", "Tell me something about yourself.",
           "That sounds dangerous. Are you sure?", "Thank you, that was kind of you.",
           "你好！今天过得怎么样？", "Why do you say that?"]


@dataclass
class ClientStats:
    """What one client saw."""

    card_id: str
    ttft: list[float] = field(default_factory=list)
    ttft_model: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    done: int = 0
    errors: list[str] = field(default_factory=list)
    crossed: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    unfinished: bool = False
    #: Time to first model token of the warm-up turns (a chat's first turns read whole prompts).
    first_ttft_model: list[float] = field(default_factory=list)
    #: Tokens the model generated for this client (the server's usage counts).
    tokens: int = 0


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    vals = sorted(values)
    pos = (len(vals) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(vals) - 1)
    return round(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo), 4)


def _bare(note: str) -> str:
    return re.sub(r"^[\s(（*]+|[\s)）*]+$", "", note)


def owns_note(card: Any, note: str) -> bool:
    """Whether ``note`` comes from ``card``'s palette or canonical lines (empty: trivially)."""
    inner = _bare(note)
    if not inner:
        return True
    from ..cards import macros

    palette = [n for notes in card.emotions.values() for n in notes]
    corpus = "\n".join(palette + [text for _label, text in card.all_stories()])
    # The engine expands {{user}}/{{char}} in notes; compare against the expanded card text.
    corpus = macros.expand(corpus, char=card.name, user=card.user_name)
    return inner in corpus


def stream_once(http: httpx.Client, base: str, model: str, messages: list[dict], *, max_tokens: int,
                headers: dict | None = None, timeout: float = 600.0) -> dict:
    """One streamed completion: ``{"text", "ttft", "total", "ids", "extra", "error"}``."""
    body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens}
    t0 = time.perf_counter()
    out: dict[str, Any] = {"text": "", "ttft": None, "ttft_model": None, "total": None, "ids": set(),
                           "extra": None, "error": None, "completion_tokens": 0}
    with http.stream("POST", base + "/v1/chat/completions", json=body, headers=headers or {},
                     timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            out["error"] = f"HTTP {r.status_code}: {r.text[:200]}"
            return out
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                out["error"] = chunk["error"].get("message", "error")
                break
            out["ids"].add(chunk["id"])
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece and out["ttft"] is None:
                    out["ttft"] = time.perf_counter() - t0
                elif piece and out["ttft_model"] is None:
                    # subtle: the first chunk is the prefilled stage note, sent before the
                    # model runs; the second is the model's first generated text
                    out["ttft_model"] = time.perf_counter() - t0
                out["text"] += piece
            if chunk.get("roleplay"):
                out["extra"] = chunk["roleplay"]
                out["completion_tokens"] = int(chunk["roleplay"].get("completion_tokens") or 0)
    out["total"] = time.perf_counter() - t0
    return out


def client_chats(client: int, clients: int, chats: int) -> list[int]:
    """The chats (by number) that client ``client`` of ``clients`` plays, taking turns.

    Chat ``j`` is with ``cards[j % len(cards)]`` and opens with ``PROMPTS[j]``. With fewer
    clients than ``chats`` (the number of cards) a client plays several chats in turn, so
    every client count plays the same mix of characters: a lone client — the baseline the
    others are divided by — is not one character's chat measured against all of theirs.

    >>> client_chats(0, 1, 4), client_chats(1, 2, 4), client_chats(5, 8, 4)
    ([0, 1, 2, 3], [1, 3], [5])
    """
    return list(range(client, max(chats, clients), clients))


def run_clients(base: str, cards: list[Any], *, clients: int, seconds: float, max_tokens: int,
                headers: dict | None = None, hard_limit: float = 900.0,
                warm_turns: int = 0, on_start: Any = None) -> tuple[list[ClientStats], float]:
    """``clients`` threads chatting until ``seconds`` pass (requests in flight then finish).

    Each client plays its `client_chats` in turn. Each chat first has ``warm_turns`` turns
    (checked, but recorded apart in ``ClientStats.first_ttft_model``); the clock starts
    when every client has had them, so the figures describe chats under way, not a crowd
    of first turns. ``on_start()`` runs then. Returns the stats and the measured seconds.
    """
    stop_all = time.monotonic() + hard_limit
    clock: dict[str, float] = {}

    def start_clock() -> None:  # run by one thread when all have warmed up, before any goes on
        if on_start is not None:
            on_start()
        clock["start"] = time.monotonic()
        clock["deadline"] = clock["start"] + seconds

    gate = threading.Barrier(clients, action=start_clock)
    plays = [[(j, cards[j % len(cards)], []) for j in client_chats(i, clients, len(cards))] for i in range(clients)]
    stats = [ClientStats(",".join(card.id for _, card, _ in chats)) for chats in plays]

    def client(i: int) -> None:
        chats, st = plays[i], stats[i]
        turn = 0  # this client's turns, over all its chats
        gated = False
        with httpx.Client() as http:
            while time.monotonic() < stop_all:
                j, card, history = chats[turn % len(chats)]
                chat_turn = turn // len(chats)
                warm = chat_turn < warm_turns
                if not warm and not gated:  # once: a measured turn that failed is retried, not re-gated
                    gated = True
                    try:
                        gate.wait(timeout=max(1.0, stop_all - time.monotonic()))
                    except threading.BrokenBarrierError:
                        st.errors.append("the warm-up turns did not finish before the hard limit")
                        return
                if not warm and time.monotonic() >= clock["deadline"]:
                    return
                text = PROMPTS[(j + chat_turn) % len(PROMPTS)]
                # the whole chat, as chat clients (SillyTavern, ChatGPT-style UIs) send it; the
                # server trims it to its history budget
                messages = history + [{"role": "user", "content": text}]
                try:
                    res = stream_once(http, base, "roleplay/" + card.id, messages, max_tokens=max_tokens,
                                      headers=headers, timeout=max(60.0, stop_all - time.monotonic()))
                except Exception as exc:  # a dropped connection is an error to count, not a crash
                    res = {"error": f"{type(exc).__name__}: {exc}"[:200]}
                if res["error"]:
                    st.errors.append(res["error"])
                    if warm:
                        turn += 1  # still reach the gate, so the others are not kept waiting
                    continue
                _check(card, st, res)
                if warm:
                    if res["ttft_model"] is not None:
                        st.first_ttft_model.append(res["ttft_model"])
                else:
                    st.done += 1
                    st.tokens += res["completion_tokens"]
                    st.totals.append(res["total"])
                    if res["ttft"] is not None:
                        st.ttft.append(res["ttft"])
                    if res["ttft_model"] is not None:
                        st.ttft_model.append(res["ttft_model"])
                history += [{"role": "user", "content": text}, {"role": "assistant", "content": res["text"]}]
                turn += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, stop_all - time.monotonic()))
    for t, st in zip(threads, stats):
        st.unfinished = t.is_alive()  # still waiting at the hard limit: not counted as done
    all_ids = [i for st in stats for i in st.ids]
    if len(all_ids) != len(set(all_ids)):
        stats[0].crossed.append("a completion id was seen by two clients")
    return stats, time.monotonic() - clock.get("start", time.monotonic())


def _check(card: Any, st: ClientStats, res: dict) -> None:
    """Record anything in ``res`` that is not this client's own reply."""
    ids = res["ids"]
    note = (res["extra"] or {}).get("note") or ""
    if len(ids) != 1:
        st.crossed.append(f"{len(ids)} completion ids in one stream")
    else:
        st.ids.append(next(iter(ids)))
    if note and not res["text"].lstrip().startswith(note.strip()):
        st.crossed.append(f"text does not start with its own note {note!r}")
    if not owns_note(card, note):
        st.crossed.append(f"note {note!r} is not {card.id}'s")


def summary(stats: list[ClientStats]) -> dict:
    """Totals over clients: requests, errors, crossed, TTFT and latency quantiles."""
    ttft = [t for st in stats for t in st.ttft]
    ttft_model = [t for st in stats for t in st.ttft_model]
    totals = [t for st in stats for t in st.totals]
    return {"requests": sum(st.done for st in stats), "tokens": sum(st.tokens for st in stats),
            "errors": sum(len(st.errors) for st in stats),
            "crossed": sum(len(st.crossed) for st in stats),
            "unfinished_at_hard_limit": sum(st.unfinished for st in stats),
            "ttft_p50_s": percentile(ttft, 0.5), "ttft_p95_s": percentile(ttft, 0.95),
            "ttft_model_p50_s": percentile(ttft_model, 0.5), "ttft_model_p95_s": percentile(ttft_model, 0.95),
            "first_turn_ttft_model_p50_s": percentile([t for st in stats for t in st.first_ttft_model], 0.5),
            "latency_p50_s": percentile(totals, 0.5), "latency_p95_s": percentile(totals, 0.95),
            "error_samples": [e for st in stats for e in st.errors][:3],
            "crossed_samples": [c for st in stats for c in st.crossed][:3]}


class ServerProcess:
    """``roleplay serve`` in a subprocess on a free loopback port, with its RSS readable."""

    def __init__(self, home: Path, *, port: int, extra_env: dict | None = None) -> None:
        env = {**os.environ, "ROLEPLAY_HOME": str(home), **(extra_env or {})}
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "roleplay", "serve", "--port", str(port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited: " + (self.proc.stderr.read() or b"").decode()[-500:])
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start in time")

    def rss_mb(self) -> float:
        """Resident memory of the server process (Linux /proc), in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None
