"""The card library: finding cards (bundled ``characters/``, ``ROLEPLAY_HOME/characters``,
``ROLEPLAY_CHARACTERS``), and saving an edited card into the user's folder.

Trade-off: saving always goes to the user's folder (``ROLEPLAY_HOME/characters/<id>``),
which the search order puts first, so editing a bundled card shadows it instead of
modifying the installation; the price is a copy of its pictures and ``stories/*.txt``,
made once (files already in the user's folder are never overwritten).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..config import Settings
from ..errors import CardError
from .safety import safe_join
from .schema import ID_RE, Character
from .yaml_io import atomic_write, load_card, load_story_files, save_card


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


def attach(card: Character, source: str | Path | None) -> Character:
    """Give an unsaved card (an editor's draft) the card file it was opened from, so its
    pictures and ``stories/*.txt`` resolve as if it were loaded from there."""
    if source:
        path = Path(source)
        card._path = path
        try:
            card._file_stories = load_story_files(path.parent)
        except CardError:  # a broken stories file shows up on save or validate, not in a preview
            card._file_stories = []
    return card


def save_to_library(card: Character, settings: Settings, *, text: str | None = None,
                    source: str | Path | None = None) -> Character:
    """Save ``card`` atomically as ``ROLEPLAY_HOME/characters/<id>/character.yaml`` and
    return it as loaded from there.

    Args:
        text: the YAML to write as is (an editor's text keeps its comments); default
            `dump_card` of ``card`` merged into the file already there.
        source: the card file it came from (default: ``card.path``); its pictures and
            ``stories/*.txt`` are copied along unless the user's folder has them already.
    """
    target_dir = settings.user_characters / card.id
    src = Path(source) if source else card.path
    if src is not None and src.parent.is_dir() and src.parent.resolve() != target_dir.resolve():
        _copy_assets(card, src.parent, target_dir)
    target = target_dir / "character.yaml"
    if text is None:
        save_card(card, target)
    else:
        atomic_write(target, text if text.endswith("\n") else text + "\n")
    return load_card(target)


def _copy_assets(card: Character, src_dir: Path, target_dir: Path) -> None:
    """The card's pictures and ``stories/*.txt`` from ``src_dir`` into ``target_dir``."""
    for name in [n for n in [card.avatar, *card.emotion_images.values()] if n]:
        source = safe_join(src_dir, name, what="asset")
        dest = safe_join(target_dir, name, what="asset")
        if source.is_file() and not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    stories = src_dir / "stories"
    if stories.is_dir() and not (target_dir / "stories").exists():
        (target_dir / "stories").mkdir(parents=True)
        for f in sorted(stories.glob("*.txt")):
            if f.is_file() and not f.is_symlink():
                shutil.copyfile(f, target_dir / "stories" / f.name)
