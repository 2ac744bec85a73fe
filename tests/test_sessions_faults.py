"""Faults: a process killed mid-turn, a backend that raises mid-stream, a stream the caller
abandons. The database stays sound, completed messages stay, and no cut-short reply is
ever saved as complete. Real model, real SQLite, a real subprocess and SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from roleplay.backends.base import Backend, Piece
from roleplay.config import Settings
from roleplay.errors import BackendError
from roleplay.sessions import Session, db

REPO = Path(__file__).resolve().parent.parent
HOLMES = """\
id: holmes
name: Sherlock Holmes
user_name: Watson
persona: A consulting detective in London who reasons from small details.
greetings: ["(looks up) You have been in Afghanistan, I perceive."]
"""


def write_card(home: Path) -> None:
    folder = home / "characters" / "holmes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "character.yaml").write_text(HOLMES, encoding="utf-8")


class FaultInjectionBackend(Backend):
    """Fault-injection stand-in: the real backend, raising after ``after`` chunks."""

    name = "fault-injection"

    def __init__(self, inner: Backend, *, after: int) -> None:
        self.inner = inner
        self.after = after
        self.model_name = inner.model_name

    def _pieces(self, messages, params, *, priority):
        inner = self.inner.stream(messages, params, priority=priority)
        try:
            for i, chunk in enumerate(inner):
                if i >= self.after:
                    raise RuntimeError("injected backend failure")
                yield Piece(text=chunk)
        finally:
            inner.close()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def render(self, messages) -> str:
        return self.inner.render(messages)


def _rows(path: Path) -> list[dict]:
    with db.transaction(path, write=False) as con:
        return [dict(r) for r in con.execute("SELECT role, text, status, position FROM messages ORDER BY session_id, position")]


def test_backend_raising_mid_stream_keeps_the_user_message_and_no_complete_half_reply(roleplay_home, backend):
    from roleplay.engine import Engine

    write_card(roleplay_home)
    engine = Engine(Settings.from_env(), backend=FaultInjectionBackend(backend, after=2))
    s = Session.new(engine, "holmes", settings={"memory": False})
    seen: list[str] = []
    with pytest.raises(BackendError, match="injected backend failure"):
        for piece in s.stream("What do you see on my sleeve?", params={"max_tokens": 16, "temperature": 0}):
            seen.append(piece)
    assert seen, "the stream should have produced text before the failure"
    msgs = Session.load(engine, s.id).messages
    assert msgs[1].role == "user" and msgs[1].text == "What do you see on my sleeve?" and msgs[1].complete
    assert len(msgs) == 3 and msgs[2].status == "error" and not msgs[2].complete
    assert "injected backend failure" in msgs[2].extra["error"]
    # the half reply is visible but never fed back to the model
    assert [h["content"] for h in s.history()][-1] == "What do you see on my sleeve?"
    # reopened from the database, only the greeting is a complete reply
    again = Session.load(Engine(Settings.from_env(), backend=backend), s.id)
    assert [m.position for m in again.messages if m.role == "assistant" and m.complete] == [0]


def test_abandoned_stream_is_saved_as_partial(roleplay_home, backend):
    from roleplay.engine import Engine

    write_card(roleplay_home)
    engine = Engine(Settings.from_env(), backend=backend)
    s = Session.new(engine, "holmes", settings={"memory": False})
    stream = s.stream("Tell me about the case.", params={"max_tokens": 16, "temperature": 0})
    first = next(stream)
    assert isinstance(first, str) and first
    stream.close()  # the reader went away (closed tab, Ctrl-C)
    last = s.messages[-1]
    assert last.role == "assistant" and last.status == "partial" and last.text == first
    assert s.messages[-2].text == "Tell me about the case."


def test_process_killed_mid_turn_leaves_a_sound_database(roleplay_home):
    """`roleplay chat` in a subprocess, SIGKILLed while streaming its second reply."""
    write_card(roleplay_home)
    env = dict(os.environ, ROLEPLAY_HOME=str(roleplay_home), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "roleplay", "chat", "holmes", "--no-memory",
                             "--max-tokens", "16", "--temperature", "0"],
                            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out = bytearray()

    def pump() -> None:
        while True:
            b = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(1)
            if not b:
                return
            out.extend(b)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    dbp = roleplay_home / "sessions.db"

    def wait_for(cond, what: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if proc.poll() is not None:
                raise AssertionError(f"chat exited early ({proc.returncode}) waiting for {what}: "
                                     f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"timed out waiting for {what}; output: {out.decode(errors='replace')}")
            time.sleep(0.05)

    try:
        proc.stdin.write(b"Good morning, Holmes.\n")
        proc.stdin.flush()
        wait_for(lambda: dbp.exists() and sum(r["role"] == "assistant" and r["status"] == "complete"
                                              for r in _rows(dbp)) >= 2, "the first reply to be saved")
        mark = len(out)
        proc.stdin.write(b"What do you deduce from my hat?\n")
        proc.stdin.flush()
        # the reply has started streaming once its speaker label and first text are out
        wait_for(lambda: b"Sherlock Holmes: " in out[mark:] and
                 len(out[mark:].split(b"Sherlock Holmes: ", 1)[-1].strip()) > 0, "the second reply to stream")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert db.integrity_check(dbp) == "ok"
    rows = _rows(dbp)
    assert [r["role"] for r in rows[:4]] == ["assistant", "user", "assistant", "user"]
    assert all(r["status"] == "complete" for r in rows[:4])
    assert rows[3]["text"] == "What do you deduce from my hat?"
    # the reply being streamed at the kill is not there as complete
    assert all(r["status"] != "complete" for r in rows[4:])
    assert len(rows) == 4
    # "restart": a new process opens the session and would answer the unanswered message
    from roleplay.engine import Engine

    (listed,) = Session.list(Settings.from_env())
    again = Session.load(Engine(Settings.from_env()), listed["id"])
    assert again.history()[-1] == {"role": "user", "name": "Watson", "content": "What do you deduce from my hat?"}
