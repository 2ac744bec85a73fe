"""End to end on the real CPU model: a 3-item, 2-turn suite, both judge methods, resume, CLI.

Few tokens per reply (max_tokens 16) keep it to a couple of minutes on 2 cores. The runs
share one ROLEPLAY_HOME (one Chroma index of the cards) through a module fixture.
"""
from __future__ import annotations

import json
import shutil

import pytest

from roleplay.config import Budgets, Settings
from roleplay.evaluation.runner import RESULTS, RunConfig, Runner, read_results
from roleplay.evaluation.suite import Suite, load_suite

TOKENS = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory, backend):
    home = tmp_path_factory.mktemp("evalhome")
    # small prompt budgets: the 135M model on 2 shared cores pays for every prompt token
    settings = Settings.from_env(home=home, budgets=Budgets(stories=220, lorebook=40, history=120,
                                                            memories=0, summary=0))
    bundled = {i.id: i for i in load_suite("bundled").items}
    items = [bundled["sherlock-client"], bundled["sunwukong-bajie"], bundled["ada-pim"]]
    # one probe keeps the knowledge-boundary path covered without a step per item
    items[0] = items[0].model_copy(update={"probes": items[0].probes[:1]})
    suite = Suite(name="mini", turns=2, items=items)
    return settings, suite, tmp_path_factory.mktemp("runs")


def _run(env, name, **cfg):
    settings, suite, root = env
    config = RunConfig(max_tokens=TOKENS, batch_size=8, **cfg)
    runner = Runner(suite, config, root / name, settings=settings, progress=False)
    runner.run()
    return runner, root / name


@pytest.fixture(scope="module")
def json_run(env):
    # few judge tokens: the verdict object is prefilled and parsed even when cut short
    return _run(env, "json", judge={"method": "json", "max_tokens": 24, "retries": 1, "user_max_tokens": 12},
                both_orders=0.0)


@pytest.fixture(scope="module")
def logprob_run(env):
    return _run(env, "logprob", judge={"method": "logprob", "user_max_tokens": 12}, both_orders=0.5)


def _check_turns(records):
    assert len(records) == 3
    for rec in records:
        assert rec["systems"] == ["engine", "plain"]
        assert 1 <= len(rec["turns"]) <= 2
        for t in rec["turns"]:
            v = t["verdict"]
            # every turn has a verdict or a counted failure
            assert (v["winner"] in ("A", "B", "tie")) != v["failed"]
            assert v["raw"] and v["attempts"] >= 1
            assert sorted(t["order"]) == ["engine", "plain"]
            assert t["continued_with"] in ("engine", "plain")
            assert t["user"].strip()
            for s in ("engine", "plain"):
                r = t["replies"][s]
                assert r["prompt"] and r["prompt"][0]["role"] == "system"
                assert set(r["metrics"]) >= {"has_note", "language_ok", "ooc"}


def test_json_judge_end_to_end(json_run):
    runner, out = json_run
    records = read_results(out)
    _check_turns(records)
    # batched: several replies per backend call, not one at a time
    assert runner.stats["reply_calls"] < runner.stats["replies"]
    # the engine builds a richer prompt than the plain baseline and retrieves canon lines
    by_item = {r["item"]: r for r in records}
    t0 = by_item["sherlock-client"]["turns"][0]["replies"]

    def size(prompt):
        return sum(len(m["content"]) for m in prompt)

    assert size(t0["engine"]["prompt"]) > size(t0["plain"]["prompt"])
    assert t0["engine"]["retrieval"] and t0["plain"]["retrieval"] == []
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    (c,) = summary["comparisons"]
    turns = sum(len(r["turns"]) for r in records)
    assert c["wins"] + c["losses"] + c["ties"] + c["failures"] == turns == summary["turns"]
    assert summary["judge"]["failures"] == c["failures"]
    probe = by_item["sherlock-client"]["probes"][0]
    assert set(probe["replies"]) == {"engine", "plain"}
    for r in probe["replies"].values():
        assert set(r["probe"]) == {"rule_pass", "judge_pass", "pass"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Win rates" in md and "| engine | plain | 3 |" in md and "## Automatic metrics" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<table>" in html and "data:image/png;base64," in html


def test_logprob_judge_always_gives_a_verdict(logprob_run):
    _runner, out = logprob_run
    records = read_results(out)
    _check_turns(records)
    for rec in records:
        for t in rec["turns"]:
            assert not t["verdict"]["failed"] and set(t["verdict"]["logprobs"]) == {"A", "B"}
            assert t["user_source"] in ("suite", "simulator", "fallback")
    # the second turn's user message was written by the simulated user (batched generation)
    assert all(r["turns"][1]["user_source"] in ("simulator", "fallback") for r in records)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["comparisons"][0]["failures"] == 0
    assert summary["position_bias"]["first_position_rate"] is not None


def test_resume_skips_finished_items(env, logprob_run):
    _runner, out = logprob_run
    settings, suite, root = env
    copy = root / "resume"
    shutil.copytree(out, copy)
    lines = (copy / RESULTS).read_text(encoding="utf-8").splitlines()
    # keep two finished items and a torn half line, as after a crash mid-write
    (copy / RESULTS).write_text("\n".join(lines[:2]) + "\n" + lines[2][:40], encoding="utf-8")
    config = RunConfig(max_tokens=TOKENS, batch_size=8, both_orders=0.5,
                       judge={"method": "logprob", "user_max_tokens": 12})
    runner = Runner(suite, config, copy, settings=settings, progress=False)
    runner.run()
    records = read_results(copy)
    assert [r["key"] for r in records[:2]] == [json.loads(x)["key"] for x in lines[:2]]
    assert len(records) == 3 and len({r["key"] for r in records}) == 3
    # only the missing item was played: 2 systems x (its turns + its probes)
    assert runner.stats["replies"] == 2 * (len(records[2]["turns"]) + len(records[2]["probes"]))
    again = Runner(suite, config, copy, settings=settings, progress=False)
    again.run()
    assert again.stats["replies"] == 0 and len(read_results(copy)) == 3
    # a different config must not mix into this folder
    from roleplay.errors import ConfigError

    with pytest.raises(ConfigError, match="different settings"):
        Runner(suite, config.model_copy(update={"seed": 5}), copy, settings=settings, progress=False).run()


def test_score_mode_rates_each_reply(env):
    settings, suite, root = env
    small = Suite(name="one", turns=1, items=suite.items[2:3])
    config = RunConfig(mode="score", dimensions=["fluency", "persona_utterance"], max_tokens=TOKENS,
                       judge={"method": "logprob", "user_max_tokens": 12}, probes=False, style_similarity=False)
    Runner(small, config, root / "score", settings=settings, progress=False).run()
    (rec,) = read_results(root / "score")
    scores = rec["turns"][0]["scores"]
    for s in ("engine", "plain"):
        assert set(scores[s]["scores"]) == {"fluency", "persona_utterance"}
        assert all(1.0 <= v <= 5.0 for v in scores[s]["scores"].values())
    md = (root / "score" / "report.md").read_text(encoding="utf-8")
    assert "Mean judge scores" in md and "persona_utterance" in md


def test_cli_eval_and_report(env, capsys, monkeypatch):
    from roleplay.cli import main

    settings, _suite, root = env
    import roleplay.cli as cli

    monkeypatch.setattr(cli, "settings_from_args", lambda _args: settings)
    out = root / "cli"
    rc = main(["eval", "bundled", "--limit", "1", "--turns", "1", "--max-tokens", "4", "--no-probes",
               "--no-progress", "-o", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["matches"] == 1 and summary["comparisons"][0]["system"] == "engine"
    (out / "report.md").unlink()
    assert main(["eval", "report", str(out)]) == 0
    assert "## Win rates" in (out / "report.md").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", "no-such-suite.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no such file" in err and "\n" not in err
    assert main(["eval", "bundled", "--candidate", "bogus"]) == 2
    assert "unknown system 'bogus'" in capsys.readouterr().err
