"""Aliases: found on import, and lines under any of a character's names count as its own."""
from __future__ import annotations

from pathlib import Path

from roleplay.cards import load_card
from roleplay.cards.chatharuhi import Scenes, detect_aliases
from roleplay.cards.importer import import_card
from roleplay.cards.schema import Character
from roleplay.compose.stage import story_actions
from roleplay.config import Settings
from roleplay.store import Retriever


def scene(i: int) -> str:
    return "\n".join([
        f"旁白:「第{i}回，山路上起了雾。」",
        f"悟空:「（手搭凉棚）师父，前面有妖气！{i}」",
        f"唐僧:「悟空，休要胡说。{i}」",
        f"孙悟空：「（抓耳挠腮）俺老孙去去就来。{i}」" if i % 2 else f"八戒:「猴哥又来了。{i}」",
        f"齐天悟空：「（挥棒）吃俺一棒！{i}」" if i % 5 == 0 else f"沙僧:「大师兄小心。{i}」",
        "假悟空：「我才是真的。」" if i == 7 else "旁白:「风停了。」",
    ])


def test_aliases_detected_on_import(tmp_path: Path):
    root = tmp_path / "wukong"
    (root / "texts").mkdir(parents=True)
    (root / "system_prompt.txt").write_text("I want you to act like 悟空 from 西游记.", encoding="utf-8")
    for i in range(20):
        (root / "texts" / f"text_{i}.txt").write_text(scene(i), encoding="utf-8")
    result = import_card(root, out_dir=tmp_path / "cards")
    card = load_card(result.path)
    assert card.name == "悟空"
    # 孙悟空 speaks 10 times, 齐天悟空 4; the impostor 假悟空 once (not an alias); 八戒 never contains 悟空.
    assert card.aliases == ["孙悟空", "齐天悟空"]
    assert card.names()[:3] == ["悟空", "孙悟空", "齐天悟空"]


def test_group_speakers_and_other_names_are_not_aliases():
    scenes = Scenes("act like 春日", [("1.txt", "春日:「走！」\n春日、阿虚:「好！」\n春日、阿虚:「出发！」\n"
                                                   "凉宫春日:「嗯。」\n凉宫春日:「对。」\n阿虚:「唉。」\n阿虚:「唉。」")])
    assert detect_aliases(scenes, "春日") == ["凉宫春日"]


def test_action_notes_from_lines_under_aliases():
    card = Character(id="wk", name="孙悟空", aliases=["悟空", "行者"], language="zh")
    story = "行者:「（抓耳挠腮）师父莫慌。」\n八戒:「（打哈欠）困了。」\n悟空：「（手搭凉棚）看那边！」"
    assert story_actions([story], card) == ["抓耳挠腮", "手搭凉棚"]
    plain = Character(id="wk", name="孙悟空", language="zh")
    assert story_actions([story], plain) == []


def test_an_alias_in_the_query_finds_scenes_under_the_name(tmp_path: Path):
    """A user who calls the character by another name (English alias, Chinese scenes)."""
    stories = ["行者:「（抓耳挠腮）这妖怪好生厉害。」\n八戒:「猴哥，怎么办？」",
               "唐僧:「今日在此歇息。」\n沙僧:「我去化斋。」",
               "八戒:「师父，我饿了。」\n唐僧:「再忍忍。」"]
    card = Character(id="wk", name="孙悟空", aliases=["行者", "Monkey King"], language="zh", stories=stories)
    hits = Retriever(Settings(home=tmp_path)).stories(card, ["Monkey King, how strong was that demon?"], k=1)
    assert hits[0].source == "card:0"
    assert any("行者" in w for w in hits[0].why)
