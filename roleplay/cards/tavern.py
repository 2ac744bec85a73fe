"""SillyTavern character cards V1, V2 (``chara_card_v2``) and V3 (``chara_card_v3``) ↔ `Character`.

Mapping (docs/cards.md has the full table): description (+ personality) → persona,
first_mes + alternate_greetings → greetings, group_only_greetings → group_greetings,
mes_example ``<START>`` blocks → stories, character_book entries → lorebook, the rest by
name. ``{{char}}``/``{{user}}`` stay as macros (expanded at prompt time), and ``*action*``
writing is detected into ``style.action_style``. On export each story becomes a
``<START>`` block of ``{{user}}: …`` / ``{{char}}: …`` lines (our ``Name:「…」`` lines
converted, corner quotes dropped), the form SillyTavern's example parser splits into
messages; the exact stories ride in ``extensions.roleplay`` and win on re-import while
the examples still match them.

Nothing is dropped: fields of the format that have no home in a card go to
``extensions["tavern"]`` (card level) or a lore entry's ``extensions["tavern"]``, and the
card's own extensions stay extensions; export puts them all back. Fields of a card that
the format cannot hold (id, language, emotions, …) ride in ``data.extensions.roleplay``
on export, so export → import gives back an equal card. The trade-off: a card exported
from here and edited in SillyTavern keeps our extras, and when the edited standard field
no longer matches what we stored, the standard field wins.
"""
from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any


from ..errors import CardError
from .chatharuhi import detect_language, detect_style, slug
from .schema import ID_RE, Character, LoreEntry
from .yaml_io import character_from_data, check_structure

V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
#: Top-level fields SillyTavern mirrors beside ``data`` for V1 readers (not "unknown").
V1_MIRROR = set(V1_FIELDS) | {"creatorcomment", "tags", "talkativeness", "creator", "character_version"}
V2_DATA = ("name", "description", "personality", "scenario", "first_mes", "mes_example", "creator_notes",
           "system_prompt", "post_history_instructions", "alternate_greetings", "character_book", "tags",
           "creator", "character_version", "extensions")
V3_DATA = V2_DATA + ("nickname", "group_only_greetings", "assets", "creator_notes_multilingual", "source",
                     "creation_date", "modification_date")
ENTRY_FIELDS = ("keys", "content", "extensions", "enabled", "insertion_order", "case_sensitive", "name",
                "priority", "id", "comment", "selective", "secondary_keys", "constant", "position", "use_regex")
_START = re.compile(r"^\s*<START>\s*$", re.IGNORECASE | re.MULTILINE)
#: Card fields the tavern formats cannot hold; exported in ``extensions.roleplay``.
NATIVE_ONLY = ("id", "language", "user_name", "aliases", "style", "emotions", "reactions", "knowledge",
               "avatar", "emotion_images")
#: A story line ``Name: text`` / ``Name：text`` (speaker up to 40 characters, no brackets).
_SPEAKER_LINE = re.compile(r"^(\s*)([^:：「」()（）*\n]{1,40}?)\s*[:：]\s*(.*)$")


def parse_json_card(text: str, *, file: str) -> dict:
    """JSON text → dict with the same limits as YAML cards (depth, sizes)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise CardError("JSON nested too deeply", file=file) from None
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise CardError(f"invalid JSON: {getattr(exc, 'msg', exc)}", file=file, line=line) from None
    check_structure(data, file)
    if not isinstance(data, dict):
        raise CardError("a character card must be a JSON object", file=file)
    return data


def card_version(data: dict, *, file: str | None = None) -> int:
    """1, 2 or 3 from the ``spec`` field (V1 has none)."""
    spec = data.get("spec")
    if spec == "chara_card_v3":
        return 3
    if spec == "chara_card_v2":
        return 2
    if spec is None and "name" in data:
        return 1
    raise CardError(f"unknown card spec {spec!r}; expected chara_card_v2, chara_card_v3 or a V1 card",
                    file=file, field="spec")


# --------------------------------------------------------------------------- import


class _Reader:
    """Typed access to one JSON object with errors naming the field."""

    def __init__(self, obj: dict, prefix: str, file: str) -> None:
        self.obj, self.prefix, self.file = obj, prefix, file

    def err(self, key: str, msg: str) -> CardError:
        return CardError(msg, file=self.file, field=f"{self.prefix}{key}")

    def str(self, key: str) -> str:
        v = self.obj.get(key)
        if v is None:
            return ""
        if isinstance(v, bool):
            raise self.err(key, "must be a string")
        if isinstance(v, (int, float)):
            return str(v)  # cards in the wild write character_version: 1
        if not isinstance(v, str):
            raise self.err(key, "must be a string")
        return v

    def strs(self, key: str) -> list[str]:
        v = self.obj.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.err(key, "must be a list of strings")
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise self.err(f"{key}[{i}]", "must be a string")
        return list(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self.obj.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(key, "must be true or false")
        return v

    def int(self, key: str, default: int) -> int:
        v = self.obj.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) > 2**53:
            raise self.err(key, "must be a number")
        return int(v)

    def dict(self, key: str) -> dict:
        v = self.obj.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.err(key, "must be an object")
        return dict(v)


def split_examples(mes_example: str) -> list[str]:
    """``<START>``-separated example dialogues → stories (blank blocks dropped)."""
    return [b.strip("\n").strip() for b in _START.split(mes_example) if b.strip()]


def join_examples(stories: list[str]) -> str:
    return "".join(f"<START>\n{s.strip()}\n" for s in stories)


def example_dialogue(story: str, *, char_names: list[str], user_name: str) -> str:
    r"""One story as SillyTavern example lines: the character's lines as ``{{char}}: …``,
    the user's as ``{{user}}: …``; other speakers and narration stay as written.

    >>> example_dialogue("Watson:「How?」\nSherlock:「(smiles) I observed.」", char_names=["Sherlock"],
    ...                  user_name="Watson")
    '{{user}}: How?\n{{char}}: (smiles) I observed.'
    """
    out = []
    for line in story.strip().splitlines():
        m = _SPEAKER_LINE.match(line)
        if m and (m.group(2) in char_names or m.group(2) == user_name):
            text = m.group(3).strip()
            if text.startswith("「") and text.endswith("」"):
                text = text[1:-1].strip()
            line = f"{m.group(1)}{{{{{'char' if m.group(2) in char_names else 'user'}}}}}: {text}"
        out.append(line)
    return "\n".join(out)


def _join_persona(description: str, personality: str) -> str:
    if not personality:
        return description
    return (description + "\n\n" if description else "") + f"{{{{char}}}}'s personality: {personality}"


def from_tavern(obj: dict, *, file: str, card_id: str | None = None) -> tuple[Character, dict[str, str]]:
    """A V1/V2/V3 card object → (Character, story files ``{name: text}`` carried by our exports)."""
    version = card_version(obj, file=file)
    if version == 1:
        data, top, prefix = dict(obj), {}, ""
    else:
        if not isinstance(obj.get("data"), dict):
            raise CardError("must be an object holding the card fields", file=file, field="data")
        data, prefix = dict(obj["data"]), "data."
        top = {k: v for k, v in obj.items() if k not in ("spec", "spec_version", "data") and k not in V1_MIRROR}
    r = _Reader(data, prefix, file)
    ext = r.dict("extensions")
    native = ext.pop("roleplay", None)
    if native is not None and not isinstance(native, dict):
        raise r.err("extensions.roleplay", "must be an object")
    native = dict(native or {})
    tavern: dict[str, Any] = {"spec": version}
    description, personality = r.str("description"), r.str("personality")
    if personality:
        tavern["personality"] = personality
    name = r.str("name").strip() or "Unnamed"
    first, alts = r.str("first_mes"), r.strs("alternate_greetings")
    examples = split_examples(r.str("mes_example"))
    fields: dict[str, Any] = {
        "name": name,
        "persona": _join_persona(description, personality),
        "scenario": r.str("scenario"),
        "greetings": ([first] if first else []) + alts,
        "stories": examples,
        "tags": r.strs("tags"),
        "creator": r.str("creator"),
        "creator_notes": r.str("creator_notes") if version > 1 else r.str("creatorcomment"),
        "system_prompt": r.str("system_prompt"),
        "post_history_instructions": r.str("post_history_instructions"),
        "version": r.str("character_version") or "1.0",
        "nickname": r.str("nickname"),
        "group_greetings": r.strs("group_only_greetings"),
    }
    talk = ext.pop("talkativeness", None) if version > 1 else data.get("talkativeness")
    if talk is not None:
        try:
            t = float(talk)
            if not 0.0 <= t <= 1.0:
                raise ValueError
            fields["talkativeness"] = t
        except (TypeError, ValueError):
            tavern["talkativeness"] = talk
    book = data.get("character_book")
    known = set(V1_FIELDS) | {"creatorcomment", "talkativeness"} if version == 1 else set(V3_DATA)
    unknown = {k: v for k, v in data.items() if k not in known}
    if version == 1:
        unknown.pop("tags", None)
    if version == 2:  # V3 fields found in a V2 card are still understood
        for k in ("nickname", "group_only_greetings"):
            unknown.pop(k, None)
    for k in ("assets", "creator_notes_multilingual", "source", "creation_date", "modification_date"):
        if k in data:
            unknown[k] = data[k]
    if unknown:
        tavern["fields"] = unknown
    if top:
        tavern["top"] = top
    story_files = native.pop("story_files", None) or {}
    exact_stories = native.pop("stories", None)
    if isinstance(exact_stories, list) and all(isinstance(s, str) for s in exact_stories):
        aliases = native.get("aliases") if isinstance(native.get("aliases"), list) else []
        char_names = [n for n in [name, *aliases, r.str("nickname"), native.get("nickname")]
                      if isinstance(n, str) and n.strip()]
        user = native.get("user_name") if isinstance(native.get("user_name"), str) else "User"
        written = [example_dialogue(s, char_names=char_names, user_name=user).strip() for s in exact_stories]
        if written == examples or [s.strip() for s in exact_stories] == examples:
            fields["stories"] = exact_stories  # our export, unedited: kept byte-exact
    lore_native = native.pop("lorebook", None)
    ours = bool(native)  # our own export always records the id
    if ours:
        fields.update(native)  # the fields the format could not hold; ext["tavern"] came back as saved
    else:
        sample = "\n".join([first, *alts, r.str("mes_example")])
        fields["style"] = detect_style(sample).model_dump()
        fields["language"] = detect_language(description + sample)
        ext["tavern"] = tavern
    if card_id:
        fields["id"] = card_id
    elif not ID_RE.match(str(fields.get("id", ""))):
        fields["id"] = slug(name) or slug(PurePosixPath(file).stem) or "character"  # CJK names: the file name
    if book is not None:
        fields["lorebook"], tavern["book"] = _book_from(book, file=file, prefix=prefix, ours=ours)
    if isinstance(lore_native, list) and len(lore_native) == len(fields.get("lorebook", [])):
        for entry, extra in zip(fields["lorebook"], lore_native):
            if isinstance(extra, dict):
                entry.update(extra)
    fields["extensions"] = ext
    if not isinstance(story_files, dict) or not all(isinstance(v, str) for v in story_files.values()):
        raise r.err("extensions.roleplay.story_files", "must map file names to text")
    return character_from_data(fields, file=file), story_files


def _book_from(book: Any, *, file: str, prefix: str, ours: bool) -> tuple[list[dict], dict]:
    if not isinstance(book, dict):
        raise CardError("must be an object", file=file, field=f"{prefix}character_book")
    entries = book.get("entries", [])
    if not isinstance(entries, list):
        raise CardError("must be a list", file=file, field=f"{prefix}character_book.entries")
    out = []
    for i, e in enumerate(entries):
        where = f"{prefix}character_book.entries[{i}]."
        if not isinstance(e, dict):
            raise CardError("must be an object", file=file, field=where[:-1])
        r = _Reader(e, where, file)
        ext = r.dict("extensions")
        # Our export wrote the entry's own record back into extensions; a foreign entry's
        # unknown fields and id are recorded now.
        rest = {} if ours else {k: v for k, v in e.items() if k not in ENTRY_FIELDS}
        if "id" in e and not ours:
            rest["id"] = e["id"]
        pos = e.get("position")
        entry: dict[str, Any] = {
            "keys": r.strs("keys"), "content": r.str("content"), "secondary_keys": r.strs("secondary_keys"),
            "selective": r.bool("selective", False), "regex": r.bool("use_regex", False),
            "case_sensitive": r.bool("case_sensitive", False), "constant": r.bool("constant", False),
            "enabled": r.bool("enabled", True), "priority": r.int("priority", 10),
            "order": r.int("insertion_order", 100), "name": r.str("name"), "comment": r.str("comment"),
        }
        if pos in ("before_char", "after_char"):
            entry["position"] = pos
        elif pos is not None and not ours:
            rest["position"] = pos
        if rest:
            ext["tavern"] = rest
        entry["extensions"] = ext
        out.append(entry)
    book_rest = {k: v for k, v in book.items() if k != "entries"}
    return out, book_rest


# --------------------------------------------------------------------------- export


def to_tavern(card: Character, *, version: int, story_files: dict[str, str] | None = None) -> dict:
    """The card as a V2 or V3 object (``{"spec", "spec_version", "data"}`` + V1 mirror fields)."""
    if version not in (2, 3):
        raise CardError(f"cannot export card version {version}; use 2 or 3")
    ext = {k: v for k, v in card.extensions.items() if k not in ("tavern", "roleplay")}
    tavern = card.extensions.get("tavern") if isinstance(card.extensions.get("tavern"), dict) else {}
    personality = tavern.get("personality", "") if isinstance(tavern.get("personality"), str) else ""
    suffix = f"{{{{char}}}}'s personality: {personality}"
    description = card.persona
    if personality and card.persona.endswith(suffix):
        description = card.persona[: -len(suffix)].removesuffix("\n\n")
    else:
        personality = ""
    ext["talkativeness"] = str(card.talkativeness)
    examples = [example_dialogue(st, char_names=card.names(), user_name=card.user_name) for st in card.stories]
    data: dict[str, Any] = {
        "name": card.name, "description": description, "personality": personality,
        "scenario": card.scenario, "first_mes": card.greetings[0] if card.greetings else "",
        "mes_example": join_examples(examples), "creator_notes": card.creator_notes,
        "system_prompt": card.system_prompt, "post_history_instructions": card.post_history_instructions,
        "alternate_greetings": card.greetings[1:], "tags": list(card.tags), "creator": card.creator,
        "character_version": card.version, "extensions": ext,
    }
    dumped = card.model_dump(mode="json", exclude_defaults=True)
    native: dict[str, Any] = {k: dumped[k] for k in NATIVE_ONLY if k in dumped}
    native["id"] = card.id
    if version == 3:
        data["nickname"] = card.nickname
        data["group_only_greetings"] = list(card.group_greetings)
    else:
        for k in ("nickname", "group_greetings"):
            if k in dumped:
                native[k] = dumped[k]
    if examples != card.stories:
        native["stories"] = list(card.stories)
    if story_files:
        native["story_files"] = dict(story_files)
    if card.lorebook or "book" in tavern:
        book = dict(tavern.get("book") or {})
        book["entries"] = [_entry_to(e, i, version=version) for i, e in enumerate(card.lorebook)]
        data["character_book"] = book
        extras = [_entry_native(e, version=version) for e in card.lorebook]
        if any(extras):
            native["lorebook"] = extras
    if version == 3 and "assets" not in (tavern.get("fields") or {}):
        data["assets"] = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    for k, v in (tavern.get("fields") or {}).items():
        data.setdefault(k, v)
    if "tavern" in card.extensions:
        native_t = dict(tavern)
        ext["tavern"] = native_t  # subtle: restored verbatim on import of this export
    ext["roleplay"] = native
    out: dict[str, Any] = {**(tavern.get("top") or {})}
    out.update({"spec": f"chara_card_v{version}", "spec_version": f"{version}.0", "data": data})
    # V1 mirror fields, as SillyTavern writes them, for readers that know only V1.
    out.update({k: data[k] for k in V1_FIELDS})
    out["creatorcomment"] = card.creator_notes
    out["tags"] = list(card.tags)
    out["talkativeness"] = str(card.talkativeness)
    return out


def _entry_to(e: LoreEntry, index: int, *, version: int) -> dict:
    ext = {k: v for k, v in e.extensions.items() if k not in ("tavern", "roleplay")}
    rest = e.extensions.get("tavern") if isinstance(e.extensions.get("tavern"), dict) else {}
    out: dict[str, Any] = {
        "keys": list(e.keys), "content": e.content, "extensions": ext, "enabled": e.enabled,
        "insertion_order": e.order, "case_sensitive": e.case_sensitive, "name": e.name,
        "priority": e.priority, "id": rest.get("id", index), "comment": e.comment, "selective": e.selective,
        "secondary_keys": list(e.secondary_keys), "constant": e.constant, "position": e.position,
    }
    if version == 3:
        out["use_regex"] = e.regex
    for k, v in rest.items():
        out.setdefault(k, v)
    if "position" in rest:
        out["position"] = rest["position"]
    if "tavern" in e.extensions:
        ext["tavern"] = rest
    return out


def _entry_native(e: LoreEntry, *, version: int) -> dict:
    dumped = e.model_dump(mode="json", exclude_defaults=True)
    keep = ["vector", "scan_depth"] + (["regex"] if version == 2 else [])
    return {k: dumped[k] for k in keep if k in dumped}
