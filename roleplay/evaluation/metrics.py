"""Automatic metrics that need no judge: style, language, diversity, leaks, knowledge boundary.

Each metric is a small pure function of reply texts (plus the card), so it can be tested
on fixed strings and recomputed from a ``results.jsonl`` without a model.

Trade-offs:
- Rules, not models, wherever a rule is good enough: bracket counting for action notes,
  a CJK-character ratio for the language, phrase lists for out-of-character leaks and for
  "I do not know" answers. They are cheap, deterministic and explainable; they miss
  paraphrases, which is why knowledge-boundary probes are also shown to the judge.
- Chinese text has no spaces: distinct-n and repetition use characters for zh and
  lower-cased words for other languages.
- Style similarity embeds replies and the card's own lines with the project's embedder
  (multilingual USE); it is skipped (None) when a card has no lines of its own.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from ..cards.schema import Character

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
#: Action notes in any style: (…), （…）, *…*
_NOTE_ANY = re.compile(r"\([^()\n]{1,200}\)|（[^（）\n]{1,200}）|\*[^*\n]{1,200}\*")
_NOTE_STYLE = {
    "paren": re.compile(r"\([^()\n]{1,200}\)|（[^（）\n]{1,200}）"),
    "asterisk": re.compile(r"\*[^*\n]{1,200}\*"),
}

#: Phrases that show the model stepped out of the character (en + zh), lower-cased.
OOC_PHRASES = (
    "as an ai", "as an a.i.", "an ai language model", "language model", "i am an ai", "i'm an ai",
    "i am a chatbot", "i'm a chatbot", "as a chatbot", "as an assistant", "openai", "i cannot role",
    "i'm not able to role", "my training data", "i was trained", "作为一个ai", "作为一个人工智能", "作为ai",
    "作为人工智能", "我是一个ai", "我是一个人工智能", "语言模型", "人工智能助手", "ai助手", "我的训练数据",
)

#: Phrases that say "I do not know" (the expected answer to a knowledge-boundary probe).
UNKNOWN_PHRASES = (
    "i do not know", "i don't know", "i dont know", "do not know", "don't know", "not know",
    "never heard", "no idea", "unfamiliar", "not familiar", "cannot say", "can't say",
    "i cannot tell", "i can't tell", "no notion", "beyond me", "know nothing", "knows nothing",
    "not aware", "unknown to me", "i have not heard", "i haven't heard", "what is this", "what is that",
    "what are these", "what do you mean", "never seen", "cannot imagine", "strange word", "i am not sure",
    "i'm not sure", "not certain", "what manner of", "no such thing",
    "不知道", "不晓得", "不曉得", "没听说", "沒聽說", "未曾听", "不曾听", "从未听", "从没听", "不认得", "不识得",
    "不懂", "不明白", "何物", "是什么", "什么东西", "闻所未闻", "未曾见", "不曾见", "没见过", "不清楚", "不知",
)


def is_zh(language: str) -> bool:
    return language.lower().startswith("zh")


def tokens(text: str, language: str) -> list[str]:
    """Characters (CJK, no spaces) for Chinese, lower-cased words for other languages."""
    if is_zh(language):
        return [c for c in text if not c.isspace() and c.isalnum()]
    return re.findall(r"[a-z0-9']+", text.lower())


def action_notes(text: str) -> list[str]:
    """The action notes written in any bracket style."""
    return _NOTE_ANY.findall(text)


def style_conforms(text: str, card: Character) -> bool | None:
    """Do all of the reply's notes use the card's bracket style? None when it has no note."""
    notes = action_notes(text)
    if not notes:
        return None
    own = _NOTE_STYLE[card.style.action_style]
    return all(own.fullmatch(n) for n in notes)


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among CJK + Latin letters (0 when there are none)."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    return cjk / (cjk + latin) if cjk + latin else 0.0


def language_ok(text: str, language: str) -> bool:
    """Is the reply written in the card's language (by script ratio)?"""
    ratio = cjk_ratio(text)
    return ratio >= 0.5 if is_zh(language) else ratio <= 0.2


def distinct_n(texts: Sequence[str], n: int, language: str) -> float | None:
    """Distinct n-grams / all n-grams over ``texts`` (None when there are none)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        toks = tokens(t, language)
        grams.extend(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return len(set(grams)) / len(grams) if grams else None


def _ngrams(text: str, language: str, n: int = 3) -> set[tuple[str, ...]]:
    toks = tokens(text, language)
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def repetition(texts: Sequence[str], language: str) -> float | None:
    """Mean, over replies after the first, of the largest trigram overlap with an earlier reply.

    0 = every reply is new; 1 = a reply repeats an earlier one (one conversation's replies).
    """
    sets = [_ngrams(t, language) for t in texts]
    scores = []
    for i in range(1, len(sets)):
        if not sets[i]:
            continue
        scores.append(max((len(sets[i] & sets[j]) / len(sets[i]) for j in range(i)), default=0.0))
    return sum(scores) / len(scores) if scores else None


def ooc_leak(text: str) -> bool:
    """Does the reply break character ("as an AI", "语言模型"…)?"""
    low = text.lower().replace("ａｉ", "ai")
    return any(p in low for p in OOC_PHRASES)


def says_unknown(text: str) -> bool:
    """Does the reply say the character does not know (en/zh phrase rules)?"""
    low = text.lower()
    return any(p in low for p in UNKNOWN_PHRASES)


def probe_pass(text: str) -> bool:
    """Knowledge-boundary rule: stays in character and says it does not know."""
    return bool(text.strip()) and not ooc_leak(text) and says_unknown(text)


_LINE = re.compile(r"^\s*([^:：\n]{1,40})\s*[:：]\s*(.+?)\s*$")


def card_lines(card: Character, *, limit: int = 200) -> list[str]:
    """The character's own lines from its stories (``Name:「…」``), else its greetings."""
    names = {card.name.lower(), card.nickname.lower(), card.id.lower()} - {""}
    first = card.name.split()[0].lower() if card.name.split() else ""
    if first:
        names.add(first)
    out: list[str] = []
    for _label, story in card.all_stories():
        for raw in story.splitlines():
            m = _LINE.match(raw)
            if m and m.group(1).strip().lower() in names:
                out.append(m.group(2).strip().strip("「」\""))
                if len(out) >= limit:
                    return out
    return out or [g for g in card.greetings if g.strip()][:limit]


def style_similarity(replies: Sequence[str], card: Character, *, embedder=None) -> list[float] | None:
    """Cosine of each reply with the centroid of the card's own lines (None without lines)."""
    lines = card_lines(card)
    texts = [r for r in replies]
    if not lines or not texts:
        return None
    if embedder is None:
        from ..store.embeddings import get_embedder

        embedder = get_embedder()
    import numpy as np

    ref = embedder.embed(lines)
    centroid = ref.mean(axis=0)
    norm = float(np.linalg.norm(centroid)) or 1.0
    vecs = embedder.embed([t if t.strip() else "." for t in texts])
    return [float(v @ centroid / norm) for v in vecs]


def reply_metrics(text: str, card: Character) -> dict:
    """Per-reply rule metrics stored with each reply in ``results.jsonl``."""
    return {
        "chars": len(text),
        "tokens": len(tokens(text, card.language)),
        "has_note": bool(action_notes(text)),
        "style_ok": style_conforms(text, card),
        "language_ok": language_ok(text, card.language),
        "ooc": ooc_leak(text),
    }


def _mean(xs: Sequence[float | bool | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(replies: Sequence[dict], *, language_of: dict[str, str]) -> dict:
    """System-level metrics from reply records (``text``, ``metrics``, ``item``, ``kind``…).

    ``language_of`` maps item id -> card language (for distinct-n tokenisation).
    """
    texts_by_item: dict[str, list[str]] = {}
    for r in replies:
        if r.get("kind") == "turn":
            texts_by_item.setdefault(r["item"], []).append(r["text"])
    m = [r["metrics"] for r in replies]
    langs = {language_of.get(i, "en") for i in texts_by_item}
    d1 = d2 = None
    if replies:
        # distinct-n per language group, weighted by reply count, so zh and en mix fairly
        parts1, parts2, weights = [], [], []
        for lang in langs:
            texts = [t for i, ts in texts_by_item.items() if language_of.get(i, "en") == lang for t in ts]
            if not texts:
                continue
            parts1.append(distinct_n(texts, 1, lang))
            parts2.append(distinct_n(texts, 2, lang))
            weights.append(len(texts))
        d1 = _weighted(parts1, weights)
        d2 = _weighted(parts2, weights)
    probes = [r for r in replies if r.get("kind") == "probe"]
    stories = [r for r in replies if r.get("retrieval") is not None]
    return {
        "replies": len(replies),
        "mean_chars": _mean([x["chars"] for x in m]),
        "mean_tokens": _mean([x["tokens"] for x in m]),
        "action_note_rate": _mean([x["has_note"] for x in m]),
        "style_conformity": _mean([x["style_ok"] for x in m]),
        "language_consistency": _mean([x["language_ok"] for x in m]),
        "ooc_leak_rate": _mean([x["ooc"] for x in m]),
        "distinct_1": d1,
        "distinct_2": d2,
        "repetition": _mean([repetition(ts, language_of.get(i, "en")) for i, ts in texts_by_item.items()]),
        "style_similarity": _mean([x.get("style_similarity") for x in m]),
        "probe_pass_rate": _mean([r["probe"]["pass"] for r in probes]) if probes else None,
        "probe_rule_pass_rate": _mean([r["probe"]["rule_pass"] for r in probes]) if probes else None,
        "retrieval_hit_rate": _mean([bool(r["retrieval"]) for r in stories]) if stories else None,
    }


def _weighted(values: list[float | None], weights: list[int]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights) if v is not None]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None
