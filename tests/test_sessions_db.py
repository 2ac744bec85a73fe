"""The sessions database: schema migrations, pragmas, cascades and clear errors (no model)."""
from __future__ import annotations

import sqlite3

import pytest

from roleplay.errors import StoreError
from roleplay.sessions import db


def test_fresh_database_is_migrated_in_wal_with_foreign_keys(settings):
    con = db.connect(settings.sessions_db)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS) >= 1
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"sessions", "messages", "swipes"} <= tables
    finally:
        con.close()
    assert db.integrity_check(settings.sessions_db) == "ok"


def test_deleting_a_session_cascades_to_messages_and_swipes(settings):
    with db.transaction(settings.sessions_db) as con:
        con.execute("INSERT INTO sessions (id, characters, user_id, user_name, created, updated)"
                    " VALUES ('s1', '[\"x\"]', 'local', 'U', 0, 0)")
        mid = con.execute("INSERT INTO messages (session_id, position, role, speaker, text, created)"
                          " VALUES ('s1', 0, 'assistant', 'X', 'hi', 0)").lastrowid
        con.execute("INSERT INTO swipes (message_id, idx, text, active, created) VALUES (?, 0, 'hi', 1, 0)", (mid,))
    with db.transaction(settings.sessions_db) as con:
        con.execute("DELETE FROM sessions WHERE id='s1'")
    with db.transaction(settings.sessions_db, write=False) as con:
        assert con.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert con.execute("SELECT COUNT(*) FROM swipes").fetchone()[0] == 0


def test_a_failed_transaction_writes_nothing(settings):
    with pytest.raises(RuntimeError):
        with db.transaction(settings.sessions_db) as con:
            con.execute("INSERT INTO sessions (id, characters, user_id, user_name, created, updated)"
                        " VALUES ('s2', '[]', 'local', 'U', 0, 0)")
            raise RuntimeError("crash in the middle")
    with db.transaction(settings.sessions_db, write=False) as con:
        assert con.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_status_is_constrained(settings):
    with pytest.raises(sqlite3.IntegrityError):
        with db.transaction(settings.sessions_db) as con:
            con.execute("INSERT INTO sessions (id, characters, user_id, user_name, created, updated)"
                        " VALUES ('s3', '[]', 'local', 'U', 0, 0)")
            con.execute("INSERT INTO messages (session_id, position, role, speaker, text, status, created)"
                        " VALUES ('s3', 0, 'assistant', 'X', 'hi', 'done', 0)")


def test_a_newer_schema_is_refused_with_a_clear_error(settings, tmp_path):
    path = tmp_path / "future.db"
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={len(db.MIGRATIONS) + 5}")
    con.close()
    with pytest.raises(StoreError, match="newer than this roleplay"):
        db.connect(path)


def test_a_corrupted_file_gives_one_clear_error(tmp_path):
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match="sessions database"):
        db.connect(path)


def _session_with_messages(path, sid: str, n: int) -> None:
    with db.transaction(path) as con:
        db.create_session(con, sid, title="T", characters=["x"], user_id="local", user_name="U",
                          user_persona="", settings_json="{}")
        for i in range(n):
            db.insert_message(con, sid, role="user" if i % 2 else "assistant", speaker="U" if i % 2 else "X",
                              character_id=None if i % 2 else "x", values={"text": f"m{i}"},
                              swipes=None if i % 2 else [f"m{i}", f"m{i}b"])


def test_a_session_is_found_by_its_id_or_a_unique_prefix_only(settings):
    path = settings.sessions_db
    _session_with_messages(path, "abc111", 0)
    _session_with_messages(path, "abc222", 0)
    with db.transaction(path, write=False) as con:
        assert db.find_session(con, "abc111")["id"] == "abc111"
        assert db.find_session(con, "abc2")["id"] == "abc222"
        assert db.find_session(con, "abc") is None  # ambiguous
        assert db.find_session(con, "") is None
        assert db.find_session(con, "%") is None  # LIKE wildcards are not patterns here
        assert [r["id"] for r in db.list_sessions(con, limit=1)] == ["abc222"]  # the last updated
        assert len(db.list_sessions(con)) == 2


def test_fork_copies_the_path_and_keeps_a_summary_only_if_it_covers_no_later_message(settings):
    path = settings.sessions_db
    _session_with_messages(path, "src", 5)
    with db.transaction(path) as con:
        db.set_summary(con, "src", "story so far", 3)
        db.set_summary(con, "src", "older", 2)  # never moves backwards
        assert db.summary_state(con, "src") == ("story so far", 3)
        db.fork_session(con, "src", "keep", title="", max_position=2, parent_message=None)
        db.fork_session(con, "src", "drop", title="mine", max_position=1, parent_message=None)
    with db.transaction(path, write=False) as con:
        assert db.summary_state(con, "keep") == ("story so far", 3)
        assert db.summary_state(con, "drop") == ("", 0)
        keep = db.list_messages(con, "keep")
        assert [r["text"] for r in keep] == ["m0", "m1", "m2"]
        assert [r["n_swipes"] for r in keep] == [2, 0, 2]
        titles = {r["id"]: r["title"] for r in db.list_sessions(con)}
        assert titles["keep"] == "T (fork)" and titles["drop"] == "mine"
        assert db.complete_lines(con, "src", start=1, end=3) == [("U", "m1"), ("X", "m2")]


def test_delete_from_drops_a_summary_that_covered_deleted_messages(settings):
    path = settings.sessions_db
    _session_with_messages(path, "a", 4)
    _session_with_messages(path, "b", 4)
    with db.transaction(path) as con:
        db.set_summary(con, "a", "covers m0..m2", 3)
        db.set_summary(con, "b", "covers m0", 1)
        assert db.delete_messages_from(con, "a", 2) == 2
        assert db.delete_messages_from(con, "b", 2) == 2
    with db.transaction(path, write=False) as con:
        assert db.summary_state(con, "a") == ("", 0)
        assert db.summary_state(con, "b") == ("covers m0", 1)
        assert [r["text"] for r in db.list_messages(con, "a")] == ["m0", "m1"]


def test_editing_a_reply_rewrites_its_active_swipe(settings):
    path = settings.sessions_db
    _session_with_messages(path, "e", 1)
    with db.transaction(path) as con:
        mid = db.list_messages(con, "e")[0]["id"]
        db.activate_swipe(con, mid, 1)
        db.set_message_text(con, mid, "edited")
    with db.transaction(path, write=False) as con:
        assert db.list_messages(con, "e")[0]["text"] == "edited"
        assert [(r["text"], r["active"]) for r in db.list_swipes(con, mid)] == [("m0", 0), ("edited", 1)]
    with db.transaction(path) as con:
        assert db.delete_session(con, "e") and not db.delete_session(con, "e")
