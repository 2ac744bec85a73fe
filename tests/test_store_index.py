"""Indexing: incremental, no-op, automatic re-index, duplicates, long stories, bad input."""
from __future__ import annotations

import pytest

from roleplay.cards import load_card
from roleplay.cards.schema import Character
from roleplay.errors import CardError
from roleplay.store import Retriever
from roleplay.store import indexer
from roleplay.store.scenes import MAX_CHUNK_CHARS, build_items, chunk_text

STORIES = [
    "Watson:「Where have you been?」\nSherlock:「(taps his pipe) In the opium den on Upper Swandam Lane.」",
    "Watson:「Who sent the letter?」\nSherlock:「(holds it to the light) A left-handed clerk with a cold.」",
    "Lestrade:「The body was in a locked room.」\nSherlock:「(smiles thinly) Then the window was not locked.」",
    "孙悟空:「（抓耳挠腮）师父莫慌，俺老孙去去就来！」",
]


def card_with(stories: list[str], **extra) -> Character:
    return Character(id="tester", name="Sherlock", stories=stories, **extra)


def collection_ids(retriever: Retriever, card: Character) -> set[str]:
    col = retriever._collection(card.id, create=False)
    return set(col.get(include=[])["ids"])


def test_index_then_noop_then_incremental(settings):
    r = Retriever(settings)
    card = card_with(STORIES)
    first = r.index(card)
    assert (first["added"], first["removed"], first["items"], first["unchanged"]) == (4, 0, 4, False)
    again = r.index(card)
    assert again["unchanged"] is True and again["added"] == 0

    changed = card_with([STORIES[0], STORIES[2] + "\nWatson:「Remarkable!」", STORIES[3], "Mycroft:「Sherlock.」"])
    stats = r.index(changed)
    # two stories are new (one edited, one added), one was removed, two are untouched
    assert (stats["added"], stats["removed"], stats["items"]) == (2, 2, 4)
    assert len(collection_ids(r, changed)) == 4
    hits = r.stories(changed, ["Mycroft"], k=1, method="keyword")
    assert hits[0].text == "Mycroft:「Sherlock.」"


def test_reordering_updates_metadata_without_embedding(settings):
    r = Retriever(settings)
    r.index(card_with(STORIES))
    stats = r.index(card_with(list(reversed(STORIES))))
    assert stats["added"] == 0 and stats["updated"] == 4
    top = r.stories(card_with(list(reversed(STORIES))), ["孙悟空 师父"], k=1, method="keyword")[0]
    assert top.source == "card:0"


def test_ensure_indexed_reindexes_changed_card(settings):
    r = Retriever(settings)
    r.ensure_indexed(card_with(STORIES[:2]))
    assert len(collection_ids(r, card_with(STORIES[:2]))) == 2
    # A fresh Retriever (another process) sees the stored fingerprint and re-indexes.
    r2 = Retriever(settings)
    grown = card_with(STORIES)
    r2.ensure_indexed(grown)
    assert len(collection_ids(r2, grown)) == 4
    # stories() indexes on first use too
    other = Character(id="other", name="Other", stories=["Other:「Hello there.」"])
    assert [s.text for s in r2.stories(other, ["hello"])] == ["Other:「Hello there.」"]


def test_queries_never_mix_characters(settings):
    r = Retriever(settings)
    a = Character(id="alpha", name="A", stories=["A:「The moon is made of cheese.」"])
    b = Character(id="beta", name="B", stories=["B:「The moon is a rock.」"])
    r.index(a)
    r.index(b)
    assert {s.text for s in r.stories(a, ["moon"], k=5)} == {"A:「The moon is made of cheese.」"}
    assert {s.text for s in r.stories(b, ["moon"], k=5)} == {"B:「The moon is a rock.」"}


def test_near_duplicates_collapsed_and_recorded(settings):
    base = STORIES[0]
    near = base.replace("Where have you been?", "Where have you been??").replace("Upper", "upper")
    card = card_with([base, near, STORIES[1], base])
    items, dups = build_items(card.all_stories())
    assert dups == 2 and len(items) == 2
    r = Retriever(settings)
    stats = r.index(card)
    assert stats["duplicates"] == 2 and stats["items"] == 2
    hit = r.stories(card, ["opium den Swandam"], k=1)[0]
    assert hit.source == "card:0" and hit.duplicates == ["card:1", "card:3"]


def test_distinct_scenes_are_not_duplicates():
    items, dups = build_items([(f"card:{i}", s) for i, s in enumerate(STORIES)])
    assert dups == 0 and len(items) == len(STORIES)


def test_long_story_is_split_at_line_boundaries(settings):
    lines = [f"Sherlock:「Clue number {i}: the {'mud ' * (i % 7)}tells me of case {i}.」" for i in range(900)]
    story = "\n".join(lines)
    assert len(story) > 50_000
    chunks = chunk_text(story)
    assert all(len(c) <= MAX_CHUNK_CHARS for c in chunks)
    assert "\n".join(chunks) == story  # nothing lost, cut only between lines
    single_line = "x" * 50_000
    assert "".join(chunk_text(single_line)) == single_line

    r = Retriever(settings)
    card = card_with([story, STORIES[1]])
    stats = r.index(card)
    assert stats["split"] == 1 and stats["items"] == len(chunks) + 1
    hits = r.stories(card, ["Clue number 777"], budget_tokens=1500)
    assert "Clue number 777:" in hits[0].text and hits[0].source == "card:0"
    assert sum(h.tokens for h in hits) <= 1500


def test_empty_card_indexes_and_retrieves_nothing(settings):
    r = Retriever(settings)
    card = card_with([])
    assert r.index(card)["items"] == 0
    assert r.stories(card, ["anything"]) == []
    assert r.lore(card, ["anything"]) == []
    assert r.stories(card_with(["  ", "\n"]), ["x"]) == []


def test_invalid_utf8_story_file_is_a_card_error(tmp_path):
    folder = tmp_path / "bad"
    (folder / "stories").mkdir(parents=True)
    (folder / "character.yaml").write_text("id: bad\nname: Bad\n", encoding="utf-8")
    (folder / "stories" / "scenes.txt").write_bytes(b"Bad:\xe3\x80\x8c ok \xff\xfe broken")
    with pytest.raises(CardError) as err:
        load_card(folder)
    assert "scenes.txt" in str(err.value) and "UTF-8" in str(err.value)


def test_stories_files_are_indexed_with_their_labels(settings, tmp_path):
    folder = tmp_path / "filey"
    (folder / "stories").mkdir(parents=True)
    (folder / "character.yaml").write_text("id: filey\nname: Filey\n", encoding="utf-8")
    (folder / "stories" / "a.txt").write_text("Filey:「first scene about lanterns」\n---\nFiley:「second scene about kites」\n",
                                             encoding="utf-8")
    card = load_card(folder)
    r = Retriever(settings)
    assert r.index(card)["items"] == 2
    assert r.stories(card, ["kites"], k=1, method="keyword")[0].source == "stories/a.txt#1"


def test_interrupted_index_leaves_old_index_usable(settings, monkeypatch):
    r = Retriever(settings)
    old = card_with(STORIES)
    r.index(old)
    new = card_with([f"Sherlock:「Fresh scene {i} about {w}.」" for i, w in enumerate(["bees", "violins", "ash", "codes"])])

    monkeypatch.setattr(indexer, "BATCH", 2)
    monkeypatch.setattr(indexer, "ADD_BATCH", 2)
    real_embed = r.embedder.embed
    calls = {"n": 0}

    def embed_then_crash(texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the user hit Ctrl-C mid-run
        return real_embed(texts)

    monkeypatch.setattr(r.embedder, "embed", embed_then_crash)
    with pytest.raises(KeyboardInterrupt):
        r.index(new)
    monkeypatch.setattr(r.embedder, "embed", real_embed)

    # The old stories are all still there and searchable; the fingerprint is the old one.
    fresh = Retriever(settings)
    hits = fresh.stories(old, ["opium den"], k=1, method="keyword")
    assert "opium den" in hits[0].text
    # The next run finishes the job without re-embedding what was already added.
    stats = Retriever(settings).index(new)
    assert stats["added"] == 2 and stats["removed"] == 4 and stats["items"] == 4


def test_in_place_story_edit_is_noticed_by_the_next_query(settings):
    r = Retriever(settings)
    card = card_with(list(STORIES))
    assert r.stories(card, ["opium den"], k=1, method="keyword")[0].source == "card:0"
    card.stories[0] = "Watson:「A new scene.」\nSherlock:「(yawns) About marmalade.」"  # same list object
    hit = r.stories(card, ["marmalade"], k=1, method="keyword")[0]
    assert "marmalade" in hit.text
    assert r.stories(card, ["opium den"], method="keyword") == []
