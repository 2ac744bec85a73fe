"""A drafted card validates, indexes and chats (real SmolLM2 on CPU, real Chroma), and its
parts — stories, aliases, emotion palette, lorebook, LLM drafting — are what the book holds.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from roleplay.authoring import draft_card, extract, write_draft
from roleplay.authoring.draft import parse_llm_fields
from roleplay.cards import load_card
from roleplay.cards.chatharuhi import speaker_of
from roleplay.cli import main

DATA = Path(__file__).parent / "data" / "authoring"


def run_json(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_extract_validate_index_chat(capsys, roleplay_home, backend):
    book = DATA / "en_quill.txt"
    from roleplay.authoring.scoring import parse_labelled

    clean, _labels = parse_labelled(book.read_text(encoding="utf-8"))
    src = roleplay_home / "quill.txt"
    src.write_text(clean, encoding="utf-8")
    out = run_json(capsys, "author", "extract", str(src), "--character", "Quill", "--aliases",
                   "Inspector Quill,Margaret Quill", "--json", "--no-progress")
    assert out["id"] == "quill" and out["character_lines"] >= 25 and out["story_files"] == 1
    folder = Path(out["path"]).parent
    assert run_json(capsys, "cards", "validate", str(folder), "--json")
    idx = run_json(capsys, "index", "quill", "--json")
    assert json.dumps(idx)  # indexed without error
    reply = run_json(capsys, "chat", "quill", "--message", "hi", "--json", "--no-memory",
                     "--max-tokens", "8", "--temperature", "0")
    assert reply["reply"].strip() and reply["story_ids"]


def test_draft_parts_come_from_the_book(tmp_path):
    from roleplay.authoring.scoring import parse_labelled

    clean, _ = parse_labelled((DATA / "zh_wukong.txt").read_text(encoding="utf-8"))
    src = tmp_path / "西游.txt"
    src.write_text(clean, encoding="utf-8")
    ex = extract(src, character="孙悟空", aliases=["悟空", "行者", "大圣"])
    card = draft_card(ex)
    assert card.language == "zh" and set(card.aliases) >= {"悟空", "行者", "大圣"}
    assert "happy" in card.emotions and any("笑" in n for n in card.emotions["happy"])
    assert card.reactions.get("praise") in card.emotions
    assert {"八戒", "唐僧"} & {e.name for e in card.lorebook}
    result = write_draft(ex, card, out_dir=tmp_path / "cards")
    loaded = load_card(result.path)
    assert loaded.names()[0] == "孙悟空"
    stories = [t for _s, t in loaded.all_stories()]
    assert len(stories) == len(ex.stories)
    speakers = {speaker_of(line) for s in stories for line in s.splitlines()}
    assert {"孙悟空", "旁白"} <= speakers
    # An action note is attached to the character's line: 行者笑道 → （笑）
    assert any(line.startswith("孙悟空:「（笑") for s in stories for line in s.splitlines())
    with pytest.raises(Exception, match="already exists"):
        write_draft(ex, card, out_dir=tmp_path / "cards")


def test_llm_answer_parsing():
    text = "PERSONA: You are Quill.\nYou are sharp.\nSCENARIO: A train.\nGREETING: (nods) Evening."
    assert parse_llm_fields(text) == {"persona": "You are Quill.\nYou are sharp.", "scenario": "A train.",
                                      "greeting": "(nods) Evening."}
    assert parse_llm_fields("人设：你是悟空。\n开场白：（笑）师父！")["greeting"] == "（笑）师父！"


def test_llm_drafting_through_the_template(tmp_path, backend):
    from roleplay.authoring.scoring import parse_labelled

    clean, _ = parse_labelled((DATA / "en_brandt.txt").read_text(encoding="utf-8"))
    src = tmp_path / "brandt.txt"
    src.write_text(clean, encoding="utf-8")
    ex = extract(src, character="Brandt", aliases=["Captain Brandt", "the captain"], narrator="Ned")
    rules = draft_card(ex)
    llm = draft_card(ex, backend=backend, max_tokens=48)
    assert llm.persona.strip() and llm.greetings
    # A model may improve the draft but never empties it; what it wrote differs from the rules.
    assert (llm.persona, llm.scenario, llm.greetings) != (rules.persona, rules.scenario, rules.greetings)


def test_lorebook_places_keep_whole_names(tmp_path):
    text = "".join(f"悟空道：“我回了花果山。”八戒道：“花果山好。”沙僧道：“去花果山{i}次。”\n" for i in range(4))
    src = tmp_path / "places.txt"
    src.write_text(text, encoding="utf-8")
    card = draft_card(extract(src, character="悟空"))
    places = [e.name for e in card.lorebook if e.comment.endswith("place")]
    assert places == ["花果山"]
    assert all(e.content for e in card.lorebook)
