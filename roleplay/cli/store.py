"""``roleplay index`` and ``roleplay retrieve``: build and inspect the retrieval index.

Thin: parse, call `roleplay.store.Retriever`, print. ``index`` shows a tqdm bar on
stderr (so ``--json`` stdout stays one document); ``retrieve`` prints what the engine
would put in the prompt for a message, with scores and the reason for each pick.
"""
from __future__ import annotations

import argparse

from ..store.fusion import METHODS


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``index`` and ``retrieve`` to the `roleplay` parser."""
    p = sub.add_parser("index", help="build or update the retrieval index of characters",
                       description="Embed the characters' stories into the Chroma store (incremental: "
                                   "only new or changed stories are embedded). Rebuilds a corrupted store.")
    p.add_argument("ids", nargs="*", metavar="ID", help="character ids (default: all cards)")
    p.add_argument("--json", action="store_true", help="print the stats as one JSON document")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("retrieve", help="show the stories and lore a message would retrieve",
                       description="Debug retrieval for a card: the stories (vector, keyword and total "
                                   "scores, and why) and the lorebook entries a message triggers.")
    p.add_argument("id", metavar="ID", help="character id")
    p.add_argument("text", metavar="TEXT", help="the user's message")
    p.add_argument("--context", action="append", default=[], metavar="TEXT",
                   help="an earlier message (repeat, oldest first)")
    p.add_argument("-k", type=int, default=None, help="at most N stories (default: as many as fit the budget)")
    p.add_argument("--budget", type=int, default=None, help="story token budget (default: settings, 1500)")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help="scoring (default: the retrieval setting, ROLEPLAY_RETRIEVAL, else hybrid)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_retrieve)


def cmd_index(args: argparse.Namespace) -> int:
    from ..cards import get_card, list_cards
    from ..store import Retriever

    settings = args.settings
    if args.ids:
        cards = [get_card(i, settings) for i in args.ids]
        errors: list = []
    else:
        cards, errors = list_cards(settings)
    retriever = Retriever(settings)
    stats = [retriever.index(card, progress=not args.no_progress) for card in cards]
    payload = {"characters": stats, "errors": [str(e) for e in errors]}

    def text() -> str:
        lines = []
        for s in stats:
            if s.get("unchanged"):
                lines.append(f"{s['character']}: unchanged ({s['items']} items)")
            else:
                lines.append(f"{s['character']}: {s['items']} items (+{s['added']} ~{s['updated']} "
                             f"-{s['removed']}, {s['duplicates']} duplicates collapsed, "
                             f"{s['split']} long stories split) in {s['seconds']:.2f}s")
            if s.get("rebuilt"):
                lines.append(f"  rebuilt: {s['rebuilt']}")
        lines.extend(f"skipped: {e}" for e in errors)
        return "\n".join(lines) or "no characters found"

    from . import emit

    emit(args, payload, text)
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..cards import get_card
    from ..errors import ConfigError
    from ..store import Retriever
    from . import emit

    if args.k is not None and args.k < 1:
        raise ConfigError("-k must be at least 1")
    settings = args.settings
    card = get_card(args.id, settings)
    retriever = Retriever(settings)
    conversation = [*args.context, args.text]
    budget = settings.budgets.stories if args.budget is None else args.budget
    stories = retriever.stories(card, conversation, budget_tokens=budget, k=args.k, method=args.method)
    lore = retriever.lore(card, conversation, budget_tokens=settings.budgets.lorebook)
    payload = {"character": card.id, "query": conversation, "method": args.method or settings.retrieval,
               "stories": [asdict(s) for s in stories], "lore": [asdict(h) for h in lore]}

    def text() -> str:
        lines = [f"{len(stories)} stories ({sum(s.tokens for s in stories)} tokens), {len(lore)} lore entries"]
        for n, s in enumerate(stories, 1):
            lines.append(f"\n#{n} {s.source}  total {s.score:.3f}  vector {s.vector_score:.3f}  "
                         f"keyword {s.keyword_score:.2f}  ({s.tokens} tokens)")
            lines.append("   why: " + "; ".join(s.why))
            lines.extend("   | " + line for line in s.text.splitlines())
        for h in lore:
            lines.append(f"\nlore [{h.index}] {h.name}  priority {h.priority}  ({h.tokens} tokens)")
            lines.append("   why: " + "; ".join(h.why))
            lines.extend("   | " + line for line in h.content.splitlines())
        return "\n".join(lines)

    emit(args, payload, text)
    return 0
