"""``roleplay prompt``: show the prompt the engine would send for a message.

Thin: parse, call `Engine.prepare`, print the composed messages, the exact text the
backend renders (the model's chat template applied) and the tokens per part. The backend
is loaded so that token counts use the model's tokenizer, as they do in a chat.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``prompt`` to the `roleplay` parser."""
    p = sub.add_parser("prompt", help="show the composed prompt for a message",
                       description="Compose the prompt for ID answering TEXT (retrieval, lorebook, stage "
                                   "note, budgets) and print its messages, the exact rendered prompt and "
                                   "the tokens per part. Nothing is generated.")
    p.add_argument("id", metavar="ID", help="character id")
    p.add_argument("text", metavar="TEXT", help="the user's new message")
    p.add_argument("--history", metavar="FILE",
                   help="JSON list of earlier messages {role, name, content}, oldest first")
    p.add_argument("--user-name", help="the user's name (default: the card's user_name)")
    p.add_argument("--memory", action="append", default=[], metavar="TEXT",
                   help="a remembered fact about the user (repeat; replaces the stored memories)")
    p.add_argument("--user", default=None,
                   help="whose stored memories the prompt includes, as in a real turn (default: you)")
    p.add_argument("--no-memory", action="store_true", help="leave stored memories out")
    p.add_argument("--summary", default="", help="a rolling summary of earlier turns")
    p.add_argument("--stage-mode", choices=["prefill", "instruct", "off"], default="prefill",
                   help="how the stage note is applied (default: prefill)")
    p.add_argument("--plain", action="store_true", help="the plain persona baseline prompt")
    p.add_argument("--no-retrieval", action="store_true", help="no retrieved stories")
    p.add_argument("--no-lorebook", action="store_true", help="no lorebook entries")
    p.add_argument("--template-dir", metavar="DIR", help="your own Jinja2 templates (sandboxed)")
    p.add_argument("--cache-friendly", action="store_true",
                   help="memories, stories and triggered lore after the history (stable prefix)")
    p.add_argument("-k", type=int, default=None, help="at most N stories")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_prompt)


def _load_history(path: str | None) -> list[dict]:
    from ..errors import ConfigError

    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--history {path}: cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--history {path}: not valid JSON ({exc}); expected a list of "
                          "{role, name, content} objects") from None
    if not isinstance(data, list):
        raise ConfigError(f"--history {path}: expected a JSON list of {{role, name, content}} objects")
    return data


def cmd_prompt(args: argparse.Namespace) -> int:
    from ..engine import Engine, EngineOptions, Turn
    from ..memory.store import default_user
    from . import emit

    engine = Engine(args.settings)
    card = engine.card(args.id)
    options = EngineOptions(stage_mode=args.stage_mode, plain=args.plain, retrieval=not args.no_retrieval,
                            lorebook=not args.no_lorebook, story_k=args.k,
                            cache_friendly=args.cache_friendly,
                            template_dir=Path(args.template_dir) if args.template_dir else None)
    backend = engine.backend  # loaded first: parts are counted with the model's tokenizer
    prompt = engine.prepare(Turn(card, _load_history(args.history), args.text, user_name=args.user_name,
                                 memories=[] if args.no_memory else (args.memory or None),
                                 memory_user=args.user or default_user(), summary=args.summary,
                                 options=options))
    rendered = backend.render(prompt.messages)
    ids = getattr(backend, "prompt_ids", None)
    rendered_tokens = len(ids(prompt.messages)) if callable(ids) else backend.count_tokens(rendered)
    note = prompt.note
    payload = {
        "character": card.id,
        "backend": backend.name,
        "model": backend.model_name,
        "messages": prompt.messages,
        "prefill": prompt.prefill,
        "rendered": rendered,
        "parts": prompt.parts,
        "rendered_tokens": rendered_tokens,
        "stories": [{"id": getattr(s, "id", ""), "score": getattr(s, "score", None)} for s in prompt.stories],
        "lore": [getattr(h, "name", "") for h in prompt.lore],
        "memories": prompt.memories,
        "note": None if note is None else {"intent": note.intent, "intent_score": note.intent_score,
                                           "emotion": note.emotion, "note": note.note},
    }

    def text() -> str:
        out = []
        for i, m in enumerate(prompt.messages):
            out.append(f"--- [{i}] {m['role']} ---")
            out.append(m["content"])
        out.append("=== rendered prompt ===")
        out.append(rendered)
        out.append("=== tokens per part ===")
        out.extend(f"{k:>12}: {v}" for k, v in prompt.parts.items())
        out.append(f"{'rendered':>12}: {rendered_tokens}")
        if note is not None:
            out.append(f"stage: intent={note.intent} ({note.intent_score:.2f}) emotion={note.emotion} "
                       f"note={note.note or '-'}")
        return "\n".join(out)

    emit(args, payload, text)
    return 0
