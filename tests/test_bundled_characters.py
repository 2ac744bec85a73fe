"""The four bundled characters and the retrieval test set are complete and consistent.

These are data checks on the real files in ``characters/`` and ``tests/data/retrieval/``:
each card validates through the real loader, holds enough in-character dialogue, maps every
user intent to an emotion that has a palette, writes every action note in its own bracket
style, ships images that open, and every retrieval query points at stories that exist.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image

from roleplay.cards import get_card, list_cards, load_card
from roleplay.cards.chatharuhi import NARRATION, speaker_of

REPO = Path(__file__).resolve().parent.parent
BUNDLED = {"sherlock": "en", "ada": "en", "sunwukong": "zh", "daiyu": "zh"}
INTENTS = ("greeting", "farewell", "praise", "thanks", "insult", "threat",
           "sad", "happy", "joke", "question", "request", "neutral")
# Half-width brackets for English cards, full-width for Chinese ones (card style "paren").
BRACKETS = {"en": ("(", ")"), "zh": ("（", "）")}
MAX_IMAGE_BYTES = 60 * 1024


def _card(card_id: str):
    return load_card(REPO / "characters" / card_id)


def _own_names(card) -> set[str]:
    # subtle: stories may use a short speaker name ("Sherlock") while the card's name is the
    # full one ("Sherlock Holmes"); the card's nickname records that short name.
    return {n for n in (card.name, card.nickname) if n}


def _character_lines(card) -> list[str]:
    names = _own_names(card)
    return [line for story in card.stories for line in story.splitlines() if speaker_of(line) in names]


def _line_body(line: str) -> str:
    return line.split(":", 1)[1] if ":" in line.split("「", 1)[0] else line.split("：", 1)[1]


@pytest.fixture(scope="module", params=sorted(BUNDLED))
def card(request):
    return _card(request.param)


def test_bundled_cards_are_found_by_the_library(settings):
    cards, errors = list_cards(settings)
    ids = {c.id for c in cards}
    assert set(BUNDLED) <= ids
    assert not [e for e in errors if any(f"characters/{cid}" in str(e) for cid in BUNDLED)]
    assert get_card("daiyu", settings).name == "林黛玉"


def test_card_basics(card):
    assert card.language == BUNDLED[card.id]
    assert card.creator == "roleplay project"
    assert card.user_name and card.scenario.strip() and card.tags
    words = len(card.persona.split()) if card.language == "en" else len(card.persona)
    assert words >= 150, f"{card.id}: persona too short ({words})"
    assert card.style.action_style == "paren"
    assert card.style.quote_style == ("corner" if card.language == "zh" else "none")
    open_, _close = BRACKETS[card.language]
    assert len(card.greetings) >= 2
    for g in card.greetings:
        assert g.startswith(open_), f"{card.id}: greeting without a leading action note: {g[:40]}"


def test_stories_have_enough_in_character_lines(card):
    assert len(card.stories) >= 20
    lines = _character_lines(card)
    assert len(lines) >= 100, f"{card.id}: only {len(lines)} lines spoken by the character"
    open_, _close = BRACKETS[card.language]
    with_action = [ln for ln in lines if _line_body(ln).lstrip().startswith("「" + open_)]
    assert len(with_action) >= 0.8 * len(lines), f"{card.id}: most lines should carry an action note"


def test_story_lines_use_chatharuhi_format(card):
    names = _own_names(card)
    for i, story in enumerate(card.stories):
        rows = story.strip().splitlines()
        assert 4 <= len(rows) <= 8, f"{card.id} story {i}: {len(rows)} lines"
        speakers = [speaker_of(r) for r in rows]
        assert all(speakers), f"{card.id} story {i}: a line without 'Name:'"
        assert names & set(speakers), f"{card.id} story {i}: the character never speaks"
        for r in rows:
            body = _line_body(r)
            assert body.startswith("「") and body.endswith("」"), f"{card.id} story {i}: {r[:40]}"
            # one quoted utterance per line: nested quotes use 『』
            assert body.count("「") == 1 and body.count("」") == 1, f"{card.id} story {i}: {r[:40]}"
    if card.language == "zh":
        narration = [r for s in card.stories for r in s.splitlines() if speaker_of(r) in NARRATION]
        assert len(narration) >= 3


def test_emotions_and_reactions(card):
    assert len(card.emotions) >= 7
    open_, close = BRACKETS[card.language]
    wrong = {"en": "（）", "zh": "()"}[card.language]
    for emotion, notes in card.emotions.items():
        assert len(notes) >= 3, f"{card.id}: emotion {emotion} has {len(notes)} notes"
        for note in notes:
            assert note.startswith(open_) and note.endswith(close), f"{card.id}/{emotion}: {note}"
            assert not set(wrong) & set(note), f"{card.id}/{emotion}: mixed brackets in {note}"
    assert set(card.reactions) == set(INTENTS)
    missing = {intent: e for intent, e in card.reactions.items() if e not in card.emotions}
    assert not missing, f"{card.id}: reactions point at emotions without a palette: {missing}"


def test_knowledge_and_lorebook(card):
    assert len(card.knowledge.unknown) >= 5
    book = card.lorebook
    assert len(book) >= 6
    assert sum(e.constant for e in book) == 1
    assert any(e.secondary_keys for e in book)
    assert all(e.keys and e.content.strip() for e in book)
    assert len({e.priority for e in book}) >= 3


def test_images_exist_and_open(card):
    files = {"avatar": card.avatar, **{f"emotion {k}": v for k, v in card.emotion_images.items()}}
    assert card.avatar
    pixels = {}
    for what, name in files.items():
        path = card.asset(name)
        assert path is not None, f"{card.id}: {what} image {name} is missing"
        assert path.stat().st_size <= MAX_IMAGE_BYTES
        with Image.open(path) as im:
            im.load()
            assert im.size == (256, 256)
            pixels[name] = im.convert("RGB").tobytes()
    assert set(card.emotion_images) <= set(card.emotions)
    # every per-emotion picture is visibly different from the others and from the avatar
    assert len(set(pixels.values())) == len(pixels)


def test_two_cards_ship_per_emotion_images():
    with_images = [cid for cid in BUNDLED if _card(cid).emotion_images]
    assert {"sherlock", "sunwukong"} <= set(with_images)
    for cid in ("sherlock", "sunwukong"):
        c = _card(cid)
        assert set(c.emotion_images) == set(c.emotions)


@pytest.mark.parametrize("card_id", sorted(BUNDLED))
def test_retrieval_set_is_valid(card_id):
    card = _card(card_id)
    items = yaml.safe_load((REPO / "tests" / "data" / "retrieval" / f"{card_id}.yaml").read_text("utf-8"))
    assert isinstance(items, list) and len(items) >= 16
    for n, item in enumerate(items):
        assert set(item) == {"query", "expect", "lang", "cross_lingual"}, f"{card_id}[{n}]"
        assert isinstance(item["query"], str) and item["query"].strip(), f"{card_id}[{n}]"
        assert item["expect"] and all(isinstance(i, int) and 0 <= i < len(card.stories)
                                      for i in item["expect"]), f"{card_id}[{n}]: {item['expect']}"
        assert item["lang"] in ("en", "zh")
        assert item["cross_lingual"] == (item["lang"] != card.language), f"{card_id}[{n}]"
        # a paraphrase, not a copy: the query is not a substring of its story
        assert all(item["query"] not in card.stories[i] for i in item["expect"])
    assert sum(i["cross_lingual"] for i in items) >= 4
    assert len({tuple(i["expect"]) for i in items}) >= 16, "queries should target varied stories"


def test_retrieval_set_total():
    total = sum(len(yaml.safe_load((REPO / "tests" / "data" / "retrieval" / f"{cid}.yaml").read_text("utf-8")))
                for cid in BUNDLED)
    assert total >= 64
