"""Judge parsing, automatic metrics and the report, on fixed inputs (no model)."""
from __future__ import annotations

import json

import pytest

from roleplay.cards.schema import Character
from roleplay.evaluation import metrics as M
from roleplay.evaluation.judge import clean_user_text, parse_json_object, parse_verdict


@pytest.mark.parametrize("text, winner, next_user, finished", [
    ('{"winner": "A", "reason": "x", "next_user_message": "Hi", "scene_finished": false}', "A", "Hi", False),
    ('Sure!\n```json\n{"winner": "B", "next_user_message": "Go on"}\n```\nHope that helps', "B", "Go on", False),
    ("{'winner': 'model_b', 'next_round_user_speaks': 'ok', 'is_chat_finished': True}", "B", "ok", True),
    ('{winner: "tie", next_user_message: "hm",}', "tie", "hm", False),
    ('{"winner": "A", "reason": "it\'s in voice", "next_user_message": "Then what', "A", "Then what", False),
    ("The winner: B, because it stays in character.", "B", "", False),
])
def test_verdicts_parse_robustly(text, winner, next_user, finished):
    v = parse_verdict(text)
    assert v is not None
    assert (v["winner"], v["next_user"], v["finished"]) == (winner, next_user, finished)


@pytest.mark.parametrize("text", ["", "I like both.", '{"winner": "C"}', "{{{", '{"reason": "none"}'])
def test_unparseable_verdicts_are_none(text):
    assert parse_verdict(text) is None


def test_parse_json_object_takes_the_first_object():
    assert parse_json_object('x {"a": 1} y {"b": 2}') == {"a": 1}
    assert parse_json_object("no object") is None


def test_clean_user_text_strips_names_and_the_other_speaker():
    assert clean_user_text("Watson: Where to now?\n\nHolmes: Baker Street.", user_name="Watson",
                           char_name="Holmes") == "Where to now?"
    assert clean_user_text('"Tell me more." Holmes: no', user_name="W", char_name="Holmes") == "Tell me more."


EN = Character(id="x", name="Sherlock Holmes", language="en",
               stories=["Watson:「How?」\nSherlock:「(leans back) I observed.」"], greetings=["(nods) Hello."])
ZH = Character(id="y", name="孙悟空", language="zh", stories=["师父:「悟空」\n孙悟空:「（抓耳挠腮）师父莫慌！」"])
STAR = Character(id="z", name="Z", style={"action_style": "asterisk"})


def test_rule_metrics_on_fixed_strings():
    assert M.reply_metrics("(smiles) Elementary.", EN)["has_note"] is True
    assert M.style_conforms("(smiles) Yes. *waves*", EN) is False
    assert M.style_conforms("*waves* Hi", STAR) is True
    assert M.style_conforms("No notes here", EN) is None
    assert M.language_ok("（笑）师父莫慌，俺老孙来也！", "zh") and not M.language_ok("Hello there", "zh")
    assert M.language_ok("Hello there (小)", "en")
    assert M.ooc_leak("As an AI language model, I cannot") and M.ooc_leak("作为一个AI，我不能")
    assert not M.ooc_leak("(bows) At your service.")
    assert M.probe_pass("(frowns) A computer? I do not know the word.")
    assert M.probe_pass("（挠头）电脑？这是什么妖法，俺老孙不知道。")
    assert not M.probe_pass("As an AI, I don't know.")
    assert not M.probe_pass("The internet is a global network of computers.")
    assert M.distinct_n(["a b a b"], 1, "en") == 0.5
    assert M.distinct_n(["师父师父"], 2, "zh") == pytest.approx(2 / 3)
    assert M.repetition(["one two three four", "one two three four"], "en") == 1.0
    assert M.repetition(["one two three four", "five six seven eight"], "en") == 0.0
    assert M.card_lines(EN) == ["(leans back) I observed."]
    assert M.card_lines(ZH) == ["（抓耳挠腮）师父莫慌！"]


def test_style_similarity_prefers_the_cards_own_voice():
    sims = M.style_similarity(["(leans back) I observed it closely.", "（抓耳挠腮）师父莫慌！"], EN)
    assert sims is not None and sims[0] > sims[1]


def _rec(item, char, systems, verdicts, swap=None):
    turns = []
    for i, (winner, order) in enumerate(verdicts):
        a, b = order
        reply = {"text": "(nods) I do not know.", "kind": "turn", "item": item, "retrieval": ["card:0"],
                 "metrics": M.reply_metrics("(nods) I do not know.", EN)}
        v = {"winner": winner, "failed": winner is None, "attempts": 1,
             "winner_system": {"A": a, "B": b}.get(winner or "")}
        t = {"turn": i, "user": "hi", "user_source": "suite", "order": [a, b], "verdict": v,
             "replies": {s: dict(reply) for s in systems}, "continued_with": a}
        if swap and i == 0:
            t["swap"] = {"winner": swap, "failed": False, "winner_system": {"A": b, "B": a}[swap]}
        turns.append(t)
    return {"key": f"{item}::x", "item": item, "character": char, "language": "en", "mode": "pairwise",
            "systems": systems, "turns": turns, "probes": []}


def test_report_tables_from_known_records(tmp_path):
    from roleplay.evaluation.report import write_report

    ab = ["engine", "plain"]
    records = [
        _rec("i1", "sherlock", ab, [("A", ab), ("B", ab[::-1]), ("A", ab[::-1])], swap="B"),  # engine 2-1
        _rec("i2", "ada", ab, [("A", ab), (None, ab), ("tie", ab)]),  # engine 1-0, 1 failure, 1 tie
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn', encoding="utf-8")
    (tmp_path / "run.json").write_text(json.dumps({"suite": "t", "systems": {"engine": {"options": {}},
                                                   "plain": {"options": {"plain": True}}},
                                                   "config": {"seed": 0, "judge": {"method": "json"}}}))
    s = write_report(tmp_path)
    (c,) = s["comparisons"]
    assert (c["system"], c["wins"], c["losses"], c["ties"], c["failures"]) == ("engine", 3, 1, 1, 1)
    assert c["win_rate"] == 0.75 and c["ci"][0] <= 0.75 <= c["ci"][1]
    assert c["by_character"]["ada"]["win_rate"] == 1.0
    assert s["judge"]["failures"] == 1 and s["judge"]["verdicts"] == 6
    # swapped re-judgement picked B = engine in swapped order: agrees with the first verdict
    assert s["position_bias"]["both_orders"] == 1 and s["position_bias"]["agreement"] == 1.0
    assert s["metrics"]["engine"]["action_note_rate"] == 1.0
    assert s["metrics"]["engine"]["retrieval_hit_rate"] == 1.0 and s["metrics"]["plain"]["retrieval_hit_rate"] is None
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| engine | plain | 2 | 3 | 1 | 1 | 1 | 0.750 |" in md
    assert "## Automatic metrics (no judge)" in md and "135M" in md
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 2 and "<td>engine</td>" in html
    assert json.loads((tmp_path / "summary.json").read_text())["comparisons"][0]["wins"] == 3


def test_run_configs_and_systems_validate_with_clear_errors(tmp_path):
    from roleplay.errors import ConfigError
    from roleplay.evaluation.runner import RunConfig, load_run_config
    from roleplay.evaluation.systems import resolve_system

    p = tmp_path / "run.yaml"
    p.write_text("systems: [engine, {name: big, preset: no-stage, model: m}, plain]\nbaseline: plain\n"
                 "judge: {method: json}\nmode: pairwise\nturns: 2\n", encoding="utf-8")
    cfg = load_run_config(p)
    specs = cfg.resolved()
    assert [s.name for s in specs] == ["engine", "big", "plain"]
    assert specs[1].options == {"stage_mode": "off"} and specs[1].model == "m"
    assert resolve_system("plain@other").model == "other" and resolve_system("plain@other").options == {"plain": True}
    p.write_text("systemz: [engine]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run\.yaml: systemz: Extra inputs"):
        load_run_config(p)
    with pytest.raises(ConfigError, match="unknown system 'nope'"):
        RunConfig(systems=["engine", "nope"]).resolved()
    with pytest.raises(ConfigError, match="at least two systems"):
        RunConfig(systems=["engine"]).resolved()
    with pytest.raises(ConfigError, match="unknown dimension"):
        RunConfig(dimensions=["charm"]).resolved()
    # resuming needs the same settings; batch size and limit may change
    assert RunConfig(batch_size=2).fingerprint() == RunConfig(batch_size=8, limit=3).fingerprint()
    assert RunConfig(seed=1).fingerprint() != RunConfig().fingerprint()


def test_cli_options_become_a_run_config():
    import argparse

    from roleplay.cli.evaluate import build_config, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "bundled", "--candidate", "no-retrieval", "--method", "json",
                              "--turns", "2", "--mode", "score", "--dimensions", "fluency, empathy"])
    cfg = build_config(args)
    assert cfg.systems == ["no-retrieval", "plain"] and cfg.judge.method == "json"
    assert cfg.turns == 2 and cfg.mode == "score" and cfg.dimensions == ["fluency", "empathy"]


@pytest.mark.parametrize("text", [
    '{"winner": "A" or "B" or "tie", "reason": "one sentence", "next_user_message":',
    '{"winner": "<A, B or tie>", "reason": "<one sentence>"',
    'winner: A or B',
])
def test_an_echoed_format_line_is_a_failure_not_a_verdict(text):
    assert parse_verdict(text) is None
