"""Fact extraction from a user's message: fast patterns (en/zh), plus a small LLM prompt.

Rules come first: they are instant, precise, and give each fact a *slot* ("user.name",
"pet.cat.name", "user.city", "pref.coffee") so the store can tell a contradiction (same
slot, other value → update) from a new fact. The LLM pass catches what patterns miss
("my sister is getting married in May") but a small model invents facts, so its lines
are kept only when they share a content word with the message, and they carry no slot.

Trade-offs: patterns are deliberately narrow ("I'm a …" alone is not a job — "I'm a bit
tired"); recall is bought from the LLM pass, precision from the rules. Facts are stored
as short third-person sentences in the message's language ("The user's name is Lin.",
"用户叫林。") because the prompt shows them verbatim to the character.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Chinese animal words → the English slot key, so 猫 and "cat" are the same pet slot.
ANIMALS_ZH = {"猫": "cat", "猫咪": "cat", "小猫": "cat", "狗": "dog", "小狗": "dog", "狗狗": "dog",
              "兔子": "rabbit", "鹦鹉": "parrot", "仓鼠": "hamster", "鱼": "fish", "金鱼": "fish",
              "乌龟": "turtle", "鸟": "bird", "蛇": "snake", "马": "horse"}
ANIMALS_EN = ("cat", "kitten", "dog", "puppy", "rabbit", "bunny", "parrot", "hamster", "fish",
              "goldfish", "turtle", "tortoise", "bird", "snake", "horse", "lizard", "ferret", "budgie")
RELATIONS_ZH = {"妹妹": "sister", "姐姐": "sister", "哥哥": "brother", "弟弟": "brother", "妈妈": "mother",
                "母亲": "mother", "爸爸": "father", "父亲": "father", "朋友": "friend", "女朋友": "girlfriend",
                "男朋友": "boyfriend", "妻子": "wife", "老婆": "wife", "丈夫": "husband", "老公": "husband",
                "儿子": "son", "女儿": "daughter"}
RELATIONS_EN = ("wife", "husband", "sister", "brother", "mother", "mom", "mum", "father", "dad",
                "son", "daughter", "friend", "best friend", "boyfriend", "girlfriend", "partner", "boss")

# Words that end an English value ("my name is Lin and I …").
_STOP = {"and", "but", "so", "because", "though", "although", "i", "i'm", "im", "who", "which",
         "since", "or", "then", "too", "also", "now", "here", "there", "by", "from", "in", "at",
         "with", "anymore", "any", "more", "very", "much", "a", "lot", "really", "the", "to", "is"}
_PUNCT_EN = r"[.,!?;:()\[\]\"“”…]"
_CJK = "\u4e00-\u9fff"
_ZH_END = r"[，。！？；、,.!?;\s（）()「」]"


@dataclass
class Fact:
    """One durable fact: the sentence stored, its slot (None: free fact), value, origin."""

    text: str
    slot: str | None = None
    value: str = ""
    source: str = "rule"          # "rule" | "llm"
    negated: bool = False         # "I no longer …": asks the store to delete the slot's memory


def _words(value: str, *, limit: int, titled: bool = False) -> str:
    """The leading words of an English value, cut at punctuation or a stop word."""
    value = re.split(_PUNCT_EN, value, maxsplit=1)[0]
    out: list[str] = []
    for w in value.split():
        lw = w.lower()
        if lw in _STOP and (out or lw not in ("the", "a")):
            break
        if lw in ("a", "an", "the") and not out:
            continue
        out.append(w)
        if len(out) >= limit:
            break
    text = " ".join(out).strip("'’ ")
    if titled and text:
        text = " ".join(p[:1].upper() + p[1:] for p in text.split())
    return text


def _zh(value: str, *, limit: int) -> str:
    value = re.split(_ZH_END, value, maxsplit=1)[0]
    return value[:limit]


def _slug(value: str) -> str:
    return re.sub(r"\s+", "_", value.strip().lower())


_NAME_NEG = re.compile(r"^(not|a|an|the|so|very|too|sorry|tired|happy|sad|here|back|done|fine)$", re.I)


def _en_rules(text: str) -> list[Fact]:
    facts: list[Fact] = []
    t = text.replace("’", "'")

    for m in re.finditer(r"\bmy name(?:'s| is)\s+(\S.*)", t, re.I):
        name = _words(m.group(1), limit=3, titled=True)
        if name and not _NAME_NEG.match(name.split()[0]):
            facts.append(Fact(f"The user's name is {name}.", "user.name", name))
    for m in re.finditer(r"\b(?:call me|i go by)\s+(\S.*)", t, re.I):
        name = _words(m.group(1), limit=2, titled=True)
        if name and not _NAME_NEG.match(name.split()[0]):
            facts.append(Fact(f"The user wants to be called {name}.", "user.callname", name))
    animals = "|".join(ANIMALS_EN)
    for m in re.finditer(rf"\bi (?:have|keep|own|got|adopted)\s+(?:a|an|one)\s+(?:\w+\s+)?({animals})\s+"
                         rf"(?:called|named|whose name is)\s+(\S.*)", t, re.I):
        animal, name = m.group(1).lower(), _words(m.group(2), limit=2, titled=True)
        if name:
            facts.append(Fact(f"The user has a {animal} called {name}.", f"pet.{animal}.name", name))
    for m in re.finditer(rf"\bmy ({animals})(?:'s name is| is called| is named)\s+(\S.*)", t, re.I):
        animal, name = m.group(1).lower(), _words(m.group(2), limit=2, titled=True)
        if name:
            facts.append(Fact(f"The user has a {animal} called {name}.", f"pet.{animal}.name", name))
    relations = "|".join(RELATIONS_EN)
    for m in re.finditer(rf"\bmy ({relations})(?:'s name is| is called| is named)\s+(\S.*)", t, re.I):
        rel, name = m.group(1).lower(), _words(m.group(2), limit=2, titled=True)
        if name:
            facts.append(Fact(f"The user's {rel} is called {name}.", f"rel.{_slug(rel)}.name", name))
    for m in re.finditer(r"\bi(?: no longer|'m no longer| don't| do not)\s+(live in|work as|have a|keep a)\s+(\S.*)", t, re.I):
        verb, value = m.group(1).lower(), _words(m.group(2), limit=3)
        slot = {"live in": "user.city", "work as": "user.job"}.get(verb)
        if verb in ("have a", "keep a") and value:
            animal = value.split()[0].lower().rstrip("s")
            slot = f"pet.{animal}.name" if animal in ANIMALS_EN else None
        if slot and value:
            facts.append(Fact(f"The user no longer {verb.replace('live', 'lives').replace('work', 'works').replace('have', 'has').replace('keep', 'keeps')} {value}.",
                              slot, value, negated=True))
    if not any(f.negated for f in facts):
        for m in re.finditer(r"\bi(?:'ve| have)? (?:live|lived|am living|'m living) in\s+(\S.*)", t, re.I):
            city = _words(m.group(1), limit=3, titled=True)
            if city and not m.group(0).lower().startswith(("i lived",)):
                facts.append(Fact(f"The user lives in {city}.", "user.city", city))
        for m in re.finditer(r"\b(?:i work as|i'm working as|my job is|i am employed as)\s+(\S.*)", t, re.I):
            job = _words(m.group(1), limit=3)
            if job:
                facts.append(Fact(f"The user works as {_article(job)}.", "user.job", job))
    for m in re.finditer(r"\bi(?:'m| am) (?:originally )?from\s+(\S.*)", t, re.I):
        place = _words(m.group(1), limit=3, titled=True)
        if place:
            facts.append(Fact(f"The user is from {place}.", "user.origin", place))
    for m in re.finditer(r"\bi(?:'m| am) (\d{1,3}) years? old", t, re.I):
        facts.append(Fact(f"The user is {m.group(1)} years old.", "user.age", m.group(1)))
    for m in re.finditer(r"\bmy birthday is (?:on )?(\S.*)", t, re.I):
        day = _words(m.group(1), limit=3)
        if day:
            facts.append(Fact(f"The user's birthday is {day}.", "user.birthday", day))
    for m in re.finditer(r"\bmy fav(?:ou?)rite (\w+(?: \w+)?) is\s+(\S.*)", t, re.I):
        what, value = m.group(1).lower(), _words(m.group(2), limit=3)
        if value:
            facts.append(Fact(f"The user's favourite {what} is {value}.", f"fav.{_slug(what)}", value))
    for m in re.finditer(r"\bi (?:really |absolutely |just )?(like|love|adore|enjoy|hate|dislike|can't stand|don't like|do not like)\s+(\S.*)", t, re.I):
        verb, value = m.group(1).lower(), _words(m.group(2), limit=3)
        if not value or value.lower() in ("it", "that", "this", "you", "him", "her", "them", "to"):
            continue
        if value.lower().startswith(("to ", "it ", "that ", "how ", "when ", "what ")):
            continue
        positive = verb in ("like", "love", "adore", "enjoy")
        facts.append(Fact(f"The user {'likes' if positive else 'dislikes'} {value}.",
                          f"pref.{_slug(value)}", value))
    return facts


def _article(job: str) -> str:
    if job.split()[0].lower() in ("a", "an", "the"):
        return job
    return ("an " if job[:1].lower() in "aeiou" else "a ") + job


def _zh_rules(text: str) -> list[Fact]:
    facts: list[Fact] = []
    pron = "你他她它们这那"
    for m in re.finditer(rf"(?:我叫|我的名字是|我名叫|我的名字叫)([{_CJK}A-Za-z·]{{1,5}})", text):
        name = _zh(m.group(1), limit=5)
        if name and name[0] not in pron:
            facts.append(Fact(f"用户叫{name}。", "user.name", name))
    for m in re.finditer(rf"(?:叫我|你可以叫我|请叫我)([{_CJK}A-Za-z]{{1,5}})", text):
        name = _zh(m.group(1), limit=5)
        if name and name[0] not in pron:
            facts.append(Fact(f"用户希望被称为{name}。", "user.callname", name))
    animals = "|".join(sorted(ANIMALS_ZH, key=len, reverse=True))
    for m in re.finditer(rf"我(?:养了|养着|有|家有|养)(?:一|两|几)?(?:只|条|匹|个)?({animals})"
                         rf"(?:[，,]?(?:它|牠)?(?:叫做?|名叫|的名字是|名字叫)([{_CJK}A-Za-z]{{1,5}}))?", text):
        animal, name = m.group(1), _zh(m.group(2) or "", limit=5)
        key = ANIMALS_ZH[animal]
        if name:
            facts.append(Fact(f"用户养了一只{animal}，叫{name}。", f"pet.{key}.name", name))
        else:
            facts.append(Fact(f"用户养了一只{animal}。", f"pet.{key}", animal))
    for m in re.finditer(rf"我的({animals})(?:叫做?|名叫|的名字是|名字叫)([{_CJK}A-Za-z]{{1,5}})", text):
        animal, name = m.group(1), _zh(m.group(2), limit=5)
        if name:
            facts.append(Fact(f"用户养了一只{animal}，叫{name}。", f"pet.{ANIMALS_ZH[animal]}.name", name))
    rels = "|".join(sorted(RELATIONS_ZH, key=len, reverse=True))
    for m in re.finditer(rf"我(?:的)?({rels})(?:叫做?|名叫|的名字是)([{_CJK}A-Za-z]{{1,5}})", text):
        rel, name = m.group(1), _zh(m.group(2), limit=5)
        if name:
            facts.append(Fact(f"用户的{rel}叫{name}。", f"rel.{RELATIONS_ZH[rel]}.name", name))
    negated = False
    for m in re.finditer(rf"我(?:已经)?不再住在([{_CJK}A-Za-z]{{1,8}})|我(?:已经)?不住在([{_CJK}A-Za-z]{{1,8}})了", text):
        place = _zh(m.group(1) or m.group(2), limit=8)
        facts.append(Fact(f"用户不再住在{place}。", "user.city", place, negated=True))
        negated = True
    if not negated:
        for m in re.finditer(rf"我(?:现在)?(?:住在|家在|生活在)([{_CJK}A-Za-z]{{1,8}})", text):
            place = _zh(m.group(1), limit=8)
            place = re.sub(r"(?:的|里|附近|这边).*$", "", place) or place
            if place:
                facts.append(Fact(f"用户住在{place}。", "user.city", place))
    for m in re.finditer(rf"我(?:来自|是)([{_CJK}]{{1,6}})人", text):
        facts.append(Fact(f"用户是{m.group(1)}人。", "user.origin", m.group(1)))
    for m in re.finditer(rf"我来自([{_CJK}A-Za-z]{{1,8}})", text):
        place = _zh(m.group(1), limit=8)
        facts.append(Fact(f"用户来自{place}。", "user.origin", place))
    for m in re.finditer(rf"(?:我是一名|我是一位|我的工作是|我的职业是|我在做|我当)([{_CJK}A-Za-z]{{1,8}})", text):
        job = _zh(m.group(1), limit=8)
        if job and not job.startswith(("个", "很", "不")):
            facts.append(Fact(f"用户的职业是{job}。", "user.job", job))
    for m in re.finditer(rf"我在([{_CJK}A-Za-z]{{1,8}}?)(?:工作|上班)", text):
        facts.append(Fact(f"用户在{m.group(1)}工作。", "user.workplace", m.group(1)))
    for m in re.finditer(r"我今年([0-9一二三四五六七八九十两]{1,4})岁", text):
        facts.append(Fact(f"用户今年{m.group(1)}岁。", "user.age", m.group(1)))
    for m in re.finditer(rf"我的生日是([{_CJK}0-9月日号]{{1,8}})", text):
        facts.append(Fact(f"用户的生日是{m.group(1)}。", "user.birthday", m.group(1)))
    for m in re.finditer(rf"我最喜欢的([{_CJK}]{{1,4}})是([{_CJK}A-Za-z]{{1,10}})", text):
        facts.append(Fact(f"用户最喜欢的{m.group(1)}是{_zh(m.group(2), limit=10)}。",
                          f"fav.{m.group(1)}", m.group(2)))
    for m in re.finditer(rf"我(?:很|最|非常|特别|真的)?(不喜欢|讨厌|喜欢|爱)([{_CJK}A-Za-z]{{1,10}})", text):
        verb, value = m.group(1), _zh(m.group(2), limit=10)
        if m.group(0).startswith("我最喜欢的"):
            continue
        if not value or value[0] in pron or value.startswith(("的", "上", "过")):
            continue
        positive = verb in ("喜欢", "爱")
        facts.append(Fact(f"用户{'喜欢' if positive else '不喜欢'}{value}。", f"pref.{value}", value))
    return facts


def extract_rules(text: str) -> list[Fact]:
    """Facts found by patterns (both languages are tried; a message may mix them).

    >>> [f.text for f in extract_rules("My name is Lin, I keep a cat called Mochi.")]
    ["The user's name is Lin.", 'The user has a cat called Mochi.']
    """
    if not text or not text.strip():
        return []
    facts = _en_rules(text) + (_zh_rules(text) if re.search(f"[{_CJK}]", text) else [])
    seen: set[tuple] = set()
    out: list[Fact] = []
    for f in facts:
        key = (f.slot, f.value.lower())
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


EXTRACTION_PROMPT = (
    "You extract durable facts about the user from one chat message: their name, family, "
    "pets, home, work, likes, dislikes, plans and promises. Write each fact as a short "
    "sentence about \"the user\" on its own line starting with \"- \". If the message holds "
    "no such fact, write exactly \"- none\"."
)


_SHOTS = [
    ("I just moved to Oslo and my sister Ana visits next week.",
     "- The user lives in Oslo.\n- The user's sister is Ana."),
    ("I'm learning to swim because I'm scared of deep water.",
     "- The user is learning to swim.\n- The user is scared of deep water."),
    ("What a lovely day, isn't it?", "- none"),
]


def llm_messages(text: str) -> list[dict]:
    """The chat messages of the extraction prompt (few-shot).

    The shots are English only: with a Chinese shot the small default model drifts into
    Chinese for English messages (measured); Chinese messages are covered by the rules.
    """
    messages = [{"role": "system", "content": EXTRACTION_PROMPT}]
    for message, facts in _SHOTS:
        messages += [{"role": "user", "content": f"Message: {message}"}, {"role": "assistant", "content": facts}]
    return messages + [{"role": "user", "content": f"Message: {text}"}]


_BULLET = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s*(.+?)\s*$")
_NONE = re.compile(r"^(none|no facts?|n/?a|nothing|无|没有)\.?$", re.I)


def parse_fact_lines(output: str, *, message: str = "") -> list[str]:
    """Facts from the model's ``- fact`` lines, robust to numbering and chatter.

    A fact is kept only when it shares a content word (or a CJK character pair) with
    ``message`` (when given): a small model otherwise invents plausible facts.
    """
    facts: list[str] = []
    for line in output.splitlines():
        m = _BULLET.match(line)
        if not m:
            continue
        fact = m.group(1).strip().strip('"').strip()
        if not fact or _NONE.match(fact) or len(fact) > 200 or fact.lower().startswith("message"):
            continue
        if not re.search(r"\buser\b|用户", fact, re.I):
            continue  # the prompt asks for facts about "the user"; anything else is chatter
        if message and not _grounded(fact, message):
            continue
        if not fact.endswith((".", "。", "!", "！")):
            fact += "。" if re.search(f"[{_CJK}]$", fact) else "."
        if fact not in facts:
            facts.append(fact)
    return facts


_FACT_STOP = {"the", "user", "user's", "users", "is", "are", "has", "have", "likes", "like", "and",
              "their", "they", "with", "for", "from", "that", "this", "was", "will", "not", "called",
              "named", "lives", "works", "name", "用户"}


def _grounded(fact: str, message: str) -> bool:
    """At least two thirds of the fact's content words (or CJK pairs) occur in the message."""
    msg = message.lower()
    words = [w for w in re.findall(r"[a-z0-9']{3,}", fact.lower()) if w not in _FACT_STOP]
    cjk = re.sub(f"[^{_CJK}]", "", fact.replace("用户", ""))
    pairs = [cjk[i:i + 2] for i in range(len(cjk) - 1)]
    units = [w in msg for w in words] + [p in message for p in pairs]
    return bool(units) and sum(units) * 3 >= len(units) * 2


def extract_llm(backend: Any, text: str, *, max_tokens: int = 48) -> list[Fact]:
    """Facts the model finds in ``text`` (greedy, few tokens)."""
    from ..backends.base import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=1.05)
    out = backend.generate(llm_messages(text), params)
    return [Fact(f, None, "", source="llm") for f in parse_fact_lines(out, message=text)]


def extract(text: str, *, backend: Any = None, max_tokens: int = 48) -> list[Fact]:
    """Rule facts, then (with a backend) the model's facts that no rule fact already covers."""
    facts = extract_rules(text)
    if backend is None or not text.strip():
        return facts
    for f in extract_llm(backend, text, max_tokens=max_tokens):
        low = f.text.lower()
        if any(r.value and r.value.lower() in low for r in facts):
            continue  # the rule's sentence (with its slot) says it better
        facts.append(f)
    return facts
