"""Reply post-processing: cuts, role-tag leftovers, bracket and quote styles, streaming."""
from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from roleplay.cards.schema import Character
from roleplay.compose.postprocess import StreamCleaner, format_note, postprocess

EN = Character(id="sherlock", name="Sherlock Holmes", nickname="Sherlock", language="en", user_name="Watson")
ZH = Character(id="wukong", name="孙悟空", language="zh", user_name="师父")
ZH_CORNER = Character(id="daiyu", name="林黛玉", language="zh", user_name="宝玉", style={"quote_style": "corner"})
STAR = Character(id="ada", name="Ada Quill", language="en", user_name="Traveller", style={"action_style": "asterisk"})


def clean(text: str, card: Character = EN, speakers=("Lestrade",)) -> str:
    return postprocess(text, card, speakers=list(speakers), user_name=card.user_name)


@pytest.mark.parametrize("raw, expected", [
    ("(smiles) Indeed.\nWatson: What do you mean?", "(smiles) Indeed."),
    ("(smiles) Indeed. Watson:「What?」", "(smiles) Indeed."),
    ("Elementary.\n\nLestrade: Holmes, come quick!", "Elementary."),
    ("I see.\nUser: and then", "I see."),
    ("Quite so.<|im_end|>\n<|im_start|>user\nHi", "Quite so."),
    ("Quite so.</s>junk", "Quite so."),
    ("assistant: (nods) Yes.", "(nods) Yes."),
    ("(nods) Yes.\nassistant: again", "(nods) Yes."),
    ("Sherlock Holmes: (nods) Yes.", "(nods) Yes."),
    ("Sherlock: Yes.\nSherlock: And more.", "Yes.\nAnd more."),
    ("Watson: I speak first", ""),
    ("   spaced out   \n\n", "spaced out"),
    ("He said \"elementary\" twice.", "He said \"elementary\" twice."),
])
def test_cuts_and_leftovers(raw, expected):
    assert clean(raw) == expected


@pytest.mark.parametrize("card, raw, expected", [
    (EN, "（皱眉）Hmm. *sighs* Fine.", "(皱眉)Hmm. (sighs) Fine."),
    (ZH, "(皱眉)「师父莫慌！」", "（皱眉）师父莫慌！"),
    (ZH, "*抓耳挠腮*俺老孙来也！**好**", "（抓耳挠腮）俺老孙来也！好"),
    (ZH, "「（跳起来）妖怪哪里走！」\n师父：「悟空」", "（跳起来）妖怪哪里走！"),
    (ZH_CORNER, "（拭泪）「你又来了。」", "（拭泪）「你又来了。」"),
    (STAR, "(wipes her hands) Hello (waves) there *unclosed", "*wipes her hands* Hello *waves* there *unclosed*"),
    (STAR, "（笑）Yes.", "*笑*Yes."),
    (EN, "2 * 3 = 6", "2 * 3 = 6"),
])
def test_bracket_and_quote_styles(card, raw, expected):
    assert clean(raw, card, speakers=()) == expected


def test_format_note_per_style():
    assert format_note("（皱眉）", EN) == "(皱眉)"
    assert format_note("(frowns)", ZH) == "（frowns）"
    assert format_note("*frowns*", EN) == "(frowns)"
    assert format_note("frowns", STAR) == "*frowns*"
    assert format_note("()", EN) == ""


def test_stream_stops_at_cut_and_holds_partial_markers():
    c = StreamCleaner(EN, speakers=["Lestrade"], user_name="Watson")
    assert c.feed("(smiles) Indeed") == "(smiles) Indeed"
    assert c.feed(".\nWat") == "."  # "\nWat" might become "\nWatson:"
    assert not c.done
    assert c.feed("son: no") == ""
    assert c.done
    assert c.feed(" more text") == ""
    assert c.finish() == ""


def test_stream_releases_a_name_that_is_not_a_marker():
    c = StreamCleaner(EN, user_name="Watson")
    out = c.feed("Ask\nWat") + c.feed("son about it.") + c.finish()
    assert out == "Ask\nWatson about it."


@hsettings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from(list("ab (）（)*「」\n:：W<|>") + ["Watson:", "Sherlock:", "<|im_end|>",
                                                                     "user:", "师父：「", "assistant:"]),
                    max_size=40).map("".join),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
       card=st.sampled_from([EN, ZH, ZH_CORNER, STAR]))
def test_streaming_equals_whole(text, cuts, card):
    """Any chunking of a reply gives exactly the text of post-processing it whole."""
    whole = postprocess(text, card, speakers=["Lestrade"], user_name=card.user_name)
    cleaner = StreamCleaner(card, speakers=["Lestrade"], user_name=card.user_name)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [cleaner.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])]
    pieces.append(cleaner.finish())
    assert "".join(pieces) == whole
