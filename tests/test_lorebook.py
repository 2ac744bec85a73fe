"""Lorebook matching: keys, case, whole words, CJK, regex, selective, constant, depth, budget, vector."""
from __future__ import annotations

from roleplay.cards.schema import Character, LoreEntry
from roleplay.store import Retriever
from roleplay.store.lorebook import invalid_keys, match_lore


def card(*entries: LoreEntry) -> Character:
    return Character(id="lore", name="Lore", lorebook=list(entries))


def names(hits) -> list[str]:
    return [h.name for h in hits]


def test_plain_keys_case_and_whole_words():
    c = card(LoreEntry(name="cat", keys=["cat"], content="A cat."),
             LoreEntry(name="Moriarty", keys=["Moriarty"], content="The professor.", case_sensitive=True),
             LoreEntry(name="gold", keys=["金箍棒"], content="如意金箍棒。"))
    assert names(match_lore(c, ["Let us concatenate strings."])) == []
    hits = match_lore(c, ["My CAT ate the moriarty file"])
    assert names(hits) == ["cat"] and hits[0].why == ["key 'cat'"]
    assert names(match_lore(c, ["Professor Moriarty!"])) == ["Moriarty"]
    assert names(match_lore(c, ["你的金箍棒呢？"])) == ["gold"]  # CJK: substring, no word edges


def test_regex_keys_and_invalid_regex():
    c = card(LoreEntry(name="year", keys=[r"/\b18[89]\d\b/"], regex=True, content="Victorian era."),
             LoreEntry(name="ci", keys=["/baker st(reet)?/i"], regex=True, case_sensitive=True, content="221B."),
             LoreEntry(name="broken", keys=["(unclosed"], regex=True, content="never"))
    assert names(match_lore(c, ["It was 1895 in BAKER ST."])) == ["year", "ci"]
    assert names(match_lore(c, ["It was 1995"])) == []
    assert invalid_keys(c) == ["lorebook[2]: invalid regular expression '(unclosed'"]


def test_selective_needs_a_secondary_key():
    e = LoreEntry(name="duel", keys=["Reichenbach"], secondary_keys=["fall", "falls"], selective=True,
                  content="The struggle at the falls.")
    c = card(e)
    assert match_lore(c, ["Reichenbach is in Switzerland"]) == []
    hit = match_lore(c, ["What happened at the Reichenbach falls?"])[0]
    assert hit.why == ["key 'Reichenbach'", "secondary key 'falls'"]
    # without `selective`, secondary keys are not required
    assert match_lore(card(e.model_copy(update={"selective": False})), ["Reichenbach"])


def test_constant_disabled_scan_depth_priority_order_and_budget():
    c = card(
        LoreEntry(name="always", constant=True, content="Always here.", priority=1),
        LoreEntry(name="off", keys=["moon"], enabled=False, content="disabled"),
        LoreEntry(name="low", keys=["moon"], priority=5, order=1, content="low priority"),
        LoreEntry(name="high-late", keys=["moon"], priority=50, order=9, content="high, later order"),
        LoreEntry(name="high-early", keys=["moon"], priority=50, order=2, content="high, earlier order"),
        LoreEntry(name="deep", keys=["sun"], scan_depth=3, content="sun lore"),
    )
    hits = match_lore(c, ["the sun rose", "hello", "the moon!"], scan_depth=1)
    assert names(hits) == ["always", "high-early", "high-late", "deep", "low"]  # deep: default priority 10
    assert hits[0].constant and hits[0].why == ["constant entry"]
    # depth 1 does not see "sun" two messages back unless the entry scans deeper
    shallow = card(LoreEntry(name="shallow", keys=["sun"], content="s"))
    assert match_lore(shallow, ["the sun rose", "hello", "x"], scan_depth=1) == []
    assert names(match_lore(shallow, ["the sun rose", "hello", "x"], scan_depth=3)) == ["shallow"]
    # budget: the constant entry always, then what fits in priority order
    tight = match_lore(c, ["moon"], budget_tokens=9, count_tokens=lambda t: 4)
    assert names(tight) == ["always", "high-early"]
    # nothing but constants for an empty conversation
    assert names(match_lore(c, [])) == ["always"]


def test_vector_entries_fire_on_meaning(settings):
    c = card(LoreEntry(name="Moriarty", keys=["Moriarty"], vector=True,
                       content="Professor James Moriarty, a mathematician who sits at the centre of London's "
                               "organised crime like a spider in its web; the Napoleon of crime."),
             LoreEntry(name="Violin", keys=["violin"], vector=False,
                       content="Holmes plays a Stradivarius violin when he thinks."))
    r = Retriever(settings)
    hits = r.lore(c, ["Who leads the criminal underworld of London?"])
    assert names(hits) == ["Moriarty"]
    assert hits[0].why[0].startswith("vector similarity") and hits[0].similarity >= 0.3
    # cross-lingual: a Chinese question about the same subject
    assert names(r.lore(c, ["谁是伦敦犯罪界的头目？"])) == ["Moriarty"]
    assert r.lore(c, ["What's the weather like today?"]) == []
    # a key match is reported as a key, not as vector similarity
    assert r.lore(c, ["Moriarty again"])[0].why == ["key 'Moriarty'"]
