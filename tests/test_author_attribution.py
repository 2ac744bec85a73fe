"""Speaker attribution on the hand-written labelled set (tests/data/authoring) and on small cases.

The floors are the measured figures rounded down (see README "Authoring from a book"):
a regression in any rule shows up as a drop here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from roleplay.authoring.attribution import ProseAttributor, discover, zh_subject
from roleplay.authoring.quotes import split_quotes
from roleplay.authoring.scoring import parse_labelled, score
from roleplay.authoring.speakers import Cast

DATA = Path(__file__).parent / "data" / "authoring"
CASES = json.loads((DATA / "cases.json").read_text(encoding="utf-8"))


def _score(name: str, **kw) -> dict:
    return score((DATA / name).read_text(encoding="utf-8"), **CASES[name], **kw)


def test_labelled_set_is_large_enough_and_parses():
    total = 0
    for name in CASES:
        clean, labels = parse_labelled((DATA / name).read_text(encoding="utf-8"))
        assert "⟦" not in clean and labels
        total += len(labels)
    assert total >= 380


def test_pooled_accuracy_and_precision_floor():
    results = [_score(n) for n in CASES]
    quotes = sum(r["quotes"] for r in results)
    correct = sum(r["correct"] for r in results)
    put = sum(r["put_in_mouth"] for r in results)
    right = sum(round(r["precision"] * r["put_in_mouth"]) for r in results)
    assert all(r["matched"] >= r["quotes"] - 2 for r in results)  # the extractor finds the labelled quotes
    assert correct / quotes >= 0.78
    assert right / put >= 0.97


def test_stricter_confidence_keeps_precision_and_loses_recall():
    loose = [_score(n) for n in CASES]
    strict = [_score(n, min_confidence=0.66) for n in CASES]
    put = sum(r["put_in_mouth"] for r in strict)
    right = sum(round(r["precision"] * r["put_in_mouth"]) for r in strict)
    assert right / put >= 0.97
    assert sum(r["put_in_mouth"] for r in strict) < sum(r["put_in_mouth"] for r in loose)


@pytest.mark.parametrize("name,accuracy,precision,recall", [
    ("zh_wukong.txt", 0.9, 0.99, 0.8),
    ("play_lighthouse.txt", 1.0, 1.0, 1.0),
    ("en_quill.txt", 0.75, 0.95, 0.7),
    ("en_brandt.txt", 0.75, 0.95, 0.65),
    ("zh_linxiao.txt", 0.45, 0.95, 0.5),
    ("holdout_en_orchard.txt", 0.7, 0.95, 0.7),
    ("holdout_zh_yaoguan.txt", 0.85, 0.95, 0.6),
])
def test_per_text_floors(name, accuracy, precision, recall):
    r = _score(name)
    assert r["accuracy"] >= accuracy, r["wrong"]
    assert r["precision"] >= precision, r["wrong"]
    assert r["recall"] >= recall, r["wrong"]


def test_quotes_nested_apostrophes_and_open():
    segs = split_quotes("“He said ‘never’ to me,” said Ann. “Don’t go.”")
    assert [s.text for s in segs if s.quote] == ["He said ‘never’ to me,", "Don’t go."]
    segs = split_quotes("‘I can’t,’ she said.")
    assert [s.text for s in segs if s.quote] == ["I can’t,"]
    segs = split_quotes("“This goes on")
    assert segs[-1].quote and segs[-1].open
    assert [s.text for s in split_quotes("「他说『走』。」行者道。") if s.quote] == ["他说『走』。"]


def test_zh_subject_strips_gestures():
    assert zh_subject("行者笑") == ("行者", "笑")
    assert zh_subject("悟空闻言，大喜")[0] == "悟空"
    assert zh_subject("那老者")[0] == "老者"


def _attribute(text: str, *, language: str, **cast_kw):
    cast = Cast(**cast_kw)
    discover(text, cast, language=language)
    cast.finish()
    return ProseAttributor(cast, language=language).scene(text.split("\n"))


def test_english_tags_aliases_and_actions():
    text = ('"You are late," said Sherlock Holmes, smiling.\n"The train was slow," Lestrade replied.\n'
            '"Trains are never slow, Lestrade."\n"Mr. Holmes, please."')
    lines = [ln for ln in _attribute(text, language="en", character="Holmes",
                                     aliases=["Sherlock Holmes", "Mr. Holmes"]) if ln.quote]
    assert [ln.speaker for ln in lines[:3]] == ["Holmes", "Lestrade", "Holmes"]
    assert lines[0].action == "smiling" and lines[0].text == "You are late."
    # "Mr. Holmes, please." addresses Holmes: alternation must not put it in his mouth.
    assert lines[3].speaker != "Holmes"


def test_unresolved_is_marked_not_guessed():
    lines = [ln for ln in _attribute('"Who is there?"\n"Nobody."', language="en") if ln.quote]
    assert all(ln.speaker is None and ln.how == "unresolved" for ln in lines)


def test_chinese_tag_after_and_same_speaker_again():
    text = "八戒道：“猴哥，等等我。”\n“你这呆子。”行者说。\n那老者道：“二位请进。”\n他又道：“天晚了。”"
    lines = [ln for ln in _attribute(text, language="zh", character="孙悟空", aliases=["行者"]) if ln.quote]
    assert [ln.speaker for ln in lines] == ["八戒", "孙悟空", "老者", "老者"]
