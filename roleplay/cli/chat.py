"""CLI for chatting: ``chat``, ``sessions list|show|resume|fork|delete|export|import``, ``memory …``.

Thin wrappers over `roleplay.sessions.Session` and `roleplay.memory.MemoryStore`.
The interactive chat reads lines from stdin, so it works at a terminal and through a
pipe (``printf 'Hi\\n/regen\\n/quit\\n' | roleplay chat sherlock``); it streams each
reply as it is generated. Before exiting it waits (bounded) for the background memory
worker, so facts told in this chat are stored.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SessionError
from . import emit

#: Seconds the CLI waits at exit for background memory extraction.
FLUSH_SECONDS = 120.0

HELP = ("commands: /regen (new swipe of the last reply), /swipe N (choose swipe N), /continue, "
        "/undo (drop the last exchange), /impersonate (draft your next line), /id, /quit")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, help="most tokens per reply (default 200)")
    p.add_argument("--temperature", type=float, help="sampling temperature (0 = greedy)")
    p.add_argument("--seed", type=int, help="sampling seed")


def _user_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", help="whose long-term memory to use (default: $ROLEPLAY_USER or 'local')")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``chat``, ``sessions`` and ``memory`` to the `roleplay` parser."""
    p = sub.add_parser("chat", help="chat with a character (interactive, or one --message)",
                       description="Chat with one or more characters. Interactive: " + HELP)
    p.add_argument("ids", nargs="*", metavar="ID", help="character id(s); several make a group chat")
    p.add_argument("--message", "-m", help="answer this one message and exit")
    p.add_argument("--session", "-s", help="continue this saved session")
    p.add_argument("--speaker", help="group chat: who answers (id or name)")
    p.add_argument("--user-name", help="your display name (default: the card's user_name)")
    p.add_argument("--persona", default="", help="a short description of you for the characters")
    p.add_argument("--no-memory", action="store_true", help="neither read nor write long-term memory")
    p.add_argument("--json", action="store_true", help="with --message: print one JSON document")
    _user_args(p)
    _sampling_args(p)
    p.set_defaults(func=cmd_chat)

    s = sub.add_parser("sessions", help="saved chats: list, show, resume, fork, delete, export, import")
    ss = s.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    q = ss.add_parser("list", help="saved sessions, newest first")
    q.add_argument("--character", help="only sessions with this character id")
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_sessions_list)
    q = ss.add_parser("show", help="a session's messages")
    q.add_argument("session")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_sessions_show)
    q = ss.add_parser("resume", help="continue a session interactively")
    q.add_argument("session")
    _sampling_args(q)
    q.set_defaults(func=cmd_sessions_resume)
    q = ss.add_parser("fork", help="a new session with the messages up to MESSAGE_ID (default: all)")
    q.add_argument("session")
    q.add_argument("message_id", nargs="?", type=int)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_sessions_fork)
    q = ss.add_parser("delete", help="delete a session and its messages")
    q.add_argument("session")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_sessions_delete)
    q = ss.add_parser("export", help="write a session as SillyTavern JSONL, Markdown or DPO pairs")
    q.add_argument("session")
    q.add_argument("--format", choices=["jsonl", "markdown", "dpo"], default="jsonl",
                   help="jsonl: SillyTavern chat; markdown: transcript; dpo: TRL preference pairs")
    q.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    q.set_defaults(func=cmd_sessions_export)
    q = ss.add_parser("import", help="import a SillyTavern chat JSONL as a new session")
    q.add_argument("path")
    q.add_argument("--character", action="append", help="card id(s) of the chat (default: from the file)")
    _user_args(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_sessions_import)

    m = sub.add_parser("memory", help="long-term memories per user and character")
    ms = m.add_subparsers(dest="memory_command", metavar="ACTION", required=True)
    for name, helptext, fn in [("list", "what is remembered", cmd_memory_list),
                               ("add", "remember a fact", cmd_memory_add),
                               ("forget", "forget one memory by id", cmd_memory_forget),
                               ("clear", "forget everything of a user (and character)", cmd_memory_clear)]:
        q = ms.add_parser(name, help=helptext)
        if name == "add":
            q.add_argument("text")
        if name == "forget":
            q.add_argument("memory_id")
        if name == "list":
            q.add_argument("--history", action="store_true",
                           help="also show past versions of changed facts (with the time each was true)")
        q.add_argument("--character", help="character id" + (" (required)" if name == "add" else ""))
        _user_args(q)
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=fn)


# -- helpers -------------------------------------------------------------------------------
def _engine(args: argparse.Namespace) -> Any:
    from ..engine import Engine

    return Engine(args.settings)


def _params(args: argparse.Namespace) -> dict:
    return {k: v for k, v in (("max_tokens", getattr(args, "max_tokens", None)),
                              ("temperature", getattr(args, "temperature", None)),
                              ("seed", getattr(args, "seed", None))) if v is not None}


def _flush() -> None:
    from ..memory.worker import get_worker

    worker = get_worker()
    if worker.pending and not worker.flush(FLUSH_SECONDS):
        print("warning: memory extraction did not finish; some facts may not be saved", file=sys.stderr)


def _reply_payload(session: Any, reply: Any) -> dict:
    return {"session_id": session.id, "message_id": getattr(reply, "message_id", None),
            "speaker": session.messages[-1].speaker if session.messages else "",
            "reply": reply.text, "emotion": reply.emotion, "note": reply.note, "intent": reply.intent,
            "story_ids": list(reply.story_ids), "lore_names": list(reply.lore_names),
            "memories": list(reply.memories), "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens, "timings": reply.timings}


def _open_session(args: argparse.Namespace, engine: Any) -> Any:
    from ..sessions import Session

    if args.session:
        session = Session.load(engine, args.session)
        if args.ids and sorted(args.ids) != sorted(session.character_ids):
            raise ConfigError(f"session {session.id} is with {', '.join(session.character_ids)}, "
                              f"not {', '.join(args.ids)}; drop the ids or the --session")
        if args.no_memory and session.settings.memory:
            session.set_settings(memory=False)
        return session
    if not args.ids:
        raise ConfigError("name a character (roleplay chat ID) or a session (--session ID); "
                          "see `roleplay cards list`")
    return Session.new(engine, args.ids, user_name=args.user_name, user_persona=args.persona,
                       user=args.user, settings={"memory": not args.no_memory})


def _stream_out(stream: Any, speaker: str, out: Any = None) -> Any:
    """Print ``Speaker: `` then the chunks as they come; return the final Reply."""
    out = out or sys.stdout
    out.write(f"{speaker}: ")
    out.flush()
    reply = None
    for item in stream:
        if isinstance(item, str):
            out.write(item)
            out.flush()
        else:
            reply = item
    out.write("\n")
    out.flush()
    return reply


# -- chat ----------------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace) -> int:
    engine = _engine(args)
    session = _open_session(args, engine)
    if args.message is not None:
        reply = session.send(args.message, speaker=args.speaker, params=_params(args) or None)
        _flush()
        emit(args, _reply_payload(session, reply), lambda: f"{session.messages[-1].speaker}: {reply.text}")
        return 0
    return _interactive(session, args)


def cmd_sessions_resume(args: argparse.Namespace) -> int:
    from ..sessions import Session

    session = Session.load(_engine(args), args.session)
    args.speaker = None
    return _interactive(session, args)


def _interactive(session: Any, args: argparse.Namespace) -> int:
    tty = sys.stdin.isatty()
    params = _params(args) or None
    print(f"[session {session.id} · {', '.join(c.name for c in session.cards)} · /help for commands]",
          file=sys.stderr)
    for m in session.messages[-6:]:  # the greeting, or where a resumed chat left off
        print(f"{m.speaker}: {m.text}")
    sys.stdout.flush()
    try:
        while True:
            if tty:
                sys.stdout.write(f"{session.user_name}> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\n")
            if not text.strip():
                continue
            try:
                if not _command(session, text.strip(), args, params):
                    break
            except SessionError as exc:
                print(f"error: {exc}", file=sys.stderr)
            except KeyboardInterrupt:
                print("\n[stopped]", file=sys.stderr)
    finally:
        _flush()
    return 0


def _command(session: Any, text: str, args: argparse.Namespace, params: Any) -> bool:
    """Run one line of the interactive chat; False ends the chat."""
    if text in ("/quit", "/exit", "/q"):
        return False
    if text == "/help":
        print(HELP, file=sys.stderr)
    elif text == "/id":
        print(session.id)
    elif text == "/regen":
        last = session.messages[-1] if session.messages else None
        name = last.speaker if last is not None and last.role == "assistant" else session.card().name
        _stream_out(session.regenerate_stream(params=params), name)
    elif text == "/continue":
        _stream_out(session.continue_stream(params=params), session.messages[-1].speaker)
    elif text == "/undo":
        n = session.undo()
        print(f"[removed {n} message{'s' if n != 1 else ''}]", file=sys.stderr)
    elif text == "/impersonate":
        print(f"[draft] {session.impersonate()}")
    elif text.startswith("/swipe"):
        parts = text.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise SessionError("usage: /swipe N (0 is the first swipe; -1 the last)")
        last = session.messages[-1]
        m = session.choose_swipe(last.id, int(parts[1]))
        print(f"{m.speaker}: {m.text}")
    elif text.startswith("/") and not text.startswith("//"):
        raise SessionError(f"unknown command {text.split()[0]}; {HELP}")
    else:
        if text.startswith("//"):
            text = text[1:]  # "//" escapes a message that starts with a slash
        card = session.next_speaker(text, speaker=getattr(args, "speaker", None))
        _stream_out(session.stream(text, speaker=card.id, params=params), card.name)
    return True


# -- sessions ------------------------------------------------------------------------------
def cmd_sessions_list(args: argparse.Namespace) -> int:
    from ..sessions import Session

    rows = Session.list(args.settings, character=args.character, limit=args.limit)
    emit(args, {"sessions": rows}, lambda: "\n".join(
        f"{r['id']}  {r['title'][:30]:<30} {r['messages']:>4} msgs  {r['last'][:50]!r}" for r in rows)
        or "no sessions yet; start one with `roleplay chat ID`")
    return 0


def cmd_sessions_show(args: argparse.Namespace) -> int:
    from ..sessions import Session

    session = Session.load(_engine(args), args.session)
    msgs = session.messages
    payload = {"id": session.id, "title": session.title, "characters": session.character_ids,
               "user": session.user_id, "user_name": session.user_name, "summary": session.summary,
               "parent_session": session.parent_session, "parent_message": session.parent_message,
               "settings": session.settings.model_dump(), "messages": [m.to_dict() for m in msgs]}

    def text() -> str:
        lines = [f"# {session.title}  ({session.id})"]
        for m in msgs:
            flag = f" [swipe {m.swipe_id + 1}/{m.swipe_count}]" if m.swipe_count > 1 else ""
            flag += "" if m.complete else f" [{m.status}]"
            lines.append(f"{m.id:>5} {m.speaker}:{flag} {m.text}")
        return "\n".join(lines)

    emit(args, payload, text)
    return 0


def cmd_sessions_fork(args: argparse.Namespace) -> int:
    from ..sessions import Session

    child = Session.load(_engine(args), args.session).fork(args.message_id)
    emit(args, {"id": child.id, "parent_session": child.parent_session, "messages": len(child.messages)},
         f"forked as {child.id} ({len(child.messages)} messages)")
    return 0


def cmd_sessions_delete(args: argparse.Namespace) -> int:
    from ..sessions import Session

    session = Session.load(_engine(args), args.session)  # accepts a unique prefix
    Session.delete(args.settings, session.id)
    emit(args, {"deleted": session.id}, f"deleted {session.id}")
    return 0


def cmd_sessions_export(args: argparse.Namespace) -> int:
    from ..cards.yaml_io import atomic_write
    from ..sessions import Session
    from ..sessions.export import dpo_jsonl

    session = Session.load(_engine(args), args.session)
    if args.format == "jsonl":
        data = session.to_tavern_jsonl()
    elif args.format == "markdown":
        data = session.to_markdown()
    else:
        data = dpo_jsonl(session)
    if args.output:
        atomic_write(Path(args.output), data)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(data)
    return 0


def cmd_sessions_import(args: argparse.Namespace) -> int:
    from ..cards.yaml_io import read_text
    from ..errors import CardError
    from ..sessions import Session

    path = Path(args.path)
    try:
        text = read_text(path)
    except CardError as exc:  # same limits and messages as card files
        raise SessionError(str(exc)) from None
    session = Session.from_tavern_jsonl(_engine(args), text, character_ids=args.character, user=args.user,
                                        file=str(path))
    emit(args, {"id": session.id, "characters": session.character_ids, "messages": len(session.messages)},
         f"imported as {session.id} ({len(session.messages)} messages)")
    return 0


# -- memory --------------------------------------------------------------------------------
def _store(args: argparse.Namespace) -> Any:
    from ..memory.store import get_store

    return get_store(args.settings)


def _user(args: argparse.Namespace) -> str:
    from ..memory.store import default_user

    return args.user or default_user()


def cmd_memory_list(args: argparse.Namespace) -> int:
    store, user = _store(args), _user(args)
    found = store.history(user, args.character) if args.history else store.list(user, args.character)
    rows = [m.to_dict() for m in found]

    def line(m: Any) -> str:
        when = f"  [{m.validity()}]" if args.history else ""
        past = "" if m.current else "(past) "
        return f"{m.id}  {m.character:<12} {m.kind:<5} {past}{m.text}{when}  ({m.source or '-'})"

    emit(args, {"user": user, "history": bool(args.history), "memories": rows},
         lambda: "\n".join(line(m) for m in found) or "no memories")
    return 0


def cmd_memory_add(args: argparse.Namespace) -> int:
    from ..memory.extract import extract_rules

    if not args.character:
        raise ConfigError("memory add needs --character ID (memories belong to a user and a character)")
    _engine(args).card(args.character)  # an unknown id is an error, not a silent orphan
    facts = extract_rules(args.text)
    # a sentence the rules understand is stored as their third-person fact with its slot
    # ("My name is Lin" → "The user's name is Lin."), so a later contradiction updates it
    f = facts[0] if len(facts) == 1 else None
    d = _store(args).add(_user(args), args.character, f.text if f else args.text, "cli", slot=f.slot if f else None,
                         negated=bool(f and f.negated), value=f.value if f else "", kind=f.kind if f else "fact")
    emit(args, {"action": d.action, "id": d.id, "text": d.text, "replaced": d.old_text or None},
         f"{d.action} {d.id or ''}".strip())
    return 0


def cmd_memory_forget(args: argparse.Namespace) -> int:
    ok = _store(args).forget(args.memory_id, user=_user(args))
    if not ok:
        raise SessionError(f"no memory {args.memory_id!r} for user {_user(args)!r}; see `roleplay memory list`")
    emit(args, {"forgotten": args.memory_id}, f"forgot {args.memory_id}")
    return 0


def cmd_memory_clear(args: argparse.Namespace) -> int:
    n = _store(args).clear(_user(args), args.character)
    emit(args, {"cleared": n, "user": _user(args), "character": args.character},
         f"cleared {n} memor{'y' if n == 1 else 'ies'}")
    return 0
