"""Canon continuation: the method checked on planted systems, then leave-one-scene-out on the real engine.

The planted systems are named stand-ins (they are the experiment, not a fake engine): one
returns the real line with small noise, one returns a line some other speaker said. The
metrics, intervals and the paired test must rank them — that is what "the method works"
means. The real-engine test uses the CPU model with a few tokens per reply.
"""
from __future__ import annotations

import json

import pytest

from roleplay.cards.library import get_card
from roleplay.config import Budgets, Settings
from roleplay.evaluation.canon import Attributor, canon_run, cut_points, scene_lines
from roleplay.evaluation.reference import Generated, RefItem
from roleplay.evaluation.stats import paired_comparison, sign_test


class NoisyCanon:
    """Planted stand-in: the real next line, one word (zh: one character) dropped, one added."""

    name = "noisy-canon"

    def generate(self, items: list[RefItem], *, max_tokens: int, seed: int) -> list[Generated]:
        out = []
        for n, item in enumerate(items):
            ref = item.reference or ""
            if item.card.language.startswith("zh"):
                cut = n % max(1, len(ref))
                text = ref[:cut] + ref[cut + 1:] + "啊"
            else:
                words = ref.split()
                del words[n % len(words)]
                text = " ".join(words + ["indeed"])
            out.append(Generated(text=text))
        return out


class OtherSpeaker:
    """Planted stand-in: a line said by someone else in the character's corpus (never the character)."""

    name = "other-speaker"

    def generate(self, items: list[RefItem], *, max_tokens: int, seed: int) -> list[Generated]:
        out = []
        for n, item in enumerate(items):
            pool = [ln.text for _src, text in item.card.all_stories() for ln in scene_lines(text)
                    if ln.speaker not in item.card.names() and not ln.speaker.startswith("旁白")
                    and ln.speaker.lower() != item.card.name.split()[0].lower()]
            out.append(Generated(text=pool[(7 * n) % len(pool)]))
        return out


def test_planted_systems_are_ranked_with_intervals_that_exclude_zero(settings, tmp_path):
    run = canon_run(["sherlock", "daiyu"], systems=[NoisyCanon(), OtherSpeaker()], n=12, settings=settings,
                    out_dir=tmp_path / "planted")
    summary = run.run()
    assert summary["items"] == 24 and summary["groups"] >= 20
    comp = summary["comparisons"][0]
    assert comp["system"] == "noisy-canon" and comp["baseline"] == "other-speaker"
    for key in ("semantic", "rouge_l", "chrf", "attributed"):
        pc = comp["metrics"][key]
        assert pc["diff"] > 0, key
        assert pc["ci"][0] > 0, (key, pc)           # the interval excludes zero
        assert pc["p_sign"] < 0.01, (key, pc)
        assert pc["better"] is True, key
        noisy, other = summary["metrics"]["noisy-canon"][key], summary["metrics"]["other-speaker"][key]
        assert noisy["ci"][0] <= noisy["mean"] <= noisy["ci"][1]
        assert noisy["ci"][0] > other["ci"][1], key  # the per-system intervals do not even overlap
    rank = comp["metrics"]["attribution_rank"]
    assert rank["diff"] < 0 and rank["ci"][1] < 0 and rank["better"] is True  # lower rank is better
    # the files: every reply recorded once, a report that names both systems
    lines = (tmp_path / "planted" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 48 and len({json.loads(x)["key"] for x in lines}) == 48
    report = (tmp_path / "planted" / "report.md").read_text(encoding="utf-8")
    assert "noisy-canon minus other-speaker" in report and "ROUGE-L" in report


def test_a_rerun_resumes_and_other_settings_are_refused(settings, tmp_path):
    out = tmp_path / "resume"
    first = canon_run(["sherlock"], systems=[NoisyCanon(), OtherSpeaker()], n=3, settings=settings, out_dir=out)
    first.run()
    before = (out / "results.jsonl").read_text(encoding="utf-8")
    canon_run(["sherlock"], systems=[NoisyCanon(), OtherSpeaker()], n=3, settings=settings, out_dir=out).run()
    assert (out / "results.jsonl").read_text(encoding="utf-8") == before  # nothing generated twice
    from roleplay.errors import ConfigError

    with pytest.raises(ConfigError, match="different settings"):
        canon_run(["sherlock"], systems=[NoisyCanon(), OtherSpeaker()], n=4, settings=settings, out_dir=out).run()


def test_cut_points_are_spread_over_scenes_and_end_before_the_characters_turn(settings):
    card = get_card("sunwukong", settings)
    cuts = cut_points(card, n=10, seed=3)
    assert len(cuts) == 10 and len({c.group for c in cuts}) == 10  # one per scene first
    assert cut_points(card, n=10, seed=3)[0].id == cuts[0].id      # reproducible
    for c in cuts:
        assert c.exclude == [c.group.split(":", 1)[1]]
        assert c.user_name not in card.names() and c.reference
        assert all(m["name"] != c.user_name or m["role"] == "user" for m in c.history)
    with pytest.raises(Exception, match="at least 1"):
        cut_points(card, n=0)


def test_attribution_recognises_the_characters_own_lines(settings):
    from roleplay.store.embeddings import get_embedder

    emb = get_embedder()
    card = get_card("sherlock", settings)
    cuts = cut_points(card, n=15)
    att = Attributor(card, embedder=emb)
    own = [att.rank(v, exclude=c.exclude) for v, c in zip(emb.embed([c.reference for c in cuts]), cuts)]
    watson = [att.rank(v, exclude=c.exclude) for v, c in zip(emb.embed([c.user_text for c in cuts]), cuts)]
    assert sum(r["attributed"] for r in own) >= 12
    assert sum(r["attributed"] for r in watson if r) <= 5


def test_statistics_helpers():
    assert sign_test([1, 1, 1, 1, 1, 1, -1]) == pytest.approx(0.125)
    pc = paired_comparison([1.0, 0.9, 0.8, 0.7], [0.1, 0.2, 0.1, 0.0], ["a", "a", "b", "c"])
    assert pc["ci"][0] > 0 and pc["wins"] == 4 and pc["significant"]
    flat = paired_comparison([0.5, 0.4], [0.4, 0.5])
    assert not flat["significant"]


@pytest.fixture(scope="module")
def small_settings(tmp_path_factory):
    home = tmp_path_factory.mktemp("canonhome")
    return Settings.from_env(home=home, budgets=Budgets(stories=400, lorebook=40, history=150, memories=0, summary=0))


def test_leave_one_scene_out_on_the_real_engine(small_settings, backend, tmp_path):
    """The scene under test never reaches the prompt; without the exclusion it would."""
    from roleplay.engine import EngineOptions, Turn
    from roleplay.evaluation.reference import EngineSystem, RefRun
    from roleplay.evaluation.systems import SystemPool, resolve_system
    from roleplay.store.scenes import build_items

    settings = small_settings
    card = get_card("sherlock", settings)
    system = EngineSystem(resolve_system("engine"), SystemPool(settings))  # get_backend shares the loaded model
    engine = system.engine
    cuts = cut_points(card, n=6, seed=1)
    scene_ids = {c.id: {it.id for it in build_items([(c.exclude[0], dict(card.all_stories())[c.exclude[0]])])[0]}
                 for c in cuts}
    # positive control: without leaving the scene out, retrieval finds it for some cut points
    found = 0
    for c in cuts:
        prompt = engine.prepare(Turn(card, c.history, c.user_text, user_name=c.user_name, others=c.others,
                                options=EngineOptions(story_reuse=0.0)))
        found += bool({s.id for s in prompt.stories} & scene_ids[c.id])
    assert found >= 2
    run = RefRun(name="loso", items=cuts, systems=[system],
                 out_dir=tmp_path / "loso", max_tokens=4)
    summary = run.run()
    records = [json.loads(x) for x in (tmp_path / "loso" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for rec in records:
        item = rec["item"]
        assert rec["story_ids"], item                           # retrieval ran…
        assert not set(rec["story_ids"]) & scene_ids[item], item  # …and never returned the held-out scene
        assert item.split(":", 1)[1].rsplit(":", 1)[0] not in rec["story_sources"]
    assert summary["metrics"]["engine"]["semantic"]["n"] == 6


def test_the_eval_tab_shows_a_canon_report(tmp_path, backend):
    """The web UI's Eval tab reads a canon run folder (made here by the planted systems)."""
    from gradio_client import Client

    from support import running_webui

    home = tmp_path / "ui-home"
    home.mkdir()
    with running_webui(home, backend) as (url, settings):
        canon_run(["ada"], systems=[NoisyCanon(), OtherSpeaker()], n=4, settings=settings,
                  out_dir=settings.home / "runs" / "planted").run()
        client = Client(url, verbose=False)
        assert "/eval_canon" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        report, *_ = client.predict("planted", api_name="/eval_report")
    assert "noisy-canon minus other-speaker" in report and "semantic sim." in report


def test_cli_canon_on_the_real_model(tmp_path, backend, capsys):
    from roleplay.cli import main

    out = tmp_path / "cli"
    assert main(["eval", "canon", "sunwukong", "--systems", "plain,no-retrieval", "--n", "2", "--max-tokens", "4",
                 "--no-progress", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 2 and summary["characters"] == ["sunwukong"]
    assert summary["metrics"]["plain"]["chrf"]["n"] == 2
    assert summary["comparisons"][0]["system"] == "plain"
    assert main(["eval", "report", str(out), "--json"]) == 0          # a reference run reports from its summary
    assert json.loads(capsys.readouterr().out)["items"] == 2
    assert main(["eval", "canon"]) == 2
    assert "name the characters" in capsys.readouterr().err
    assert main(["eval", "canon", "sherlock", "--systems", "engine,bogus", "-o", str(tmp_path / "x")]) == 2
    assert "unknown system 'bogus'" in capsys.readouterr().err


def test_a_large_corpus_is_sampled_not_read_whole(monkeypatch):
    """Hundreds of scenes: cut points spread one per scene, the classifier's lines capped per speaker."""
    import random

    from roleplay.cards.schema import Character
    from roleplay.evaluation import canon
    from roleplay.store.embeddings import get_embedder

    rng = random.Random(0)
    words = "fog lamp river stone watch letter key door night tea violin case".split()
    stories = ["\n".join(f"{rng.choice(['Hero', 'Ann', 'Bob'])}:「{' '.join(rng.choices(words, k=6))}」"
                         for _ in range(8)) for _ in range(400)]
    card = Character(id="big", name="Hero", language="en", persona="A hero.", stories=stories)
    cuts = cut_points(card, n=30)
    assert len(cuts) == 30 and len({c.group for c in cuts}) == 30
    monkeypatch.setattr(canon, "MAX_LINES_PER_SPEAKER", 40)
    att = Attributor(card, embedder=get_embedder())
    assert list(att.count) == [40, 40, 40]           # 1,000+ lines per speaker, 40 embedded
    assert att.rank(att.total[att.speakers.index("Hero")] / 40, exclude=[]) is not None


def test_left_out_scenes_are_never_retrieved_and_the_budget_holds(settings):
    from roleplay.store.retriever import Retriever

    card = get_card("sherlock", settings)
    source, text = card.all_stories()[3]
    retriever = Retriever(settings)
    query = [line for line in text.splitlines()[:2]]
    plain = retriever.stories(card, query, budget_tokens=400)
    assert plain[0].source == source                        # the scene itself ranks first when allowed
    left_out = retriever.stories(card, query, budget_tokens=400, exclude_sources=[source])
    assert left_out and source not in {s.source for s in left_out}
    assert sum(s.tokens for s in left_out) <= 400
    assert len(retriever.stories(card, query, budget_tokens=400, k=2, exclude_sources=[source])) == 2
