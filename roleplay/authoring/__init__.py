"""Character authoring from raw text: a novel, a play or a script becomes a draft card.

``read_book`` (reading) → ``extract`` (attribution of every quote, one character's lines and
stories) → ``draft_card`` (persona, scenario, greetings, emotions, lorebook) → ``write_draft``
(the card folder with ``stories/*.txt``). See docs/authoring.md.
"""
from .draft import draft_card, write_draft
from .extract import Extraction, extract
from .reading import Book, read_book

__all__ = ["Book", "Extraction", "draft_card", "extract", "read_book", "write_draft"]
