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
