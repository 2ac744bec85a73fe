"""Suites: the bundled suite, RPBench-Auto's two JSONL formats, and clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from roleplay.errors import ConfigError
from roleplay.evaluation.suite import item_character, item_opening, load_suite, profile_id

DATA = Path(__file__).parent / "data" / "rpbench"


def test_bundled_suite_covers_four_characters_in_both_languages(settings):
    suite = load_suite("bundled")
    assert len(suite.items) >= 24
    chars = {i.character for i in suite.items}
    assert chars == {"sherlock", "ada", "sunwukong", "daiyu"}
    langs = set()
    for item in suite.items:
        card = item_character(item, settings)
        langs.add(card.language)
        assert item_opening(item, card).strip(), item.id
        assert "{{" not in item_opening(item, card)
    assert langs == {"en", "zh"}
    with_probes = [i for i in suite.items if i.probes]
    assert len(with_probes) >= 8
    assert {i.character for i in with_probes} == chars


def test_rpbench_character_file_becomes_inline_characters(settings):
    suite = load_suite(DATA / "rpbench_character.jsonl")
    assert [i.id for i in suite.items] == ["rpbench-character-0", "rpbench-character-1"]
    orla = item_character(suite.items[0], settings)
    assert orla.name == "Orla the Keeper" and orla.id == profile_id("Orla the Keeper")
    assert "lighthouse on Gull Rock" in orla.persona
    assert orla.system_prompt.startswith("You are role-playing")
    assert item_opening(suite.items[0], orla).startswith("*The lamp turns")
    bram = item_character(suite.items[1], settings)
    # {{char}}: example dialogues become the character's own lines, macros expanded
    assert len(bram.stories) == 1 and "Bram: Oh! A customer." in bram.stories[0]
    assert "{{" not in bram.stories[0]
    assert suite.items[0].source["npc_profile"]["id"] == 11


def test_rpbench_scene_file_keeps_objectives_and_progression(settings):
    suite = load_suite(DATA / "rpbench_scene.jsonl")
    item = suite.items[0]
    assert item.id == "rpbench-scene-0"
    assert "boathouse" in item.objectives and "concluded" in item.progression
    card = item_character(item, settings)
    assert card.name == "Orla" and "Age: 41" in card.persona
    assert "Suspicious" in card.scenario and "ran aground" in card.scenario
    assert item_opening(item, card) == ("You're dripping on my step.\n"
                                        "Talk fast: what's a boat doing on my rocks in this weather?")


def test_profile_ids_are_valid_for_any_name():
    from roleplay.cards.schema import ID_RE

    for name in ["Your rival Marco", "孙悟空", "!!!", "A" * 200, "Marco"]:
        assert ID_RE.match(profile_id(name)), name
    assert profile_id("孙悟空") != profile_id("猪八戒")


@pytest.mark.parametrize("text, where", [
    ("items:\n  - id: a\n    character: sherlock\n    turnz: 3\n", ":4: items[0].turnz: unknown field"),
    ("items:\n  - id: a\n", "give exactly one of `character`"),
    ("items:\n  - id: a\n    character: sherlock\n  - id: a\n    character: ada\n", "appears twice"),
    ("items: [\n", "invalid YAML"),
    ("items:\n  - id: a\n    character: sherlock\n    turns: 0\n", ":4: items[0].turns:"),
])
def test_bad_yaml_suites_give_one_clear_error(tmp_path, text, where):
    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_suite(p)
    assert where in str(exc.value) and str(p) in str(exc.value)


def test_bad_jsonl_lines_name_the_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": "a", "character": "sherlock"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"x\.jsonl:2: invalid JSON"):
        load_suite(p)
    p.write_text('{"npc_profile": {"name_text": ""}, "conversation": []}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"x\.jsonl:1: .*name_text"):
        load_suite(p)
    with pytest.raises(ConfigError, match="no such file"):
        load_suite(tmp_path / "missing.yaml")


def test_unknown_card_in_a_suite_is_a_clear_error(tmp_path, settings):
    p = tmp_path / "s.yaml"
    p.write_text("items:\n  - id: a\n    character: nobody\n", encoding="utf-8")
    from roleplay.errors import RoleplayError

    with pytest.raises(RoleplayError, match="unknown character 'nobody'"):
        item_character(load_suite(p).items[0], settings)
