"""Line windows of long stories: made, indexed beside their story, kept in step, and used."""
from __future__ import annotations

from roleplay.cards.schema import Character
from roleplay.config import Settings
from roleplay.store import Retriever
from roleplay.store.indexer import windows_name
from roleplay.store.scenes import WINDOW_LINES, WINDOW_MIN_LINES, line_windows

SMALL_TALK = [
    "Ann:「The kettle's on.」", "Bob:「Again? We had tea an hour ago.」",
    "Ann:「Tea is a state of mind.」", "Bob:「Your mind is mostly tea.」",
    "Narrator:「Rain taps on the window.」", "Ann:「Pass the biscuits.」",
    "Bob:「There are none left.」", "Ann:「Then what is this tin for?」",
    "Bob:「Buttons, mostly.」", "Narrator:「The clock ticks on the shelf.」",
]


def long_scene(event: list[str], at: int = 5) -> str:
    return "\n".join(SMALL_TALK[:at] + event + SMALL_TALK[at:])


def test_windows_cover_every_line_and_skip_short_stories():
    text = "\n".join(f"A:「line {i}」" for i in range(11))
    wins = line_windows(text)
    assert all(len(w.splitlines()) == WINDOW_LINES for w in wins)
    assert {ln for w in wins for ln in w.splitlines()} == set(text.splitlines())
    assert line_windows("\n".join(["A:「x」"] * (WINDOW_MIN_LINES - 1))) == []


def test_windows_follow_their_stories(tmp_path):
    card = Character(id="tea", name="Ann", stories=[
        long_scene(["Bob:「The dragon is at the gate!」", "Ann:「Then fetch my sword.」"]),
        "Ann:「Short and sweet.」\nBob:「Like you.」"])
    r = Retriever(Settings(home=tmp_path))
    stats = r.index(card)
    assert stats["windows"] == len(line_windows(card.stories[0])) > 0   # none for the short one
    wcol = r.client.get_collection(windows_name("tea", r.embedder))
    assert wcol.count() == stats["windows"]
    parents = {m["parent"] for m in wcol.get(include=["metadatas"])["metadatas"]}
    assert len(parents) == 1

    card.stories[0] = long_scene(["Bob:「A letter came for you.」", "Ann:「Burn it.」"])
    stats = r.index(card)
    assert stats["windows_added"] > 0
    assert wcol.count() == stats["windows"]                          # the old story's windows are gone
    assert {m["parent"] for m in wcol.get(include=["metadatas"])["metadatas"]} != parents
    again = Retriever(Settings(home=tmp_path)).index(card)
    assert again["unchanged"]


def test_a_buried_exchange_is_found_by_its_window(tmp_path):
    """Twelve long scenes of the same small talk, each with one different exchange inside:
    the question about one exchange ranks its scene first, with the window in ``why``."""
    events = [
        ["Bob:「The dragon is at the gate, breathing fire on the drawbridge!」", "Ann:「Then fetch my sword.」"],
        ["Bob:「The baker's daughter is getting married on Sunday.」", "Ann:「To the blacksmith?」"],
        ["Bob:「Our ship sank off the coast, all the cargo lost.」", "Ann:「Were the sailors saved?」"],
        ["Bob:「I found a gold coin in the garden under the apple tree.」", "Ann:「Whose could it be?」"],
        ["Bob:「The king has fallen ill with a terrible fever.」", "Ann:「Send for the physician.」"],
        ["Bob:「A wolf has been killing the farmer's sheep at night.」", "Ann:「We'll set a trap.」"],
    ]
    card = Character(id="tea", name="Ann", stories=[long_scene(e, at=3 + i % 4) for i, e in enumerate(events)])
    r = Retriever(Settings(home=tmp_path))
    hits = r.stories(card, ["Was anyone rescued when the boat went down?"], k=3)
    assert hits[0].source == "card:2"
    assert hits[0].window_score > hits[0].vector_score
    assert any(w.startswith("best lines") for w in hits[0].why)
    assert 0.0 <= min(h.score for h in hits) and max(h.score for h in hits) <= 1.0
