"""Exports (V2/V3 × JSON/PNG): export → import gives back an equal card; unknown fields and
extensions of imported cards come back on export; PNGs read by an independent reader."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image

from roleplay.cards import load_card, save_card
from roleplay.cards.exporter import FORMATS, export_card
from roleplay.cards.importer import import_card
from roleplay.cards.schema import Character, LoreEntry
from roleplay.config import BUNDLED_CHARACTERS

BUNDLED = sorted(p.parent.name for p in BUNDLED_CHARACTERS.glob("*/character.yaml"))


def _rich_card(folder: Path) -> Character:
    card = Character(
        id="rich", name="Rich Card", language="zh", user_name="旅人", nickname="RC", persona="persona\nline two",
        scenario="s", greetings=["（挥手）你好", "second"], group_greetings=["hi all"], system_prompt="sp",
        post_history_instructions="phi", style={"action_style": "paren", "quote_style": "corner"},
        emotions={"happy": ["（笑）"]}, reactions={"praise": "happy"}, knowledge={"unknown": ["手机"]},
        lorebook=[LoreEntry(keys=["k"], content="c", secondary_keys=["s"], selective=True, regex=True,
                            case_sensitive=True, constant=True, enabled=False, priority=3, order=7,
                            position="after_char", name="n", comment="cm", vector=True, scan_depth=2,
                            extensions={"mine": 1})],
        stories=["甲:「一」\n乙:「二」\n", "A: b"], tags=["t"], creator="me", creator_notes="notes", version="2.1",
        emotion_images={"happy": "emotions/happy.png"}, talkativeness=0.3, extensions={"custom": {"a": [1]}})
    save_card(card, folder / "character.yaml")
    (folder / "stories").mkdir()
    (folder / "stories" / "scene1.txt").write_text("甲:「三」\n---\n乙：「四」\n", encoding="utf-8")
    (folder / "emotions").mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "emotions" / "happy.png")
    return load_card(folder)


def _roundtrip(card: Character, fmt: str, tmp: Path) -> Character:
    out = export_card(card, fmt=fmt, out=tmp / f"{card.id}.{fmt.split('-')[1]}")
    return import_card(out, out_dir=tmp / f"imported-{fmt}").card


def _same(a: Character, b: Character) -> None:
    da, db = a.model_dump(), b.model_dump()
    # emotion images are assets beside the card: not carried by SillyTavern formats
    da.pop("emotion_images"), db.pop("emotion_images")
    db["avatar"] = da["avatar"]  # PNG imports name their image avatar.png
    assert da == db
    assert [t for _s, t in a.all_stories()] == [t for _s, t in b.all_stories()]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("card_id", BUNDLED)
def test_bundled_cards_roundtrip(tmp_path, card_id, fmt):
    card = load_card(BUNDLED_CHARACTERS / card_id)
    _same(card, _roundtrip(card, fmt, tmp_path))


@pytest.mark.parametrize("fmt", FORMATS)
def test_rich_card_roundtrip(tmp_path, fmt):
    (tmp_path / "src").mkdir()
    card = _rich_card(tmp_path / "src")
    back = _roundtrip(card, fmt, tmp_path)
    _same(card, back)
    assert back.stories[0].endswith("\n")  # byte-exact, not just equal after stripping


def test_v3_png_has_both_chunks_and_uses_the_avatar(tmp_path):
    (tmp_path / "src").mkdir()
    card = _rich_card(tmp_path / "src")
    out = export_card(card, fmt="v3-png", out=tmp_path / "x.png")
    with Image.open(out) as img:  # an independent reader
        assert img.size == (400, 600)  # no avatar: the generated placeholder
        chara = json.loads(base64.b64decode(img.text["chara"]))
        ccv3 = json.loads(base64.b64decode(img.text["ccv3"]))
    assert chara["spec"] == "chara_card_v2" and ccv3["spec"] == "chara_card_v3"
    assert ccv3["data"]["nickname"] == "RC" and ccv3["data"]["group_only_greetings"] == ["hi all"]
    assert chara["data"]["extensions"]["roleplay"]["nickname"] == "RC"
    assert ccv3["data"]["character_book"]["entries"][0]["use_regex"] is True
    assert chara["name"] == "Rich Card" and chara["first_mes"] == "（挥手）你好"  # V1 mirror fields
    v2 = export_card(card, fmt="v2-png", out=tmp_path / "y.png")
    with Image.open(v2) as img:
        assert set(img.text) == {"chara"}
    if BUNDLED:
        first = load_card(BUNDLED_CHARACTERS / BUNDLED[0])
        with Image.open(export_card(first, fmt="v2-png", out=tmp_path / "b.png")) as img, \
                Image.open(first.asset(first.avatar)) as av:
            assert img.size == av.size


def test_foreign_fields_come_back_on_export(tmp_path):
    src = {"spec": "chara_card_v3", "spec_version": "3.0", "x_top": 5, "data": {
        "name": "Zed", "description": "d", "personality": "p", "scenario": "", "first_mes": "*hi*",
        "mes_example": "<START>\n{{user}}: a\n{{char}}: *b*\n", "creator_notes": "", "system_prompt": "",
        "post_history_instructions": "", "alternate_greetings": [], "tags": [], "creator": "",
        "character_version": "1", "nickname": "", "group_only_greetings": [], "x_field": [1, {"y": 2}],
        "assets": [{"type": "icon", "uri": "embeded://a.png", "name": "main", "ext": "png"}],
        "extensions": {"chub": {"id": 9}, "talkativeness": "0.5"},
        "character_book": {"name": "B", "scan_depth": 3, "entries": [
            {"keys": ["a"], "content": "c", "insertion_order": 4, "enabled": True, "id": 12,
             "position": 1, "extensions": {"probability": 50}, "use_regex": False}]}}}
    f = tmp_path / "zed.json"
    f.write_text(json.dumps(src), encoding="utf-8")
    card = import_card(f, out_dir=tmp_path / "cards").card
    out = export_card(card, fmt="v3-json", out=tmp_path / "back.json")
    back = json.loads(out.read_text("utf-8"))
    d, s = back["data"], src["data"]
    for k in ("name", "description", "personality", "first_mes", "x_field", "assets", "character_version"):
        assert d[k] == s[k], k
    assert d["mes_example"].strip() == s["mes_example"].strip()
    assert d["extensions"]["chub"] == {"id": 9}
    assert back["x_top"] == 5
    book = d["character_book"]
    assert (book["name"], book["scan_depth"]) == ("B", 3)
    e = book["entries"][0]
    assert (e["id"], e["position"], e["insertion_order"], e["extensions"]["probability"]) == (12, 1, 4, 50)
    # and the re-export imports back to the same card
    again = import_card(out, out_dir=tmp_path / "again").card
    _same(card, again)
