"""Evaluation suites: our YAML/JSONL item format and RPBench-Auto's two JSONL files.

A suite is a list of items; each item is one conversation to play: a character (a card id
or an inline profile), a user persona, an opening (the character's greeting or a scene),
a number of turns, optional scene objectives and knowledge-boundary probes.

Trade-offs:
- One item model for every source. RPBench-Auto lines (``rpbench_character.jsonl`` with
  ``npc_profile.name_text``…; ``rpbench_scene.jsonl`` with ``npc_profile.name``,
  ``plot_recap``, ``objectives``…) are converted on load, so the runner, judge and report
  never see format differences. The source line is kept in ``item.source`` for the record.
- An inline profile becomes a `Character` built in memory (never written to disk); its id
  is derived from the name (ASCII slug + a short hash, so CJK or duplicate names stay
  distinct and always valid as ids).
- YAML suites are read with the card loader's round-trip parser, so an invalid field is
  reported with its line, the same way card errors are.
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..cards.macros import expand
from ..cards.schema import Character
from ..cards.yaml_io import _field_name, _line_of, parse_yaml, read_text
from ..config import Settings
from ..errors import CardError, ConfigError

#: Suites shipped as package data, by name (``roleplay eval bundled``).
BUNDLED_SUITES = ("bundled",)


class SuiteItem(BaseModel):
    """One conversation to play."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    #: A card id (bundled or user card) — or leave empty and give ``profile``.
    character: str | None = None
    #: An inline profile: RPBench ``npc_profile`` keys or `Character` fields.
    profile: dict[str, Any] | None = None
    user_name: str | None = None
    user_persona: str = ""
    #: The character's first message; None means the card's greeting number ``greeting``.
    opening: str | None = None
    greeting: int = Field(0, ge=0)
    #: Scene text (setting, recap, status) given to the character and to the judge.
    scene: str = ""
    #: The user's first message; None lets the simulated user write it.
    first_message: str | None = None
    turns: int | None = Field(None, ge=1, le=100)
    objectives: str = ""
    #: When the scene counts as finished (RPBench ``progression``); the judge reads it.
    progression: str = ""
    #: Questions the character cannot know the answer to, asked after the scene.
    probes: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    #: The original record (RPBench line) for the results file.
    source: dict[str, Any] | None = None

    def model_post_init(self, _ctx: Any) -> None:
        if bool(self.character) == bool(self.profile):
            raise ValueError("give exactly one of `character` (a card id) or `profile` (inline)")


class Suite(BaseModel):
    """A named list of items."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    turns: int = Field(3, ge=1, le=100)
    items: list[SuiteItem]

    def item_turns(self, item: SuiteItem, override: int | None = None) -> int:
        """Turns for ``item``: the run's override, else the item's, else the suite default."""
        return override or item.turns or self.turns


def load_suite(spec: str | Path) -> Suite:
    """Load a suite: a bundled name (``bundled``), a ``.yaml``/``.yml`` or a ``.jsonl`` file.

    JSONL files may hold our items (one object per line) or RPBench-Auto character or
    scene lines; the kind is detected per line.

    >>> len(load_suite("bundled").items) >= 24
    True
    """
    text_spec = str(spec)
    if text_spec in BUNDLED_SUITES and not Path(text_spec).exists():
        ref = resources.files("roleplay.evaluation") / "suites" / f"{text_spec}.yaml"
        return _suite_from_yaml(ref.read_text(encoding="utf-8"), file=f"{text_spec}.yaml", name=text_spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"suite {text_spec!r}: no such file (or give a bundled suite: {', '.join(BUNDLED_SUITES)})")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _suite_from_yaml(read_text(path), file=str(path), name=path.stem)
    if path.suffix.lower() in (".jsonl", ".json"):
        return _suite_from_jsonl(read_text(path), file=str(path), name=path.stem)
    raise ConfigError(f"{path}: unknown suite format; use .yaml, .yml or .jsonl")


def _suite_from_yaml(text: str, *, file: str, name: str) -> Suite:
    try:
        raw = parse_yaml(text, file=file)
    except CardError as exc:  # the parser speaks of cards; re-raise as a suite error
        raise ConfigError(str(exc)) from None
    if isinstance(raw, list):
        raw = {"items": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}:1: a suite is a mapping with `items:` (or a list of items)")
    data = json.loads(json.dumps(raw))  # plain dicts/lists for pydantic
    data.setdefault("name", name)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = _line_of(raw, loc)
        where = f"{file}:{line}" if line else file
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (see docs/evaluation.md for the item fields)"
        raise ConfigError(f"{where}: {_field_name(loc) or 'suite'}: {msg}") from None
    _check_unique(suite, file)
    return suite


def jsonl_objects(text: str, *, file: str) -> list[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; an error names the file and line."""
    out: list[tuple[int, dict]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}:{n}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{file}:{n}: each line must be a JSON object")
        out.append((n, obj))
    return out


def _suite_from_jsonl(text: str, *, file: str, name: str) -> Suite:
    items: list[SuiteItem] = []
    for n, obj in jsonl_objects(text, file=file):
        try:
            if isinstance(obj.get("npc_profile"), dict) and "plot_recap" in obj:
                items.append(item_from_rpbench_scene(obj, index=n - 1))
            elif isinstance(obj.get("npc_profile"), dict):
                items.append(item_from_rpbench_character(obj, index=n - 1))
            else:
                items.append(SuiteItem.model_validate(obj))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(f"{file}:{n}: {_field_name(tuple(err['loc'])) or 'item'}: "
                              f"{err['msg'].removeprefix('Value error, ')}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{file}:{n}: not an RPBench line or suite item: {exc}") from None
    if not items:
        raise ConfigError(f"{file}: the suite has no items")
    suite = Suite(name=name, items=items)
    _check_unique(suite, file)
    return suite


def _check_unique(suite: Suite, file: str) -> None:
    seen: set[str] = set()
    for item in suite.items:
        if item.id in seen:
            raise ConfigError(f"{file}: item id {item.id!r} appears twice; ids must be unique (results are keyed by them)")
        seen.add(item.id)


def _opening(conversation: Any) -> str:
    """The NPC's first message from an RPBench ``conversation`` list."""
    for turn in conversation or []:
        if turn.get("from") == "npc":
            return "\n".join(s for s in turn.get("sentences", []) if isinstance(s, str)).strip()
    return ""


def item_from_rpbench_character(obj: dict, *, index: int = 0) -> SuiteItem:
    """An item from one ``rpbench_character.jsonl`` line (profile + NPC greeting)."""
    profile = dict(obj["npc_profile"])
    if not str(profile.get("name_text", "")).strip():
        raise ValueError("npc_profile.name_text is empty")
    if obj.get("background"):
        profile["_instructions"] = obj["background"]
    return SuiteItem(id=f"rpbench-character-{obj.get('id', index)}", profile=profile,
                     opening=_opening(obj.get("conversation")) or None,
                     tags=["rpbench", "character"], source=obj)


def item_from_rpbench_scene(obj: dict, *, index: int = 0) -> SuiteItem:
    """An item from one ``rpbench_scene.jsonl`` line (profile, world, recap, objectives…)."""
    profile = dict(obj["npc_profile"])
    if not str(profile.get("name", "")).strip():
        raise ValueError("npc_profile.name is empty")
    parts = [("Background", obj.get("background")), ("Previous plot", obj.get("plot_recap")),
             ("Character status", obj.get("npc_status"))]
    scene = "\n\n".join(f"{k}:\n{str(v).strip()}" for k, v in parts if v)
    return SuiteItem(id=f"rpbench-scene-{obj.get('id', index)}", profile=profile,
                     opening=_opening(obj.get("conversation")) or None, scene=scene,
                     objectives=str(obj.get("objectives") or ""),
                     progression=str(obj.get("progression") or ""),
                     tags=["rpbench", "scene"], source=obj)


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def profile_id(name: str) -> str:
    """A valid card id derived from a display name: ``npc-<ascii slug>-<hash>``.

    >>> profile_id("Your rival Marco")
    'npc-your-rival-marco-cb940e'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:6]
    return f"npc-{slug}-{digest}" if slug else f"npc-{digest}"


#: RPBench profile keys folded into the persona, in this order, with their labels.
_PROFILE_FIELDS = [("description", ""), ("long_definition_text", ""), ("short_definition_text", "In short"),
                   ("age", "Age"), ("personality", "Personality"), ("interests", "Interests"),
                   ("communication_style", "Way of speaking"), ("background", "Background")]


def profile_character(profile: dict[str, Any], *, user_name: str | None = None,
                      scene: str = "", language: str | None = None) -> Character:
    """Build a `Character` in memory from an inline profile.

    Accepts RPBench keys (``name_text``/``name``, ``description``, ``definition_text``…)
    or our own card fields (``name``, ``persona``, ``greetings``…).
    """
    own = set(Character.model_fields)
    if "name_text" not in profile and set(profile) <= own | {"id"} and "persona" in profile:
        data = dict(profile)
        data.setdefault("id", profile_id(str(data.get("name", ""))))
        return Character.model_validate(data)
    name = str(profile.get("name_text") or profile.get("name") or "").strip()
    if not name:
        raise ValueError("an inline profile needs `name` (or RPBench `name_text`)")
    user = user_name or "User"
    seen: list[str] = []
    persona_parts: list[str] = []
    for key, label in _PROFILE_FIELDS:
        value = str(profile.get(key) or "").strip()
        if not value or value == "Not specified" or value in seen:
            continue
        seen.append(value)
        persona_parts.append(f"{label}: {value}" if label else value)
    stories: list[str] = []
    definition = str(profile.get("definition_text") or "").strip()
    if re.search(r"\{\{\s*char\s*\}\}\s*:", definition, re.IGNORECASE):
        # Example dialogues: keep them as the character's canonical lines (retrieval corpus).
        text = re.sub(r"\{\{\s*random_user_\d+\s*\}\}", "{{user}}", definition)
        for scene_text in re.split(r"\s*END_OF_DIALOG\s*", text):
            if scene_text.strip():
                stories.append(expand(scene_text.strip(), char=name, user=user))
    elif definition and definition not in seen:
        persona_parts.append(definition)
    lang = language or ("zh" if len(_CJK.findall(name + " ".join(persona_parts))) > 20 else "en")
    return Character(id=profile_id(name), name=name, language=lang, user_name=user,
                     persona=expand("\n\n".join(persona_parts), char=name, user=user),
                     scenario=scene, system_prompt=str(profile.get("_instructions") or ""),
                     stories=stories, tags=["inline"])


def item_character(item: SuiteItem, settings: Settings) -> Character:
    """The item's character: the card with that id, or the inline profile built in memory."""
    if item.character:
        from ..cards.library import get_card

        card = get_card(item.character, settings)
        if item.scene:
            card = card.model_copy(update={"scenario": (card.scenario + "\n\n" + item.scene).strip()})
        return card
    try:
        return profile_character(item.profile or {}, user_name=item.user_name, scene=item.scene)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"suite item {item.id!r}: profile: {str(exc).splitlines()[0]}") from None


def item_opening(item: SuiteItem, card: Character) -> str:
    """The character's first message with macros expanded (may be empty)."""
    user = item.user_name or card.user_name
    text = item.opening
    if text is None:
        greetings = card.greetings
        text = greetings[min(item.greeting, len(greetings) - 1)] if greetings else ""
    return expand(text, char=card.name, user=user)
