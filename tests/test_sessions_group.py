"""Group chat: who speaks next (names, nicknames, zh/en, talkativeness and recency,
explicit choice), and a real group turn where the addressed character answers and sees
the others' lines with names.
"""
from __future__ import annotations

import random

import pytest

from roleplay.cards.schema import Character
from roleplay.config import Settings
from roleplay.errors import SessionError
from roleplay.sessions import Session
from roleplay.sessions.group import addressed, choose_speaker, name_variants

HOLMES = Character(id="holmes", name="Sherlock Holmes", nickname="Holmes", talkativeness=0.9)
WATSON = Character(id="watson", name="John Watson", nickname="the doctor", talkativeness=0.4)
WUKONG = Character(id="sunwukong", name="孙悟空", nickname="大圣、猴哥", language="zh", talkativeness=0.5)
CARDS = [HOLMES, WATSON, WUKONG]


def test_name_variants_cover_name_words_nicknames_and_id():
    assert {"sherlock holmes", "sherlock", "holmes"} <= {v.lower() for v in name_variants(HOLMES)}
    assert {"孙悟空", "大圣", "猴哥"} <= set(name_variants(WUKONG))


@pytest.mark.parametrize("text,expected", [
    ("Watson, what do you think?", "watson"),
    ("what does the doctor say", "watson"),
    ("sherlock, look at this", "holmes"),
    ("大圣，你看这是什么？", "sunwukong"),
    ("猴哥救我！", "sunwukong"),
    ("John and Holmes, listen", "watson"),  # the earliest mention wins
])
def test_the_addressed_character_speaks(text, expected):
    assert choose_speaker(CARDS, text, ["holmes"]).id == expected


def test_no_mention_means_talkativeness_and_recency():
    assert addressed("Nice weather today.", CARDS) is None
    # nobody spoke yet: the most talkative
    assert choose_speaker(CARDS, "Nice weather.", []).id == "holmes"
    # the last speaker does not answer again; among the rest, talkativeness × turns since
    assert choose_speaker(CARDS, "Nice weather.", ["holmes"]).id == "sunwukong"
    # a quiet character who has waited long enough gets the turn
    assert choose_speaker(CARDS, "Hm.", ["watson", "sunwukong", "holmes", "sunwukong", "holmes"]).id == "watson"


def test_other_strategies_and_explicit_choice():
    assert choose_speaker(CARDS, "Hi", ["holmes", "watson"], strategy="round_robin").id == "sunwukong"
    r = random.Random(1)
    picks = {choose_speaker(CARDS, "Hi", [], strategy="random", rng=r).id for _ in range(40)}
    assert picks == {"holmes", "watson", "sunwukong"}
    assert choose_speaker(CARDS, "Watson?", [], speaker="猴哥").id == "sunwukong"
    assert choose_speaker(CARDS, "Holmes?", [], exclude=["holmes"]).id != "holmes"
    with pytest.raises(SessionError, match="not in this session"):
        choose_speaker(CARDS, "hi", [], speaker="Moriarty")
    with pytest.raises(SessionError, match="unknown group strategy"):
        choose_speaker(CARDS, "hi", [], strategy="loudest")


GROUP_CARDS = {
    "holmes": """\
id: holmes
name: Sherlock Holmes
nickname: Holmes
user_name: Lestrade
persona: A consulting detective who reasons from small details.
greetings: ["(looks up) Ah, Lestrade."]
talkativeness: 0.9
""",
    "hudson": """\
id: hudson
name: Mrs Hudson
nickname: Hudson
persona: The landlady of 221B Baker Street, kind and practical.
greetings: ["(sets down a tray) Tea, gentlemen?"]
talkativeness: 0.3
""",
}


@pytest.fixture
def group_engine(roleplay_home, backend):
    from roleplay.engine import Engine

    for cid, text in GROUP_CARDS.items():
        folder = roleplay_home / "characters" / cid
        folder.mkdir(parents=True)
        (folder / "character.yaml").write_text(text, encoding="utf-8")
    return Engine(Settings.from_env(), backend=backend)


def test_group_turns_the_addressed_character_answers_and_sees_names(group_engine):
    s = Session.new(group_engine, ["holmes", "hudson"], settings={"memory": False})
    assert [m.speaker for m in s.messages] == ["Sherlock Holmes", "Mrs Hudson"]  # each greets
    reply = s.send("Mrs Hudson, could we have more tea?", params={"max_tokens": 8, "temperature": 0})
    last = s.messages[-1]
    assert last.character_id == "hudson" and last.speaker == "Mrs Hudson" and last.text == reply.text
    # Hudson's prompt held Holmes's greeting as a named line from someone else
    prompt_text = "\n".join(m["content"] for m in reply.prompt.messages)
    assert "Ah, Lestrade" in prompt_text
    # the user speaks as Holmes; Holmes cannot answer himself, so Hudson does
    reply2 = s.send("(to Hudson) Thank you, that will be all.", as_character="holmes",
                    params={"max_tokens": 8, "temperature": 0})
    msgs = s.messages
    assert msgs[-2].role == "user" and msgs[-2].speaker == "Sherlock Holmes" and msgs[-2].character_id == "holmes"
    assert msgs[-1].character_id == "hudson" and msgs[-1].text == reply2.text
    # a reply never continues as another speaker's line
    assert "\nSherlock Holmes:" not in reply2.text and "\nLestrade:" not in reply2.text
