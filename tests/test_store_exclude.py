"""``Retriever.stories(..., exclude_sources=...)``: leave-one-scene-out for evaluation."""
from __future__ import annotations

import pytest

from roleplay.cards.schema import Character
from roleplay.config import Settings
from roleplay.store import Retriever

STORIES = [
    "Holmes:「(taps the ash) Trichinopoly. The man smoked while he waited.」\nWatson:「Remarkable.」",
    "Holmes:「(taps the ash) Trichinopoly. The man smoked while he waited!」\nWatson:「Remarkable.」",  # near-copy
    "Holmes:「The dog did nothing in the night-time.」\nWatson:「That was the curious incident.」",
    "Watson:「You have been in Afghanistan, I perceive.」\nHolmes:「(smiles) A simple deduction.」",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    card = Character(id="sh", name="Holmes", stories=STORIES)
    return Retriever(Settings(home=tmp_path_factory.mktemp("exclude"))), card


@pytest.mark.parametrize("method", ["hybrid", "weighted", "rrf", "vector", "keyword"])
def test_excluded_scene_and_its_near_copies_never_come_back(setup, method):
    r, card = setup
    hits = r.stories(card, ["What did the cigar ash tell you?"], k=4, method=method)
    assert hits[0].source == "card:0" and "card:1" in hits[0].duplicates
    for left_out in ("card:0", "card:1"):  # the kept story, or the copy collapsed into it
        again = r.stories(card, ["What did the cigar ash tell you?"], k=4, method=method,
                          exclude_sources=[left_out])
        assert all(h.source != "card:0" and "card:1" not in h.duplicates for h in again)
    assert r.stories(card, ["What did the cigar ash tell you?"], k=4, method=method,
                     exclude_sources=["card:2"])[0].source == "card:0"
