"""Session operations with the real SmolLM2 model and real SQLite: a turn, swipes, edit,
continue, delete_from, undo, fork, impersonate, exports (DPO pairs, SillyTavern JSONL,
Markdown) and the rolling summary.

Small test cards without stories keep prompts short; every generation asks for a few
tokens. One chatted session is shared (module scope); tests that change messages work on
a fork of it, which is itself the fork under test.
"""
from __future__ import annotations

import json

import pytest

from roleplay.config import Budgets, Settings
from roleplay.errors import ConfigError, SessionError
from roleplay.sessions import Session

HOLMES = """\
id: holmes
name: Sherlock Holmes
nickname: Holmes
user_name: Watson
persona: A consulting detective in London who reasons from small details.
greetings:
  - "(looks up) You have been in Afghanistan, I perceive."
  - "(sighs) Boredom, {{user}}. Sheer boredom."
"""
FEW = {"max_tokens": 8, "temperature": 0.0}


def write_card(home, text):
    card_id = text.split("\n", 1)[0].split(":", 1)[1].strip()
    folder = home / "characters" / card_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "character.yaml").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def engine(tmp_path_factory, backend):
    from roleplay.engine import Engine

    home = tmp_path_factory.mktemp("sessions-home")
    write_card(home, HOLMES)
    return Engine(Settings.from_env(home=home), backend=backend)


@pytest.fixture(scope="module")
def chat(engine):
    """A session with a greeting, one exchange, and a regenerated second swipe."""
    s = Session.new(engine, "holmes", settings={"memory": False})
    s.send("Good morning, Holmes. Any news?", params=FEW)
    s.regenerate(params={"max_tokens": 8, "temperature": 1.0, "seed": 7})
    return s


def test_greeting_comes_first_with_alternates_as_swipes(engine):
    s = Session.new(engine, "holmes", settings={"memory": False})
    first = s.greeting()
    assert first is not None and first.role == "assistant" and first.position == 0
    assert first.text.startswith("(looks up)")
    assert [w.text for w in s.swipes(first.id)][1] == "(sighs) Boredom, Watson. Sheer boredom."  # macro expanded
    s.choose_swipe(first.id, 1)
    again = Session.load(engine, s.id)
    assert again.messages[0].text.startswith("(sighs)") and again.messages[0].swipe_id == 1


def test_a_turn_is_saved_complete_and_regenerate_adds_an_active_swipe(engine, chat):
    msgs = Session.load(engine, chat.id).messages
    assert [m.role for m in msgs] == ["assistant", "user", "assistant"]
    assert all(m.status == "complete" for m in msgs)
    reply = msgs[-1]
    assert reply.text.strip() and reply.character_id == "holmes"
    assert reply.swipe_count == 2 and reply.swipe_id == 1
    swipes = chat.swipes(reply.id)
    assert [w.active for w in swipes] == [False, True]
    assert swipes[1].text == reply.text
    assert reply.completion_tokens > 0 and reply.timings
    # the history the engine sees: the speaker's own lines as assistant, the user's as user
    assert [h["role"] for h in chat.history()] == ["assistant", "user", "assistant"]


def test_choose_swipe_and_edit(engine, chat):
    s = chat.fork()
    last = s.messages[-1]
    first_text = s.swipes(last.id)[0].text
    assert s.choose_swipe(last.id, 0).text == first_text
    edited = s.edit(last.id, "(nods) I observed the mud on your boots, and")
    assert edited.text.endswith("and") and s.swipes(last.id)[0].text == edited.text
    user = s.messages[1]
    assert s.edit(user.id, "Good evening instead.").text == "Good evening instead."
    with pytest.raises(SessionError, match="swipes 0..1"):
        s.choose_swipe(last.id, 5)
    with pytest.raises(SessionError, match="no message"):
        s.edit(999_999, "x")
    # the original session is untouched by work on its fork
    assert chat.messages[-1].swipe_id == 1


def test_continue_extends_the_last_reply_in_place(engine, chat):
    s = chat.fork()
    last = s.messages[-1]
    s.edit(last.id, "(leans back) The letter was written by a left-handed man who")
    reply = s.continue_(params=FEW)
    after = s.messages[-1]
    assert after.id == last.id and after.text == reply.text
    assert after.text.startswith("(leans back) The letter was written by a left-handed man who")
    assert len(after.text) > len("(leans back) The letter was written by a left-handed man who")
    assert after.status == "complete" and len(s.messages) == 3


def test_delete_from_and_undo(engine, chat):
    s = chat.fork()
    assert s.undo() == 2 and [m.role for m in s.messages] == ["assistant"]
    t = chat.fork()
    assert t.delete_from(t.messages[0].id) == 3 and t.messages == []
    with pytest.raises(SessionError, match="nothing to undo"):
        t.undo()


def test_fork_copies_messages_and_swipes_up_to_a_message(engine, chat):
    user_msg = chat.messages[1]
    child = chat.fork(user_msg.id)
    assert child.id != chat.id and child.parent_session == chat.id and child.parent_message == user_msg.id
    assert [m.text for m in child.messages] == [m.text for m in chat.messages[:2]]
    assert child.messages[0].swipe_count == 2  # the greeting's alternates came along
    assert len(chat.messages) == 3
    listed = {r["id"]: r for r in Session.list(engine)}
    assert listed[child.id]["parent_session"] == chat.id


def test_impersonate_drafts_the_users_line_without_saving(engine, chat):
    before = len(chat.messages)
    draft = chat.impersonate(max_tokens=12)
    assert isinstance(draft, str) and draft.strip()
    assert len(chat.messages) == before


def test_dpo_pairs_are_trl_conversational_preference_rows(engine, chat):
    pairs = chat.dpo_pairs()
    # the greeting (2 alternates) and the reply (2 swipes): one pair each
    assert len(pairs) == 2
    reply = chat.messages[-1]
    row = next(p for p in pairs if p["message_id"] == reply.id)
    assert set(row) >= {"prompt", "chosen", "rejected"}
    assert row["prompt"][0]["role"] == "system"
    assert [m["role"] for m in row["prompt"][1:]] == ["assistant", "user"]
    assert row["prompt"][-1]["content"] == "Good morning, Holmes. Any news?"
    assert row["chosen"] == [{"role": "assistant", "content": reply.text}]
    assert row["rejected"] == [{"role": "assistant", "content": chat.swipes(reply.id)[0].text}]
    json.dumps(pairs)  # JSON-serialisable as is


def test_sillytavern_jsonl_round_trip(engine, chat, tmp_path):
    text = chat.to_tavern_jsonl()
    lines = [json.loads(line) for line in text.splitlines()]
    header, body = lines[0], lines[1:]
    assert header["user_name"] == "Watson" and header["character_name"] == "Sherlock Holmes"
    assert "create_date" in header and "chat_metadata" in header
    assert [m["is_user"] for m in body] == [False, True, False]
    assert body[-1]["swipes"] and body[-1]["swipe_id"] == 1 and body[-1]["mes"] == body[-1]["swipes"][1]
    back = Session.from_tavern_jsonl(engine, text)
    assert back.id != chat.id and back.character_ids == ["holmes"]
    assert [(m.role, m.text, m.swipe_count, m.swipe_id) for m in back.messages] == \
           [(m.role, m.text, m.swipe_count, m.swipe_id) for m in chat.messages]
    # a file from SillyTavern itself: no roleplay metadata, the character named in the header
    plain = "\n".join(json.dumps(x) for x in [
        {"user_name": "Me", "character_name": "Holmes", "create_date": "2024-01-01@10h00m00s", "chat_metadata": {}},
        {"name": "Holmes", "is_user": False, "mes": "Hello.", "swipes": ["Hello.", "Hi."], "swipe_id": 0},
        {"name": "Me", "is_user": True, "mes": "Hi there"},
        {"name": "System", "is_user": False, "is_system": True, "mes": "[note]"}])
    imported = Session.from_tavern_jsonl(engine, plain)
    assert [m.text for m in imported.messages] == ["Hello.", "Hi there"] and imported.user_name == "Me"
    bad = plain.splitlines()
    bad[2] = '{"name": "Me", "is_user": true, "mes": 5}'
    with pytest.raises(SessionError, match=r"chat.jsonl:3: field mes"):
        Session.from_tavern_jsonl(engine, "\n".join(bad))
    with pytest.raises(SessionError, match=r":2: not valid JSON"):
        Session.from_tavern_jsonl(engine, bad[0] + "\n{oops")


def test_markdown_transcript(engine, chat):
    md = chat.to_markdown()
    assert md.startswith("# Sherlock Holmes")
    assert "**Watson:** Good morning, Holmes. Any news?" in md
    assert "*(swipe 2/2)*" in md


def test_rolling_summary_folds_history_that_leaves_the_budget(engine, backend, tmp_path):
    from roleplay.engine import Engine
    from roleplay.memory import get_worker

    home = tmp_path / "small"
    write_card(home, HOLMES)
    small = Engine(Settings.from_env(home=home, budgets=Budgets(history=30, summary=60)), backend=backend)
    s = Session.new(small, "holmes", settings={"memory": False, "summary_llm": False})
    s.send("I found a muddy boot print by the door of the museum last night.", params=FEW)
    assert get_worker().flush(120)
    s.reload()
    assert s.summary_upto > 0 and s.summary.strip()
    assert "Sherlock Holmes:" in s.summary or "Watson:" in s.summary  # extractive: speaker-labelled
    assert len(s.history()) < len([m for m in s.messages if m.complete])


def test_unknown_session_and_empty_message_are_clear_errors(engine, chat):
    with pytest.raises(SessionError, match="no session 'nope'"):
        Session.load(engine, "nope")
    with pytest.raises(SessionError, match="empty"):
        chat.stream("   ")
    before = len(chat.messages)
    with pytest.raises(ConfigError, match="max_tokens"):
        chat.stream("Hello?", params={"max_tokens": 0})
    assert len(chat.messages) == before  # a bad parameter saves nothing
