"""What part of a message may state a fact: noise removal, clauses, and what is never a fact.

The rule extractor looks at *clauses*, never at the raw message, because most wrong facts
come from text that is not the user talking about themselves:

- quoted speech (``"…"``, “…”, 「…」) and role-play actions (``(…)``, ``（…）``, ``*…*``) are
  cut out before anything else;
- a question's last clause is dropped ("My name is Lin, what's yours?" keeps the name);
- hypotheticals, wishes and pretending ("if I had a dog …", "I wish I lived in Rome",
  "如果我…") drop the whole sentence;
- a joke marker ("just kidding", "开玩笑的") drops the sentence it ends and the one before;
- reported speech ("my boss says I'm lazy", "他说我…") and the story world ("in the story
  I'm a knight", "我的角色…") drop the sentence.

A clause that starts with a bare verb after a first-person clause gets its subject back
("I'm Lin and love hiking" → "love hiking" → "I love hiking"; "我叫小雨，最喜欢弹吉他" →
"我最喜欢弹吉他"), so an omitted subject does not lose the second fact.

Trade-offs: these are surface cues, so a fact stated inside a hypothetical sentence
("If you need me, I live in Leeds") is lost — precision is preferred, because a wrong
fact is repeated to the character in every later prompt, while a missed one can be said
again. Clauses are split at commas, which also cuts lists ("tea, coffee and juice" keeps
"tea"); the LLM pass covers those.
"""
from __future__ import annotations

import re

CJK = "\u4e00-\u9fff"
_HAS_CJK = re.compile(f"[{CJK}]")

_QUOTES = re.compile(r"\"[^\"]{0,300}\"|“[^”]{0,300}”|「[^」]{0,300}」|『[^』]{0,300}』|‘[^’]{0,300}’")
_ACTIONS = re.compile(r"\([^()]{0,300}\)|（[^（）]{0,300}）|\*[^*]{1,300}\*")

_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")

_EN_HYPO = re.compile(r"\b(if|if only|what if|suppose|supposing|imagine|pretend|wish|would|i'd|someday|"
                      r"one day|maybe|might|could|should|dream(?:ing|t|ed)? (?:of|about|that))\b", re.I)
_EN_PROMISED = re.compile(r"\b(promised|promise|swore|swear|vowed|said you)\b", re.I)
_EN_JOKE = re.compile(r"\b(just kidding|kidding|joking|jk|not really|as if)\b", re.I)
_EN_REPORTED = re.compile(r"\b(says?|said|tells? me|told me|thinks?|thought|claims?|claimed|"
                          r"believes?|accused me|calls? me (?:a|an|the))\b", re.I)
_EN_STORY = re.compile(r"\b(in (?:the|this|our) (?:story|game|roleplay|role-play|tale|world)|my character|"
                       r"in character|in-character|in-game|my avatar|my persona|in this scene)\b", re.I)
_EN_QUESTION_START = re.compile(r"^(do|does|did|are|is|was|were|can|could|would|will|should|have|has|"
                                r"what|who|where|when|why|how|which|whose)\b", re.I)

_ZH_HYPO = re.compile(r"如果|假如|要是|假设|想象|假装|但愿|希望|梦想|梦见|也许|可能|说不定|要不是|万一|想要|真想|好想")
_ZH_JOKE = re.compile(r"开玩笑|逗你|骗你|说着玩")
_ZH_REPORTED = re.compile(r"(?:他|她|他们|她们|别人|大家|老板|妈妈|爸爸|朋友|同事|老师)(?:说|觉得|认为|以为)|说我")
_ZH_STORY = re.compile(r"(?:故事|剧情|游戏|戏)里|我的角色|我扮演|角色扮演")
_ZH_QUESTION = re.compile(r"[吗呢么]\s*[？?]?$|什么|谁|哪|怎么|为什么|几|多少")

#: Bare verbs that, after a first-person clause, take its subject ("… and love hiking").
_EN_STATE = re.compile(r"^(married|single|engaged|divorced|retired|vegetarian|vegan)\b", re.I)
_EN_BARE = re.compile(r"^(love|like|enjoy|adore|hate|live|work|have|keep|own|play|collect|speak|study|"
                      r"teach|drink|eat|grew up|moved|am|'m|really|also|used to)\b", re.I)
_ZH_BARE = re.compile(r"^(?:现在|目前|一直|也|还|平时)?(最喜欢|喜欢|爱|讨厌|住在|养了|在\S{1,8}(?:工作|上班)|是一名|今年|来自|平时|也喜欢|还养了|还有)")
_EN_SPLIT = re.compile(r"\s*[,;:]\s*|\s+(?:and|but|so|plus|also)\s+(?=(?:i|i'm|i've|i'll|my|we|we're|we've|our|"
                       r"love|like|enjoy|live|work|have|keep|play|moved)\b)", re.I)
_ZH_SPLIT = re.compile(r"(?<!答应你)(?<!答应您)(?<!保证)(?<!发誓)[，,](?!\s*(?:它|牠)?(?:叫|名叫|名字叫))\s*|[；;：:、]\s*|而且|并且|但是|不过")


def has_cjk(text: str) -> bool:
    return bool(_HAS_CJK.search(text))


def strip_noise(text: str) -> str:
    """The message without quoted speech and role-play action notes."""
    text = text.replace("’", "'").replace("‘", "'") if not has_cjk(text) else text
    text = _QUOTES.sub(" ", text)
    return _ACTIONS.sub(" ", text)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _excluded(sentence: str, zh: bool) -> bool:
    if zh:
        return bool(_ZH_REPORTED.search(sentence) or _ZH_STORY.search(sentence))
    return bool(_EN_REPORTED.search(sentence) or _EN_STORY.search(sentence))


def _hypothetical(clause: str, zh: bool) -> bool:
    if zh:
        return bool(_ZH_HYPO.search(clause))
    if _EN_PROMISED.search(clause):  # "you promised you would …" is a promise, not a wish
        return bool(re.search(r"\b(if|wish|imagine|suppose|pretend|maybe|might)\b", clause, re.I))
    return bool(_EN_HYPO.search(clause))


def _is_question(clause: str, zh: bool) -> bool:
    if zh:
        return clause.rstrip().endswith(("?", "？")) or bool(_ZH_QUESTION.search(clause))
    return clause.rstrip().endswith("?") or bool(_EN_QUESTION_START.match(clause.strip()))


def clauses(text: str) -> list[str]:
    """The clauses of ``text`` that may state a durable fact (see the module doc)."""
    zh = has_cjk(text)
    kept: list[list[str]] = []  # per sentence
    for sent in sentences(strip_noise(text)):
        joke = (_ZH_JOKE if zh else _EN_JOKE).search(sent)
        if joke:
            if kept:
                kept[-1] = []
            rest = sent[joke.end():]
            sent = rest.lstrip(" ,，.。!！")
            if not sent:
                kept.append([])
                continue
        if _excluded(sent, zh):
            kept.append([])
            continue
        parts = [p.strip() for p in (_ZH_SPLIT if zh else _EN_SPLIT).split(sent) if p and p.strip()]
        if parts and _hypothetical(parts[0], zh):
            kept.append([])  # "If I had a dog, I'd call him Rex": the whole sentence
            continue
        question = sent.rstrip().endswith(("?", "？"))
        out: list[str] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if out and (_ZH_BARE if zh else _EN_BARE).match(part):
                part = ("我" if zh else "I ") + part
            elif out and not zh and _EN_STATE.match(part):
                part = "I'm " + part
            if (question and last) or _is_question(part, zh) or _hypothetical(part, zh):
                continue  # "I'm 34, if you must know": only the trailing clause goes
            out.append(part.rstrip(".!。！ "))
        kept.append(out)
    return [c for sent in kept for c in sent if c]
