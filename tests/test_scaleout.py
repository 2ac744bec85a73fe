"""Scale-out on one machine: two stateless front-ends, one Chroma server, one model server.

- ``chroma run``: the shared store (stories, lorebook vectors, memories);
- a model server: our own ``roleplay serve`` serving the raw model under its own name —
  a STAND-IN for vLLM's OpenAI server, which we cannot run here (no GPU);
- two ``roleplay serve`` front-ends with ``ROLEPLAY_BACKEND=openai`` pointing at the model
  server and ``ROLEPLAY_CHROMA_URL`` at the Chroma server, each with its own home folder
  (as on two machines).

Two users chat with the same character, each user's turns alternating between the two
front-ends and the two users' requests running at the same time. Every fact a user told
must end up in the shared store exactly once (no lost, no duplicated memories), never under
the other user (no crossed histories), and a later turn through either front-end must get
that user's own memories in its prompt.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support import free_port

REPO = Path(__file__).resolve().parent.parent


def _start(args: list[str], env: dict, ready: str, *, timeout: float = 240.0) -> subprocess.Popen:
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{args[:4]} exited: " + proc.stderr.read().decode()[-800:])
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{args[:4]} did not start")
        time.sleep(0.3)


@pytest.fixture
def cluster(tmp_path):
    chroma_bin = Path(sys.executable).parent / "chroma"
    chroma_bin = str(chroma_bin) if chroma_bin.exists() else shutil.which("chroma")
    assert chroma_bin, "the chroma command (from the chromadb package) is missing"
    procs: list[subprocess.Popen] = []
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ROLEPLAY_") or k == "ROLEPLAY_CACHE"}
    try:
        cport, mport = free_port(), free_port()
        procs.append(_start([chroma_bin, "run", "--path", str(tmp_path / "chroma"), "--port", str(cport)],
                            base_env, f"http://127.0.0.1:{cport}/api/v2/heartbeat"))
        model_env = {**base_env, "ROLEPLAY_HOME": str(tmp_path / "model-server")}
        procs.append(_start([sys.executable, "-m", "roleplay", "serve", "--port", str(mport)], model_env,
                            f"http://127.0.0.1:{mport}/health"))
        model_id = httpx.get(f"http://127.0.0.1:{mport}/v1/models", timeout=30).json()["data"][-1]["id"]
        # warm-up, as a deployment's readiness check would: the model loads on first use
        warm = httpx.post(f"http://127.0.0.1:{mport}/v1/chat/completions", timeout=600, json={
            "model": model_id, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
        assert warm.status_code == 200, warm.text
        fronts = []
        for name in ("a", "b"):
            port = free_port()
            env = {**base_env, "ROLEPLAY_HOME": str(tmp_path / f"front-{name}"),
                   "ROLEPLAY_BACKEND": "openai", "ROLEPLAY_OPENAI_BASE_URL": f"http://127.0.0.1:{mport}/v1",
                   "ROLEPLAY_MODEL": model_id, "ROLEPLAY_CHROMA_URL": f"http://127.0.0.1:{cport}",
                   # rule-based extraction only: the model pass of eight turns would take minutes
                   # on a CPU model server (the memory tests cover it)
                   "ROLEPLAY_MEMORY_LLM": "0"}
            procs.append(_start([sys.executable, "-m", "roleplay", "serve", "--port", str(port)], env,
                                f"http://127.0.0.1:{port}/health"))
            fronts.append(f"http://127.0.0.1:{port}/v1")
            warm = httpx.post(fronts[-1] + "/chat/completions", timeout=600, json={  # indexes the card
                "model": "roleplay/sherlock", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]})
            assert warm.status_code == 200, warm.text
        yield {"fronts": fronts, "chroma": f"http://127.0.0.1:{cport}", "model_id": model_id}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


FACTS = {
    "ana": ["My name is Ana.", "I live in Hamburg.", "I keep bees on my roof.", "My sister Mei is a nurse."],
    "ben": ["My name is Ben.", "I live in Lisbon.", "I collect old maps.", "My brother Tom is a pilot."],
}
KEYWORDS = {"ana": ["Ana", "Hamburg", "bees", "Mei"], "ben": ["Ben", "Lisbon", "maps", "Tom"]}


def test_two_front_ends_share_one_store_and_one_model(cluster, tmp_path):
    import openai

    clients = [openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600) for url in cluster["fronts"]]
    seen: dict[str, list[dict]] = {}
    errors: list[str] = []

    def chat(user: str, offset: int) -> None:
        history: list[dict] = []
        for i, fact in enumerate(FACTS[user]):
            client = clients[(i + offset) % 2]  # every turn on the other front-end
            history.append({"role": "user", "content": fact})
            try:
                r = client.chat.completions.create(model="roleplay/sherlock", messages=history, max_tokens=8,
                                                   temperature=0, user=user)
            except Exception as exc:  # collected: the test fails below with the reason
                errors.append(f"{user} turn {i}: {exc}")
                return
            history.append({"role": "assistant", "content": r.choices[0].message.content})
            seen.setdefault(user, []).append(r.model_dump())

    threads = [threading.Thread(target=chat, args=(u, k)) for k, u in enumerate(FACTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = [r["id"] for rs in seen.values() for r in rs]
    assert len(ids) == len(set(ids)) == 8

    from roleplay.config import Settings
    from roleplay.memory import get_store

    store = get_store(Settings.from_env(home=tmp_path / "reader", chroma_url=cluster["chroma"]))
    deadline = time.monotonic() + 240  # extraction runs in the front-ends' background workers
    while True:
        mems = {u: [m.text for m in store.list(user=u, character="sherlock")] for u in FACTS}
        if all(any(k.lower() in " ".join(mems[u]).lower() for k in KEYWORDS[u]) and
               all(any(k.lower() in t.lower() for t in mems[u]) for k in KEYWORDS[u]) for u in FACTS):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"memories did not all arrive: {mems}")
        time.sleep(1.0)
    for user, other in (("ana", "ben"), ("ben", "ana")):
        texts = mems[user]
        assert len(texts) == len(set(t.lower() for t in texts)), f"duplicated memories for {user}: {texts}"
        for k in KEYWORDS[user]:
            assert sum(k.lower() in t.lower() for t in texts) >= 1, f"{user} lost {k!r}: {texts}"
        for k in KEYWORDS[other]:
            assert not any(k.lower() in t.lower() for t in texts), f"{other}'s {k!r} crossed into {user}: {texts}"

    # a later turn, on either front-end, sees the user's own memories in its prompt
    for client in clients:
        r = client.chat.completions.create(model="roleplay/sherlock", max_tokens=4, temperature=0, user="ana",
                                           messages=[{"role": "user", "content": "Where do I live?"}])
        used = " ".join(r.model_dump().get("roleplay", {}).get("memories", []))
        assert "Hamburg" in used and "Lisbon" not in used
