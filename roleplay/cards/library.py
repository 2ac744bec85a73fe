"""Finding cards: bundled ``characters/``, ``ROLEPLAY_HOME/characters``, ``ROLEPLAY_CHARACTERS``."""
from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import CardError
from .schema import ID_RE, Character
from .yaml_io import load_card


def find_card(card_id: str, settings: Settings | None = None) -> Path:
    """The ``character.yaml`` of ``card_id`` (first folder wins), or a CardError."""
    settings = settings or Settings.from_env()
    if not ID_RE.match(card_id):
        raise CardError(f"unknown character {card_id!r}: ids are a-z, 0-9, '_' and '-'; "
                        "see `roleplay cards list`")
    for d in settings.card_dirs():
        p = d / card_id / "character.yaml"
        if p.is_file():
            return p
    raise CardError(f"unknown character {card_id!r}; see `roleplay cards list` "
                    f"(searched {', '.join(str(d) for d in settings.card_dirs())})")


def get_card(card_id: str, settings: Settings | None = None) -> Character:
    """Load the card with this id."""
    return load_card(find_card(card_id, settings))


def list_card_paths(settings: Settings | None = None) -> dict[str, Path]:
    """id -> card path over all folders (the first folder holding an id wins)."""
    settings = settings or Settings.from_env()
    found: dict[str, Path] = {}
    for d in settings.card_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*/character.yaml")):
            found.setdefault(p.parent.name, p)
    return found


def list_cards(settings: Settings | None = None) -> tuple[list[Character], list[CardError]]:
    """All loadable cards, and the errors of those that failed to load."""
    cards, errors = [], []
    for _id, p in list_card_paths(settings).items():
        try:
            cards.append(load_card(p))
        except CardError as exc:
            errors.append(exc)
    return cards, errors
