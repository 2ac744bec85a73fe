"""`Session`: a persistent chat over the stateless `Engine` — swipes, edits, forks, groups, memory.

A session is a row in the sessions database plus an ordered list of messages (the
*path*); each assistant message holds one or more *swipes* (alternative replies) of
which one is active, mirrored into the message row so reads stay one query. Branching
is `fork`: a new session with copies of the messages up to a point, which keeps every
session a simple list and every operation a small transaction.

Durability rules (see docs/sessions.md):
- the user's message is committed before generation starts;
- a reply is written in one transaction only once it is complete; a reply cut short
  (backend error, the caller stopping the stream) is saved with status ``error`` or
  ``partial`` — visible, never fed back to the model as history, never ``complete``;
- a process killed mid-turn therefore leaves the user's message and every earlier one.

Memory: before a turn the relevant long-term memories of (user, speaker) are searched
and given to the engine (start of the system prompt); after the reply is committed, fact
extraction and the rolling summary are handed to the background worker (a queue put).
Trade-off: the turn's critical path pays one memory search (an embedding + a Chroma
query, a few ms) and never a model call for memory.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..cards.macros import expand
from ..config import Settings
from ..errors import BackendError, RoleplayError, SessionError, invalid
from ..reply import ReplyRecord
from . import db
from .group import STRATEGIES, choose_speaker

if TYPE_CHECKING:
    from ..cards.schema import Character
    from ..engine import Engine, Reply, Turn


class SessionSettings(BaseModel):
    """Per-session options, stored as JSON with the session."""

    model_config = ConfigDict(extra="forbid")
    #: Read and feed long-term memory of (user, character).
    memory: bool = True
    #: Also run the LLM fact-extraction prompt (background) besides the rules.
    memory_llm: bool = True
    #: Summarise history that leaves the budget with the model (else extractively).
    summary_llm: bool = True
    #: Next-speaker strategy in group chats: auto | round_robin | random.
    group_strategy: Literal["auto", "round_robin", "random"] = "auto"
    #: Default sampling parameters for this session (`SamplingParams` fields).
    params: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Swipe:
    """One alternative reply of an assistant message."""

    index: int
    text: str
    emotion: str = ""
    note: str = ""
    status: str = "complete"
    active: bool = False
    created: float = 0.0


@dataclass(kw_only=True)
class Message(ReplyRecord):
    """One message on a session's path (assistant messages mirror their active swipe);
    its reply fields are `ReplyRecord`'s."""

    id: int
    session_id: str
    position: int
    role: str
    speaker: str
    character_id: str | None = None
    status: str = "complete"
    swipe_id: int = 0
    swipe_count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _settings_of(engine_or_settings: Any) -> Settings:
    if isinstance(engine_or_settings, Settings):
        return engine_or_settings
    settings = getattr(engine_or_settings, "settings", None)
    if isinstance(settings, Settings):
        return settings
    return Settings.from_env()


def greetings(card: "Character", *, user_name: str, group: bool = False) -> list[str]:
    """The greetings a new chat with ``card`` opens with, macros expanded (the first is
    shown, the rest are its swipes); in a group, the card's group greetings win."""
    texts = card.group_greetings if group and card.group_greetings else card.greetings
    return [expand(g, char=card.name, user=user_name) for g in texts if g.strip()]


def _row_message(row: Any, swipe_count: int = 0) -> Message:
    return Message(
        **db.row_record(row), id=row["id"], session_id=row["session_id"], position=row["position"],
        role=row["role"], speaker=row["speaker"], character_id=row["character_id"], status=row["status"],
        swipe_id=row["swipe_id"], swipe_count=swipe_count, extra=db.loads(row["extra"], {}),
        created=row["created"])


class Session:
    """A persistent chat with one or more characters.

    >>> engine = Engine()                                  # doctest: +SKIP
    >>> s = Session.new(engine, "sherlock")                # greeting saved first
    >>> for piece in s.stream("Good morning, Holmes."):    # doctest: +SKIP
    ...     print(piece if isinstance(piece, str) else "", end="")
    """

    def __init__(self, engine: "Engine", row: Any) -> None:
        """Use `Session.new` or `Session.load`."""
        self.engine = engine
        self.id: str = row["id"]
        self.title: str = row["title"]
        self.character_ids: list[str] = db.loads(row["characters"], [])
        self.user_id: str = row["user_id"]
        self.user_name: str = row["user_name"]
        self.user_persona: str = row["user_persona"]
        self.summary: str = row["summary"]
        self.summary_upto: int = row["summary_upto"]
        self.parent_session: str | None = row["parent_session"]
        self.parent_message: int | None = row["parent_message"]
        self.created: float = row["created"]
        self.updated: float = row["updated"]
        try:
            self.settings = SessionSettings.model_validate(db.loads(row["settings"], {}))
        except ValidationError as exc:
            raise invalid(exc, f"session {self.id}: invalid stored settings: ", error=SessionError) from None
        self._cards: dict[str, "Character"] = {}

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return _settings_of(self.engine).sessions_db

    @classmethod
    def new(cls, engine: "Engine", character_ids: str | list[str], *, user_name: str | None = None,
            user_persona: str = "", user: str | None = None, title: str = "",
            settings: SessionSettings | dict | None = None, greeting: bool = True) -> "Session":
        """Create a session; the characters' greetings are saved as the first messages.

        Args:
            character_ids: one card id or several (a group chat).
            user_name: the user's display name (default: the first card's ``user_name``).
            user: whose long-term memory to use (default: `memory.default_user()`).
            settings: `SessionSettings` or a dict of its fields.
            greeting: save the greetings (alternate greetings become swipes).
        """
        from ..memory.store import default_user

        ids = [character_ids] if isinstance(character_ids, str) else list(character_ids)
        if not ids:
            raise SessionError("a session needs at least one character id")
        if len(set(ids)) != len(ids):
            raise SessionError(f"a character appears twice in {ids}")
        cards = [engine.card(cid) for cid in ids]  # CardError for an unknown id
        try:
            opts = settings if isinstance(settings, SessionSettings) else SessionSettings.model_validate(settings or {})
        except ValidationError as exc:
            raise invalid(exc, "session setting ") from None
        name = user_name or cards[0].user_name or "User"
        sid = uuid.uuid4().hex[:12]
        path = _settings_of(engine).sessions_db
        with db.transaction(path) as con:
            db.create_session(con, sid, title=title or " & ".join(c.name for c in cards), characters=ids,
                              user_id=user or default_user(), user_name=name, user_persona=user_persona,
                              settings_json=opts.model_dump_json())
            if greeting:
                for card in cards:
                    texts = greetings(card, user_name=name, group=len(cards) > 1)
                    if texts:
                        db.insert_message(con, sid, role="assistant", speaker=card.name, character_id=card.id,
                                        values={"text": texts[0]}, swipes=texts, extra={"greeting": True})
        session = cls.load(engine, sid)
        session._cards = {c.id: c for c in cards}
        return session

    @classmethod
    def load(cls, engine: "Engine", session_id: str) -> "Session":
        """Open a saved session (SessionError when there is none with this id)."""
        with db.transaction(_settings_of(engine).sessions_db, write=False) as con:
            row = db.find_session(con, session_id)  # a unique prefix is accepted, as with git hashes
        if row is None:
            raise SessionError(f"no session {session_id!r}; see `roleplay sessions list`")
        return cls(engine, row)

    @classmethod
    def list(cls, engine_or_settings: Any, *, character: str | None = None, limit: int = 100) -> list[dict]:
        """Saved sessions, most recently updated first (id, title, characters, counts, times)."""
        with db.transaction(_settings_of(engine_or_settings).sessions_db, write=False) as con:
            rows = db.list_sessions(con, limit=limit if character is None else None)
        out = []
        for r in rows:
            chars = db.loads(r["characters"], [])
            if character and character not in chars:
                continue
            out.append({"id": r["id"], "title": r["title"], "characters": chars, "user": r["user_id"],
                        "user_name": r["user_name"], "messages": r["messages"],
                        "last": (r["last"] or "")[:120], "created": r["created"], "updated": r["updated"],
                        "parent_session": r["parent_session"]})
        return out[:limit]

    @classmethod
    def delete(cls, engine_or_settings: Any, session_id: str) -> bool:
        """Delete a session with its messages and swipes; False if there was none."""
        with db.transaction(_settings_of(engine_or_settings).sessions_db) as con:
            return db.delete_session(con, session_id)

    def reload(self) -> "Session":
        """Re-read the session row (summary, title, times) from the database."""
        fresh = type(self).load(self.engine, self.id)
        self.__dict__.update({k: v for k, v in fresh.__dict__.items() if k not in ("engine", "_cards")})
        return self

    def set_settings(self, **changes: Any) -> SessionSettings:
        """Change session settings (validated) and save them."""
        try:
            new = SessionSettings.model_validate({**self.settings.model_dump(), **changes})
        except ValidationError as exc:
            raise invalid(exc, "session setting ") from None
        with db.transaction(self.db_path) as con:
            db.save_settings(con, self.id, new.model_dump_json())
        self.settings = new
        return new

    # -- reading -------------------------------------------------------------------------
    def card(self, character_id: str | None = None) -> "Character":
        """The card of a character in this session (default: the first one)."""
        cid = character_id or self.character_ids[0]
        if cid not in self._cards:
            self._cards[cid] = self.engine.card(cid)
        return self._cards[cid]

    @property
    def cards(self) -> list["Character"]:
        return [self.card(cid) for cid in self.character_ids]

    @property
    def is_group(self) -> bool:
        return len(self.character_ids) > 1

    @property
    def messages(self) -> list[Message]:
        """The messages on this session's path, oldest first (including non-complete ones)."""
        with db.transaction(self.db_path, write=False) as con:
            rows = db.list_messages(con, self.id)
        return [_row_message(r, r["n_swipes"]) for r in rows]

    def message(self, message_id: int) -> Message:
        for m in self.messages:
            if m.id == message_id:
                return m
        raise SessionError(f"no message {message_id} in session {self.id}; see `roleplay sessions show {self.id}`")

    def swipes(self, message_id: int) -> list[Swipe]:
        """The alternative replies of a message (empty for user messages)."""
        self.message(message_id)
        with db.transaction(self.db_path, write=False) as con:
            rows = db.list_swipes(con, message_id)
        return [Swipe(r["idx"], r["text"], r["emotion"], r["note"], r["status"], bool(r["active"]), r["created"])
                for r in rows]

    def greeting(self) -> Message | None:
        """The first greeting message, if the session has one."""
        msgs = self.messages
        return msgs[0] if msgs and msgs[0].extra.get("greeting") else None

    def history(self, speaker_id: str | None = None, *, upto: int | None = None) -> list[dict]:
        """Complete messages as engine history for ``speaker_id`` (default: first character).

        The speaker's own lines are ``assistant``; everyone else's (the user, other
        characters) are ``user`` with the speaker's ``name`` — the composer shows names.
        Messages already folded into the rolling summary are left out.
        """
        sid = speaker_id or self.character_ids[0]
        out = []
        for m in self.messages:
            if upto is not None and m.position >= upto:
                break
            if m.position < self.summary_upto or not m.complete:
                continue
            own = m.character_id == sid
            out.append({"role": "assistant" if own else "user", "name": m.speaker, "content": m.text})
        return out

    # -- a turn --------------------------------------------------------------------------
    def stream(self, text: str | None, *, speaker: str | None = None, params: Any = None,
               options: Any = None, as_character: str | None = None) -> Iterator["str | Reply"]:
        """Save the user's message, then stream the reply: text chunks, then one `Reply`.

        Args:
            text: the user's message; None lets the next character speak without one
                (group scenes).
            speaker: who answers (id, name or nickname); default by the group strategy.
            params: `SamplingParams` or a dict of its fields (over the session's defaults).
            options: `EngineOptions` for this turn.
            as_character: the user speaks as this character of the session.

        The user's message is committed before this returns; the reply when complete.
        """
        if text is not None and not text.strip():
            raise SessionError("the message is empty; type something, or pass None to let the scene continue")
        voiced = self._resolve(as_character) if as_character else None
        card = self.next_speaker(text, speaker=speaker, as_character=as_character)
        sampling = self._sampling(params)  # a bad parameter fails before anything is saved
        user_msg_id = None
        if text is not None:
            with db.transaction(self.db_path) as con:
                user_msg_id = db.insert_message(
                    con, self.id, role="user", speaker=voiced.name if voiced else self.user_name,
                    character_id=voiced.id if voiced else None, values={"text": text})
        msgs = self.messages
        if not msgs:
            raise SessionError("nothing to reply to: the session is empty; send a message first")
        history, user_text = self._turn_inputs(card, msgs, len(msgs))
        remember = text if (text is not None and voiced is None) else None
        return self._generate(card, history, user_text, params=sampling, options=options,
                              remember=(remember, user_msg_id))

    def next_speaker(self, text: str | None, *, speaker: str | None = None,
                     as_character: str | None = None) -> "Character":
        """Who would answer ``text`` now (see `group.choose_speaker`)."""
        voiced = self._resolve(as_character) if as_character else None
        recent = [m.character_id for m in self.messages if m.role == "assistant" and m.character_id]
        return choose_speaker(self.cards, text, recent, strategy=self.settings.group_strategy,
                              exclude=[voiced.id] if voiced else [], speaker=speaker)

    def send(self, text: str | None, **kwargs: Any) -> "Reply":
        """`stream` to the end; returns the `Reply`."""
        return _last_reply(self.stream(text, **kwargs))

    def regenerate_stream(self, *, params: Any = None, options: Any = None) -> Iterator["str | Reply"]:
        """A new swipe for the last reply (or a reply to a trailing user message)."""
        msgs = self.messages
        if not msgs:
            raise SessionError("nothing to regenerate: the session is empty")
        last = msgs[-1]
        if last.role == "user":
            card = self._next_speaker_after(msgs)
            history, user_text = self._turn_inputs(card, msgs, len(msgs))
            return self._generate(card, history, user_text, params=params, options=options)
        if last.extra.get("greeting") and not any(m.role == "user" for m in msgs):
            raise SessionError("the greeting is not a reply; choose another greeting with choose_swipe")
        card = self.card(last.character_id)
        history, user_text = self._turn_inputs(card, msgs, len(msgs) - 1)
        return self._generate(card, history, user_text, params=params, options=options, swipe_of=last)

    def regenerate(self, **kwargs: Any) -> "Reply":
        """`regenerate_stream` to the end; the new swipe becomes active."""
        return _last_reply(self.regenerate_stream(**kwargs))

    def continue_stream(self, *, params: Any = None, options: Any = None) -> Iterator["str | Reply"]:
        """Extend the last reply: the model continues its text (a prefill of the whole reply)."""
        msgs = self.messages
        if not msgs or msgs[-1].role != "assistant":
            raise SessionError("continue needs a character's reply as the last message")
        target = msgs[-1]
        card = self.card(target.character_id)
        history, user_text = self._turn_inputs(card, msgs, len(msgs) - 1)
        return self._generate(card, history, user_text, params=params, options=options, swipe_of=target,
                              mode="continue")

    def continue_(self, **kwargs: Any) -> "Reply":
        """`continue_stream` to the end; the last reply's text is extended in place."""
        return _last_reply(self.continue_stream(**kwargs))

    def impersonate(self, *, params: Any = None, max_tokens: int = 48) -> str:
        """The model's draft of the user's next line (not saved; send it to keep it)."""
        msgs = self.messages
        card = self._next_speaker_after(msgs) if msgs else self.card()
        history, user_text = self._turn_inputs(card, msgs, len(msgs))
        turn = self._turn(card, history, user_text, mode="impersonate")
        reply = self.engine.reply(turn, self._sampling(self._params(params, max_tokens=max_tokens)))
        out = reply.text.strip()
        prefix = f"{self.user_name}:"
        if out.startswith(prefix):
            out = out[len(prefix):].strip()
        return out.splitlines()[0].strip() if out else ""

    # -- editing -------------------------------------------------------------------------
    def choose_swipe(self, message_id: int, index: int) -> Message:
        """Make swipe ``index`` of a message the active one (negative counts from the end)."""
        swipes = self.swipes(message_id)
        if not swipes:
            raise SessionError(f"message {message_id} has no swipes (only replies do)")
        if index < 0:
            index += len(swipes)
        if not 0 <= index < len(swipes):
            raise SessionError(f"message {message_id} has swipes 0..{len(swipes) - 1}; got {index}")
        with db.transaction(self.db_path) as con:
            db.activate_swipe(con, message_id, index)
            db.touch_session(con, self.id)
        return self.message(message_id)

    def edit(self, message_id: int, text: str) -> Message:
        """Replace a message's text (the active swipe's, for a reply); it becomes complete."""
        if not text.strip():
            raise SessionError("the new text is empty; use delete_from to remove messages")
        self.message(message_id)
        with db.transaction(self.db_path) as con:
            db.set_message_text(con, message_id, text)
            db.touch_session(con, self.id)
        return self.message(message_id)

    def delete_from(self, message_id: int) -> int:
        """Delete this message and every later one; returns how many went."""
        pos = self.message(message_id).position
        with db.transaction(self.db_path) as con:
            # the summary may describe deleted messages: it starts again from scratch
            n = db.delete_messages_from(con, self.id, pos)
            db.touch_session(con, self.id)
        if self.summary_upto > pos:
            self.summary, self.summary_upto = "", 0
        return n

    def undo(self) -> int:
        """Delete the last exchange: the last user message and everything after it."""
        msgs = self.messages
        users = [m for m in msgs if m.role == "user"]
        if not users:
            raise SessionError("nothing to undo")
        return self.delete_from(users[-1].id)

    def fork(self, message_id: int | None = None, *, title: str = "") -> "Session":
        """A new session holding copies of the messages up to and including ``message_id``
        (default: all), with their swipes; this session is unchanged."""
        msgs = self.messages
        if message_id is None:
            pos = msgs[-1].position if msgs else -1
            message_id = msgs[-1].id if msgs else None
        else:
            pos = self.message(message_id).position
        new_id = uuid.uuid4().hex[:12]
        with db.transaction(self.db_path) as con:
            db.fork_session(con, self.id, new_id, title=title, max_position=pos, parent_message=message_id)
        child = type(self).load(self.engine, new_id)
        child._cards = dict(self._cards)
        return child

    # -- exports -------------------------------------------------------------------------
    def to_markdown(self) -> str:
        from .export import to_markdown

        return to_markdown(self)

    def dpo_pairs(self) -> list[dict]:
        from .export import dpo_pairs

        return dpo_pairs(self)

    def to_tavern_jsonl(self) -> str:
        from .tavern_chat import to_jsonl

        return to_jsonl(self)

    @classmethod
    def from_tavern_jsonl(cls, engine: "Engine", text: str, *, character_ids: list[str] | None = None,
                          user: str | None = None, file: str = "chat.jsonl") -> "Session":
        from .tavern_chat import from_jsonl

        return from_jsonl(engine, text, character_ids=character_ids, user=user, file=file)

    # -- internals -----------------------------------------------------------------------
    def _resolve(self, who: str) -> "Character":
        return choose_speaker(self.cards, None, [], speaker=who)

    def _next_speaker_after(self, msgs: list[Message]) -> "Character":
        recent = [m.character_id for m in msgs if m.role == "assistant" and m.character_id]
        last_user = next((m for m in reversed(msgs) if m.role == "user"), None)
        exclude = [last_user.character_id] if last_user and last_user.character_id else []
        return choose_speaker(self.cards, last_user.text if last_user else None, recent,
                              strategy=self.settings.group_strategy, exclude=exclude)

    def _turn_inputs(self, card: "Character", msgs: list[Message], upto: int) -> tuple[list[dict], str]:
        """(history, user_text) for a reply by ``card`` at index ``upto`` of ``msgs``.

        The line just before the reply is the "user text"; when another character spoke
        it (group scenes), it carries that character's name.
        """
        before = [m for m in msgs[:upto] if m.complete and m.position >= self.summary_upto]
        user_text = ""
        if before and before[-1].character_id != card.id:
            last = before.pop()
            user_text = last.text if last.speaker == self.user_name else f"{last.speaker}: {last.text}"
        history = [{"role": "assistant" if m.character_id == card.id else "user", "name": m.speaker,
                    "content": m.text} for m in before]
        return history, user_text

    def _params(self, params: Any, **overrides: Any) -> dict:
        p = dict(self.settings.params)
        if params is not None:
            p.update(params if isinstance(params, dict) else params.model_dump(exclude_unset=True))
        p.update(overrides)
        return p

    def _sampling(self, params: Any) -> Any:
        from ..backends.base import SamplingParams

        return SamplingParams(**self._params(params))

    def _turn(self, card: "Character", history: list[dict], user_text: str, *, options: Any = None,
              mode: str = "reply", partial: str = "") -> "Turn":
        """The engine's input for a turn of this session (the engine recalls memories)."""
        from ..engine import Turn

        return Turn(card=card, history=history, user_text=user_text, user_name=self.user_name,
                    user_persona=self.user_persona, summary=self.summary, others=self._others(card),
                    memory_user=self.user_id if self.settings.memory else None, options=options,
                    mode=mode, partial=partial)  # type: ignore[arg-type]

    def _others(self, card: "Character") -> list[str]:
        return [c.name for c in self.cards if c.id != card.id]

    def _generate(self, card: "Character", history: list[dict], user_text: str, *, params: Any,
                  options: Any, swipe_of: Message | None = None, mode: str = "reply",
                  remember: tuple[str | None, int | None] = (None, None)) -> Iterator["str | Reply"]:
        """Validate what can fail early, then return the streaming generator."""
        sampling = self._sampling(params)
        partial = swipe_of.text if (mode == "continue" and swipe_of is not None) else ""
        turn = self._turn(card, history, user_text, options=options, mode=mode, partial=partial)
        return self._run(card, turn, sampling=sampling, swipe_of=swipe_of, remember=remember)

    def _run(self, card: "Character", turn: "Turn", *, sampling: Any, swipe_of: Message | None,
             remember: tuple[str | None, int | None]) -> Iterator["str | Reply"]:
        chunks: list[str] = []
        reply = None
        gen = None
        try:
            gen = self.engine.stream(turn, sampling)
            for item in gen:
                if isinstance(item, str):
                    chunks.append(item)
                    yield item
                else:
                    reply = item
            if reply is None:
                raise BackendError("the engine stopped without a final reply")
        except GeneratorExit:
            # the caller stopped reading (closed tab, Ctrl-C): keep what came, as partial
            self._save_failed(card, turn, chunks, swipe_of, status="partial", error="stopped")
            raise
        except BaseException as exc:
            status = "partial" if isinstance(exc, KeyboardInterrupt) else "error"
            self._save_failed(card, turn, chunks, swipe_of, status=status, error=f"{type(exc).__name__}: {exc}")
            if isinstance(exc, (RoleplayError, KeyboardInterrupt, SystemExit)):
                raise
            raise BackendError(f"generation failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
        finally:
            if gen is not None:
                gen.close()
        reply.message_id = self._save_reply(card, reply, swipe_of, mode=turn.mode)
        self._after_turn(remember[0], remember[1], reply=reply.text)
        yield reply

    def _save_reply(self, card: "Character", reply: "Reply", swipe_of: Message | None, *, mode: str = "reply") -> int:
        values = db.reply_columns(reply.record(), "complete")
        with db.transaction(self.db_path) as con:
            if mode == "continue" and swipe_of is not None:  # the message grows in place
                mid = swipe_of.id
                db.extend_message(con, mid, reply.text, added_tokens=reply.completion_tokens)
            elif swipe_of is None:
                mid = db.insert_message(con, self.id, role="assistant", speaker=card.name, character_id=card.id,
                                        values=values, swipes=[values])
            else:
                mid = swipe_of.id
                db.add_swipe(con, mid, values, activate=True)
            db.touch_session(con, self.id)
        return mid

    def _save_failed(self, card: "Character", turn: "Turn", chunks: list[str], swipe_of: Message | None, *,
                     status: str, error: str) -> None:
        """Keep what a cut-short generation produced, marked non-complete (never complete)."""
        text = "".join(chunks)
        if not text.strip() or turn.mode == "continue":
            return  # a cut-short continuation leaves the message as it was
        values = db.reply_columns(ReplyRecord(text=text).record(), status)
        try:
            with db.transaction(self.db_path) as con:
                if swipe_of is None:
                    db.insert_message(con, self.id, role="assistant", speaker=card.name, character_id=card.id,
                                    values=values, swipes=[values], extra={"error": error[:500]})
                else:  # a failed regeneration: an inactive swipe; the old reply stays active
                    db.add_swipe(con, swipe_of.id, values, activate=False)
        except RoleplayError:
            pass  # the original failure is the one to report

    def _after_turn(self, user_text: str | None, user_msg_id: int | None, *, reply: str = "") -> None:
        """Hand memory extraction and the rolling summary to the worker (a queue put)."""
        from ..memory.worker import get_worker

        from ..engine import Turn

        worker = get_worker()
        settings = _settings_of(self.engine)
        if self.settings.memory and user_text:
            self.engine.remember(Turn(self.card(), user_text=user_text, memory_user=self.user_id), reply,
                                 source=f"{self.id}:{user_msg_id}", characters=self.character_ids,
                                 llm=self.settings.memory_llm)
        msgs = [m for m in self.messages if m.complete and m.position >= self.summary_upto]
        from ..memory.summary import history_cut

        # the engine's own history budget (fitted to the model's context), so the summary
        # folds in exactly what leaves the prompt
        fit = getattr(self.engine, "fitted_budgets", None)
        budget = fit(self._turn(self.card(), [], "")).history if callable(fit) else settings.budgets.history
        cut = history_cut([m.text for m in msgs], budget)
        if cut > 0:
            worker.submit(self._summarise, msgs[cut].position if cut < len(msgs) else msgs[-1].position + 1)

    def _summarise(self, upto_position: int) -> None:
        """Fold messages before ``upto_position`` into the rolling summary (worker job)."""
        from ..memory.summary import summarise

        settings = _settings_of(self.engine)
        with db.transaction(self.db_path, write=False) as con:
            state = db.summary_state(con, self.id)
            if state is None or state[1] >= upto_position:
                return
            lines = db.complete_lines(con, self.id, start=state[1], end=upto_position)
        backend = self.engine.backend if self.settings.summary_llm else None
        text = summarise(state[0], lines, backend=backend, budget_tokens=settings.budgets.summary)
        with db.transaction(self.db_path) as con:
            db.set_summary(con, self.id, text, upto_position)
        self.summary, self.summary_upto = text, upto_position

def _last_reply(stream: Iterator[Any]) -> Any:
    reply = None
    for item in stream:
        if not isinstance(item, str):
            reply = item
    return reply


__all__ = ["Message", "STRATEGIES", "Session", "SessionSettings", "Swipe"]
