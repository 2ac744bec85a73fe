"""CLI for authoring: ``author speakers BOOK`` and ``author extract BOOK --character NAME``.

Thin: `roleplay.authoring` reads, attributes and drafts; this prints the report (one JSON
document with ``--json``) and writes the card folder. With the global ``--backend`` or
``--model`` the persona, scenario and greeting are drafted by that model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from . import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``author`` to the `roleplay` parser."""
    author = sub.add_parser("author", help="draft a card from a novel, play or script (.txt, .md, .epub, .srt)")
    asub = author.add_subparsers(dest="author_command", metavar="ACTION", required=True)

    p = asub.add_parser("speakers", help="the speakers found in a book, with their line counts")
    _common(p)
    p.add_argument("--top", type=int, default=30, help="how many speakers to list (default 30)")
    p.set_defaults(func=cmd_speakers)

    p = asub.add_parser("extract", help="turn a book into a draft card folder for one character")
    _common(p)
    p.add_argument("--character", required=True, metavar="NAME", help="the character's name as the book writes it")
    p.add_argument("--aliases", default="", metavar="A,B", help="other names of the character, comma-separated")
    p.add_argument("-o", "--output", metavar="DIR", help="folder of cards (default: ROLEPLAY_HOME/characters)")
    p.add_argument("--id", dest="card_id", help="the card's id (default: from the name)")
    p.add_argument("--force", action="store_true", help="replace a card with the same id")
    p.set_defaults(func=cmd_extract)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("book", metavar="BOOK", help="a .txt, .md, .epub or .srt file")
    p.add_argument("--language", default="auto", choices=["auto", "en", "zh"])
    p.add_argument("--narrator", default="I", help="name of a first-person narrator ('I said') (default: I)")
    p.add_argument("--min-confidence", type=float, default=None,
                   help="quotes decided less surely are left unattributed (default 0.6)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def _extract(args: argparse.Namespace, *, character: str | None, aliases: list[str]):
    from ..authoring import extract
    from ..authoring.extract import MIN_CONFIDENCE

    conf = MIN_CONFIDENCE if args.min_confidence is None else args.min_confidence
    if not 0.0 <= conf <= 1.0:
        raise ConfigError(f"--min-confidence must be between 0 and 1, not {conf}")
    return extract(Path(args.book).expanduser(), character=character, aliases=aliases, language=args.language,
                   narrator=args.narrator, min_confidence=conf, progress=not args.no_progress)


def cmd_speakers(args: argparse.Namespace) -> int:
    ex = _extract(args, character=None, aliases=[])
    report = ex.report()
    report["speakers"] = dict(ex.speakers.most_common(max(1, args.top)))

    def text() -> str:
        if not ex.speakers:
            return (f"{ex.quotes} quotes, none attributed: no speakers found in {args.book} "
                    "(no quoted speech with tags, and no script lines)")
        rows = [f"{n:>6}  {name}" for name, n in ex.speakers.most_common(max(1, args.top))]
        return (f"{ex.quotes} quotes, {ex.attributed} attributed, {ex.unresolved} unresolved ({ex.kind}, "
                f"{ex.language})\n lines  speaker\n" + "\n".join(rows))

    emit(args, report, text)
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from ..authoring import draft_card, write_draft

    aliases = [a.strip() for a in args.aliases.split(",") if a.strip()]
    ex = _extract(args, character=args.character, aliases=aliases)
    backend = None
    if getattr(args, "backend", None) or getattr(args, "model", None):
        from ..backends import get_backend

        backend = get_backend(args.settings)
    card = draft_card(ex, card_id=args.card_id, backend=backend)
    out_dir = Path(args.output).expanduser() if args.output else args.settings.user_characters
    result = write_draft(ex, card, out_dir=out_dir, overwrite=args.force)
    report = ex.report()
    report.update({"id": result.card.id, "path": str(result.path), "story_files": result.story_files,
                   "lorebook": len(result.card.lorebook), "emotions": sorted(result.card.emotions),
                   "drafted_by": backend.name if backend is not None else "rules"})

    def text() -> str:
        return (f"Drafted {result.card.name!r} as {result.card.id} at {result.path}\n"
                f"  {len(ex.lines)} lines (mean confidence {ex.confidence():.2f}), {len(ex.stories)} stories in "
                f"{result.story_files} files, {len(result.card.lorebook)} lorebook entries, emotions: "
                f"{', '.join(sorted(result.card.emotions)) or 'none'}\n"
                f"  book: {ex.quotes} quotes, {ex.attributed} attributed, {ex.unresolved} unresolved\n"
                f"  next: roleplay cards validate {result.path.parent} && roleplay index {result.card.id}")

    emit(args, report, text)
    return 0
