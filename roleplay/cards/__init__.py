"""Character cards: schema, YAML load/save, importers and exporters."""
from .exporter import export_card
from .importer import import_card, read_import
from .library import find_card, get_card, list_cards
from .schema import Character, Knowledge, LoreEntry, Style
from .yaml_io import load_card, save_card

__all__ = ["Character", "Knowledge", "LoreEntry", "Style", "export_card", "find_card", "get_card",
           "import_card", "list_cards", "load_card", "read_import", "save_card"]
