"""SillyTavern V1/V2/V3 imports: PNGs written by an independent writer (Pillow's PngInfo),
every field checked; malformed cards give one-line CardErrors."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from roleplay.cards.importer import import_card, read_import
from roleplay.errors import CardError

BOOK = {
    "name": "Baker Street lore", "description": "places", "scan_depth": 6, "token_budget": 400,
    "recursive_scanning": True, "extensions": {"x_book": 1},
    "entries": [
        {"keys": ["Moriarty", "professor"], "content": "{{char}}'s nemesis.", "extensions": {"depth": 4},
         "enabled": True, "insertion_order": 50, "case_sensitive": True, "name": "moriarty", "priority": 30,
         "id": 7, "comment": "villain", "selective": True, "secondary_keys": ["crime"], "constant": False,
         "position": "after_char", "use_regex": True, "probability": 80},
        {"keys": ["221B"], "content": "The flat.", "enabled": False, "insertion_order": 10, "constant": True,
         "position": "before_char"},
    ],
}


def _data(spec: str) -> dict:
    data = {
        "name": "Irene Adler", "description": "{{char}} is an opera singer.", "personality": "clever, bold",
        "scenario": "{{user}} meets {{char}} in London.", "first_mes": "*smiles* Hello, {{user}}.",
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: *raises an eyebrow* The woman.\n"
                       "<START>\n{{user}}: Why?\n{{char}}: *laughs* Because.",
        "creator_notes": "for tests", "system_prompt": "Stay in character as {{char}}.",
        "post_history_instructions": "Be brief.", "alternate_greetings": ["*waves*", "*bows* Good evening."],
        "character_book": BOOK, "tags": ["opera", "victorian"], "creator": "tester", "character_version": 3,
        "extensions": {"talkativeness": "0.7", "fav": True, "depth_prompt": {"prompt": "x", "depth": 4}},
        "x_unknown_field": {"kept": [1, 2]},
    }
    if spec == "v3":
        data.update({"nickname": "the woman", "group_only_greetings": ["*enters the group*"],
                     "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
                     "creator_notes_multilingual": {"fr": "pour les tests"}, "source": ["https://example.org"],
                     "creation_date": 1700000000, "modification_date": 1700000100})
    return data


def _card(spec: str) -> dict:
    return {"spec": f"chara_card_{spec}", "spec_version": "3.0" if spec == "v3" else "2.0",
            "data": _data(spec), "create_date": "2024-1-1"}


def _b64(obj: dict) -> str:
    return base64.b64encode(json.dumps(obj).encode("utf-8")).decode("ascii")


def _pillow_png(path: Path, chunks: dict[str, str]) -> Path:
    info = PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    Image.new("RGB", (48, 64), (120, 30, 60)).save(path, pnginfo=info)
    return path


def _check_common(card, *, spec: str) -> None:
    assert card.name == "Irene Adler" and card.id == "irene-adler"
    assert card.persona == "{{char}} is an opera singer.\n\n{{char}}'s personality: clever, bold"
    assert card.scenario == "{{user}} meets {{char}} in London."
    assert card.greetings == ["*smiles* Hello, {{user}}.", "*waves*", "*bows* Good evening."]
    assert card.stories == ["{{user}}: Who are you?\n{{char}}: *raises an eyebrow* The woman.",
                            "{{user}}: Why?\n{{char}}: *laughs* Because."]
    assert card.style.action_style == "asterisk"
    assert card.system_prompt == "Stay in character as {{char}}."
    assert card.post_history_instructions == "Be brief."
    assert card.creator_notes == "for tests" and card.creator == "tester" and card.version == "3"
    assert card.tags == ["opera", "victorian"]
    assert card.talkativeness == 0.7
    assert card.extensions["fav"] is True and card.extensions["depth_prompt"] == {"prompt": "x", "depth": 4}
    tav = card.extensions["tavern"]
    assert tav["personality"] == "clever, bold"
    assert tav["fields"]["x_unknown_field"] == {"kept": [1, 2]}
    assert tav["book"] == {k: v for k, v in BOOK.items() if k != "entries"}
    assert tav["top"] == {"create_date": "2024-1-1"}
    e0, e1 = card.lorebook
    assert (e0.keys, e0.content, e0.secondary_keys, e0.selective) == (
        ["Moriarty", "professor"], "{{char}}'s nemesis.", ["crime"], True)
    assert (e0.case_sensitive, e0.constant, e0.enabled, e0.priority, e0.order, e0.position) == (
        True, False, True, 30, 50, "after_char")
    assert (e0.name, e0.comment, e0.regex) == ("moriarty", "villain", True)
    assert e0.extensions["depth"] == 4 and e0.extensions["tavern"] == {"probability": 80, "id": 7}
    assert (e1.enabled, e1.constant, e1.order, e1.position, e1.priority) == (False, True, 10, "before_char", 10)
    if spec == "v3":
        assert card.nickname == "the woman" and card.group_greetings == ["*enters the group*"]
        assert tav["fields"]["assets"][0]["uri"] == "ccdefault:"
        assert tav["fields"]["creator_notes_multilingual"] == {"fr": "pour les tests"}
        assert tav["fields"]["creation_date"] == 1700000000


@pytest.mark.parametrize("spec", ["v2", "v3"])
def test_png_written_by_pillow_maps_every_field(tmp_path, spec):
    chunks = {"chara": _b64(_card(spec))} if spec == "v2" else \
        {"chara": _b64({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Old V2 Name"}}),
         "ccv3": _b64(_card("v3"))}  # ccv3 wins over chara
    png = _pillow_png(tmp_path / f"irene_{spec}.png", chunks)
    res = import_card(png, out_dir=tmp_path / "out")
    assert res.format == "tavern-png"
    _check_common(res.card, spec=spec)
    avatar = res.path.parent / "avatar.png"
    assert res.card.avatar == "avatar.png" and avatar.is_file()
    with Image.open(avatar) as img:
        assert img.size == (48, 64)
        assert "chara" not in img.info  # re-encoded: the card text does not ride along


@pytest.mark.parametrize("spec", ["v2", "v3"])
def test_json_card(tmp_path, spec):
    f = tmp_path / "irene.json"
    f.write_text(json.dumps(_card(spec)), encoding="utf-8")
    _check_common(read_import(f).card, spec=spec)


def test_v1_card(tmp_path):
    f = tmp_path / "v1.json"
    f.write_text(json.dumps({"name": "Bob", "description": "A baker.", "personality": "", "scenario": "",
                             "first_mes": "(wipes flour off his hands) Morning!", "mes_example": "",
                             "creatorcomment": "v1 note", "talkativeness": "0.2", "chat": "Bob - 2023",
                             "avatar": "none"}), encoding="utf-8")
    card = read_import(f).card
    assert (card.name, card.persona, card.greetings, card.creator_notes, card.talkativeness) == (
        "Bob", "A baker.", ["(wipes flour off his hands) Morning!"], "v1 note", 0.2)
    assert card.style.action_style == "paren"
    assert card.extensions["tavern"]["fields"] == {"chat": "Bob - 2023", "avatar": "none"}


def _err(path: Path) -> CardError:
    with pytest.raises(CardError) as ei:
        read_import(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    return ei.value


def test_malformed_cards_give_one_line_errors(tmp_path):
    good = _pillow_png(tmp_path / "good.png", {"chara": _b64(_card("v2"))})
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    assert "truncated PNG" in str(_err(tmp_path / "trunc.png"))
    _pillow_png(tmp_path / "b64.png", {"chara": "!!!not base64!!!"})
    assert "not valid base64" in str(_err(tmp_path / "b64.png"))
    _pillow_png(tmp_path / "none.png", {"Comment": "hello"})
    assert "no character card" in str(_err(tmp_path / "none.png"))
    (tmp_path / "bad.json").write_text('{"spec": "chara_card_v2", "data": {"name": "x",}', encoding="utf-8")
    assert _err(tmp_path / "bad.json").line == 1
    wrong = _card("v2")
    wrong["data"]["alternate_greetings"] = "hello"
    (tmp_path / "wrong.json").write_text(json.dumps(wrong), encoding="utf-8")
    assert _err(tmp_path / "wrong.json").field == "data.alternate_greetings"
    wrong = _card("v2")
    wrong["data"]["character_book"]["entries"][0]["keys"] = [1]
    (tmp_path / "wrong2.json").write_text(json.dumps(wrong), encoding="utf-8")
    assert _err(tmp_path / "wrong2.json").field == "data.character_book.entries[0].keys[0]"
    (tmp_path / "nodata.json").write_text('{"spec": "chara_card_v2"}', encoding="utf-8")
    assert _err(tmp_path / "nodata.json").field == "data"
    (tmp_path / "spec.json").write_text('{"spec": "chara_card_v9", "data": {}}', encoding="utf-8")
    assert "unknown card spec" in str(_err(tmp_path / "spec.json"))
