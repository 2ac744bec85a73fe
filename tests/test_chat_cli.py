"""The `roleplay chat`, `sessions …` and `memory …` commands, run in-process with the real
model (few tokens), real SQLite and a real Chroma store. The interactive chat reads a
piped stdin: greeting first, streamed replies, /regen, /undo, /quit.
"""
from __future__ import annotations

import io
import json

import pytest

from roleplay.cli import main
from roleplay.config import Settings
from roleplay.sessions import Session

HOLMES = """\
id: holmes
name: Sherlock Holmes
user_name: Watson
persona: A consulting detective in London who reasons from small details.
greetings: ["(looks up) You have been in Afghanistan, I perceive."]
"""
FEW = ["--max-tokens", "8", "--temperature", "0"]


@pytest.fixture(autouse=True)
def card(roleplay_home):
    folder = roleplay_home / "characters" / "holmes"
    folder.mkdir(parents=True)
    (folder / "character.yaml").write_text(HOLMES, encoding="utf-8")


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_chat_message_json_then_continue_the_session(capsys, backend):
    out = run_json(capsys, "chat", "holmes", "--message", "Good morning, Holmes.", "--json", "--no-memory", *FEW)
    assert set(out) >= {"reply", "emotion", "note", "story_ids", "prompt_tokens", "completion_tokens",
                        "timings", "session_id", "message_id"}
    assert out["reply"].strip() and out["completion_tokens"] > 0 and out["prompt_tokens"] > 0
    again = run_json(capsys, "chat", "--session", out["session_id"], "--message", "And the weather?", "--json", *FEW)
    assert again["session_id"] == out["session_id"]
    shown = run_json(capsys, "sessions", "show", out["session_id"], "--json")
    assert [m["role"] for m in shown["messages"]] == ["assistant", "user", "assistant", "user", "assistant"]
    assert shown["messages"][-1]["text"] == again["reply"]


def test_piped_interactive_chat_with_regen_undo_quit(capsys, monkeypatch, backend):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there.\n/regen\n/quit\nnever sent\n"))
    assert main(["chat", "holmes", "--no-memory", *FEW]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == "Sherlock Holmes: (looks up) You have been in Afghanistan, I perceive."
    assert sum(line.startswith("Sherlock Holmes: ") for line in lines) == 3  # greeting, reply, regen
    sid = out.err.split("[session ", 1)[1].split(" ", 1)[0]
    s = Session.load(_engine(), sid)
    assert [m.role for m in s.messages] == ["assistant", "user", "assistant"]
    assert s.messages[-1].swipe_count == 2 and s.messages[-1].text == lines[-1].split(": ", 1)[1]
    assert "never sent" not in [m.text for m in s.messages]

    monkeypatch.setattr("sys.stdin", io.StringIO("/undo\n/bogus\n/quit\n"))
    assert main(["sessions", "resume", sid, *FEW]) == 0
    err = capsys.readouterr().err
    assert "[removed 2 messages]" in err and "unknown command /bogus" in err
    assert [m.role for m in Session.load(_engine(), sid).messages] == ["assistant"]


def _engine():
    from roleplay.engine import Engine

    return Engine(Settings.from_env())


def test_sessions_commands_without_the_model(capsys, tmp_path):
    s = Session.new(_engine(), "holmes", settings={"memory": False})
    listed = run_json(capsys, "sessions", "list", "--json")
    assert [r["id"] for r in listed["sessions"]] == [s.id]
    forked = run_json(capsys, "sessions", "fork", s.id, "--json")
    assert forked["parent_session"] == s.id and forked["messages"] == 1
    path = tmp_path / "chat.jsonl"
    assert main(["sessions", "export", s.id, "--format", "jsonl", "-o", str(path)]) == 0
    assert json.loads(path.read_text().splitlines()[0])["character_name"] == "Sherlock Holmes"
    imported = run_json(capsys, "sessions", "import", str(path), "--json")
    assert imported["characters"] == ["holmes"] and imported["messages"] == 1
    md = tmp_path / "chat.md"
    assert main(["sessions", "export", s.id, "--format", "markdown", "-o", str(md)]) == 0
    assert md.read_text().startswith("# Sherlock Holmes")
    capsys.readouterr()
    assert main(["sessions", "export", s.id, "--format", "dpo"]) == 0
    assert capsys.readouterr().out == ""  # no swipes yet: no pairs
    assert run_json(capsys, "sessions", "delete", s.id, "--json") == {"deleted": s.id}
    assert len(run_json(capsys, "sessions", "list", "--json")["sessions"]) == 2


def test_memory_commands(capsys):
    added = run_json(capsys, "memory", "add", "My name is Lin.", "--character", "holmes", "--json")
    assert added["action"] == "ADD"
    again = run_json(capsys, "memory", "add", "My name is Lin.", "--character", "holmes", "--json")
    assert again["action"] == "NOOP"
    run_json(capsys, "memory", "add", "Likes tea.", "--character", "holmes", "--user", "mei", "--json")
    changed = run_json(capsys, "memory", "add", "my name is Lena", "--character", "holmes", "--json")
    assert changed["action"] == "UPDATE" and changed["id"] == added["id"] and changed["text"] == "The user's name is Lena."
    listed = run_json(capsys, "memory", "list", "--json")
    assert listed["user"] == "local" and [m["text"] for m in listed["memories"]] == ["The user's name is Lena."]
    assert listed["memories"][0]["slot"] == "user.name"
    assert run_json(capsys, "memory", "forget", added["id"], "--json") == {"forgotten": added["id"]}
    assert run_json(capsys, "memory", "clear", "--user", "mei", "--json")["cleared"] == 1
    assert run_json(capsys, "memory", "list", "--user", "mei", "--json")["memories"] == []


@pytest.mark.parametrize("argv,message", [
    (["chat", "nosuch", "--message", "hi"], "unknown character 'nosuch'"),
    (["sessions", "show", "nope"], "no session 'nope'"),
    (["memory", "forget", "abc"], "no memory 'abc'"),
    (["memory", "add", "x"], "needs --character"),
    (["chat"], "name a character"),
])
def test_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
