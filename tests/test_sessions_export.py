"""DPO preference pairs from a session's swipes: the system message comes from the ``dpo``
template in the card's language with the card's macros expanded; only complete swipes pair.

No model: the sessions are SillyTavern chat files imported into the real SQLite database
(swipes, statuses and all), which is how a user's swipe history arrives from elsewhere too.
"""
from __future__ import annotations

import json

from roleplay.engine import Engine
from roleplay.sessions import Session
from roleplay.sessions.export import SYSTEM_CHARS, dpo_jsonl, dpo_pairs


def write_card(home, card_id: str, text: str) -> None:
    folder = home / "characters" / card_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "character.yaml").write_text(text, encoding="utf-8")


def chat_file(card_id: str, user: str, name: str, swipes: list[str], statuses: list[str], *,
              active: int = 0) -> str:
    """A chat: greeting, the user's line, a reply with ``swipes`` (``active`` chosen)."""
    header = {"user_name": user, "character_name": name, "chat_metadata": {"roleplay": {"characters": [card_id]}}}
    rows = [header,
            {"name": name, "is_user": False, "mes": "(nods) Evening."},
            {"name": user, "is_user": True, "mes": "Any news?"},
            {"name": name, "is_user": False, "mes": swipes[active], "swipes": swipes, "swipe_id": active,
             "swipe_info": [{"extra": {"roleplay": {"status": s}}} for s in statuses]}]
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


def test_english_pairs_use_the_template_with_macros_expanded(roleplay_home):
    write_card(roleplay_home, "quill", "id: quill\nname: Inspector Quill\nuser_name: Sam\n"
                                       "persona: Dry and exact; calls {{user}} by surname.\n"
                                       "greetings: ['(nods) Evening.']\n")
    text = chat_file("quill", "Lin", "Inspector Quill", ["(frowns) None.", "(smiles) Plenty.", "(half"],
                     ["complete", "complete", "partial"], active=1)
    session = Session.from_tavern_jsonl(Engine(), text)
    pairs = dpo_pairs(session)
    # the chosen swipe pairs with the other complete one; the partial swipe is never used
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == \
        [("(smiles) Plenty.", "(frowns) None.")]
    system = pairs[0]["prompt"][0]
    assert system == {"role": "system",
                      "content": "You are Inspector Quill. Dry and exact; calls Lin by surname."}
    assert [m["content"] for m in pairs[0]["prompt"][1:]] == ["(nods) Evening.", "Any news?"]
    assert [json.loads(line) for line in dpo_jsonl(session).splitlines()] == pairs


def test_chinese_card_gets_the_chinese_template_and_a_long_persona_is_cut(roleplay_home):
    persona = "说话简短，称{{user}}为施主。" + "很" * (SYSTEM_CHARS + 50)
    write_card(roleplay_home, "monk", f"id: monk\nname: 老僧\nlanguage: zh\npersona: {persona}\n"
                                      "greetings: ['（合十）施主好。']\n")
    text = chat_file("monk", "小明", "老僧", ["（点头）有。", "（摇头）无。"], ["complete", "complete"])
    session = Session.from_tavern_jsonl(Engine(), text)
    system = dpo_pairs(session)[0]["prompt"][0]["content"]
    assert system.startswith("你是老僧。说话简短，称小明为施主。很")
    assert "{{" not in system and "You are" not in system
    assert len(system) == SYSTEM_CHARS


def test_no_pairs_without_two_complete_swipes(roleplay_home):
    write_card(roleplay_home, "quill", "id: quill\nname: Quill\ngreetings: ['(nods) Evening.']\n")
    text = chat_file("quill", "Lin", "Quill", ["(frowns) None.", "(half"], ["complete", "error"])
    assert dpo_pairs(Session.from_tavern_jsonl(Engine(), text)) == []
