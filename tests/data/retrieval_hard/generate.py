"""Writes the hard retrieval set: two characters with long, noisy scenes, and the queries.

Run ``python tests/data/retrieval_hard/generate.py`` to rebuild ``wren/`` (English),
``qingya/`` (Chinese) and ``queries.yaml``; the output is committed, so the set is fixed
data and this script only documents how it was made (seeded: it writes the same bytes).

What makes it hard, on purpose (it mirrors real ChatHaruhi corpora):
- scenes are long (16–34 lines), with several speakers and narration, and most lines are
  small talk that has nothing to do with the scene's event;
- every scene is an (event, object, place) situation; 110 per character are query targets,
  and 360 distractors are other situations, most sharing one of the three with a target;
- near-duplicates: 30 copies with one line changed (collapsed at index time) and 20
  retellings of a target with other small talk (a second correct answer);
- queries paraphrase the situation ("contraband timepieces" for "smuggled clocks"; in
  same-language queries 30% of the object/place slots use the scene's own words) and
  30 per character are in the other language; some name a companion, in the query's
  language (布拉姆 for Bram), which the card's lorebook keys pair up.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vocab_en  # noqa: E402
import vocab_zh  # noqa: E402

TARGETS, DUPLICATES, RETELLINGS, DISTRACTORS = 110, 30, 20, 360
CROSS = 30
NEAR = 0.3  # share of same-language query slots worded as in the scene
PER_FILE = 100

CARDS = {
    "wren": dict(vocab=vocab_en, lang="en", card={
        "id": "wren", "name": "Wren Hale", "aliases": ["Wren", "Captain Hale", "雷恩"], "language": "en",
        "user_name": "Passenger",
        "persona": "Wren Hale skippers the river barge Heron through the city of Lowmarsh: dry, stubborn, "
                   "fair to her crew and rude to customs men.",
        "scenario": "A passenger on the Heron asks the captain about the old days on the river.",
        "lorebook": [
            {"keys": ["Bram", "布拉姆"], "content": "Bram Tolley, first mate of the Heron; big, slow-spoken."},
            {"keys": ["Ottilie", "奥蒂莉"], "content": "Ottilie Fenn, the Heron's engineer; swears at valves."},
            {"keys": ["Inspector Pike", "Pike", "派克督察", "派克"],
             "content": "Inspector Pike of the river customs; suspects everyone, Wren most."},
            {"keys": ["Sister Agnes", "艾格尼丝修女", "艾格尼丝"], "content": "Sister Agnes runs St. Brigid's orphanage."},
            {"keys": ["Jonah", "乔纳"], "content": "Jonah, the cabin boy, twelve and always hungry."},
            {"keys": ["Lady Vane", "维恩夫人"], "content": "Lady Cressida Vane, a rich client with secrets."},
            {"keys": ["Old Mag", "老玛格"], "content": "Old Mag reads fortunes at the Blue Anchor."},
        ]}),
    "qingya": dict(vocab=vocab_zh, lang="zh", card={
        "id": "qingya", "name": "沈青崖", "aliases": ["青崖", "沈姑娘", "Shen Qingya"], "language": "zh",
        "user_name": "客官",
        "persona": "沈青崖，临溪镇青崖镖局的女镖头，剑法利落，说话直爽，护短，最恨贪官。",
        "scenario": "一位客人在镖局里听沈青崖讲走镖的旧事。",
        "lorebook": [
            {"keys": ["陆九", "Lu Jiu"], "content": "陆九，沈青崖的结义兄弟，嗜酒的剑客。"},
            {"keys": ["阿蛮", "A-Man"], "content": "阿蛮，镖局里的小学徒，嘴快手快。"},
            {"keys": ["柳掌柜", "Innkeeper Liu"], "content": "柳掌柜，醉仙楼的老板，消息灵通。"},
            {"keys": ["慧明方丈", "慧明", "Abbot Huiming"], "content": "慧明方丈，城外古寺的住持。"},
            {"keys": ["严捕头", "Constable Yan"], "content": "严捕头，县衙的捕头，和镖局时敌时友。"},
            {"keys": ["白先生", "Mr. Bai"], "content": "白先生，教书先生，替镖局记账。"},
            {"keys": ["红姑", "Aunt Hong"], "content": "红姑，回春堂的女医，会解毒。"},
        ]}),
}

MENTION = {
    "en": ["{a}:「Reminds me of {obj} at {place}. Never again, I said.」",
           "{b}:「Somebody at {place} was asking after {obj} yesterday.」"],
    "zh": ["{a}:「这让我想起{place}那回的{obj}，再也不想碰上了。」",
           "{b}:「昨儿{place}有人打听{obj}的下落。」"],
}
OPENING = {"en": "Narrator:「{time} at {place}.」", "zh": "旁白:「{time}，{place}。」"}
TIMES = {"en": ["Early morning", "Late afternoon", "A grey noon", "Evening", "Past midnight"],
         "zh": ["清早", "傍晚", "阴沉沉的晌午", "掌灯时分", "三更半夜"]}


def exchanges(lines: list[str]) -> list[list[str]]:
    """Small talk as units: an ``{a}`` line with the ``{b}`` reply after it, or one narration line."""
    units: list[list[str]] = []
    for line in lines:
        if line.startswith("{b}") and units and units[-1][0].startswith("{a}"):
            units[-1].append(line)
        else:
            units.append([line])
    return units


def event_phrase(text: str, lang: str) -> str:
    """English event variants read as noun phrases in every query template."""
    if lang == "en" and not text.startswith(("the ", "that ", "your ", "when ")):
        return "the time " + text
    return text


def scene(rng: random.Random, v, lang: str, event: str, obj: int, place: int, who: str,
          *, filler_seed: int) -> str:
    """One scene: an opening, small talk, the event's core lines somewhere in the middle."""
    frng = random.Random(filler_seed)
    hero = v.HERO_ALT if frng.random() < 0.2 else v.HERO
    cast = [p for p in v.PEOPLE if p != who]
    others = frng.sample(cast, 2)
    speakers = [hero, who, *others]
    slots = {"hero": hero, "who": who, "obj": v.OBJECTS[obj][0], "place": v.PLACES[place][0]}
    core = [line.format(**slots) for line in v.EVENTS[event][0]]
    # The object's and the place's own lines go among the event's lines.
    core.insert(frng.randrange(1, len(core)), v.OBJECT_LINES[obj])
    core.insert(frng.randrange(0, len(core)), v.PLACE_LINES[place])
    fill = []
    for unit in frng.sample(exchanges(v.FILLER), frng.randint(7, 13)):
        a, b = frng.sample(speakers, 2)
        fill.extend(line.format(a=a, b=b) for line in unit)
    for _ in range(frng.randint(0, 2)):
        a, b = frng.sample(speakers, 2)
        o, p = frng.randrange(len(v.OBJECTS)), frng.randrange(len(v.PLACES))
        fill.insert(frng.randrange(len(fill) + 1),
                    frng.choice(MENTION[lang]).format(a=a, b=b, obj=v.OBJECTS[o][0], place=v.PLACES[p][0]))
    at = frng.randrange(2, len(fill) - 2)
    lines = fill[:at] + core + fill[at:]
    if frng.random() < 0.5:
        lines.insert(0, OPENING[lang].format(time=frng.choice(TIMES[lang]), place=slots["place"]))
    return "\n".join(lines)


def build(cid: str, spec: dict, rng: random.Random) -> tuple[list[str], list[dict]]:
    v, lang = spec["vocab"], spec["lang"]
    events = list(v.EVENTS)
    triples: set[tuple] = set()
    targets = []
    while len(targets) < TARGETS:
        t = (rng.choice(events), rng.randrange(len(v.OBJECTS)), rng.randrange(len(v.PLACES)))
        if t not in triples:
            triples.add(t)
            targets.append((*t, rng.choice(list(v.PEOPLE))))
    entries: list[tuple[str, int]] = []  # (scene text, target index or -1)
    for i, (e, o, p, w) in enumerate(targets):
        entries.append((scene(rng, v, lang, e, o, p, w, filler_seed=rng.randrange(1 << 30)), i))
    for i in rng.sample(range(TARGETS), DUPLICATES):
        lines = entries[i][0].split("\n")
        j = rng.randrange(len(lines))
        lines[j] = lines[j].replace("」", "……」" if lang == "zh" else "...」", 1)
        entries.append(("\n".join(lines), i))
    for i in rng.sample(range(TARGETS), RETELLINGS):
        e, o, p, w = targets[i]
        entries.append((scene(rng, v, lang, e, o, p, w, filler_seed=rng.randrange(1 << 30)), i))
    made = 0
    while made < DISTRACTORS:
        # Any other (event, object, place): most share one of the three with some target.
        t = (rng.choice(events), rng.randrange(len(v.OBJECTS)), rng.randrange(len(v.PLACES)))
        if t in triples:
            continue
        entries.append((scene(rng, v, lang, t[0], t[1], t[2], rng.choice(list(v.PEOPLE)),
                              filler_seed=rng.randrange(1 << 30)), -1))
        made += 1
    rng.shuffle(entries)
    labels_of: dict[int, list[str]] = {}
    texts = []
    for n, (text, target) in enumerate(entries):
        label = f"stories/part_{n // PER_FILE:02d}.txt#{n % PER_FILE}"
        texts.append(text)
        if target >= 0:
            labels_of.setdefault(target, []).append(label)
    cross = set(rng.sample(range(TARGETS), CROSS))
    queries = []
    for i, (e, o, p, w) in enumerate(targets):
        qlang = ({"en": "zh", "zh": "en"}[lang]) if i in cross else lang
        k = 1 if qlang == "en" else 2
        templates = v.QUERY_TEMPLATES_EN if qlang == "en" else v.QUERY_TEMPLATES_ZH
        # A user sometimes names a thing as the scene does (same language only).
        obj_words = v.OBJECTS[o][0] if qlang == lang and rng.random() < NEAR else v.OBJECTS[o][k]
        place_words = v.PLACES[p][0] if qlang == lang and rng.random() < NEAR else v.PLACES[p][k]
        q = rng.choice(templates).format(event=event_phrase(rng.choice(v.EVENTS[e][k]), qlang), obj=obj_words,
                                         place=place_words, who=v.PEOPLE[w][k - 1])
        queries.append({"card": cid, "query": q, "expect": sorted(labels_of[i]), "lang": qlang,
                        "cross_lingual": qlang != lang})
    return texts, queries


def main() -> None:
    rng = random.Random(20261201)
    all_queries = []
    for cid, spec in CARDS.items():
        texts, queries = build(cid, spec, rng)
        folder = HERE / cid
        (folder / "stories").mkdir(parents=True, exist_ok=True)
        for old in (folder / "stories").glob("*.txt"):
            old.unlink()
        for f in range(0, len(texts), PER_FILE):
            (folder / "stories" / f"part_{f // PER_FILE:02d}.txt").write_text(
                "\n---\n".join(texts[f:f + PER_FILE]) + "\n", encoding="utf-8")
        (folder / "character.yaml").write_text(
            yaml.safe_dump(spec["card"], allow_unicode=True, sort_keys=False, width=100), encoding="utf-8")
        all_queries.extend(queries)
    header = ("# Hard retrieval set: generated by generate.py (seeded). Each query names its card and\n"
              "# the story labels that answer it (a target and its near-duplicates / retellings).\n")
    body = "".join(f"- {yaml.safe_dump(q, allow_unicode=True, default_flow_style=True, width=1000).strip()}\n"
                   for q in all_queries)
    (HERE / "queries.yaml").write_text(header + body, encoding="utf-8")


if __name__ == "__main__":
    main()
