"""Kill the web UI server mid-stream, restart it: the sessions database is intact (issue 8).

``roleplay webui`` runs as a real subprocess. One exchange completes; the next reply is
streaming when the process gets SIGKILL. After a restart on the same data folder the
database passes SQLite's integrity check, the completed exchange and the second user
message are there, no half reply is marked complete, and the chat resumes and goes on.
A small card keeps the prompt short so the test stays quick on the CPU model.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_webui(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "ROLEPLAY_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "roleplay", "webui", "--port", str(port)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError("webui exited: " + proc.stderr.read().decode()[-800:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("webui did not start")


def write_small_card(home: Path) -> None:
    folder = home / "characters" / "mina"
    folder.mkdir(parents=True)
    (folder / "character.yaml").write_text(textwrap.dedent("""\
        id: mina
        name: Mina
        persona: Mina is a cheerful baker who talks about bread.
        greetings: ["(dusts flour off her hands) Welcome to the bakery!"]
        emotions: {happy: ["(smiles)"], calm: ["(nods)"]}
        """), encoding="utf-8")


def test_kill_mid_stream_then_restart_keeps_the_session(tmp_path):
    from gradio_client import Client

    from roleplay.config import Settings
    from roleplay.engine import Engine
    from roleplay.sessions import Session
    from roleplay.sessions.db import integrity_check

    home = tmp_path / "home"
    write_small_card(home)
    port = free_port()
    proc = start_webui(home, port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        chat, _img, _badge, status, *_ = client.predict("mina", "Tom", "", api_name="/new_chat")
        sid = re.search(r"`(\w+)`", status).group(1)
        done = client.submit("Hello! What bread do you have?", 0.0, 0.95, 8, 1, api_name="/send").result()
        assert "Reply saved" in done[4]

        job = client.submit("Tell me a long story about your oven.", 0.0, 0.95, 200, 1, api_name="/send")
        deadline = time.time() + 300
        while time.time() < deadline and len(job.outputs()) < 3:  # streaming has begun
            time.sleep(0.05)
        assert len(job.outputs()) >= 3, "the second reply never started streaming"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    settings = Settings.from_env(home=home)
    assert integrity_check(settings.sessions_db) == "ok"
    msgs = Session.load(Engine(settings), sid).messages
    assert [m.role for m in msgs[:4]] == ["assistant", "user", "assistant", "user"]
    assert msgs[2].complete and msgs[2].text.strip()
    assert msgs[3].text == "Tell me a long story about your oven."
    assert all(not m.complete for m in msgs[4:])  # a cut-off reply is never saved as complete

    proc = start_webui(home, port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        chat, *_ = client.predict(sid, api_name="/resume")
        assert len(chat) >= 4
        done = client.submit("Thanks!", 0.0, 0.95, 8, 1, api_name="/send").result()
        assert "Reply saved" in done[4]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    msgs = Session.load(Engine(settings), sid).messages
    assert msgs[-1].role == "assistant" and msgs[-1].complete
    assert msgs[-2].text == "Thanks!"
