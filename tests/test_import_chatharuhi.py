"""ChatHaruhi imports: a generated folder of 240 scene files (both colon widths, narration,
inline actions), its zip and a jsonl package; every line must survive."""
from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

import pytest

from roleplay.cards import load_card
from roleplay.cards.chatharuhi import detect_name, from_folder, speaker_of
from roleplay.cards.importer import import_card

SYSTEM_PROMPT = ("你正在扮演凉宫春日，你正在cosplay涼宮ハルヒ。\n"
                 "上文给定了一些小说中的经典桥段。\n如果我问的问题和小说中的台词高度重复，那你就配合我进行演出。\n"
                 "你是一个活泼开朗、不按常理出牌的高中女生，说话直接。")
SCENES = 240


def _scene(i: int) -> list[str]:
    colon = ":" if i % 2 else "："
    lines = [
        f"旁白{colon}「第{i}个场景，文艺部活动室里很安静。」",
        f"阿虚{colon}「春日，今天又打算做什么？（第{i}次）」",
        f"凉宫春日{colon}(双手叉腰)「当然是寻找外星人！编号{i}」",
        f"凉宫春日{colon}「阿虚，你给我认真一点。场景{i}」",
    ]
    if i % 3 == 0:
        lines.append(f"古泉一树{colon}（微笑）「真是有趣的提议呢。{i}」")
    if i % 5 == 0:
        lines.append(f"凉宫春日{colon}（笑）「SOS团，出发！{i}」")
    return lines


@pytest.fixture(scope="module")
def haruhi_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chatharuhi") / "haruhi"
    (root / "texts").mkdir(parents=True)
    (root / "system_prompt.txt").write_text(SYSTEM_PROMPT, encoding="utf-8")
    for i in range(SCENES):
        # blank lines and CRLF endings, as real corpora have them
        (root / "texts" / f"{i}.txt").write_bytes(("\r\n\r\n".join(_scene(i)) + "\r\n").encode("utf-8"))
    return root


def test_speaker_of_handles_both_colons_and_actions():
    assert speaker_of("春日:(笑)「好」") == "春日"
    assert speaker_of("春日：「好」") == "春日"
    assert speaker_of("Sherlock: (leans back) I observed.") == "Sherlock"
    assert speaker_of("（只是一句旁白，没有说话人）") is None


def test_import_folder_keeps_every_line(haruhi_folder, tmp_path):
    result = import_card(haruhi_folder, out_dir=tmp_path / "out")
    card = result.card
    assert result.format == "chatharuhi-folder"
    assert card.name == "凉宫春日"
    assert card.language == "zh"
    assert card.persona == SYSTEM_PROMPT
    assert card.style.quote_style == "corner"
    assert result.story_files == SCENES
    stories = card.all_stories()
    assert len(stories) == SCENES
    got = sorted(line for _src, text in stories for line in text.split("\n"))
    want = sorted(line for i in range(SCENES) for line in _scene(i))
    assert got == want
    # one readable file per scene beside the card, the card itself loads on its own
    files = sorted((result.path.parent / "stories").glob("*.txt"))
    assert len(files) == SCENES
    assert (result.path.parent / "stories" / "7.txt").read_text("utf-8") == "\n".join(_scene(7)) + "\n"
    assert load_card(result.path).name == "凉宫春日"


def test_name_cross_checked_with_system_prompt(tmp_path):
    # The sidekick speaks more, but the prompt says who is played: the prompt wins.
    root = tmp_path / "c"
    (root / "texts").mkdir(parents=True)
    (root / "system_prompt.txt").write_text("I want you to act like Sherlock from the stories.", encoding="utf-8")
    for i in range(10):
        (root / "texts" / f"s{i}.txt").write_text(
            "Watson: Holmes?\nWatson: Are you there?\nSherlock: (without looking up) Obviously.\n"
            "Narration: The fire crackled.\nNarration: Rain.\nNarration: More rain.\n", encoding="utf-8")
    scenes = from_folder(root)
    assert detect_name(scenes) == "Sherlock"
    card = import_card(root, out_dir=tmp_path / "out").card
    assert card.name == "Sherlock" and card.id == "sherlock" and card.language == "en"


def test_import_zip_and_jsonl(haruhi_folder, tmp_path):
    z = tmp_path / "haruhi.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(haruhi_folder / "system_prompt.txt", "content/haruhi/system_prompt.txt")
        for p in sorted((haruhi_folder / "texts").iterdir()):
            zf.write(p, f"content/haruhi/texts/{p.name}")
    res = import_card(z, out_dir=tmp_path / "a", card_id="haruhi")
    assert res.format == "chatharuhi-zip" and res.card.id == "haruhi"
    assert len(res.card.all_stories()) == SCENES and res.card.persona == SYSTEM_PROMPT

    jl = tmp_path / "haruhi.jsonl"
    rows = [{"luotuo_openai": "system_prompt", "text": SYSTEM_PROMPT}, {"luotuo_openai": "config", "text": ""}]
    for i in range(30):
        text = "\n".join(_scene(i))
        if i % 2:
            rows.append({"luotuo_openai": "AAAA", "enc_text": base64.b64encode(text.encode()).decode()})
        else:
            rows.append({"luotuo_openai": "AAAA", "text": text})
    jl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    res = import_card(jl, out_dir=tmp_path / "b", card_id="haruhi")
    assert res.format == "chatharuhi-jsonl" and res.card.name == "凉宫春日"
    assert [t for _s, t in res.card.all_stories()] == ["\n".join(_scene(i)) for i in range(30)]
