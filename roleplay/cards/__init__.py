"""Character cards: schema, YAML load/save, importers and exporters."""
from .library import find_card, get_card, list_cards
from .schema import Character, Knowledge, LoreEntry, Style
from .yaml_io import load_card, save_card

__all__ = ["Character", "Knowledge", "LoreEntry", "Style", "find_card", "get_card",
           "list_cards", "load_card", "save_card"]
