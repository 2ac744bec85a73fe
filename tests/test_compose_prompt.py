"""The composer: message order, budgets, history trimming, group chat, modes, baseline."""
from __future__ import annotations

import pytest

from roleplay.cards import get_card
from roleplay.cards.schema import Character
from roleplay.compose import Composer, StageNote
from roleplay.config import Budgets
from roleplay.errors import ConfigError
from roleplay.tokens import approx_tokens


class Hit:
    """A lorebook hit shaped like `roleplay.store.LoreHit` (only the fields the composer reads)."""

    def __init__(self, index, name, content, constant=False):
        self.index, self.name, self.content, self.constant = index, name, content, constant


@pytest.fixture(scope="module")
def sherlock() -> Character:
    return get_card("sherlock")


NOTE = StageNote(intent="praise", intent_score=0.5, emotion="smug", note="(a thin smile)")


def history(turns: int) -> list[dict]:
    out = []
    for i in range(turns):
        out.append({"role": "user", "name": "Watson", "content": f"question {i} " + "word " * 20})
        out.append({"role": "assistant", "name": "Sherlock Holmes", "content": f"answer {i} " + "word " * 20})
    return out


def test_order_and_prefill(sherlock):
    p = Composer().compose(sherlock, history(2), "Who did it?", user_name="Watson",
                           stories=["Sherlock:「(leans back) I observed.」"],
                           lore=[Hit(0, "Baker Street", "221B is upstairs.", constant=True),
                                 Hit(1, "Moriarty", "The Napoleon of crime.")],
                           memories=["Watson takes his tea with milk."], summary="They met at Bart's.",
                           note=NOTE, budgets=Budgets(), count_tokens=approx_tokens)
    roles = [m["role"] for m in p.messages]
    assert roles == ["system", "system", "user", "assistant", "user", "assistant", "system", "user", "assistant"]
    system, stories, lore = p.messages[0]["content"], p.messages[1]["content"], p.messages[-3]["content"]
    assert "You are Sherlock Holmes" in system and "221B Baker Street" in system
    assert "(raises an eyebrow)" in system  # the bracket convention, in the card's style
    assert "221B is upstairs." in system and "Napoleon" not in system  # constant lore only
    assert system.index("tea with milk") < system.index("They met at Bart's.")
    assert stories.startswith("Classic scenes of Sherlock Holmes") and "I observed" in stories
    assert "Napoleon of crime" in lore
    assert p.messages[-2] == {"role": "user", "content": "Who did it?"}
    assert p.messages[-1] == {"role": "assistant", "content": "(a thin smile)"} and p.prefill == "(a thin smile)"
    assert "{{user}}" not in system and "{{char}}" not in system  # macros expanded


def test_a_triggered_lore_entry_leaves_the_history_prefix_alone(sherlock):
    # entries come and go as their keys enter and leave the scan depth; before the
    # history, each change made a prefix cache read the whole history again
    kw = dict(user_name="Watson", note=NOTE, budgets=Budgets(), count_tokens=approx_tokens,
              stories=["Sherlock:「(nods) Data.」"])
    plain = Composer().compose(sherlock, history(3), "Moriarty?", **kw)
    lore = Composer().compose(sherlock, history(3), "Moriarty?", lore=[Hit(1, "Moriarty", "The Napoleon of crime.")],
                              **kw)
    assert lore.messages[:-3] == plain.messages[:-2]  # system, stories, the whole history
    assert lore.messages[-3]["role"] == "system" and "Napoleon" in lore.messages[-3]["content"]
    assert lore.messages[-2:] == plain.messages[-2:]  # then the new message and the prefill
    # a history that ends with the user's own lines: they still join the new message
    ends_with_user = history(3) + [{"role": "user", "name": "Watson", "content": "Holmes?"}]
    q = Composer().compose(sherlock, ends_with_user, "Moriarty?", lore=[Hit(1, "Moriarty", "The Napoleon of crime.")],
                           **kw)
    assert [m["role"] for m in q.messages[-4:]] == ["assistant", "system", "user", "assistant"]
    assert q.messages[-2]["content"] == "Holmes?\nMoriarty?"


def test_anchored_stories_stay_where_they_were_first_read(sherlock):
    # a story block added mid-chat sits before the message that brought it and stays
    # there: the prompt before it never changes, and it leaves with its trimmed turns
    kw = dict(user_name="Watson", note=NOTE, count_tokens=approx_tokens, stories=["Sherlock:「(nods) Data.」"])
    scene = "Sherlock:「(taps the map) The moor hides a hound.」"
    hist = history(3)
    now = Composer().compose(sherlock, hist, "A hound?", anchored=[(len(hist), [scene])], budgets=Budgets(), **kw)
    plain = Composer().compose(sherlock, hist, "A hound?", budgets=Budgets(), **kw)
    assert now.messages[:-2] == plain.messages[:-2] + [now.messages[-3]]  # added right before the message
    assert now.messages[-3]["role"] == "system" and "moor hides a hound" in now.messages[-3]["content"]
    assert [(a, items) for a, items in now.anchored] == [(len(hist), [scene])]
    assert now.shown_stories() == ["Sherlock:「(nods) Data.」", scene]
    later_hist = hist + [{"role": "user", "name": "Watson", "content": "A hound?"},
                         {"role": "assistant", "name": "Sherlock Holmes", "content": "(grim) A hound."}]
    later = Composer().compose(sherlock, later_hist, "Whose?", anchored=[(len(hist), [scene])],
                               budgets=Budgets(), **kw)
    assert later.messages[:len(now.messages) - 1] == now.messages[:-1]  # the same prefix, the block in place
    # the history's own user lines before the anchor still join the message after it
    group = hist + [{"role": "user", "name": "Watson", "content": "Holmes?"}]
    g = Composer().compose(sherlock, group + [{"role": "user", "name": "Watson", "content": "A hound?"}], "Whose?",
                           anchored=[(len(group), [scene])], budgets=Budgets(), **kw)
    roles = [m["role"] for m in g.messages]
    assert all(a != b for a, b in zip(roles, roles[1:]) if a == "user")  # user lines never split by it
    assert {"role": "user", "content": "Holmes?\nA hound?\nWhose?"} in g.messages
    # the story budget is shared (the block first), and a trimmed turn takes its block along
    small = Budgets(stories=approx_tokens(kw["stories"][0]) + approx_tokens(scene) - 1)
    tight = Composer().compose(sherlock, hist, "A hound?", anchored=[(len(hist), [scene])], budgets=small, **kw)
    assert tight.anchored == [] and tight.parts["stories"] <= small.stories
    size = sum(approx_tokens(m["content"]) for m in later_hist[-2:])
    trimmed = Composer().compose(sherlock, later_hist, "Whose?", anchored=[(len(hist), [scene]), (2, [scene])],
                                 budgets=Budgets(history=size), **kw)
    assert trimmed.anchored == [(len(hist), [scene])]  # the one at message 2 went with its turn
    # cache_friendly moves every story after the history: nothing is anchored
    assert Composer().compose(sherlock, hist, "A hound?", anchored=[(len(hist), [scene])], budgets=Budgets(),
                              cache_friendly=True, **kw).anchored == []


def test_system_prefix_is_stable_across_turns(sherlock):
    c = Composer()
    kw = dict(user_name="Watson", note=NOTE, budgets=Budgets(), count_tokens=approx_tokens)
    a = c.compose(sherlock, history(1), "first", **kw)
    b = c.compose(sherlock, history(2), "second", **kw)
    assert a.messages[0] == b.messages[0]
    assert b.messages[1:3] == a.messages[1:3]  # history grows at the end


def test_each_budget_is_respected(sherlock):
    budgets = Budgets(stories=40, lorebook=16, memories=10, history=70, summary=8)
    stories = [f"Sherlock:「(nods) line {i} " + "data " * 8 + "」" for i in range(6)]
    lore = [Hit(i, f"e{i}", f"entry {i} " + "fact " * 5, constant=i == 0) for i in range(5)]
    memories = [f"memory {i} " + "thing " * 5 for i in range(6)]
    summary = "Long ago. " * 30 + "Most recently, the dog did nothing."
    p = Composer().compose(sherlock, history(5), "Well?", user_name="Watson", stories=stories, lore=lore,
                           memories=memories, summary=summary, note=NOTE, budgets=budgets,
                           count_tokens=approx_tokens)
    for part, budget in [("stories", 40), ("lorebook", 16), ("memories", 10), ("history", 70), ("summary", 8)]:
        assert 0 < p.parts[part] <= budget, (part, p.parts)
    assert len(p.stories) < 6 and len(p.lore) < 5 and len(p.memories) < 6
    # The newest end of the summary is kept; history keeps whole newest turns only.
    assert "the dog did nothing." in p.messages[0]["content"] and "Long ago. " * 10 not in p.messages[0]["content"]
    assert [m["content"] for m in p.messages[:-2] if m["role"] != "system"] == [t["content"] for t in history(5)[-2:]]
    assert p.parts["total"] >= sum(p.parts[k] for k in ("system", "history", "user", "prefill"))


def test_history_drops_whole_oldest_turns(sherlock):
    turns = history(6)
    size = approx_tokens(turns[0]["content"]) + approx_tokens(turns[1]["content"])
    p = Composer().compose(sherlock, turns, "Next?", user_name="Watson", note=None,
                           budgets=Budgets(history=size * 3), count_tokens=approx_tokens)
    contents = [m["content"] for m in p.messages[1:-1]]
    assert contents == [t["content"] for t in turns[-6:]]
    assert p.parts["history"] == size * 3


def test_group_chat_labels_other_speakers(sherlock):
    hist = [{"role": "user", "name": "Watson", "content": "Look at this."},
            {"role": "assistant", "name": "Lestrade", "content": "A fine mess."},
            {"role": "assistant", "name": "Sherlock Holmes", "content": "(kneels) Clay."}]
    p = Composer().compose(sherlock, hist, "And now?", user_name="Watson", others=["Lestrade"], note=None,
                           stage_mode="off", budgets=Budgets(), count_tokens=approx_tokens)
    assert "in a role-play with Watson and Lestrade" in p.messages[0]["content"]
    assert p.messages[1:] == [{"role": "user", "content": "Watson: Look at this.\nLestrade: A fine mess."},
                              {"role": "assistant", "content": "(kneels) Clay."},
                              {"role": "user", "content": "Watson: And now?"}]


def test_instruct_and_off_modes(sherlock):
    card = sherlock.model_copy(update={"post_history_instructions": "Stay terse, {{user}}."})
    kw = dict(user_name="Watson", note=NOTE, budgets=Budgets(), count_tokens=approx_tokens)
    p = Composer().compose(card, [], "Hi", stage_mode="instruct", **kw)
    assert p.prefill == "" and p.messages[-1]["role"] == "system"
    assert "smug" in p.messages[-1]["content"] and "(a thin smile)" in p.messages[-1]["content"]
    assert "Stay terse, Watson." in p.messages[-1]["content"]
    p = Composer().compose(sherlock, [], "Hi", stage_mode="off", **kw)
    assert p.prefill == "" and p.messages[-1] == {"role": "user", "content": "Hi"}
    with pytest.raises(ConfigError, match="stage_mode"):
        Composer().compose(sherlock, [], "Hi", stage_mode="loud", **kw)


def test_chinese_card_uses_chinese_template_and_brackets():
    card = get_card("sunwukong")
    note = StageNote(intent="praise", intent_score=0.5, emotion="proud", note="（翘起尾巴）")
    p = Composer().compose(card, [], "大圣好！", user_name="师父", stories=["孙悟空:「（挠头）俺老孙来也！」"],
                           note=note, budgets=Budgets(), count_tokens=approx_tokens)
    assert p.messages[0]["content"].startswith("你是孙悟空") and "（微微一笑）" in p.messages[0]["content"]
    assert p.messages[1]["content"].startswith("以下是孙悟空的经典桥段")
    assert p.messages[-1] == {"role": "assistant", "content": "（翘起尾巴）"}


def test_plain_baseline_has_no_retrieval_or_notes(sherlock):
    p = Composer().compose(sherlock, history(1), "Hi", user_name="Watson", stories=["x:「y」"],
                           lore=[Hit(0, "a", "lore text", constant=True)], memories=["m"], summary="s",
                           note=NOTE, plain=True, budgets=Budgets(), count_tokens=approx_tokens)
    assert [m["role"] for m in p.messages] == ["system", "user", "assistant", "user"]
    assert p.prefill == "" and "lore text" not in p.messages[0]["content"]
    assert "Style" not in p.messages[0]["content"] and "consulting detective" in p.messages[0]["content"]
    assert p.parts["stories"] == p.parts["lorebook"] == p.parts["memories"] == 0


def test_bad_history_is_one_clear_error(sherlock):
    with pytest.raises(ConfigError, match=r"history\[0\]"):
        Composer().compose(sherlock, [{"role": "wizard", "content": "x"}], "Hi", user_name="Watson",
                           budgets=Budgets(), count_tokens=approx_tokens)


def test_cache_friendly_puts_per_turn_parts_after_history(sherlock):
    kw = dict(user_name="Watson", note=NOTE, budgets=Budgets(), count_tokens=approx_tokens,
              stories=["Sherlock:「(nods) Data.」"], memories=["Watson likes tea."],
              lore=[Hit(1, "Moriarty", "The Napoleon of crime.")], cache_friendly=True)
    p = Composer().compose(sherlock, history(1), "Next?", **kw)
    roles = [m["role"] for m in p.messages]
    assert roles == ["system", "user", "assistant", "system", "system", "system", "user", "assistant"]
    assert "likes tea" not in p.messages[0]["content"]
    assert "likes tea" in p.messages[3]["content"] and "Classic scenes" in p.messages[4]["content"]
    assert "Napoleon" in p.messages[5]["content"]
    q = Composer().compose(sherlock, history(2), "And then?", **kw)
    assert q.messages[:3] == p.messages[:3]  # system + history: a stable prefix


def test_history_is_trimmed_in_chunks_so_its_start_moves_rarely():
    from roleplay.compose.composer import history_start

    sizes = [10] * 30
    starts = [history_start(sizes[:n], 100, trim_to=0.6) for n in range(1, 31)]
    assert all(sum(sizes[s:n]) <= 100 for s, n in zip(starts, range(1, 31)))  # budget always holds
    moves = sum(a != b for a, b in zip(starts, starts[1:]))
    assert starts[10] == 5 and starts[11:15] == [5] * 4  # 11 turns overflow: down to 6 (60 tokens) at once
    assert moves <= 6  # vs. 20 moves when dropping one turn at a time
    assert [history_start(sizes[:n], 100, trim_to=1.0) for n in range(1, 31)] == [max(0, n - 10) for n in range(1, 31)]
    assert history_start([10, 500], 100) == 2 and history_start([500, 10], 100) == 1  # a turn over budget goes


def test_memories_keep_a_stable_order_whatever_their_relevance_order(sherlock):
    from types import SimpleNamespace as S

    c = Composer()
    kw = dict(user_name="Watson", note=None, budgets=Budgets(), count_tokens=approx_tokens)
    a = c.compose(sherlock, [], "one", memories=["Watson likes tea.", "Watson has a dog."], **kw)
    b = c.compose(sherlock, [], "two", memories=["Watson has a dog.", "Watson likes tea."], **kw)
    assert a.messages[0] == b.messages[0]
    old, new = S(text="Watson was born in 1852.", created=1.0), S(text="Watson lost his watch.", created=9.0)
    m = c.compose(sherlock, [], "three", memories=[new, old], **kw)
    system = m.messages[0]["content"]
    assert system.index("born in 1852") < system.index("lost his watch") and m.memories[0].startswith("Watson was")
    # The budget still keeps the most relevant ones (given first), not the oldest.
    tight = c.compose(sherlock, [], "four", memories=[new, old],
                      **{**kw, "budgets": Budgets(memories=approx_tokens(new.text))})
    assert tight.memories == [new.text]
