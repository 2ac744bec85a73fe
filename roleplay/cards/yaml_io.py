"""Load and save YAML cards: line-numbered errors, atomic writes, comments kept.

Loading uses ruamel.yaml's round-trip parser (safe: it builds only plain maps, lists and
scalars; tags that would build objects are rejected) so that validation errors can name
the YAML line of the offending field, and so that saving over a hand-written file keeps
its comments where the structure allows.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from ..errors import CardError
from .safety import LIMITS
from .schema import Character

STORY_SEPARATOR = "---"


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    y.width = 100
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _check_structure(node: Any, file: str) -> None:
    """Bound depth and expanded size (defeats "billion laughs" alias bombs)."""
    seen_ids: dict[int, int] = {}

    def count(n: Any, depth: int) -> int:
        if depth > LIMITS.depth:
            raise CardError(f"nesting deeper than {LIMITS.depth} levels", file=file)
        if isinstance(n, str):
            if len(n) > LIMITS.string_chars:
                raise CardError(f"a string longer than {LIMITS.string_chars} characters", file=file)
            return 1
        if not isinstance(n, (dict, list)):
            return 1
        key = id(n)
        if key in seen_ids:  # an alias: its expanded size counts again
            return seen_ids[key]
        total = 1
        items = n.items() if isinstance(n, dict) else enumerate(n)
        for k, v in items:
            total += count(v, depth + 1)
            if total > LIMITS.yaml_nodes:
                raise CardError(f"more than {LIMITS.yaml_nodes} values after expanding aliases "
                                "(an alias bomb?)", file=file)
        seen_ids[key] = total
        return total

    count(node, 0)


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse YAML text into round-trip data, with limits; errors name the line."""
    if text.count("*") and _alias_count(text) > LIMITS.yaml_aliases:
        raise CardError(f"more than {LIMITS.yaml_aliases} YAML aliases", file=file)
    try:
        data = _yaml().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CardError(f"invalid YAML: {problem}", file=file, line=line) from None
    except Exception as exc:  # ruamel raises a few non-YAMLError types on odd input
        raise CardError(f"invalid YAML: {type(exc).__name__}: {exc}".splitlines()[0], file=file) from None
    _check_structure(data, file)
    return data


def _alias_count(text: str) -> int:
    import yaml as pyyaml

    try:
        return sum(isinstance(ev, pyyaml.AliasEvent) for ev in pyyaml.parse(io.StringIO(text)))
    except pyyaml.YAMLError:
        return 0  # the real parser reports the syntax error with its line


def _line_of(data: Any, loc: tuple) -> int | None:
    """The 1-based YAML line of the value at pydantic error location ``loc``."""
    line = None
    node = data
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            else:
                break
        except Exception:
            break
    return line


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def character_from_data(data: Any, *, file: str, raw: Any = None) -> Character:
    """Validate plain data into a Character; errors carry file, field and line."""
    if not isinstance(data, dict):
        raise CardError("a card must be a YAML mapping of fields (id, name, persona, …)", file=file, line=1)
    try:
        return Character.model_validate(_plain(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = _message(err)
        raise CardError(msg, file=file, field=_field_name(loc) or None,
                        line=_line_of(raw if raw is not None else data, loc)) from None


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "string_type":
        return "must be a string"
    if kind == "list_type":
        return "must be a list"
    if kind in ("dict_type", "model_type"):
        return "must be a mapping"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see docs/cards.md for the fields)"
    msg = err["msg"]
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def read_text(path: Path) -> str:
    """Read a UTF-8 text file with a size limit; errors name the file."""
    try:
        size = path.stat().st_size
        if size > LIMITS.file_bytes:
            raise CardError(f"file is {size} bytes; the limit is {LIMITS.file_bytes}", file=path)
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"not valid UTF-8 at byte {exc.start}; save the file as UTF-8", file=path) from None
    except OSError as exc:
        raise CardError(f"cannot read: {exc.strerror}", file=path) from None


def load_card(path: str | Path) -> Character:
    """Load ``character.yaml`` (or a folder holding one), with its ``stories/*.txt``.

    >>> card = load_card("characters/sherlock")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        path = path / "character.yaml"
    if not path.is_file():
        raise CardError("no such card file", file=path)
    raw = parse_yaml(read_text(path), file=str(path))
    card = character_from_data(raw, file=str(path), raw=raw)
    card._path = path
    card._file_stories = load_story_files(path.parent)
    return card


def load_story_files(folder: Path) -> list[tuple[str, str]]:
    """Scenes from ``folder/stories/*.txt``: one per file, or several split by a ``---`` line."""
    sdir = folder / "stories"
    out: list[tuple[str, str]] = []
    if not sdir.is_dir():
        return out
    for f in sorted(sdir.glob("*.txt")):
        text = read_text(f)
        scenes = [s.strip() for s in _split_scenes(text)]
        for i, scene in enumerate(s for s in scenes if s):
            out.append((f"stories/{f.name}#{i}", scene))
        if len(out) > LIMITS.stories:
            raise CardError(f"more than {LIMITS.stories} stories", file=sdir)
    return out


def _split_scenes(text: str) -> list[str]:
    parts, cur = [], []
    for line in text.splitlines():
        if line.strip() == STORY_SEPARATOR:
            parts.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    parts.append("\n".join(cur))
    return parts


def card_to_data(card: Character) -> dict:
    """The card as plain data in field order, leaving out fields at their defaults."""
    return card.model_dump(mode="json", exclude_defaults=True)


def _merge(old: Any, new: Any) -> Any:
    """Update round-trip data ``old`` in place to equal ``new``, keeping comments."""
    if isinstance(old, CommentedMap) and isinstance(new, dict):
        for k in list(old.keys()):
            if k not in new:
                del old[k]
        for k, v in new.items():
            old[k] = _merge(old[k], v) if k in old else v
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list) and len(old) == len(new):
        for i, v in enumerate(new):
            old[i] = _merge(old[i], v)
        return old
    return new


def dump_card(card: Character, *, previous_text: str | None = None) -> str:
    """Render a card as YAML; when ``previous_text`` is given, keep its comments."""
    data: Any = card_to_data(card)
    if previous_text is not None:
        try:
            old = _yaml().load(previous_text)
            if isinstance(old, CommentedMap):
                data = _merge(old, data)
        except YAMLError:
            pass
    data = _literal_blocks(data)
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


def _literal_blocks(node: Any) -> Any:
    """Multi-line strings as ``|`` blocks, so stories stay readable and diffable."""
    from ruamel.yaml.scalarstring import LiteralScalarString

    if isinstance(node, dict):
        for k in list(node.keys()):
            node[k] = _literal_blocks(node[k])
        return node
    if isinstance(node, list):
        for i in range(len(node)):
            node[i] = _literal_blocks(node[i])
        return node
    if isinstance(node, str) and "\n" in node and not isinstance(node, LiteralScalarString):
        # Literal blocks cannot hold trailing spaces on lines faithfully; keep those quoted.
        if not any(line != line.rstrip() for line in node.splitlines()):
            return LiteralScalarString(node)
    return node


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same folder, fsync, then rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CardError(f"cannot save: {exc.strerror}; the previous file is unchanged", file=path) from None
        raise


def save_card(card: Character, path: str | Path | None = None) -> Path:
    """Save a card atomically to ``path`` (default: where it was loaded from)."""
    target = Path(path) if path is not None else card.path
    if target is None:
        raise CardError("no path to save to", field="id")
    if target.is_dir() or target.suffix == "":
        target = target / "character.yaml"
    previous = target.read_text("utf-8") if target.is_file() else None
    atomic_write(target, dump_card(card, previous_text=previous))
    card._path = target
    return target
