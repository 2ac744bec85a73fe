"""CLI for cards: ``cards list|show|validate|new``, ``import`` and ``export``.

Thin wrappers: each command parses, calls `roleplay.cards`, and prints (one JSON document
with ``--json``). Errors are `CardError`s; the registry prints them as one line, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from ..errors import CardError
from . import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cards``, ``import`` and ``export`` to the `roleplay` parser."""
    cards = sub.add_parser("cards", help="list, show, validate and create character cards")
    csub = cards.add_subparsers(dest="cards_command", metavar="ACTION", required=True)

    p = csub.add_parser("list", help="cards found in all card folders")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_list)

    p = csub.add_parser("show", help="one card's fields")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print the full card as JSON")
    p.set_defaults(func=cmd_show)

    p = csub.add_parser("validate", help="check card files; one line per error, exit 2 on any")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="character.yaml, a card folder, a folder of card folders, or .json/.png/.zip")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_validate)

    p = csub.add_parser("new", help="write a commented template card to DIR/ID/character.yaml")
    p.add_argument("id")
    p.add_argument("-o", "--output", metavar="DIR", help="folder of cards (default: ROLEPLAY_HOME/characters)")
    p.add_argument("--name", help="the character's display name (default: from the id)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("import", help="import a card: folder, .yaml, .json, .png, .zip, ChatHaruhi .jsonl")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", metavar="DIR", help="folder of cards (default: ROLEPLAY_HOME/characters)")
    p.add_argument("--id", dest="card_id", help="id for the imported card (default: from its name)")
    p.add_argument("--force", action="store_true", help="replace a card with the same id")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="export a card as SillyTavern V2/V3 JSON or PNG")
    p.add_argument("id")
    p.add_argument("--format", required=True, choices=["v2-json", "v3-json", "v2-png", "v3-png"])
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file (or folder) to write")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_export)


def cmd_list(args: argparse.Namespace) -> int:
    from ..cards.library import list_cards

    cards, errors = list_cards(args.settings)
    rows = [{"id": c.id, "name": c.name, "language": c.language, "stories": len(c.all_stories()),
             "lorebook": len(c.lorebook), "path": str(c.path)} for c in cards]
    for err in errors:
        print(f"warning: {err}", file=sys.stderr)
    emit(args, {"cards": rows, "errors": [str(e) for e in errors]},
         lambda: "\n".join(f"{r['id']:<16} {_pad(r['name'], 24)} {r['language']:<4} {r['stories']:>5} stories  "
                           f"{r['path']}" for r in rows) or "no cards found")
    return 0


def _pad(text: str, width: int) -> str:
    """Left-align in a terminal column: CJK characters take two cells."""
    import unicodedata

    cells = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - cells)


def cmd_show(args: argparse.Namespace) -> int:
    from ..cards.library import get_card

    card = get_card(args.id, args.settings)
    payload = card.model_dump(mode="json") | {"path": str(card.path), "file_stories": len(card.all_stories()) - len(card.stories)}

    def text() -> str:
        lines = [f"{card.name} ({card.id}, {card.language})  {card.path}",
                 f"persona: {card.persona.strip()[:300]}"]
        if card.scenario:
            lines.append(f"scenario: {card.scenario.strip()[:200]}")
        lines += [f"greetings: {len(card.greetings)}  stories: {len(card.all_stories())}  "
                  f"lorebook: {len(card.lorebook)}  emotions: {', '.join(card.emotions) or '-'}",
                  f"style: {card.style.action_style}/{card.style.quote_style}  tags: {', '.join(card.tags) or '-'}"]
        return "\n".join(lines)

    emit(args, payload, text)
    return 0


def _validate_one(path: Path) -> list[CardError]:
    from ..cards.importer import read_import
    from ..cards.yaml_io import card_errors

    if path.is_dir() and not (path / "character.yaml").is_file() and not (path / "system_prompt.txt").is_file():
        found = sorted(path.glob("*/character.yaml"))
        if not found:
            return [CardError("no character.yaml here or in its sub-folders", file=path)]
        return [e for p in found for e in card_errors(p)]
    if path.suffix.lower() in (".yaml", ".yml") or (path.is_dir() and (path / "character.yaml").is_file()):
        return card_errors(path)
    try:
        read_import(path)
    except CardError as exc:
        return [exc]
    return []


def cmd_validate(args: argparse.Namespace) -> int:
    results = {p: _validate_one(Path(p)) for p in args.paths}
    errors = [str(e) for errs in results.values() for e in errs]
    if args.json:
        emit(args, {"ok": not errors, "files": {p: [str(e) for e in errs] for p, errs in results.items()}})
    else:
        for line in errors:
            print(line, file=sys.stderr)
        ok = [p for p, errs in results.items() if not errs]
        if ok:
            print("\n".join(f"ok: {p}" for p in ok))
    return 2 if errors else 0


def cmd_new(args: argparse.Namespace) -> int:
    from ..cards.safety import safe_join
    from ..cards.schema import ID_RE
    from ..cards.yaml_io import atomic_write, load_card

    if not ID_RE.match(args.id):
        raise CardError("ids are 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
                        field="id")
    root = Path(args.output).expanduser() if args.output else args.settings.user_characters
    target = safe_join(root, args.id, what="card id") / "character.yaml"
    if target.exists():
        raise CardError("already exists; choose another id or edit that file", file=target)
    name = args.name or args.id.replace("-", " ").replace("_", " ").title()
    text = resources.files("roleplay.cards").joinpath("template.yaml").read_text("utf-8")
    text = text.replace("__ID__", args.id).replace("__NAME__", _yaml_scalar(name))
    atomic_write(target, text)
    card = load_card(target)
    emit(args, {"id": card.id, "name": card.name, "path": str(target)},
         f"wrote {target}\nedit it, then check it with: roleplay cards validate {target}")
    return 0


def _yaml_scalar(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def cmd_import(args: argparse.Namespace) -> int:
    from ..cards.importer import import_card

    out = Path(args.output).expanduser() if args.output else args.settings.user_characters
    result = import_card(args.path, out_dir=out, card_id=args.card_id, overwrite=args.force)
    payload = result.to_json()
    for w in result.warnings:
        if not args.json:
            print(f"warning: {w}", file=sys.stderr)
    emit(args, payload, f"imported {result.card.name!r} as {result.card.id} ({result.format}, "
                        f"{payload['stories']} stories, {payload['lorebook']} lore entries) → {result.path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..cards.exporter import export_card
    from ..cards.library import get_card

    card = get_card(args.id, args.settings)
    path = export_card(card, fmt=args.format, out=args.output)
    emit(args, {"id": card.id, "format": args.format, "path": str(path), "bytes": path.stat().st_size},
         f"exported {card.id} as {args.format} → {path}")
    return 0
