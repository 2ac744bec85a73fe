"""Fuzzing the card readers with hypothesis: random and mutated YAML, JSON, PNG and zip bytes.

Whatever comes in, only `RoleplayError` subclasses come out (never another exception or a
hang), and an import writes nothing outside its target folder.
"""
from __future__ import annotations

import base64
import io
import json
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from roleplay.cards.importer import import_card
from roleplay.errors import RoleplayError

SEED_YAML = ("id: fuzz\nname: Fuzz\nlanguage: en\npersona: |\n  A test.\ngreetings: [\"(waves) Hi\"]\n"
             "style: {action_style: paren}\nemotions: {happy: [\"(smiles)\"]}\n"
             "lorebook:\n  - {keys: [a, b], content: c, priority: 3}\nstories:\n  - |\n    A:「x」\n"
             "extensions: {anchors: &x [1, 2], again: *x}\n").encode()
SEED_CARD = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {
    "name": "Fuzz", "description": "d", "personality": "p", "first_mes": "*hi*", "mes_example": "<START>\nA: b",
    "alternate_greetings": ["x"], "tags": ["t"], "character_version": "1", "extensions": {"talkativeness": "0.4"},
    "character_book": {"entries": [{"keys": ["k"], "content": "c", "insertion_order": 1, "enabled": True,
                                    "position": "after_char", "use_regex": True}]}}}
SEED_JSON = json.dumps(SEED_CARD).encode()


def _seed_png() -> bytes:
    info = PngInfo()
    info.add_text("chara", base64.b64encode(SEED_JSON).decode())
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _seed_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("c/system_prompt.txt", "You are A.")
        zf.writestr("c/texts/1.txt", "A:「hi」\n旁白:「rain」")
        zf.writestr("c/texts/2.txt", "B: (sits) ok\nA：「fine」")
    return buf.getvalue()


SEEDS = {".yaml": SEED_YAML, ".json": SEED_JSON, ".png": _seed_png(), ".zip": _seed_zip()}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """The seed with a few random edits: byte flips, cuts, insertions, duplications."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "truncate"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 64))]
        else:
            del data[i:]
    return bytes(data)


def _inputs(suffix: str):
    return st.one_of(st.binary(max_size=512), mutated(SEEDS[suffix]))


def _check(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp)
        src = box / f"card{suffix}"
        src.write_bytes(data)
        out = box / "out"
        try:
            import_card(src, out_dir=out)
        except RoleplayError as exc:
            assert str(exc) and "\n" not in str(exc)
        # nothing beside the input and the target folder; no staging debris inside it
        assert {p.name for p in box.iterdir()} <= {src.name, "out"}
        if out.exists():
            assert all(not p.name.startswith(".") for p in out.iterdir())
            for p in out.rglob("*"):
                assert p.resolve().is_relative_to(out.resolve())


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(_inputs(".yaml"))
def test_fuzz_yaml(data):
    _check(data, ".yaml")


@FUZZ
@given(_inputs(".json"))
def test_fuzz_json(data):
    _check(data, ".json")


@FUZZ
@given(_inputs(".png"))
def test_fuzz_png(data):
    _check(data, ".png")


@FUZZ
@given(_inputs(".zip"))
def test_fuzz_zip(data):
    _check(data, ".zip")


def test_seeds_import_cleanly(tmp_path):
    for suffix, data in SEEDS.items():
        (tmp_path / f"seed{suffix}").write_bytes(data)
        res = import_card(tmp_path / f"seed{suffix}", out_dir=tmp_path / suffix[1:])
        assert res.card.name in ("Fuzz", "A")


# Structured fuzzing: a valid card (our own export, so extensions.roleplay is exercised too)
# with one field replaced by an arbitrary JSON value.
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                       max_size=4),
                           max_leaves=12)


def _own_export() -> dict:
    from roleplay.cards.schema import Character, LoreEntry
    from roleplay.cards.tavern import to_tavern

    card = Character(id="own", name="Own", stories=["A: x\n"], emotions={"e": ["(a)"]},
                     lorebook=[LoreEntry(keys=["k"], content="c", vector=True)], extensions={"tavern": {"x": 1}})
    return to_tavern(card, version=3, story_files={"a.txt": "A: y"})


OWN = _own_export()
FIELD_PATHS = [("data",), ("data", "name"), ("data", "first_mes"), ("data", "alternate_greetings"),
               ("data", "tags"), ("data", "extensions"), ("data", "extensions", "roleplay"),
               ("data", "extensions", "roleplay", "stories"), ("data", "extensions", "roleplay", "story_files"),
               ("data", "extensions", "roleplay", "lorebook"), ("data", "extensions", "roleplay", "style"),
               ("data", "extensions", "roleplay", "id"), ("data", "extensions", "talkativeness"),
               ("data", "extensions", "tavern"), ("data", "character_book"), ("data", "character_book", "entries"),
               ("data", "character_book", "entries", 0), ("data", "character_book", "entries", 0, "keys"),
               ("data", "character_book", "entries", 0, "extensions"),
               ("data", "character_book", "entries", 0, "position"), ("data", "group_only_greetings"),
               ("data", "character_version"), ("spec",)]


@FUZZ
@given(st.sampled_from(FIELD_PATHS), JSON_VALUES)
def test_fuzz_card_fields(path, value):
    obj = json.loads(json.dumps(OWN))
    node = obj
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    _check(json.dumps(obj).encode(), ".json")
