"""`roleplay index` and `roleplay retrieve` end to end (in-process CLI, real store)."""
from __future__ import annotations

import json

from roleplay.cli import main

CARD_YAML = """\
id: clitest
name: Holmes
lorebook:
  - {name: Moriarty, keys: [Moriarty], content: "The Napoleon of crime."}
  - {name: Flat, constant: true, content: "221B Baker Street."}
stories:
  - |
    Watson:「Who is this Moriarty?」
    Holmes:「(lowers his voice) The Napoleon of crime, Watson.」
  - |
    Watson:「Tea?」
    Holmes:「(waves a hand) Later. The Persian slipper holds my tobacco.」
"""


def write_card(home):
    folder = home / "characters" / "clitest"
    folder.mkdir(parents=True)
    (folder / "character.yaml").write_text(CARD_YAML, encoding="utf-8")
    return folder


def test_index_json_and_noop(roleplay_home, capsys):
    write_card(roleplay_home)
    assert main(["index", "clitest", "--json"]) == 0
    out = capsys.readouterr()
    stats = json.loads(out.out)["characters"][0]
    assert stats["character"] == "clitest" and stats["added"] == 2 and stats["unchanged"] is False
    assert main(["index", "clitest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["characters"][0]["unchanged"] is True
    assert main(["index", "clitest"]) == 0
    assert "clitest: unchanged (2 items)" in capsys.readouterr().out


def test_index_all_cards_with_progress_on_stderr(roleplay_home, capsys, monkeypatch, tmp_path):
    import roleplay.config

    # Only the user's folder: indexing every bundled card is the quality test's job.
    monkeypatch.setattr(roleplay.config, "BUNDLED_CHARACTERS", tmp_path / "none")
    write_card(roleplay_home)
    broken = roleplay_home / "characters" / "broken"
    broken.mkdir()
    (broken / "character.yaml").write_text("id: broken\nname: [\n", encoding="utf-8")
    assert main(["index", "--json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert [s["character"] for s in data["characters"]] == ["clitest"]
    assert len(data["errors"]) == 1 and "broken" in data["errors"][0]  # reported, not fatal
    assert "index clitest" in out.err  # the tqdm bar went to stderr, stdout stayed JSON


def test_retrieve_shows_scores_and_why(roleplay_home, capsys):
    write_card(roleplay_home)
    assert main(["retrieve", "clitest", "Tell me about Moriarty", "-k", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    story = data["stories"][0]
    assert "Napoleon of crime" in story["text"] and story["source"] == "card:0"
    assert {"score", "vector_score", "keyword_score", "why", "tokens"} <= set(story)
    assert any("moriarty" in w for w in story["why"])
    assert [(h["name"], h["why"]) for h in data["lore"]] == [("Flat", ["constant entry"]),
                                                            ("Moriarty", ["key 'Moriarty'"])]
    assert main(["retrieve", "clitest", "tobacco", "--context", "hello", "--method", "keyword"]) == 0
    text = capsys.readouterr().out
    assert "#1 card:1" in text and "why: keywords tobacco" in text and "lore [1] Flat" in text


def test_retrieve_follows_the_retrieval_setting(roleplay_home, capsys, monkeypatch):
    write_card(roleplay_home)
    monkeypatch.setenv("ROLEPLAY_RETRIEVAL", "keyword")
    assert main(["retrieve", "clitest", "tobacco", "-k", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "keyword"
    why = data["stories"][0]["why"]
    assert any("tobacco" in w for w in why) and not any(w.startswith("vector") for w in why)
    assert main(["retrieve", "clitest", "tobacco", "-k", "1", "--json", "--method", "hybrid"]) == 0
    data = json.loads(capsys.readouterr().out)  # the flag wins
    assert data["method"] == "hybrid" and any(w.startswith("vector") for w in data["stories"][0]["why"])


def test_cli_errors_are_one_line(roleplay_home, capsys):
    assert main(["retrieve", "no-such-card", "hi"]) == 2
    assert main(["retrieve", "sherlock", "hi", "-k", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
