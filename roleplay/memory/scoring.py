"""Scoring extraction against a labelled set: precision, recall, F1, lost objects.

The labelled sets (``tests/data/memory/extraction_{en,zh}.yaml``) give, per message, the
values a correct fact must contain: ``facts`` (user facts), ``ended`` (those of them that
end an earlier fact, so the fact must be marked negated) and ``events`` (story promises).
A predicted fact is a true positive when its text contains an expected value of its kind
(case-insensitive), a false positive otherwise. ``lost_object`` counts false positives in
messages that do hold an expected value: a fact that was found but lost the word that
mattered ("The user loves playing." for "I love playing the piano"). ``wrong_negation``
counts ``ended`` values whose fact was found but not marked negated.

Used by tests/test_memory_extract.py and bench/memory.py, so both report the same figures.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .fact import Fact

SET_FILES = ("extraction_en.yaml", "extraction_zh.yaml")
#: Written after the rules were frozen, never used to tune them.
HELDOUT_FILES = ("heldout_en.yaml", "heldout_zh.yaml")


def load_labelled(folder: Path, files: Sequence[str] = SET_FILES) -> list[dict]:
    """Every labelled message of the sets in ``folder`` (``lang`` added from the file name)."""
    import yaml

    items: list[dict] = []
    for name in files:
        path = folder / name
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the labelled set: {exc}".splitlines()[0]) from None
        for i, item in enumerate(data or []):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ConfigError(f"{path}: item {i + 1} needs a `text` string")
            extra = set(item) - {"case", "text", "facts", "ended", "events"}
            if extra:
                raise ConfigError(f"{path}: item {i + 1} has unknown field(s) {sorted(extra)}; "
                                  "use case, text, facts, ended, events")
            items.append({"lang": name.split("_")[1].split(".")[0], "case": item.get("case", ""),
                          "text": item["text"], "facts": [str(v) for v in item.get("facts") or []],
                          "ended": [str(v) for v in item.get("ended") or []],
                          "events": [str(v) for v in item.get("events") or []]})
    return items


def score(items: Sequence[dict], predicted: Iterable[Sequence[Fact]]) -> dict[str, Any]:
    """P/R/F1 of ``predicted`` (facts per item, in order) against the labels."""
    tp = fp = fn = lost = wrong_neg = 0
    misses: list[str] = []
    extras: list[str] = []
    for item, facts in zip(items, predicted):
        for kind, values in (("fact", item["facts"]), ("event", item["events"])):
            mine = [f for f in facts if f.kind == kind]
            for v in values:
                hit = [f for f in mine if v.lower() in f.text.lower()]
                if hit:
                    tp += 1
                    if v in item["ended"] and not any(f.negated for f in hit):
                        wrong_neg += 1
                else:
                    fn += 1
                    misses.append(f"{item['text']} → {v}")
            for f in mine:
                if not any(v.lower() in f.text.lower() for v in values):
                    fp += 1
                    extras.append(f"{item['text']} → {f.text}")
                    if item["facts"] or item["events"]:
                        lost += 1
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f1, 3), "tp": tp, "fp": fp, "fn": fn,
            "lost_object": lost, "wrong_negation": wrong_neg, "misses": misses, "extras": extras}


# -- the long-horizon script ---------------------------------------------------------------
PAST_MARKS = ("(no longer true)", "（已不再如此）")


def load_script(path: Path) -> list[dict]:
    """The scripted sessions of ``tests/data/memory/long_horizon.yaml`` (validated)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the script: {exc}".splitlines()[0]) from None
    for n, session in enumerate(data or []):
        if not isinstance(session, dict) or not {"user", "character", "turns"} <= set(session):
            raise ConfigError(f"{path}: session {n + 1} needs user, character and turns")
        for t in session["turns"]:
            if isinstance(t, dict) and not ("say" in t or ("probe" in t and t.get("expect"))):
                raise ConfigError(f"{path}: session {n + 1}: a turn must be a string, {{say: …}} or "
                                  f"{{probe: …, expect: […]}}; got {t!r}")
    return data


def script_counts(script: list[dict]) -> dict[str, int]:
    turns = [t for s in script for t in s["turns"]]
    probes = [t for t in turns if isinstance(t, dict) and "probe" in t]
    return {"sessions": len(script), "user_turns": len(turns) - len(probes), "probes": len(probes),
            "updates": sum(1 for t in turns if isinstance(t, dict) and t.get("update")),
            "zh_turns": sum(1 for s in script for t in s["turns"] if any("\u4e00" <= ch <= "\u9fff" for ch in str(t)))}


def run_script(script: list[dict], *, settings: Any, store: Any, budget_tokens: int,
               count_tokens: Any = None, window: int = 3, recall_fn: Any = None) -> dict[str, Any]:
    """Play ``script`` through `remember` (rules only) and score `recall` at every probe.

    recall@budget: share of probes where a memory in the prompt holds an expected value
    (shown as current, or marked past for a ``past`` probe). stale rate: share of probes
    with ``stale`` values where a memory shown as current holds one of them. ``recall_fn``
    replaces `recall` (same keyword arguments; bench/memory.py passes a baseline).
    """
    from .recall import recall as default_recall
    from .store import remember

    recall = recall_fn or default_recall
    clock = 1_000_000_000.0
    hits = stale = with_stale = 0
    failures: list[str] = []
    for n, session in enumerate(script):
        user, character = session["user"], session["character"]
        recent: list[str] = []
        for i, turn in enumerate(session["turns"]):
            clock += 60.0
            source = f"script{n + 1}:{i + 1}"
            if isinstance(turn, dict) and "probe" in turn:
                text = turn["probe"]
                shown = recall(settings, user=user, character=character, conversation=recent[-window:] + [text],
                               budget_tokens=budget_tokens, count_tokens=count_tokens, store=store)
                current = [m.text for m in shown if not m.text.startswith(PAST_MARKS)]
                pool = [m.text for m in shown] if turn.get("past") else current
                ok = any(str(v).lower() in t.lower() for v in turn["expect"] for t in pool)
                hits += ok
                if not ok:
                    failures.append(f"miss: {text} → {turn['expect']} not in {current}")
                if turn.get("stale"):
                    with_stale += 1
                    bad = [t for t in current if any(str(v).lower() in t.lower() for v in turn["stale"])]
                    if bad:
                        stale += 1
                        failures.append(f"stale: {text} → {bad}")
            else:
                text = turn["say"] if isinstance(turn, dict) else turn
            remember(store, user, [character], text, source, at=clock)
            recent.append(text)
    probes = script_counts(script)["probes"]
    return {"recall_at_budget": round(hits / probes, 3) if probes else 0.0,
            "stale_rate": round(stale / with_stale, 3) if with_stale else 0.0,
            "probes": probes, "hits": hits, "stale_probes": stale, "probes_with_stale": with_stale,
            "failures": failures}
