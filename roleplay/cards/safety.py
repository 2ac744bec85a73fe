"""Limits and path sanitising for untrusted card files.

Cards are downloaded from strangers: every size is bounded and every path derived from a
card (ids, asset names, zip members) stays inside its target folder.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import CardError


@dataclass
class Limits:
    """Upper bounds applied when loading untrusted cards.

    One shared instance, `LIMITS`, read at call time: an embedding application (or a test)
    may lower or raise a bound by assigning to it.
    """

    file_bytes: int = 16 * 1024 * 1024        # a card file (YAML/JSON/PNG)
    zip_total_bytes: int = 256 * 1024 * 1024  # uncompressed zip contents
    zip_members: int = 20_000
    png_chunks: int = 1_000
    png_text_bytes: int = 16 * 1024 * 1024    # one tEXt chunk
    base64_decoded_bytes: int = 12 * 1024 * 1024
    yaml_aliases: int = 64
    yaml_nodes: int = 500_000                 # after alias expansion
    depth: int = 32
    string_chars: int = 1_000_000
    stories: int = 50_000
    image_pixels: int = 16_000_000


LIMITS = Limits()

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_name(name: str, *, what: str = "name") -> str:
    """Check a single relative path from a card/upload; return it normalised (posix).

    Rejects NUL bytes, absolute paths, drive letters, backslashes and ``..`` parts.
    """
    if not name or "\x00" in name:
        raise CardError(f"invalid {what} {name!r}: empty or contains a NUL byte")
    if "\\" in name or _WINDOWS_DRIVE.match(name) or name.startswith("/"):
        raise CardError(f"invalid {what} {name!r}: must be a relative path inside the card folder")
    parts = PurePosixPath(name).parts
    if any(p in ("..", "") for p in parts):
        raise CardError(f"invalid {what} {name!r}: '..' is not allowed")
    return str(PurePosixPath(*parts))


def safe_join(root: Path, name: str, *, what: str = "path") -> Path:
    """Join ``name`` under ``root``, refusing anything (including symlinks) that escapes it."""
    rel = safe_name(name, what=what)
    root_r = root.resolve()
    target = (root_r / rel).resolve()
    if target != root_r and root_r not in target.parents:
        raise CardError(f"invalid {what} {name!r}: resolves outside {root}")
    return target
