"""The judge reliability gate, several judges voting, and the judge/user-simulator templates."""
from __future__ import annotations

import json

import pytest

from roleplay.cards.schema import Character
from roleplay.evaluation import metrics as M
from roleplay.evaluation.judge import Context, Verdict, pairwise_messages, vote
from roleplay.evaluation.report import judge_gate, summarize, write_report

EN = Character(id="t", name="Tess", language="en", persona="{{char}} is a tinker who talks to {{user}}.")
AB = ["engine", "plain"]


def _records(n_items: int, pick) -> list[dict]:
    """``pick(order, i) -> (winner, swap_winner)`` per turn; two turns per item, alternating order."""
    reply = {"text": "(nods) Fine.", "kind": "turn", "metrics": M.reply_metrics("(nods) Fine.", EN)}
    out = []
    for i in range(n_items):
        turns = []
        for t in range(2):
            a, b = AB if (i + t) % 2 == 0 else AB[::-1]
            w, sw = pick((a, b), i)
            turns.append({"turn": t, "user": "hi", "user_source": "simulator", "order": [a, b],
                          "verdict": {"winner": w, "failed": False, "attempts": 1, "winner_system": {"A": a, "B": b}[w]},
                          "swap": {"winner": sw, "failed": False, "winner_system": {"A": b, "B": a}[sw]},
                          "replies": {s: dict(reply, item=f"i{i}") for s in AB}, "continued_with": a})
        out.append({"key": f"i{i}::x", "item": f"i{i}", "character": "t", "language": "en", "mode": "pairwise",
                    "systems": AB, "turns": turns, "probes": []})
    return out


def test_a_judge_that_always_picks_a_is_flagged_and_names_no_winner(tmp_path):
    records = _records(12, lambda order, i: ("A", "A"))       # position decides everything
    s = summarize(records, {"systems": {"engine": {}, "plain": {}}})
    assert s["position_bias"]["first_position_rate"] == 1.0 and s["position_bias"]["agreement"] == 0.0
    assert s["gate"]["reliable"] is False and len(s["gate"]["reasons"]) == 2
    assert s["winner"] is None and s["headline"].startswith("Judge unreliable")
    assert "roleplay eval canon" in s["headline"]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "run.json").write_text(json.dumps({"suite": "t", "systems": {"engine": {}, "plain": {}},
                                                   "config": {"seed": 0}}))
    write_report(tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "**Judge unreliable" in md and "not shown | judge unreliable" in md
    assert "0.500" not in md.split("## Win rates")[1].split("##")[0]   # no win rate printed


def test_a_consistent_judge_passes_and_names_the_winner():
    def engine_wins(order, i):
        w = "A" if order[0] == "engine" else "B"
        if i % 4 == 3:  # the plain system wins a quarter of the items, in both orders
            w = "B" if w == "A" else "A"
        return w, ("B" if w == "A" else "A")              # the swapped verdict follows the reply
    s = summarize(_records(24, engine_wins), {"systems": {"engine": {}, "plain": {}}})
    assert s["gate"]["reliable"] is True and s["position_bias"]["agreement"] == 1.0
    assert s["winner"] == "engine" and s["headline"].startswith("engine beats plain")


def test_the_gate_thresholds():
    assert judge_gate({"first_position_rate": 0.81, "agreement": 0.9})["reliable"] is False
    assert judge_gate({"first_position_rate": 0.8, "agreement": 0.5})["reliable"] is True
    assert judge_gate({"first_position_rate": 0.6, "agreement": 0.49})["reliable"] is False
    assert judge_gate({"first_position_rate": None, "agreement": None})["reliable"] is None


def test_votes_take_the_majority_and_agreement_is_reported():
    assert vote([Verdict("A"), Verdict("B")]).winner == "tie"
    assert vote([Verdict(None, failed=True), Verdict(None, failed=True)]).failed
    assert vote([Verdict("B"), Verdict(None, failed=True), Verdict("B")]).winner == "B"
    records = _records(4, lambda order, i: ("A", "B"))
    for k, r in enumerate(records):
        for t in r["turns"]:
            t["verdict"]["votes"] = ["A", "A"] if k % 2 == 0 else ["A", "B"]
    s = summarize(records, {"systems": {"engine": {}, "plain": {}}})
    assert s["judges"]["judges"] == 2 and s["judges"]["unanimous"] == 0.5
    assert s["judges"]["pairwise_agreement"] == {"1-2": 0.5}


def test_judge_prompts_are_templates_with_the_card_macros_expanded():
    ctx = Context(card=EN.model_copy(update={"scenario": "<USER> visits {{Char}}'s workshop."}), user_name="Bo",
                  history=[{"role": "user", "name": "Bo", "content": "{{ 7*7 }} hello"}])
    msgs = pairwise_messages(ctx, "reply one", "reply two", method="json")
    system, body = msgs[0]["content"], msgs[1]["content"]
    assert "Tess is a tinker who talks to Bo." in system          # {{char}}/{{user}} expanded
    assert "Bo visits Tess's workshop." in system                 # <USER> and case variants too
    assert "{{ 7*7 }} hello" in body                              # data is never template source
    assert msgs[-1] == {"role": "assistant", "content": '{"winner": "'}


def test_two_judges_vote_on_the_real_model(tmp_path, backend):
    from roleplay.config import Budgets, Settings
    from roleplay.evaluation.runner import RunConfig, Runner
    from roleplay.evaluation.suite import Suite, load_suite

    settings = Settings.from_env(home=tmp_path / "home", budgets=Budgets(stories=150, lorebook=20, history=80,
                                                                         memories=0, summary=0))
    item = {i.id: i for i in load_suite("bundled").items}["sherlock-client"].model_copy(update={"probes": []})
    config = RunConfig(max_tokens=4, turns=1, both_orders=1.0, probes=False,
                       judge={"method": "logprob", "user_max_tokens": 6},
                       judges=[{"method": "json", "max_tokens": 12, "retries": 0}])
    Runner(Suite(name="vote", items=[item]), config, tmp_path / "run", settings=settings, progress=False).run()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (rec,) = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    votes = rec["turns"][0]["verdict"]["votes"]
    assert len(votes) == 2 and votes[0] in ("A", "B", "tie")      # the logprob judge always decides
    assert summary["judges"]["judges"] == 2 and summary["gate"]["reliable"] in (True, False)
    assert summary["headline"]
    with pytest.raises(Exception, match="pairwise verdicts only"):
        RunConfig(mode="score", judges=[{}]).resolved()
