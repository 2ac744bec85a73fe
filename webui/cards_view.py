"""Card pictures and listings for the UI: gallery items, avatars, per-emotion images.

Images are handed to Gradio as Pillow images rather than file paths: Gradio serves only
files under allowed folders, and card folders may live anywhere (``ROLEPLAY_CHARACTERS``),
so passing decoded images avoids widening what the web server may read from disk.
Cards without an avatar get the library's generated placeholder portrait.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

    from roleplay.cards import Character
    from roleplay.config import Settings


def open_image(card: "Character", name: str | None) -> "Image | None":
    """The card's asset ``name`` as a Pillow image, or None when absent/unreadable."""
    from PIL import Image as PILImage

    try:
        path = card.asset(name)
    except Exception:  # an unsafe asset name in a card: show no picture
        return None
    if path is None:
        return None
    try:
        with PILImage.open(path) as img:
            img.load()
            return img.copy()
    except Exception:  # a broken image file must not break the page
        return None


def avatar(card: "Character") -> "Image":
    """The card's avatar, or a generated placeholder."""
    from PIL import Image as PILImage

    from roleplay.cards.images import placeholder_avatar

    img = open_image(card, card.avatar)
    if img is None:
        img = PILImage.open(io.BytesIO(placeholder_avatar(card.name)))
    return img


def emotion_image(card: "Character", emotion: str | None) -> "Image":
    """The card's picture for ``emotion`` when it has one, else its avatar."""
    img = open_image(card, card.emotion_images.get(emotion or "")) if emotion else None
    return img if img is not None else avatar(card)


def caption(card: "Character") -> str:
    """Gallery caption: name and tags. Plain text (Gradio shows captions as text, not HTML)."""
    tags = ", ".join(card.tags[:4])
    return f"{card.name}" + (f" · {tags}" if tags else "")


def gallery_items(settings: "Settings") -> tuple[list[tuple[Any, str]], list[str], list[str]]:
    """``(gallery items, card ids in the same order, load errors as text)``."""
    from roleplay.cards import list_cards

    cards, errors = list_cards(settings)
    cards = sorted(cards, key=lambda c: c.name.lower())
    return [(avatar(c), caption(c)) for c in cards], [c.id for c in cards], [str(e) for e in errors]
