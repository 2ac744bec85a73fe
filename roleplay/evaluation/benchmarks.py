"""Readers for published role-play benchmarks, as their files are released, into `RefItem`s.

``roleplay eval PREFIX:PATH`` names the format and the file (or folder):

- ``charactereval:DIR`` — CharacterEval's ``test_data.jsonl`` (a JSON *list* despite the
  name: ``id``, ``role``, ``context`` as ``说话人：台词`` lines), ``character_profiles.json``
  (role → profile, text or a mapping) and ``id2metric.jsonl`` (a JSON object: id →
  ``[[metric_en, metric_zh], …]``). Each record asks for the role's next line after the
  context. As the benchmark's own scripts do, only the first line of the output is kept;
  ``generation-<system>.jsonl`` is written in the shape its ``transform_format.py`` reads
  (the records plus ``model_output``), so CharacterRM can score it where it runs.
- ``rolebench:FILE`` — RoleBench JSONL: ``role``, ``question``, ``generated`` (reference
  answers; ``answer`` is read too), a ``description`` from the line or from ``desc.json``
  beside the file (role → description). Scored with ROUGE-L against the first answer.
- ``coser:FILE`` — the CoSER test set (a JSON list): ``book``, ``plot`` (``summary``,
  ``key_characters``), ``scenario``, ``key_characters`` (``name``, ``motivation``,
  ``thought``), ``character_profiles``, ``major_characters`` and ``dialogues``
  (``character``, ``message``). Replay at each major character's line with the original
  dialogue before it as history: ``[thoughts]`` are removed from the history and from the
  reference (hidden from others), ``(actions)`` stay. ``--turns`` bounds the cut points
  per scene.
- ``characterbench:FILE`` — CharacterBench JSON (a list): ``character_name``,
  ``character_profile``, ``user_name``, ``greeting``, ``dialogue[{turn, speaker, utterance}]``
  ending with the user's turn. The final turn has no reference (rule metrics only);
  earlier character turns are cut points with the written utterance as the reference
  (``--turns`` of them per dialogue, the latest first).

Trade-offs: every benchmark becomes the same item type and runs through one reference
runner (batched, resumable, ``--limit`` dialogues), so the metrics and statistics are the
same ones canon continuation reports; the benchmarks' own model judges (CharacterRM,
CharacterJudge, CoSER's critic prompts) are not run here. A malformed file stops with
one error naming the file, the record and the field.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cards.yaml_io import atomic_write
from ..config import Settings
from ..errors import ConfigError
from .reference import RefItem, RefRun, resolve_systems
from .suite import jsonl_objects, profile_character

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_THOUGHT = re.compile(r"\[[^\[\]]*\]")
ENVIRONMENT = "Environment"


def _lang(*texts: str) -> str:
    text = "".join(texts)
    return "zh" if len(_CJK.findall(text)) > 0.2 * max(1, len(text.strip())) else "en"


def _text(path: Path, *, what: str) -> str:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file ({what})")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save it as UTF-8") from None


def _load_json(path: Path, *, what: str) -> Any:
    try:
        return json.loads(_text(path, what=what))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None


def _load_jsonl(path: Path, *, what: str) -> list[tuple[int, dict]]:
    return jsonl_objects(_text(path, what=what), file=str(path))


def _field(obj: dict, key: str, *, where: str, kind: type = str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        want = "text" if kind is str else kind.__name__
        raise ConfigError(f"{where}: field `{key}` is missing or not {want}")
    return value


def _profile_text(profile: Any) -> str:
    if isinstance(profile, dict):
        return "\n".join(f"{k}：{v}" for k, v in profile.items() if str(v).strip())
    return str(profile or "").strip()


def _card(name: str, description: str, *, user: str, scene: str = "", language: str):
    return profile_character({"name": name, "description": description}, user_name=user, scene=scene,
                             language=language)


def _history(lines: list[tuple[str, str]], *, role: str, user: str) -> list[dict]:
    """``(speaker, text)`` lines as engine history: the role speaks as assistant, ``user`` as user."""
    out = []
    for who, text in lines:
        if who == role:
            out.append({"role": "assistant", "name": role, "content": text})
        elif who == user:
            out.append({"role": "user", "name": user, "content": text})
        else:
            out.append({"role": "assistant", "name": who, "content": text})
    return out


# ---------------------------------------------------------------- CharacterEval

def read_charactereval(folder: Path, *, limit: int | None = None) -> list[RefItem]:
    """Items from a CharacterEval data folder (see module doc)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; charactereval: takes the folder holding test_data.jsonl, "
                          "character_profiles.json and id2metric.jsonl")
    data = _load_json(folder / "test_data.jsonl", what="CharacterEval test data")
    profiles = _load_json(folder / "character_profiles.json", what="CharacterEval character profiles")
    metrics = _load_json(folder / "id2metric.jsonl", what="CharacterEval id → metrics")
    if not isinstance(data, list):
        raise ConfigError(f"{folder / 'test_data.jsonl'}: expected a JSON list of records")
    if not isinstance(profiles, dict) or not isinstance(metrics, dict):
        raise ConfigError(f"{folder}: character_profiles.json and id2metric.jsonl must be JSON objects")
    items: list[RefItem] = []
    cards: dict[str, Any] = {}
    for n, rec in enumerate(data[:limit] if limit else data):
        where = f"{folder / 'test_data.jsonl'}: record {n}"
        if not isinstance(rec, dict):
            raise ConfigError(f"{where}: expected an object with id, role, context")
        rid = rec.get("id")
        if rid is None:
            raise ConfigError(f"{where}: field `id` is missing")
        where += f" (id {rid})"
        role = _field(rec, "role", where=where)
        context = _field(rec, "context", where=where)
        if role not in profiles:
            raise ConfigError(f"{where}: role {role!r} has no entry in character_profiles.json")
        lines = []
        for k, raw in enumerate(context.split("\n")):
            if not raw.strip():
                continue
            if "：" not in raw:
                raise ConfigError(f"{where}: context line {k + 1} is not `说话人：台词`: {raw[:40]!r}")
            who, text = raw.split("：", 1)
            lines.append((who.strip(), text.strip()))
        if not lines or lines[-1][0] == role:
            raise ConfigError(f"{where}: the context must end with a line of someone other than {role}")
        user = lines[-1][0]
        if role not in cards:
            cards[role] = _card(role, _profile_text(profiles[role]), user=user, language="zh")
        card = cards[role].model_copy(update={"user_name": user})
        others = sorted({w for w, _ in lines} - {role, user})
        items.append(RefItem(id=f"charactereval:{rid}", card=card, history=_history(lines[:-1], role=role, user=user),
                             user_text=lines[-1][1], user_name=user, reference=None, group=f"charactereval:{rid}",
                             others=others, source={**rec, "metrics": metrics.get(str(rid), [])}))
    if not items:
        raise ConfigError(f"{folder / 'test_data.jsonl'}: no records")
    return items


def first_line(text: str) -> str:
    """The first line of a reply, as CharacterEval's ``transform_format.py`` keeps it."""
    return text.split("\n")[0]


def _export_charactereval(run: RefRun, rows: list[dict]) -> None:
    by_key = {(r["item"], r["system"]): r for r in rows}
    for s in run.systems:
        out = []
        for item in run.items:
            r = by_key.get((item.id, s.name))
            if r is not None and item.source is not None:
                rec = {k: v for k, v in item.source.items() if k != "metrics"}
                out.append({**rec, "model_output": first_line(r["text"])})
        atomic_write(run.out_dir / f"generation-{s.name}.jsonl", json.dumps(out, ensure_ascii=False, indent=4))


# ---------------------------------------------------------------- RoleBench

def read_rolebench(path: Path, *, limit: int | None = None) -> list[RefItem]:
    """Items from a RoleBench JSONL file (see module doc)."""
    path = Path(path)
    lines = _load_jsonl(path, what="RoleBench questions")
    descs: dict = {}
    desc_file = path.parent / "desc.json"
    if desc_file.is_file():
        descs = _load_json(desc_file, what="RoleBench role descriptions")
    items: list[RefItem] = []
    for n, obj in lines[:limit] if limit else lines:
        where = f"{path}:{n}"
        role = _field(obj, "role", where=where)
        question = _field(obj, "question", where=where)
        answers = obj.get("generated", obj.get("answer", obj.get("reference")))
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            raise ConfigError(f"{where}: field `generated` must be a list of reference answers")
        desc = str(obj.get("description") or obj.get("desc") or descs.get(role, "") or "").strip()
        if not desc:
            raise ConfigError(f"{where}: role {role!r} has no description; add `description` to the line "
                              f"or a desc.json (role → description) beside {path.name}")
        lang = _lang(question, answers[0])
        user = "用户" if lang == "zh" else "User"
        card = _card(role, desc, user=user, language=lang)
        items.append(RefItem(id=f"rolebench:{n}", card=card, history=[], user_text=question, user_name=user,
                             reference=answers[0], group=f"rolebench:{role}", source=obj))
    if not items:
        raise ConfigError(f"{path}: no records")
    return items


# ---------------------------------------------------------------- CoSER

def strip_thoughts(message: str) -> str:
    """A CoSER message as others see it: ``[inner thoughts]`` removed, ``(actions)`` kept.

    >>> strip_thoughts("[I must not show fear.] (straightens) Who goes there?")
    '(straightens) Who goes there?'
    """
    return re.sub(r"\s{2,}", " ", _THOUGHT.sub("", message)).strip()


def read_coser(path: Path, *, limit: int | None = None, turns: int | None = None) -> list[RefItem]:
    """Items from the CoSER test set (see module doc); ``turns`` cut points per scene at most."""
    path = Path(path)
    data = _load_json(path, what="CoSER test set")
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of scenes (the CoSER test set)")
    per_scene = turns or 3
    items: list[RefItem] = []
    for n, sc in enumerate(data[:limit] if limit else data):
        where = f"{path}: scene {n}"
        if not isinstance(sc, dict):
            raise ConfigError(f"{where}: expected an object")
        book = str(sc.get("book", "")).strip()
        scenario = _field(sc, "scenario", where=where)
        dialogues = _field(sc, "dialogues", where=where, kind=list)
        profiles = sc.get("character_profiles") or {}
        plot = sc.get("plot") or {}
        major = sc.get("major_characters") or [c.get("name") for c in sc.get("key_characters", []) if isinstance(c, dict)]
        lines: list[tuple[str, str]] = []
        for k, d in enumerate(dialogues):
            if not isinstance(d, dict) or not isinstance(d.get("character"), str) or not isinstance(d.get("message"), str):
                raise ConfigError(f"{where}: dialogues[{k}]: expected {{character, message}}")
            lines.append((d["character"].strip(), d["message"]))
        motivation = {c.get("name"): str(c.get("motivation") or "") for c in sc.get("key_characters", []) if isinstance(c, dict)}
        plot_desc = {c.get("name"): str(c.get("description") or "") for c in plot.get("key_characters", []) if isinstance(c, dict)}
        cuts = [k for k, (who, _m) in enumerate(lines) if k > 0 and who in major and who != ENVIRONMENT]
        for k in cuts[:per_scene]:
            role = lines[k][0]
            prev = lines[k - 1][0]
            user = prev
            persona = "\n\n".join(x for x in (plot_desc.get(role, ""), _profile_text(profiles.get(role, "")),
                                              ("Motivation: " + motivation[role]) if motivation.get(role) else "") if x)
            scene = "\n\n".join(x for x in ((f"From {book}." if book else ""), str(plot.get("summary") or ""), scenario) if x)
            lang = _lang(scenario, lines[k][1])
            card = _card(role, persona or role, user=user, scene=scene, language=lang)
            visible = [(w, strip_thoughts(m)) for w, m in lines[:k]]
            others = sorted({w for w, _ in lines} - {role, user})
            items.append(RefItem(id=f"coser:{n}:{k}", card=card,
                                 history=_history(visible[:-1], role=role, user=user),
                                 user_text=visible[-1][1], user_name=user, reference=strip_thoughts(lines[k][1]),
                                 group=f"coser:{n}", others=others, source={"scene": n, "line": k, "book": book}))
    if not items:
        raise ConfigError(f"{path}: no cut points (no major character speaks after another line)")
    return items


# ---------------------------------------------------------------- CharacterBench

def read_characterbench(path: Path, *, limit: int | None = None, turns: int | None = None) -> list[RefItem]:
    """Items from a CharacterBench file (see module doc)."""
    path = Path(path)
    data = _load_json(path, what="CharacterBench data")
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of dialogues")
    per = turns if turns is not None else 2
    items: list[RefItem] = []
    for n, sess in enumerate(data[:limit] if limit else data):
        where = f"{path}: dialogue {n}"
        if not isinstance(sess, dict):
            raise ConfigError(f"{where}: expected an object")
        name = _field(sess, "character_name", where=where)
        profile = _field(sess, "character_profile", where=where)
        user = str(sess.get("user_name") or "user")
        dialogue = _field(sess, "dialogue", where=where, kind=list)
        lines: list[tuple[str, str]] = []
        for k, d in enumerate(dialogue):
            if not isinstance(d, dict) or not isinstance(d.get("utterance"), str) or not isinstance(d.get("speaker"), str):
                raise ConfigError(f"{where}: dialogue[{k}]: expected {{turn, speaker, utterance}}")
            sp = d["speaker"].strip()
            who = name if sp in (name, "character", "Character") else user if sp in (user, "user", "User") else None
            if who is None:
                raise ConfigError(f"{where}: dialogue[{k}].speaker {sp!r} is neither {name!r} nor {user!r}")
            lines.append((who, d["utterance"]))
        if not lines or lines[-1][0] != user:
            raise ConfigError(f"{where}: the dialogue must end with the user's turn")
        greeting = str(sess.get("greeting") or "").strip()
        if greeting and greeting != "N/A":
            lines.insert(0, (name, greeting))
        lang = _lang(profile)
        card = _card(name, profile, user=user, language=lang)
        points = [len(lines)] + [k for k in range(len(lines) - 1, 0, -1)
                                 if lines[k][0] == name and lines[k - 1][0] == user][:per]
        for k in points:
            items.append(RefItem(id=f"characterbench:{n}:{k}", card=card,
                                 history=_history(lines[: k - 1], role=name, user=user),
                                 user_text=lines[k - 1][1], user_name=user,
                                 reference=lines[k][1] if k < len(lines) else None,
                                 group=f"characterbench:{n}",
                                 source={"dialogue": n, "turn": k, "data_source": sess.get("data_source")}))
    if not items:
        raise ConfigError(f"{path}: no dialogues")
    return items


READERS: dict[str, Callable[..., list[RefItem]]] = {
    "charactereval": read_charactereval, "rolebench": read_rolebench,
    "coser": read_coser, "characterbench": read_characterbench,
}
EXPORTS: dict[str, Callable[[RefRun, list[dict]], None]] = {"charactereval": _export_charactereval}


def read_benchmark(spec: str, *, limit: int | None = None, turns: int | None = None) -> tuple[str, list[RefItem]]:
    """``(kind, items)`` for ``PREFIX:PATH``."""
    kind, sep, where = spec.partition(":")
    if not sep or kind not in READERS or not where:
        raise ConfigError(f"unknown benchmark {spec!r}: use {', '.join(k + ':PATH' for k in READERS)}")
    path = Path(where).expanduser()
    if kind in ("coser", "characterbench"):
        return kind, READERS[kind](path, limit=limit, turns=turns)
    return kind, READERS[kind](path, limit=limit)


def benchmark_run(spec: str, *, systems: list[Any] | None = None, settings: Settings | None = None,
                  out_dir: str | Path | None = None, limit: int | None = None, turns: int | None = None,
                  max_tokens: int = 60, batch_size: int = 8, seed: int = 0, progress: bool = False,
                  embedder: Any = None) -> RefRun:
    """A `RefRun` over a benchmark file; call ``.run()``."""
    settings = settings or Settings.from_env()
    kind, items = read_benchmark(spec, limit=limit, turns=turns)
    live = resolve_systems(systems or ["engine", "plain"], settings, batch_size=batch_size)
    name = f"{kind}-{Path(spec.partition(':')[2]).stem or kind}"
    out = Path(out_dir) if out_dir else Path("runs") / name
    return RefRun(name=name, items=items, systems=live, out_dir=out, max_tokens=max_tokens, seed=seed,
                  batch_size=batch_size, embedder=embedder, progress=progress, export=EXPORTS.get(kind),
                  meta={"kind": kind, "source": spec})
