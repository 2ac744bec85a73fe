"""Export a card as SillyTavern V2/V3 JSON or PNG.

PNG exports use the card's avatar when it has one (re-encoded, so stale metadata never
rides along), else a generated placeholder portrait. Like SillyTavern, a V3 PNG carries
both chunks: ``chara`` (the V2 card, for older readers) and ``ccv3`` (the V3 card, which
wins when read back); a V2 PNG carries ``chara`` only. Story files beside the card
(``stories/*.txt``) travel in ``data.extensions.roleplay.story_files`` so the export is
lossless; ``mes_example`` holds the card's own stories as ``<START>`` blocks of
``{{user}}:``/``{{char}}:`` lines, the form SillyTavern splits into example messages.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from ..errors import CardError
from .images import placeholder_avatar, reencode_png
from .png import write_text_chunks
from .schema import Character
from .tavern import to_tavern
from .yaml_io import atomic_write, read_text

FORMATS = ("v2-json", "v3-json", "v2-png", "v3-png")


def story_files_of(card: Character) -> dict[str, str]:
    """The raw ``stories/*.txt`` files beside a loaded card."""
    folder = card.folder
    if folder is None or not (folder / "stories").is_dir():
        return {}
    return {p.name: read_text(p) for p in sorted((folder / "stories").glob("*.txt"))}


def _b64(obj: dict) -> str:
    return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8")).decode("ascii")


def export_bytes(card: Character, *, fmt: str) -> bytes:
    """The exported file's bytes for ``fmt`` (one of `FORMATS`)."""
    if fmt not in FORMATS:
        raise CardError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}", field="format")
    files = story_files_of(card)
    version = 3 if fmt.startswith("v3") else 2
    if fmt.endswith("json"):
        obj = to_tavern(card, version=version, story_files=files)
        return (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    avatar_path = card.asset(card.avatar)
    if avatar_path is not None:
        image = reencode_png(avatar_path.read_bytes(), file=avatar_path)
    else:
        image = placeholder_avatar(card.name)
    texts = {"chara": _b64(to_tavern(card, version=2, story_files=files))}
    if version == 3:
        texts["ccv3"] = _b64(to_tavern(card, version=3, story_files=files))
    return write_text_chunks(image, texts)


def export_card(card: Character, *, fmt: str, out: str | Path) -> Path:
    """Write the export atomically to ``out``; returns the path written."""
    out = Path(out).expanduser()
    if out.is_dir():
        out = out / f"{card.id}.{'png' if fmt.endswith('png') else 'json'}"
    atomic_write(out, export_bytes(card, fmt=fmt))
    return out
