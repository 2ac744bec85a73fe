"""Query behaviour: hybrid scoring, weighting of the new message, budgets, k, why."""
from __future__ import annotations

import pytest

from roleplay.cards.schema import Character
from roleplay.errors import StoreError
from roleplay.store import Retriever
from roleplay.tokens import approx_tokens

STORIES = [
    "Watson:「You look tired.」\nSherlock:「(rubs his eyes) Three nights on the Mazarin stone case.」",
    "Watson:「What is that smell?」\nSherlock:「(waves a test tube) A small chemical experiment. Quite harmless.」",
    "Mrs. Hudson:「Your brother is here, Mr. Holmes.」\nSherlock:「(groans) Mycroft never leaves the Diogenes Club without cause.」",
    "Watson:「Shall we take a cab?」\nSherlock:「(throws on his coat) The game is afoot! To Paddington, quickly.」",
    "Lestrade:「We found the body at dawn.」\nSherlock:「(kneels by the corpse) Then the murderer left at midnight.」",
    "Watson:「Will you play something?」\nSherlock:「(lifts the violin) A little Mendelssohn, then.」",
    "孙悟空:「（抓耳挠腮）师父莫慌，俺老孙去去就来！」",
    "孙悟空:「（掣出金箍棒）妖精，吃俺老孙一棒！」",
]
CARD = Character(id="hyb", name="Sherlock", stories=STORIES)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    """One index for the module (its own home; the per-test home is not used here)."""
    from roleplay.config import Settings

    r = Retriever(Settings(home=tmp_path_factory.mktemp("home")))
    r.index(CARD)
    return r


def test_rare_name_wins_with_keywords(retriever):
    hits = retriever.stories(CARD, ["Any news about the Mazarin stone?"], k=3)
    assert hits[0].text == STORIES[0]
    assert any("mazarin" in w for w in hits[0].why)
    assert hits[0].score >= hits[-1].score and hits[0].keyword_score > 0


def test_methods_give_their_own_scores(retriever):
    for method in ("hybrid", "rrf", "vector", "keyword"):
        hits = retriever.stories(CARD, ["Play the violin for me, Mendelssohn perhaps"], k=2, method=method)
        assert hits[0].text == STORIES[5], method
    vec = retriever.stories(CARD, ["violin"], k=8, method="vector")
    assert all(h.score == pytest.approx(h.vector_score) for h in vec)
    assert [h.score for h in vec] == sorted([h.score for h in vec], reverse=True)
    kw = retriever.stories(CARD, ["violin"], k=8, method="keyword")
    assert [h.text for h in kw] == [STORIES[5]]  # keyword-only: nothing without a shared word
    assert retriever.stories(CARD, ["zzzqqq"], method="keyword") == []
    with pytest.raises(StoreError, match="unknown retrieval method"):
        retriever.stories(CARD, ["x"], method="magic")


def test_cross_lingual_vector_hit(retriever):
    hits = retriever.stories(CARD, ["The monkey king draws his golden staff against the demon"], k=1, method="vector")
    assert hits[0].text == STORIES[7]


def test_newest_message_weighs_most(retriever):
    older_violin = retriever.stories(CARD, ["Play the violin, Mendelssohn.", "Whose corpse did Lestrade find at dawn?"], k=1)
    assert older_violin[0].text == STORIES[4]
    older_corpse = retriever.stories(CARD, ["Whose corpse did Lestrade find at dawn?", "Play the violin, Mendelssohn."], k=1)
    assert older_corpse[0].text == STORIES[5]


def test_budget_k_and_token_counter(retriever):
    everything = retriever.stories(CARD, ["Sherlock"], budget_tokens=10_000)
    assert len(everything) == len(STORIES) and len({h.id for h in everything}) == len(STORIES)
    assert all(h.tokens == approx_tokens(h.text) for h in everything)
    small = retriever.stories(CARD, ["Sherlock"], budget_tokens=60)
    assert sum(h.tokens for h in small) <= 60 and 0 < len(small) < len(STORIES)
    assert len(retriever.stories(CARD, ["Sherlock"], k=2)) == 2
    by_chars = retriever.stories(CARD, ["Sherlock"], budget_tokens=200, count_tokens=len)
    assert sum(len(h.text) for h in by_chars) <= 200 and all(h.tokens == len(h.text) for h in by_chars)
    assert retriever.stories(CARD, ["Sherlock"], budget_tokens=0) == []
    assert retriever.stories(CARD, ["", "  "]) == []
    assert retriever.stories(CARD, []) == []


def test_results_carry_metadata(retriever):
    hit = retriever.stories(CARD, ["Mycroft at the Diogenes Club"], k=1)[0]
    assert hit.source == "card:2" and hit.speakers == ["Mrs. Hudson", "Sherlock"]
    col = retriever._collection(CARD.id, create=False)
    meta = col.get(ids=[hit.id], include=["metadatas"])["metadatas"][0]
    assert meta["language"] == "en" and meta["has_action"] is True and meta["hash"] == hit.id
    zh = col.get(where={"language": "zh"}, include=[])["ids"]
    assert len(zh) == 2


def test_hybrid_weights_move_toward_keyword_with_the_long_same_language_share():
    from roleplay.store import fusion

    assert fusion.hybrid_weights(0.0) == fusion.WEIGHTS  # short stories, or another language
    assert fusion.hybrid_weights(1.0) == (0.5, 1.0, 3.0)
    half = fusion.hybrid_weights(0.5)
    assert half[0] < fusion.WEIGHTS[0] and half[2] > fusion.WEIGHTS[2] and half[1] == fusion.WEIGHTS[1]
    assert fusion.hybrid_weights(1.0, base=fusion.E5_WEIGHTS) == (0.0, 1.0, 3.0)  # e5 alike


def test_long_share_counts_long_scenes_in_the_message_language(tmp_path):
    """Long scenes (8+ lines: windows) in the message's language move the weights; short
    stories and long scenes in the other language do not."""
    import numpy as np

    from roleplay.config import Settings
    from roleplay.store.retriever import _long_share

    long_en = "\n".join(f"Wren:「Line {i} about the river and the barge.」" for i in range(10))
    long_zh = "\n".join(f"青崖:「第{i}句，说的是镖局和山路。」" for i in range(10))
    card = Character(id="mix", name="Mix", stories=[long_en, long_zh, "Wren:「A short one.」"])
    r = Retriever(Settings(home=tmp_path))
    r.index(card)
    loaded = r._ready(card)
    pos = {loaded.docs[p]: p for p in range(len(loaded.ids))}
    every = np.array([pos[long_en], pos[long_zh], pos["Wren:「A short one.」"]])
    assert _long_share(loaded, every, "en") == 1 / 3
    assert _long_share(loaded, every, "zh") == 1 / 3
    assert _long_share(loaded, every[2:], "en") == 0.0
