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
import warnings
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


def check_structure(node: Any, file: str) -> None:
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
    _prescan(text, file=file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ruamel warns on reused anchors: legal YAML, not our user's business
            data = _yaml().load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise CardError(f"invalid YAML: {one_line(problem)}", file=file, line=line) from None
    except RecursionError:
        raise CardError(f"nesting deeper than {LIMITS.depth} levels", file=file) from None
    except Exception as exc:  # ruamel raises a few non-YAMLError types on odd input
        raise CardError(f"invalid YAML: {type(exc).__name__}: {one_line(str(exc))}", file=file) from None
    check_structure(data, file)
    return data


def one_line(text: str, *, limit: int = 200) -> str:
    """Error text from a parser as one short line (it may quote the offending input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Tags a plain card may spell out; anything else (``!!python/object``, ``!custom``) is refused.
_SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def _prescan(text: str, *, file: str) -> None:
    """Walk the YAML event stream (libyaml when present: fast, not recursive) before building
    anything: count aliases, bound nesting depth and refuse object tags.

    subtle: aliases are counted here, on events, because the composed document shares the
    aliased node; the expanded size is bounded again in `check_structure`.
    """
    import yaml as pyyaml

    loader = getattr(pyyaml, "CSafeLoader", pyyaml.SafeLoader)
    aliases = depth = 0
    try:
        for ev in pyyaml.parse(io.StringIO(text), Loader=loader):
            if isinstance(ev, pyyaml.AliasEvent):
                aliases += 1
                if aliases > LIMITS.yaml_aliases:
                    raise CardError(f"more than {LIMITS.yaml_aliases} YAML aliases (an alias bomb?); "
                                    "write the values out", file=file, line=_ev_line(ev))
                continue
            tag = getattr(ev, "tag", None)
            if tag is not None and _expand_tag(tag) not in _SAFE_TAGS:
                raise CardError(f"YAML tag {tag!r} is not allowed; cards hold plain maps, lists and text",
                                file=file, line=_ev_line(ev))
            if isinstance(ev, (pyyaml.MappingStartEvent, pyyaml.SequenceStartEvent)):
                depth += 1
                if depth > LIMITS.depth:
                    raise CardError(f"nesting deeper than {LIMITS.depth} levels", file=file, line=_ev_line(ev))
            elif isinstance(ev, (pyyaml.MappingEndEvent, pyyaml.SequenceEndEvent)):
                depth -= 1
    except pyyaml.YAMLError:
        return  # the round-trip parser reports the syntax error with its line


def _expand_tag(tag: str) -> str:
    return "tag:yaml.org,2002:" + tag[2:] if tag.startswith("!!") else tag


def _ev_line(ev: Any) -> int | None:
    mark = getattr(ev, "start_mark", None)
    return mark.line + 1 if mark is not None else None


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
    loc = tuple(one_line(p, limit=60) if isinstance(p, str) else p for p in loc)  # keys come from the file
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
        raise _card_errors(exc, file=file, raw=raw if raw is not None else data)[0] from None


def _card_errors(exc: ValidationError, *, file: str, raw: Any) -> list[CardError]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append(CardError(_message(err), file=file, field=_field_name(loc) or None,
                             line=_line_of(raw, loc)))
    return out


def card_errors(path: str | Path) -> list[CardError]:
    """Every problem of a YAML card file, one CardError each (for ``cards validate``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "character.yaml"
    try:
        if not path.is_file():
            raise CardError("no such card file", file=path)
        raw = parse_yaml(read_text(path), file=str(path))
        if not isinstance(raw, dict):
            raise CardError("a card must be a YAML mapping of fields (id, name, persona, …)", file=path, line=1)
        Character.model_validate(_plain(raw))
        load_story_files(path.parent)
    except CardError as exc:
        return [exc]
    except ValidationError as exc:
        return _card_errors(exc, file=str(path), raw=raw)
    return []


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
    msg = one_line(err["msg"])
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def _plain(node: Any) -> Any:
    from ruamel.yaml.comments import TaggedScalar

    if isinstance(node, TaggedScalar):  # an explicit core tag such as ``!!str 3``
        return str(node.value)
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
