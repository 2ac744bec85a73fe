"""An `Extraction` becomes a draft card: persona, scenario, greetings, emotions, lorebook.

Rule-based by default, rendered through the ``author_persona_*.j2`` / ``author_scenario_*.j2``
templates from facts gathered here (the character's most frequent words, the narration
that describes them, sample lines). With a backend, ``author_llm_*.j2`` asks the model to
write persona, scenario and a greeting from the same material; what it returns replaces
the rule-based text only where it is non-empty, so a weak model can only improve a draft.

The emotion palette comes from the character's own recorded gestures (``smiling`` →
amused, ``笑`` → happy, ``冷笑`` → scornful…); `reactions` maps user intents only to
emotions the palette has. The lorebook holds the most mentioned other people and places,
each with the first sentence of the book that mentions it.

The card folder is written like an imported ChatHaruhi character (stories as
``stories/*.txt`` beside ``character.yaml``) through `roleplay.cards.importer.write_imported`:
staged and renamed into place, so a failed write leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..cards.chatharuhi import slug
from ..cards.importer import ImportedCard, ImportResult, write_imported
from ..cards.schema import ID_RE, Character, LoreEntry, Style
from ..errors import CardError
from .extract import Extraction

#: Gesture words → emotion. English keys match word starts; Chinese keys match substrings.
GESTURE_EMOTIONS_EN = {"smil": "amused", "grin": "amused", "laugh": "amused", "chuckl": "amused",
                       "frown": "irritated", "scowl": "irritated", "snap": "irritated", "angr": "angry",
                       "sharp": "irritated", "impatient": "irritated", "cold": "cold", "sigh": "sad", "sad": "sad",
                       "tear": "sad", "weep": "sad", "sob": "sad", "gentl": "gentle", "soft": "gentle",
                       "quiet": "calm", "calm": "calm", "eager": "excited", "excit": "excited", "shout": "excited",
                       "cry": "excited", "surpris": "surprised", "start": "surprised", "astonish": "surprised",
                       "nod": "thoughtful", "thought": "thoughtful", "lean": "thoughtful", "puff": "thoughtful",
                       "dry": "wry", "wry": "wry", "shrug": "wry", "low": "calm", "whisper": "calm"}
GESTURE_EMOTIONS_ZH = {"冷笑": "scornful", "大笑": "happy", "笑": "happy", "喜": "happy", "怒": "angry", "骂": "angry",
                       "喝": "angry", "恼": "angry", "哭": "sad", "泪": "sad", "叹": "sad", "愁": "sad",
                       "惊": "surprised", "慌": "afraid", "怕": "afraid", "急": "anxious", "叫": "excited",
                       "嚷": "excited", "点头": "thoughtful", "沉吟": "thoughtful", "低声": "calm", "轻声": "gentle"}
REACTIONS = {"praise": ["happy", "amused", "wry"], "insult": ["angry", "irritated", "scornful", "cold"],
             "sad": ["gentle", "sad", "calm"], "joke": ["amused", "happy", "wry"], "threat": ["angry", "irritated",
             "cold", "afraid"], "greeting": ["calm", "happy", "amused"], "question": ["thoughtful", "calm"],
             "happy": ["happy", "amused"], "thanks": ["happy", "gentle", "wry"], "neutral": ["calm", "thoughtful"]}
_STOP_EN = set("""a an the and or but if of to in on at by for with from as is are was were be been am i you he she it we
they me him her us them my your his its our their this that these those not no yes do did does have has had will would
shall should can could may might must so what which who whom whose there here then than too very just all any some
one up out over into about upon said says oh ah well now only more most much such own same also how when where why
let us get got go going come came know see sir""".split())
_PLACE_EN = re.compile(r"\b(?:in|at|to|from|into|near|toward|towards|across|through)\s+(?:the\s+)?"
                       r"((?:[A-Z][a-z]+)(?:\s+(?:of\s+)?[A-Z][a-z]+){0,2})")
_PLACE_ZH = re.compile(r"[\u4e00-\u9fff]{1,3}(?:山|洞|国|城|寺|府|宫|河|村|镇|街|殿|庄|关|岭|海|江|湖|州|县|庙|园|楼|院)")


#: Function characters that do not occur inside a place name (有一座庙 is not a place, 庙 is).
_NOT_IN_PLACE_ZH = set("的了是在有一个座这那些着们到去回")


def card_id_for(name: str, *, title: str = "") -> str:
    """An id for a drafted card: the name as a slug, else a short hash of it (Chinese names)."""
    return slug(name) or f"char-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def emotion_palette(ex: Extraction, *, per_emotion: int = 4) -> dict[str, list[str]]:
    """Emotion → the character's own most frequent gestures that show it."""
    table = GESTURE_EMOTIONS_ZH if ex.language == "zh" else GESTURE_EMOTIONS_EN
    counts: dict[str, Counter[str]] = {}
    for ln in ex.lines:
        act = ln.action.strip()
        if not act:
            continue
        low = act.casefold()
        for key, emotion in table.items():
            hit = key in low if ex.language == "zh" else any(w.startswith(key) for w in re.findall(r"[a-z]+", low))
            if hit:
                counts.setdefault(emotion, Counter())[act] += 1
                break
    wrap = (lambda a: f"（{a}）") if ex.language == "zh" else (lambda a: f"({a})")
    return {emo: [wrap(a) for a, _n in c.most_common(per_emotion)]
            for emo, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values()))}


def reactions_for(palette: dict[str, list[str]]) -> dict[str, str]:
    """User intent → the first emotion of `REACTIONS` that the palette has."""
    out = {}
    for intent, options in REACTIONS.items():
        for emo in options:
            if emo in palette:
                out[intent] = emo
                break
    return out


def frequent_words(ex: Extraction, *, k: int = 12) -> list[str]:
    """The character's characteristic words (English) or two-character words (Chinese)."""
    c: Counter[str] = Counter()
    for ln in ex.lines:
        if ex.language == "zh":
            t = re.sub(r"[^\u4e00-\u9fff]", " ", ln.text)
            for chunk in t.split():
                c.update(chunk[i:i + 2] for i in range(len(chunk) - 1))
        else:
            c.update(w for w in re.findall(r"[a-z’']+", ln.text.casefold()) if w not in _STOP_EN and len(w) > 2)
    return [w for w, n in c.most_common(k) if n > 1]


def sample_lines(ex: Extraction, *, k: int = 5) -> list[str]:
    """Characteristic lines: confident, of middling length, spread over the book."""
    good = [ln for ln in ex.lines if ln.confidence >= 0.9 and 12 <= len(ln.text) <= 200]
    if not good:
        good = [ln for ln in ex.lines if len(ln.text) >= 4]
    step = max(1, len(good) // k)
    return [_with_action(ln, language=ex.language) for ln in good[::step][:k]]


def _with_action(ln, *, language: str) -> str:
    if not ln.action:
        return ln.text
    return f"（{ln.action}）{ln.text}" if language == "zh" else f"({ln.action}) {ln.text}"


def greetings_for(ex: Extraction, *, k: int = 2) -> list[str]:
    """Lines that open a conversation well (a greeting or a question), else the first lines."""
    pat = re.compile(r"^(?:good (?:morning|evening|afternoon|day)|hello|well|ah|come in|welcome|you (?:have|are))|\?$"
                     if ex.language != "zh" else r"^(?:你好|来了|哎|呀|嗨|您)|[？?]$", re.I)
    picked = [ln for ln in ex.lines if ln.confidence >= 0.9 and 8 <= len(ln.text) <= 160 and pat.search(ln.text)]
    if len(picked) < k:
        picked += [ln for ln in ex.lines if ln.confidence >= 0.9 and 8 <= len(ln.text) <= 160 and ln not in picked]
    return [_with_action(ln, language=ex.language) for ln in picked[:k]]


def lorebook_for(ex: Extraction, *, people: int = 6, places: int = 6) -> list[LoreEntry]:
    """Entries for the most mentioned other speakers and places, each with a line of context."""
    text = ex.book_text
    mine = {ex.character, *ex.aliases, *ex.forms}
    who = [n for n, _c in ex.speakers.most_common() if n not in mine and n not in ("?", "I") and
           not n.startswith(("the ", "his ", "her "))][:people]
    if ex.language == "zh":
        # subtle: the pattern also matches a place with a stray character before it (了花果山), and
        # its ending alone (果山); of a name and its own ending, the longer is kept only when it is
        # nearly as frequent in the whole text as the ending.
        cands = {m[cut:] for m in _PLACE_ZH.findall(text) for cut in range(0, len(m) - 1)}
        cands = {c for c in cands if not any(ch in _NOT_IN_PLACE_ZH for ch in c)}
        counts = Counter({c: text.count(c) for c in cands})
        for name in sorted(cands, key=len, reverse=True):
            for cut in range(1, len(name) - 1):
                shorter = name[cut:]
                if counts[name] and counts[shorter]:
                    if counts[name] >= 0.8 * counts[shorter]:
                        counts[shorter] = 0
                    else:
                        counts[name] = 0
    else:
        counts = Counter(m.group(1) for m in _PLACE_EN.finditer(text))
    where = [n for n, c in counts.most_common(40) if c >= 2 and n not in who and n not in mine
             and n.casefold() not in _STOP_EN and n[0] not in "这那此该一哪某"][:places]
    entries = []
    for kind, names in (("person", who), ("place", where)):
        for name in names:
            context = _first_sentence_with(text, name)
            content = f"{name} ({kind}): {context}" if context else f"{name} ({kind})"
            entries.append(LoreEntry(keys=[name], content=content, name=name, comment=f"drafted: {kind}",
                                     priority=10))
    return entries


_SENTENCE_END = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)(?<!\b[A-Z])[.!?](?=\s|$)|[。！？\n]")


def _first_sentence_with(text: str, name: str) -> str:
    """The first narration sentence that mentions ``name`` (else the first sentence at all).

    ``Mr.``/``Dr.`` do not end a sentence; quote marks are dropped from the result.
    """
    first = ""
    i = text.find(name)
    for _ in range(30):
        if i < 0:
            break
        window = text[max(0, i - 400):i]
        starts = [m.end() for m in _SENTENCE_END.finditer(window)]
        start = max(0, i - 400) + (starts[-1] if starts else 0)
        m = _SENTENCE_END.search(text, i + len(name))
        end = m.end() if m else len(text)
        sentence = " ".join(text[start:end].split())
        if not re.search(r"[“”「」『』\"]", sentence):
            return sentence[:200]
        first = first or re.sub(r"[“”「」『』\"]", "", sentence)[:200]
        i = text.find(name, end)
    return first


def facts(ex: Extraction) -> dict[str, Any]:
    """Everything the persona/scenario templates (rule-based or LLM) are given."""
    return {"char": ex.character, "title": ex.title or "the book",
            "aliases": [a for a in dict.fromkeys(ex.aliases + ex.forms) if a != ex.character],
            "line_count": len(ex.lines), "words": frequent_words(ex), "samples": sample_lines(ex),
            "descriptions": ex.descriptions[:6], "gestures": _top_gestures(ex),
            "partners": [n for n, _c in ex.speakers.most_common(6) if n != ex.character][:4],
            "first_scene": ex.first_scene, "mean_len": round(sum(len(ln.text) for ln in ex.lines) /
                                                             max(1, len(ex.lines)))}


def _top_gestures(ex: Extraction, *, k: int = 6) -> list[str]:
    return [a for a, _n in Counter(ln.action for ln in ex.lines if ln.action).most_common(k)]


def draft_card(ex: Extraction, *, card_id: str | None = None, backend: Any = None,
               max_tokens: int = 220) -> Character:
    """The draft `Character` (stories not included: they go to ``stories/*.txt``)."""
    if not ex.character:
        raise CardError("pick a character to draft (--character NAME)", field="character")
    if not ex.lines:
        top = ", ".join(f"{n} ({c})" for n, c in ex.speakers.most_common(8)) or "none"
        raise CardError(f"no lines were attributed to {ex.character!r}; speakers found: {top}. Check the name, "
                        "or add the other names the book uses with --aliases", field="character")
    cid = card_id or card_id_for(ex.character, title=ex.title)
    if not ID_RE.match(cid):
        raise CardError(f"invalid card id {cid!r}: use a-z, 0-9, '_' and '-'", field="id")
    from ..compose.composer import Composer

    composer = Composer()
    lang = ex.language
    info = facts(ex)
    persona = composer.render("author_persona", lang, **info)
    scenario = composer.render("author_scenario", lang, **info)
    greetings = greetings_for(ex)
    if backend is not None:
        persona, scenario, greetings = _llm_draft(composer, backend=backend, info=info, lang=lang,
                                                  fallback=(persona, scenario, greetings), max_tokens=max_tokens)
    palette = emotion_palette(ex)
    aliases = [a for a in dict.fromkeys([*ex.aliases, *ex.forms]) if a and a != ex.character]
    return Character(id=cid, name=ex.character, language=lang, aliases=aliases, persona=persona,
                     scenario=scenario, greetings=greetings, emotions=palette, reactions=reactions_for(palette),
                     lorebook=lorebook_for(ex), style=Style(action_style="paren", quote_style="none"),
                     tags=["drafted", ex.kind], creator="roleplay author extract",
                     creator_notes=f"Drafted from {Path(ex.source).name or ex.title}: {len(ex.lines)} lines, "
                                   f"mean attribution confidence {ex.confidence():.2f}. Review before use.",
                     extensions={"authoring": {**{k: v for k, v in ex.report().items()
                                                  if k not in ("unresolved_samples", "speakers")},
                                               # the book's name, not where it lay on the author's disk
                                               "source": Path(ex.source).name}})


def _llm_draft(composer, *, backend, info: dict, lang: str, fallback: tuple[str, str, list[str]],
               max_tokens: int) -> tuple[str, str, list[str]]:
    """Persona, scenario and greetings written by ``backend``; each falls back to the rule-based one."""
    from ..backends.base import SamplingParams

    persona, scenario, greetings = fallback
    prompt = composer.render("author_llm", lang, **info)
    # subtle: the answer is prefilled with its first label, so even a small model starts in the format.
    head = "人设：" if lang == "zh" else "PERSONA:"
    text = backend.generate([{"role": "user", "content": prompt}, {"role": "assistant", "content": head}],
                            SamplingParams(max_tokens=max_tokens, temperature=0.3, seed=1))
    fields = parse_llm_fields(head + text)
    return (fields.get("persona") or persona, fields.get("scenario") or scenario,
            [fields["greeting"]] + greetings[:1] if fields.get("greeting") else greetings)


def parse_llm_fields(text: str) -> dict[str, str]:
    """``PERSONA: …`` / ``SCENARIO: …`` / ``GREETING: …`` blocks from a model's answer."""
    out: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        m = re.match(r"^\s*\**(PERSONA|SCENARIO|GREETING|人设|场景|开场白)\**\s*[:：]\s*(.*)$", line, re.I)
        if m:
            key = {"人设": "persona", "场景": "scenario", "开场白": "greeting"}.get(m.group(1), m.group(1).lower())
            out[key] = m.group(2).strip()
        elif key and line.strip():
            out[key] = (out[key] + "\n" + line.strip()).strip()
    return {k: v[:2000] for k, v in out.items() if v}


def story_files(ex: Extraction, *, per_file: int = 200) -> dict[str, str]:
    """The stories as ``stories/*.txt`` files: scenes separated by a ``---`` line."""
    from ..cards.yaml_io import STORY_SEPARATOR

    files = {}
    for i in range(0, len(ex.stories), per_file):
        chunk = ex.stories[i:i + per_file]
        files[f"extracted_{i // per_file + 1:03d}.txt"] = f"\n{STORY_SEPARATOR}\n".join(chunk) + "\n"
    return files


def write_draft(ex: Extraction, card: Character, *, out_dir: str | Path, overwrite: bool = False) -> ImportResult:
    """Write ``card`` and its stories to ``out_dir/<id>/`` (all or nothing)."""
    imported = ImportedCard(card=card, format="authoring", story_files=story_files(ex))
    return write_imported(imported, out_dir=out_dir, overwrite=overwrite)
