"""The benchmark readers on sample files written in each benchmark's published format.

tests/data/eval/ holds our own small samples (original text) laid out exactly like
CharacterEval's data folder, RoleBench's JSONL (+ desc.json), the CoSER test set and a
CharacterBench file. One run goes through the real CPU model; the others use a named
stand-in system so the reading and scoring are checked without generation cost.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from roleplay.errors import ConfigError
from roleplay.evaluation.benchmarks import (benchmark_run, first_line, read_benchmark, read_characterbench,
                                            read_charactereval, read_coser, read_rolebench, strip_thoughts)
from roleplay.evaluation.reference import Generated, RefItem

DATA = Path(__file__).parent / "data" / "eval"


class EchoReference:
    """Stand-in system: answers with the reference (or a fixed line when there is none), plus a second line."""

    name = "echo"

    def generate(self, items: list[RefItem], *, max_tokens: int, seed: int) -> list[Generated]:
        return [Generated(text=(i.reference or "好的！") + "\nextra line") for i in items]


def test_charactereval_folder(settings, tmp_path):
    items = read_charactereval(DATA / "charactereval")
    assert [i.id for i in items] == ["charactereval:101", "charactereval:102", "charactereval:203"]
    first = items[0]
    assert first.card.name == "沈铁匠" and first.card.language == "zh"
    assert "嘴硬心软" in first.card.persona                      # the profile mapping became the persona
    assert first.user_name == "阿禾" and first.user_text == "哪能呢，就割了两亩麦子。"
    assert [m["role"] for m in first.history] == ["user", "assistant"]
    assert first.history[1]["content"].startswith("拿来我瞧瞧")
    assert items[1].others == ["货郎"] and items[1].history[0]["name"] == "货郎"
    assert items[0].source["metrics"] == [["Utterance", "言语一致性"], ["Coherence", "对话连贯性"]]
    assert items[2].card.persona.startswith("柳三娘")              # a plain-text profile works too
    assert first_line("第一行\n第二行") == "第一行"
    # the generation file its scripts read: the records plus model_output (first line only)
    run = benchmark_run(f"charactereval:{DATA / 'charactereval'}", systems=[EchoReference()], settings=settings,
                        out_dir=tmp_path / "ce")
    run.run()
    gen = json.loads((tmp_path / "ce" / "generation-echo.jsonl").read_text(encoding="utf-8"))
    assert [g["id"] for g in gen] == [101, 102, 203]
    assert all(g["model_output"] == "好的！" and "context" in g and "metrics" not in g for g in gen)


def test_charactereval_errors_name_the_file_and_record(tmp_path):
    bad = tmp_path / "ce"
    shutil.copytree(DATA / "charactereval", bad)
    data = json.loads((bad / "test_data.jsonl").read_text(encoding="utf-8"))
    data[1]["role"] = "无名氏"
    (bad / "test_data.jsonl").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"test_data.jsonl: record 1 \(id 102\): role '无名氏' has no entry"):
        read_charactereval(bad)
    (bad / "id2metric.jsonl").write_text("{oops", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"id2metric.jsonl:1: invalid JSON"):
        read_charactereval(bad)
    with pytest.raises(ConfigError, match="not a folder"):
        read_charactereval(bad / "test_data.jsonl")


def test_rolebench_scores_rouge_l_against_the_answer(settings, tmp_path):
    items = read_rolebench(DATA / "rolebench" / "test.jsonl")
    assert len(items) == 3 and items[0].history == [] and items[0].card.language == "en"
    assert "schooner" in items[0].card.persona                   # description from desc.json
    assert items[0].reference.startswith("Because the one time")
    summary = benchmark_run(f"rolebench:{DATA / 'rolebench' / 'test.jsonl'}", systems=[EchoReference()],
                            settings=settings, out_dir=tmp_path / "rb").run()
    rouge = summary["metrics"]["echo"]["rouge_l"]
    assert rouge["n"] == 3 and 0.9 < rouge["mean"] < 1.0          # the reference plus "extra line"
    line = json.loads((DATA / "rolebench" / "test.jsonl").read_text().splitlines()[0])
    del line["generated"]
    (tmp_path / "x.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ConfigError, match=r"x.jsonl:1: field `generated`"):
        read_rolebench(tmp_path / "x.jsonl")


def test_coser_replays_with_thoughts_hidden_and_actions_visible():
    items = read_coser(DATA / "coser_test_set.json", turns=2)
    assert [i.id for i in items] == ["coser:0:1", "coser:0:2", "coser:1:1"]
    one = items[0]
    assert one.card.name == "Maren" and "trusts tools" in one.card.persona and "relight" in one.card.persona.lower()
    assert "lamp room" in one.card.scenario and "The Lantern Keepers" in one.card.scenario
    assert one.user_name == "Tobiah" and "[" not in one.user_text and one.user_text.startswith("(grips the railing)")
    assert one.reference.startswith("(already unscrewing the burner)") and "[" not in one.reference
    assert items[1].card.name == "Tobiah" and items[1].user_name == "Maren"
    assert items[1].history == [{"role": "assistant", "name": "Tobiah", "content": "(grips the railing) Maren, it's out! The whole lamp's gone dark!"}]
    assert strip_thoughts("[secret] (nods) Yes.") == "(nods) Yes."
    assert len(read_coser(DATA / "coser_test_set.json", limit=1)) == 3  # default: 3 cut points per scene


def test_characterbench_dialogues(tmp_path):
    items = read_characterbench(DATA / "characterbench_test.json", turns=1)
    final, earlier, en_final, en_earlier = items
    assert final.reference is None and final.user_text == "哈哈，那你最拿手的面包是哪一种？"
    assert final.history[0] == {"role": "assistant", "name": "乔乔", "content": "欢迎光临！今天的海盐面包刚出炉哦！"}
    assert earlier.reference.startswith("手机？") and earlier.user_text.endswith("订个闹钟？")
    assert en_final.card.language == "en" and en_final.history[0]["role"] == "user"  # "N/A" greeting dropped
    assert en_earlier.reference.startswith("Forty-one winters")
    broken = json.loads((DATA / "characterbench_test.json").read_text(encoding="utf-8"))
    broken[0]["dialogue"][1]["speaker"] = "路人"
    (tmp_path / "cb.json").write_text(json.dumps(broken, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cb.json: dialogue 0: dialogue\[1\].speaker '路人'"):
        read_characterbench(tmp_path / "cb.json")


def test_unknown_prefix_is_one_clear_error():
    with pytest.raises(ConfigError, match="unknown benchmark 'charbench:x'"):
        read_benchmark("charbench:x")


def test_charactereval_through_the_real_engine(tmp_path, backend, monkeypatch, capsys):
    """CLI end to end on the CPU model: plain vs engine, two records, few tokens."""
    from roleplay.cli import main

    out = tmp_path / "run"
    code = main(["eval", f"charactereval:{DATA / 'charactereval'}", "--systems", "engine,plain", "--limit", "2",
                 "--max-tokens", "8", "--no-progress", "-o", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 2 and set(summary["metrics"]) == {"engine", "plain"}
    assert "semantic" not in summary["metrics"]["engine"]          # CharacterEval has no reference line
    gen = json.loads((out / "generation-engine.jsonl").read_text(encoding="utf-8"))
    assert len(gen) == 2 and all("\n" not in g["model_output"] for g in gen)
