"""The sessions database: SQLite in WAL mode, schema migrations as ordered code.

Trade-offs: one short-lived connection per operation (``with transaction(path) as con``)
instead of a long-lived shared one — opening SQLite costs ~0.1 ms, and it makes the
database safe to use from the web UI's worker threads and the memory worker without a
lock of our own. WAL mode with ``synchronous=NORMAL`` keeps every committed transaction
across a process kill (only an OS crash may lose the last one), and readers never block
the writer. Migrations are small functions applied in order; ``PRAGMA user_version``
records how many ran, so a schema change is a new function appended to `MIGRATIONS`.
This is the only module that writes SQL: the named functions at the end (sessions:
create, find, list, fork, settings, summary; messages: append, list, edit, delete from;
swipes: add, activate, list) run inside the caller's transaction, so the caller decides
what commits together; the active swipe is mirrored into its message row.
"""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import StoreError
from ..reply import REPLY_FIELDS as RECORD_FIELDS

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next schema migration (order of definition = order applied)."""
    MIGRATIONS.append(fn)
    return fn


def _script(con: sqlite3.Connection, sql: str) -> None:
    """Run ``;``-separated statements inside the current transaction.

    subtle: ``executescript`` would COMMIT first, breaking the migration's transaction.
    """
    sql = re.sub(r"--[^\n]*", "", sql)  # comments may hold a ';'
    for stmt in sql.split(";"):
        if stmt.strip():
            con.execute(stmt)


@migration
def m001_initial(con: sqlite3.Connection) -> None:
    _script(con, """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        characters TEXT NOT NULL,            -- JSON list of card ids, first = main character
        user_id TEXT NOT NULL,               -- whose long-term memory this chat reads and feeds
        user_name TEXT NOT NULL,
        user_persona TEXT NOT NULL DEFAULT '',
        settings TEXT NOT NULL DEFAULT '{}', -- JSON: sampling, memory, group strategy
        summary TEXT NOT NULL DEFAULT '',
        summary_upto INTEGER NOT NULL DEFAULT 0,  -- messages at positions < this are summarised
        parent_session TEXT,                 -- set on forks
        parent_message INTEGER,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,           -- the ordinal on the session's path
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        speaker TEXT NOT NULL,               -- display name; for assistants also character_id
        character_id TEXT,                   -- the card that spoke (assistant) or was voiced
        text TEXT NOT NULL,                  -- mirrors the active swipe for assistant messages
        emotion TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        intent TEXT NOT NULL DEFAULT '',
        story_ids TEXT NOT NULL DEFAULT '[]',
        lore_names TEXT NOT NULL DEFAULT '[]',
        memories TEXT NOT NULL DEFAULT '[]',
        timings TEXT NOT NULL DEFAULT '{}',
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'partial', 'error')),
        swipe_id INTEGER NOT NULL DEFAULT 0,
        extra TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL,
        UNIQUE (session_id, position)
    );
    CREATE TABLE swipes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        text TEXT NOT NULL,
        emotion TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        intent TEXT NOT NULL DEFAULT '',
        story_ids TEXT NOT NULL DEFAULT '[]',
        lore_names TEXT NOT NULL DEFAULT '[]',
        memories TEXT NOT NULL DEFAULT '[]',
        timings TEXT NOT NULL DEFAULT '{}',
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'partial', 'error')),
        active INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        UNIQUE (message_id, idx)
    );
    CREATE INDEX messages_by_session ON messages(session_id, position);
    CREATE INDEX swipes_by_message ON swipes(message_id, idx);
    CREATE INDEX sessions_by_updated ON sessions(updated);
    """)


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def _open(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is
        # exactly the `with transaction()` block (Python's implicit transactions are not).
        con = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the sessions database {path}: {exc} "
                         "(move the file away to start a fresh one)") from None
    return con


def migrate(con: sqlite3.Connection) -> int:
    """Apply the migrations that have not run yet; return the schema version.

    Each step reads the version inside its own write transaction, so two processes
    opening a new database at once never apply the same migration twice.
    """
    while True:
        con.execute("BEGIN IMMEDIATE")
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"the sessions database has schema version {version}, newer than this "
                                 f"roleplay ({len(MIGRATIONS)}); upgrade roleplay")
            if version == len(MIGRATIONS):
                con.execute("COMMIT")
                return version
            MIGRATIONS[version](con)
            con.execute(f"PRAGMA user_version={version + 1}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def connect(path: Path) -> sqlite3.Connection:
    """A new connection to the database at ``path``, migrated to the current schema."""
    con = _open(path)
    key = str(path.resolve())
    if key not in _migrated:
        with _migrate_lock:
            try:
                migrate(con)
            except sqlite3.DatabaseError as exc:
                con.close()
                raise StoreError(f"the sessions database {path} is unreadable: {exc}") from None
            _migrated.add(key)
    return con


@contextmanager
def transaction(path: Path, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """A connection inside one transaction: committed on success, rolled back on error.

    Write transactions start with ``BEGIN IMMEDIATE`` so two writers never deadlock on
    a read lock upgrade; the busy timeout makes the second wait.
    """
    con = connect(path)
    try:
        con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"sessions database {path}: {exc}") from None
    finally:
        con.close()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def integrity_check(path: Path) -> str:
    """SQLite's own consistency check: ``"ok"`` when the file is sound."""
    con = connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _insert(con: Any, table: str, cols: dict) -> int:
    """INSERT one row of ``cols`` into ``table``; its rowid."""
    keys = list(cols)
    return con.execute(f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                       [cols[k] for k in keys]).lastrowid


# -- message rows (used by Session and the importers) ------------------------------------
#: Columns shared by a message row and its swipes (the active swipe is mirrored): the
#: fields of `roleplay.reply.ReplyRecord`, plus the status.
REPLY_FIELDS = (*RECORD_FIELDS, "status")
_JSON_FIELDS = {"story_ids": [], "lore_names": [], "memories": [], "timings": {}}


def reply_columns(record: dict, status: str = "complete") -> dict:
    """Column values for a reply's `ReplyRecord.record` (lists and dicts as JSON)."""
    cols: dict[str, Any] = {}
    for key in RECORD_FIELDS:
        value = record.get(key)
        if key in _JSON_FIELDS:
            value = dumps(value if value is not None else _JSON_FIELDS[key])
        elif key in ("prompt_tokens", "completion_tokens"):
            value = int(value or 0)
        else:
            value = value if value is not None else ""
        cols[key] = value
    cols["status"] = status
    return cols


def row_record(row: Any) -> dict:
    """A message or swipe row's reply fields, decoded (the inverse of `reply_columns`)."""
    return {key: loads(row[key], _JSON_FIELDS[key]) if key in _JSON_FIELDS else row[key] for key in RECORD_FIELDS}


def insert_message(con: Any, session_id: str, *, role: str, speaker: str, character_id: str | None,
                   values: dict, swipes: list | None = None, extra: dict | None = None) -> int:
    """Append a message (and its swipes; the first is active) at the end of the path."""
    pos = con.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM messages WHERE session_id=?",
                      (session_id,)).fetchone()[0]
    cols = {k: values[k] for k in REPLY_FIELDS if k in values}
    cols.update({"session_id": session_id, "position": pos, "role": role, "speaker": speaker,
                 "character_id": character_id, "swipe_id": 0, "extra": dumps(extra or {}),
                 "created": time.time()})
    mid = _insert(con, "messages", cols)
    for i, sw in enumerate(swipes or []):
        sw_values = {"text": sw} if isinstance(sw, str) else sw
        insert_swipe(con, mid, i, sw_values, active=(i == 0))
    touch_session(con, session_id)
    return mid


def insert_swipe(con: Any, message_id: int, idx: int, values: dict, *, active: bool) -> None:
    cols = {k: values[k] for k in REPLY_FIELDS if k in values}
    cols.update({"message_id": message_id, "idx": idx, "active": int(active), "created": time.time()})
    _insert(con, "swipes", cols)


def add_swipe(con: Any, message_id: int, values: dict, *, activate: bool) -> int:
    idx = con.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM swipes WHERE message_id=?", (message_id,)).fetchone()[0]
    insert_swipe(con, message_id, idx, values, active=False)
    if activate:
        activate_swipe(con, message_id, idx)
    return idx


def activate_swipe(con: Any, message_id: int, idx: int) -> None:
    """Mark swipe ``idx`` active and mirror it into the message row."""
    con.execute("UPDATE swipes SET active=(idx=?) WHERE message_id=?", (idx, message_id))
    sw = con.execute("SELECT * FROM swipes WHERE message_id=? AND idx=?", (message_id, idx)).fetchone()
    sets = ", ".join(f"{k}=?" for k in REPLY_FIELDS)
    con.execute(f"UPDATE messages SET {sets}, swipe_id=? WHERE id=?",
                [sw[k] for k in REPLY_FIELDS] + [idx, message_id])


def copy_messages(con: Any, src: str, dst: str, *, max_position: int) -> None:
    rows = con.execute("SELECT * FROM messages WHERE session_id=? AND position<=? ORDER BY position",
                       (src, max_position)).fetchall()
    for r in rows:
        new_id = _insert(con, "messages", {**{k: r[k] for k in r.keys() if k != "id"}, "session_id": dst})
        for s in list_swipes(con, r["id"]):
            _insert(con, "swipes", {**{k: s[k] for k in s.keys() if k != "id"}, "message_id": new_id})


def touch_session(con: Any, session_id: str) -> None:
    """Mark a session as just changed (the sessions list is ordered by it)."""
    con.execute("UPDATE sessions SET updated=? WHERE id=?", (time.time(), session_id))


def extend_message(con: Any, message_id: int, text: str, *, added_tokens: int) -> None:
    """A continued reply: its new whole text, on the message and its active swipe."""
    con.execute("UPDATE messages SET text=?, status='complete', completion_tokens=completion_tokens+? WHERE id=?",
                (text, int(added_tokens), message_id))
    con.execute("UPDATE swipes SET text=?, status='complete' WHERE message_id=? AND active=1", (text, message_id))



# -- session rows ------------------------------------------------------------------------
def create_session(con: Any, session_id: str, *, title: str, characters: list[str], user_id: str,
                   user_name: str, user_persona: str, settings_json: str, summary: str = "",
                   summary_upto: int = 0, parent_session: str | None = None,
                   parent_message: int | None = None) -> None:
    """A new session row (created and updated now); ``characters`` in speaking order."""
    now = time.time()
    _insert(con, "sessions", {
        "id": session_id, "title": title, "characters": dumps(characters), "user_id": user_id,
        "user_name": user_name, "user_persona": user_persona, "settings": settings_json, "summary": summary,
        "summary_upto": int(summary_upto), "parent_session": parent_session, "parent_message": parent_message,
        "created": now, "updated": now})


def find_session(con: Any, session_id: str) -> sqlite3.Row | None:
    """The session row with this id, else the one whose id starts with it (a unique
    prefix is accepted, as with git hashes), else None."""
    row = con.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
    if row is None and session_id:
        rows = con.execute("SELECT * FROM sessions WHERE id LIKE ? LIMIT 2",
                           (session_id.replace("%", "").replace("_", "") + "%",)).fetchall()
        row = rows[0] if len(rows) == 1 else None
    return row


def list_sessions(con: Any, *, limit: int | None = None) -> list[sqlite3.Row]:
    """Session rows, most recently updated first, with ``messages`` (their count) and
    ``last`` (the last message's text); all of them when ``limit`` is None."""
    return con.execute(
        "SELECT s.id, s.title, s.characters, s.user_id, s.user_name, s.created, s.updated,"
        " s.parent_session, (SELECT COUNT(*) FROM messages m WHERE m.session_id=s.id) AS messages,"
        " (SELECT text FROM messages m WHERE m.session_id=s.id ORDER BY position DESC LIMIT 1) AS last"
        " FROM sessions s ORDER BY s.updated DESC LIMIT ?", (-1 if limit is None else int(limit),)).fetchall()


def delete_session(con: Any, session_id: str) -> bool:
    """Delete a session (its messages and swipes cascade); False if there was none."""
    return con.execute("DELETE FROM sessions WHERE id=?", (session_id,)).rowcount > 0


def save_settings(con: Any, session_id: str, settings_json: str) -> None:
    con.execute("UPDATE sessions SET settings=?, updated=? WHERE id=?", (settings_json, time.time(), session_id))


def fork_session(con: Any, src: str, dst: str, *, title: str, max_position: int,
                 parent_message: int | None) -> None:
    """A copy of session ``src`` as ``dst`` holding its messages (and swipes) up to
    ``max_position``; the rolling summary comes along only if it covers no later message."""
    row = find_session(con, src)
    if row is None:
        raise StoreError(f"no session {src!r} to fork")
    keep = row["summary_upto"] <= max_position + 1
    create_session(con, dst, title=title or f"{row['title']} (fork)", characters=loads(row["characters"], []),
                   user_id=row["user_id"], user_name=row["user_name"], user_persona=row["user_persona"],
                   settings_json=row["settings"], summary=row["summary"] if keep else "",
                   summary_upto=row["summary_upto"] if keep else 0, parent_session=src,
                   parent_message=parent_message)
    copy_messages(con, src, dst, max_position=max_position)


def summary_state(con: Any, session_id: str) -> tuple[str, int] | None:
    """``(summary, summary_upto)`` of a session; None when there is no such session."""
    row = con.execute("SELECT summary, summary_upto FROM sessions WHERE id=?", (session_id,)).fetchone()
    return None if row is None else (row["summary"], row["summary_upto"])


def set_summary(con: Any, session_id: str, text: str, upto: int) -> None:
    """Store a rolling summary covering positions < ``upto``; never moves it backwards."""
    con.execute("UPDATE sessions SET summary=?, summary_upto=? WHERE id=? AND summary_upto<?",
                (text, int(upto), session_id, int(upto)))


# -- message rows ------------------------------------------------------------------------
def list_messages(con: Any, session_id: str) -> list[sqlite3.Row]:
    """A session's message rows in path order, each with ``n_swipes``."""
    return con.execute("SELECT m.*, (SELECT COUNT(*) FROM swipes w WHERE w.message_id=m.id) AS n_swipes"
                       " FROM messages m WHERE m.session_id=? ORDER BY m.position", (session_id,)).fetchall()


def complete_lines(con: Any, session_id: str, *, start: int, end: int) -> list[tuple[str, str]]:
    """``(speaker, text)`` of the complete messages at positions ``start <= p < end``."""
    rows = con.execute("SELECT speaker, text FROM messages WHERE session_id=? AND position>=? AND position<?"
                       " AND status='complete' ORDER BY position", (session_id, int(start), int(end))).fetchall()
    return [(r["speaker"], r["text"]) for r in rows]


def list_swipes(con: Any, message_id: int) -> list[sqlite3.Row]:
    return con.execute("SELECT * FROM swipes WHERE message_id=? ORDER BY idx", (message_id,)).fetchall()


def set_message_text(con: Any, message_id: int, text: str) -> None:
    """New text for a message and its active swipe; both become complete."""
    con.execute("UPDATE messages SET text=?, status='complete' WHERE id=?", (text, message_id))
    con.execute("UPDATE swipes SET text=?, status='complete' WHERE message_id=? AND active=1", (text, message_id))


def delete_messages_from(con: Any, session_id: str, position: int) -> int:
    """Delete the messages at ``position`` and after; a rolling summary that covered any
    of them is dropped (it would describe deleted text). Returns how many went."""
    n = con.execute("DELETE FROM messages WHERE session_id=? AND position>=?", (session_id, position)).rowcount
    con.execute("UPDATE sessions SET summary='', summary_upto=0 WHERE id=? AND summary_upto>?",
                (session_id, position))
    return n
