"""SillyTavern chat files (JSON Lines): export a session, import one as a new session.

Format: the first line is a header ``{"user_name", "character_name", "create_date",
"chat_metadata"}``; every further line is one message ``{"name", "is_user", "is_system",
"send_date", "mes", "swipes", "swipe_id", "extra"}``. What SillyTavern has no field for
(character ids, emotion, note, status, the rolling summary) rides in
``chat_metadata.roleplay`` and ``extra.roleplay``, so a round trip keeps it, and
SillyTavern ignores it.

Import is hostile-input safe: a size limit, one JSON object per line, wrong types
rejected with the line number, system messages skipped, nothing written unless the whole
file parsed (one transaction).
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..cards.safety import LIMITS
from ..errors import SessionError
from . import db

if TYPE_CHECKING:
    from ..engine import Engine
    from .session import Session

#: Most messages accepted from one chat file.
MAX_MESSAGES = 100_000


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def to_jsonl(session: "Session") -> str:
    """The session as a SillyTavern chat file."""
    header = {
        "user_name": session.user_name,
        "character_name": session.cards[0].name,
        "create_date": _date(session.created),
        "chat_metadata": {"roleplay": {"session_id": session.id, "characters": session.character_ids,
                                       "user": session.user_id, "user_persona": session.user_persona,
                                       "title": session.title, "summary": session.summary,
                                       "summary_upto": session.summary_upto}},
    }
    out = [json.dumps(header, ensure_ascii=False)]
    for m in session.messages:
        swipes = session.swipes(m.id) if m.swipe_count else []
        rec: dict[str, Any] = {
            "name": m.speaker, "is_user": m.role == "user", "is_system": False,
            "send_date": _date(m.created), "mes": m.text,
            "extra": {"roleplay": {"character_id": m.character_id, "emotion": m.emotion, "note": m.note,
                                   "status": m.status, "story_ids": m.story_ids, **m.extra}},
        }
        if swipes:
            rec["swipes"] = [s.text for s in swipes]
            rec["swipe_id"] = m.swipe_id
            rec["swipe_info"] = [{"send_date": _date(s.created),
                                  "extra": {"roleplay": {"emotion": s.emotion, "note": s.note, "status": s.status}}}
                                 for s in swipes]
        out.append(json.dumps(rec, ensure_ascii=False))
    return "\n".join(out) + "\n"


def _fail(file: str, line: int, msg: str) -> SessionError:
    return SessionError(f"{file}:{line}: {msg}")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")[:64]


def parse_jsonl(text: str, *, file: str = "chat.jsonl") -> tuple[dict, list[tuple[int, dict]]]:
    """(header, [(line number, message)]) of a chat file, validated."""
    if len(text.encode("utf-8", "replace")) > LIMITS.file_bytes:
        raise SessionError(f"{file}: larger than {LIMITS.file_bytes} bytes")
    header: dict | None = None
    messages: list[tuple[int, dict]] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise _fail(file, no, f"not valid JSON ({exc.msg}); a SillyTavern chat has one JSON object per line") from None
        if not isinstance(obj, dict):
            raise _fail(file, no, "expected a JSON object")
        if header is None:
            if "mes" in obj:
                raise _fail(file, no, "the first line must be the chat header (user_name, character_name, "
                                      "chat_metadata), not a message")
            header = obj
            continue
        if not isinstance(obj.get("mes"), str):
            raise _fail(file, no, "field mes: must be a string (the message text)")
        if not isinstance(obj.get("name", ""), str):
            raise _fail(file, no, "field name: must be a string")
        swipes = obj.get("swipes")
        if swipes is not None and (not isinstance(swipes, list) or not all(isinstance(s, str) for s in swipes)):
            raise _fail(file, no, "field swipes: must be a list of strings")
        sid = obj.get("swipe_id", 0)
        if swipes and (not isinstance(sid, int) or isinstance(sid, bool) or not 0 <= sid < len(swipes)):
            raise _fail(file, no, f"field swipe_id: must be an index into swipes (0..{len(swipes) - 1})")
        messages.append((no, obj))
        if len(messages) > MAX_MESSAGES:
            raise _fail(file, no, f"more than {MAX_MESSAGES} messages")
    if header is None:
        raise SessionError(f"{file}: empty; expected a SillyTavern chat (a header line, then messages)")
    return header, messages


_STATUSES = ("complete", "partial", "error")


def _ours(obj: dict) -> dict:
    """The ``roleplay`` dict a roleplay export put inside ``obj`` (else empty)."""
    rp = obj.get("roleplay") if isinstance(obj, dict) else None
    return rp if isinstance(rp, dict) else {}


def _status(rp: dict) -> str:
    return rp.get("status") if rp.get("status") in _STATUSES else "complete"


def _guess_characters(engine: "Engine", header: dict, ours: dict, character_ids: list[str] | None,
                      *, file: str) -> list[str]:
    """The card ids of an imported chat (see `from_jsonl`)."""
    ids = list(character_ids or ours.get("characters") or [])
    if not ids:
        name = str(header.get("character_name") or "")
        for guess in (_slug(name), _slug(name.split()[0]) if name.split() else ""):
            if guess:
                try:
                    engine.card(guess)
                    ids = [guess]
                    break
                except Exception:
                    continue
    if not ids:
        raise SessionError(f"{file}: cannot tell which character this chat is with "
                           f"({header.get('character_name')!r}); pass the card id (--character ID)")
    return ids


def _swipe_values(rec: dict) -> list[dict]:
    """Reply fields of each swipe of a chat-file message (the text alone when it has none)."""
    infos = rec.get("swipe_info") if isinstance(rec.get("swipe_info"), list) else []
    out = []
    for i, text in enumerate(rec.get("swipes") or [rec["mes"]]):
        info = infos[i] if i < len(infos) and isinstance(infos[i], dict) else {}
        irp = _ours(info.get("extra") or {})
        out.append({"text": text, "emotion": str(irp.get("emotion") or ""), "note": str(irp.get("note") or ""),
                    "status": _status(irp)})
    return out


def _insert_record(con: Any, session_id: str, rec: dict, *, cards: list, user_name: str, first: bool) -> None:
    """One chat-file message as a message row (with its swipes) of ``session_id``."""
    rp = _ours(rec.get("extra") or {})
    name = rec.get("name") or (user_name if rec.get("is_user") else cards[0].name)
    values = {"text": rec["mes"], "emotion": str(rp.get("emotion") or ""), "note": str(rp.get("note") or ""),
              "status": _status(rp)}
    keep_extra = {k: v for k, v in rp.items() if k in ("greeting", "error")}
    if rec.get("is_user"):
        cid = rp.get("character_id") if rp.get("character_id") in [c.id for c in cards] else None
        db.insert_message(con, session_id, role="user", speaker=name, character_id=cid, values=values,
                          extra=keep_extra)
        return
    card = (next((c for c in cards if c.name == name), None)
            or next((c for c in cards if c.id == rp.get("character_id")), cards[0]))
    if first and "greeting" not in keep_extra:
        keep_extra["greeting"] = True  # SillyTavern chats open with the first message
    mid = db.insert_message(con, session_id, role="assistant", speaker=card.name, character_id=card.id,
                            values=values, swipes=_swipe_values(rec), extra=keep_extra)
    active = int(rec.get("swipe_id", 0) or 0) if rec.get("swipes") else 0
    if active:
        db.activate_swipe(con, mid, active)


def from_jsonl(engine: "Engine", text: str, *, character_ids: list[str] | None = None,
               user: str | None = None, file: str = "chat.jsonl") -> "Session":
    """Import a SillyTavern chat file as a new session (its id is new).

    Characters: ``character_ids`` if given, else those recorded by a roleplay export,
    else the card whose id is the header's ``character_name`` slugged ("Sherlock Holmes"
    → ``sherlock-holmes``) or whose first name matches.
    """
    from ..memory.store import default_user
    from .session import Session, SessionSettings, _settings_of

    header, messages = parse_jsonl(text, file=file)
    ours = _ours(header.get("chat_metadata") or {})
    ids = _guess_characters(engine, header, ours, character_ids, file=file)
    cards = [engine.card(cid) for cid in ids]
    user_name = str(header.get("user_name") or cards[0].user_name or "User")
    new_id = uuid.uuid4().hex[:12]
    title = str(ours.get("title") or f"{' & '.join(c.name for c in cards)} (imported)")
    with db.transaction(_settings_of(engine).sessions_db) as con:
        db.create_session(con, new_id, title=title, characters=ids,
                          user_id=user or str(ours.get("user") or default_user()), user_name=user_name,
                          user_persona=str(ours.get("user_persona") or ""),
                          settings_json=SessionSettings().model_dump_json(), summary=str(ours.get("summary") or ""),
                          summary_upto=int(ours.get("summary_upto") or 0))
        kept = [rec for _no, rec in messages if not rec.get("is_system")]
        for i, rec in enumerate(kept):
            _insert_record(con, new_id, rec, cards=cards, user_name=user_name, first=i == 0)
    return Session.load(engine, new_id)
