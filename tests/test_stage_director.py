"""The StageDirector: cross-lingual intent accuracy, emotion mapping and note choice."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from roleplay.cards import get_card
from roleplay.cards.schema import Character
from roleplay.compose.prototypes import INTENTS, PROTOTYPES
from roleplay.compose.stage import StageDirector, story_actions

DATA = Path(__file__).parent / "data" / "intents.yaml"


@pytest.fixture(scope="module")
def director() -> StageDirector:
    from roleplay.store.embeddings import get_embedder

    return StageDirector(get_embedder("use"))


def test_labelled_set_is_well_formed():
    items = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    langs = Counter(x["lang"] for x in items)
    assert len(items) >= 120 and langs["en"] >= 50 and langs["zh"] >= 50
    assert {x["intent"] for x in items} == set(INTENTS)
    prototypes = {s for sentences in PROTOTYPES.values() for s in sentences}
    assert not prototypes & {x["text"] for x in items}, "the test set must not repeat prototypes"


def test_intent_accuracy(director):
    """Nearest-prototype accuracy on the labelled set (figures in docs/prompting.md)."""
    items = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    right, total = Counter(), Counter()
    for x in items:
        intent, _ = director.classify(x["text"])
        total[x["lang"]] += 1
        right[x["lang"]] += intent == x["intent"]
    acc = {lang: right[lang] / total[lang] for lang in total}
    overall = sum(right.values()) / sum(total.values())
    print(f"intent accuracy: overall {overall:.3f}, en {acc['en']:.3f}, zh {acc['zh']:.3f} (n={len(items)})")
    # Measured 0.79 overall (en 0.85, zh 0.74); chance is 1/12.
    assert overall >= 0.70
    assert acc["en"] >= 0.70 and acc["zh"] >= 0.60


def test_cross_lingual_examples(director):
    assert director.classify("谢谢你救了我的命！")[0] == "thanks"
    assert director.classify("Thank you for saving my life!")[0] == "thanks"
    assert director.classify("")[0] == "neutral"


@pytest.mark.parametrize("card_id, opening, closing", [("sherlock", "(", ")"), ("sunwukong", "（", "）")])
def test_note_comes_from_palette_in_card_style(director, card_id, opening, closing):
    card = get_card(card_id)
    text = "You are a genius!" if card.language == "en" else "你真厉害！"
    note = director.direct(card, text)
    assert note.intent == "praise"
    assert note.emotion == card.reactions["praise"]
    assert note.note.startswith(opening) and note.note.endswith(closing)
    palette = {p.strip("()（）*") for p in card.emotions[note.emotion]}
    assert note.note[1:-1] in palette


def test_choice_is_deterministic_and_rotates(director):
    card = get_card("sherlock")
    first = director.direct(card, "You are brilliant!", seed=3)
    assert director.direct(card, "You are brilliant!", seed=3).note == first.note
    other = director.direct(card, "You are brilliant!", seed=3, previous=first.note)
    assert other.note != first.note and other.emotion == first.emotion


def test_story_actions_are_the_fallback_palette(director):
    card = Character(id="x", name="Sherlock Holmes", nickname="Sherlock", language="zh",
                     reactions={"praise": "smug"})  # no palette for "smug"
    story = "Watson:「(laughs) Amazing.」\nSherlock:「(leans back) I observed.」\nSherlock: *sniffs* Quite."
    assert story_actions([story], card) == ["leans back", "sniffs"]
    note = director.direct(card, "You are brilliant!", [story])
    assert note.note in {"（leans back）", "（sniffs）"}
