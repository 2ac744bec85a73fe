"""Who says each quote in prose: tags, beats, pronouns, alternation — English and Chinese.

Rules, strongest first, each with a confidence:

1. **Tag** after or before the quote: ``"…," said Holmes`` / ``Holmes said:`` / ``"…," he
   replied`` / ``the inspector remarked``; ``悟空道：“…”``, ``行者笑道``, ``“…”八戒说。``
   (0.95 for a name, pronouns go through rule 3).
2. **Paragraph**: other quotes of a paragraph whose one speaker is tagged (0.9); a quote
   left open at a paragraph's end continues in the next paragraph (0.85).
3. **Pronoun** tags resolve to the nearest name mentioned before them in the paragraph
   that fits the pronoun, else to the other party of a running two-person exchange, else
   to the last name mentioned earlier who fits (0.6–0.75).
4. **Beat**: an untagged quote next to a sentence whose subject is a known name
   (``Holmes leaned back. "…"``; ``八戒慌了，“…”``) (0.7).
5. **Alternation**: untagged quotes in a two-person exchange alternate (0.65, falling
   slowly with the length of the untagged run).

A name the quote addresses (``"Come, Watson, …"``, ``“悟空，…”``) is never its speaker
by rules 3–5. A quote no rule decides is marked ``unresolved``. Gestures written with a
tag become the line's action: ``said he, smiling`` → ``smiling``, ``行者笑道`` → ``笑``.

Trade-off: hand-written rules are fast (a 700,000-character novel in seconds) and
explainable (each line says which rule decided it); they miss speakers that only context
makes clear, which stay unresolved rather than being guessed.
"""
from __future__ import annotations

import re
from collections import Counter

from .lines import Line
from .quotes import split_quotes
from .speakers import Cast

# ---------------------------------------------------------------- English patterns
VERBS_EN = ("said|says|asked|asks|replied|replies|answered|cried|shouted|whispered|remarked|observed|"
            "exclaimed|continued|added|muttered|murmured|called|began|returned|responded|insisted|declared|"
            "explained|repeated|snapped|laughed|sighed|growled|yelled|protested|agreed|admitted|suggested|"
            "interrupted|demanded|inquired|enquired|retorted|stammered|hissed|grumbled|announced|urged|pleaded|"
            "warned|conceded|mused|chuckled|sobbed|roared|screamed|went on|put in|told|says|calls|cries|answers")
_TITLE = ("Mr|Mrs|Ms|Dr|Miss|Sir|Lady|Lord|Captain|Inspector|Professor|Colonel|Aunt|Uncle|Father|Mother|"
          "Master|Madame|Monsieur|King|Queen|Prince|Princess|Doctor|General|Major|Sergeant")
NAME_EN = rf"(?:(?:{_TITLE})\.?\s+)?[A-Z][a-zA-Z'’-]+(?:\s+(?:[A-Z][a-zA-Z'’-]+|de|van|von)){{0,2}}"
PRON_EN = r"[Hh]e|[Ss]he|I"
NOMINAL_EN = r"(?:the|his|her|my|our|their)\s+(?:(?!\w+ly\b)[a-z]+\s+)?(?!\w+ly\b)[a-z]+"


def _subj(k: int) -> str:
    return rf"(?:(?P<pron{k}>{PRON_EN})\b|(?P<nom{k}>{NOMINAL_EN})|(?P<name{k}>{NAME_EN}))"


def _pick(m: re.Match) -> tuple[str, str]:
    """``(kind, text)`` of the subject a pattern built with `_subj` matched."""
    for key, val in m.groupdict().items():
        if val is not None and key[:3] in ("pro", "nom", "nam"):
            return key.rstrip("0123456789"), val
    return "", ""

#: Capitalised words that start sentences but are not names.
STOP_EN = {"then", "but", "and", "so", "now", "at", "when", "here", "there", "still", "yet", "finally", "suddenly",
           "presently", "after", "before", "once", "again", "well", "yes", "no", "oh", "ah", "it", "this", "that",
           "they", "we", "you", "his", "her", "my", "our", "their", "the", "a", "an", "as", "if", "in", "on", "with",
           "for", "what", "why", "how", "who", "where", "instead", "meanwhile", "later", "soon", "outside",
           "inside", "behind", "beside", "together", "perhaps", "only", "even", "just", "one", "all", "both",
           "quite", "indeed", "good", "dear", "very", "not", "never", "from", "to", "by", "while", "without",
           "he", "she", "i", "chapter", "part", "book", "act", "scene", "said", "asked", "come", "look", "mind",
           "nobody", "someone", "everyone", "nothing", "sir", "madam", "god", "heaven", "lord"}
_AFTER_TAG_EN = re.compile(rf"^\s*[,;—–-]?\s*(?:(?:{VERBS_EN})\s+{_subj(1)}|{_subj(2)}\s+(?:\w+ly\s+)?(?:{VERBS_EN}))\b")
_BEFORE_TAG_EN = re.compile(
    rf"(?:^|[.!?;]\s+|,\s+(?:and|then)\s+|\s(?:and|then)\s+)(?:{_subj(1)}\s+(?:\w+ly\s+)?(?:{VERBS_EN})"
    rf"(?:\s+(?:to|at|with)\s+[^,:.!?]{{1,30}})?|(?:{VERBS_EN})\s+{_subj(2)})\s*[,:—–-]?\s*$")
_BEFORE_SENT_EN = re.compile(rf"(?:^|[.!?]\s+){_subj(1)}\b[^.!?]{{0,80}}\b(?:{VERBS_EN})\s*[,:]?\s*$")
_BEAT_EN = re.compile(rf"{_subj(1)}\s+(?!(?:{VERBS_EN})\b)(?P<verb>[a-z]+)\b(?P<rest>[^.!?;]{{0,60}})")
_ACTION_AFTER_EN = re.compile(r"^\s*(?:,\s*(?P<ing>(?:\w+ing|with|without|in a|in an)\b[^.;!?“”\"]{0,70})|"
                              r"\s+(?P<adv>\w+ly)\b)")
_PRONOUN_ONLY = re.compile(r"^(?:[Hh]e|[Ss]he|I)$")

# ---------------------------------------------------------------- Chinese patterns
VERBS_ZH = ("说道|笑道|叫道|喊道|问道|答道|骂道|叹道|喝道|应道|嚷道|哭道|怒道|吼道|回答道|回道|接口道|"
            "笑着说|回答|道|说|问|答|喊|嚷|吼")
_ZH_PREFIX = re.compile(r"^(?:那|这|只见|却说|只听得|只听|听得|当下|于是|随即|旁边|此时|这时|那时|忽然|突然|原来|"
                        r"一旁的|一旁|一个|一位|一只|那个|这个|又|便|却|就|也|才|都|早有|只有)+")
_ZH_SUFFIX = re.compile(r"(?:闻言|听了|见了|听说|听罢|见状|看了|回头|转身|上前|近前|起身|点头|摇头|合掌|拱手|笑嘻嘻地|"
                        r"笑嘻嘻|笑着|冷笑|大笑|微笑|苦笑|陪笑|笑|大叫|高叫|叫|大喝|喝|叹气|叹|哭着|哭|大怒|怒|大喜|欢喜|喜|"
                        r"大惊|惊|慌了|慌|冷|连忙|急忙|慌忙|忙|急|低声|高声|轻声|大声|小声|又|也|便|才|却|就|都|只|接着|随即|"
                        r"方|遂|乃|即|一面|地|着|了|对他|对她|向他|向她)+$")
_ZH_OBJ = re.compile(r"(?:对|向|与|和|跟|朝|问|叫|拉着|指着|望着|看着)")
_ZH_TAG_BEFORE = re.compile(rf"(?P<verb>{VERBS_ZH})\s*[：:，,]?\s*$")
_ZH_TAG_AFTER = re.compile(rf"^\s*[，,]?\s*(?P<subj>[^，。！？；：“”「」『』\s]{{1,10}}?)(?P<verb>{VERBS_ZH})\s*(?:[。，,！!：:]|$)")
_CJK_ONLY = re.compile(r"^[\u3400-\u9fff·]+$")
_PRON_ZH = "他她"


def zh_subject(clause_text: str) -> tuple[str, str]:
    """``(candidate name, gesture)`` from the words before a Chinese speech verb.

    ``行者笑道`` → ``("行者", "笑")``; ``悟空闻言，大喜道`` → ``("悟空", "大喜")``; ``那老者道`` → ``("老者", "")``.
    """
    parts = [p for p in re.split(r"[，、；：,]", clause_text) if p.strip()]
    gesture = ""
    for part in reversed(parts[-3:]):
        c = _ZH_PREFIX.sub("", part.strip())
        m = _ZH_OBJ.search(c)
        if m and m.start() >= 1:
            c = c[: m.start()]
        core = _ZH_SUFFIX.sub("", c)
        rest = c[len(core):]
        if not gesture and rest:
            gesture = rest
        core = _ZH_PREFIX.sub("", core)
        if core and len(core) <= 4 and _CJK_ONLY.match(core):
            if not gesture and len(parts) > 1 and part is not parts[-1]:
                gesture = _ZH_SUFFIX.sub("", _ZH_PREFIX.sub("", parts[-1].strip())) or parts[-1].strip()
            return core, _clean_gesture_zh(gesture)
        if core:
            return "", ""
    return "", ""


def _clean_gesture_zh(g: str) -> str:
    g = re.sub(r"^(?:又|也|便|才|却|就|都|只|遂|乃|即|方)+|(?:地|着|了|道)+$", "", g.strip())
    return g if 0 < len(g) <= 8 else ""


def _verb_gesture(found: tuple[str, str, str], verb: str) -> tuple[str, str, str]:
    """``行者笑道``: the 笑 of 笑道 is the gesture when the words before the verb gave none."""
    kind, subj, gesture = found
    if len(verb) >= 2 and verb[0] in "笑叫喊骂叹喝嚷哭怒吼":
        if not gesture:
            gesture = verb[:-1].rstrip("说道")
        elif len(gesture) == 1 and gesture in "大冷微苦陪高低轻怒":
            gesture += verb[0]  # 大怒道 → 大怒, 冷笑道 → 冷笑
    return kind, subj, gesture


def discover(text: str, cast: Cast, *, language: str) -> None:
    """Pass one: count every name that a speech tag in ``text`` names (fills ``cast``)."""
    if language == "zh":
        for m in re.finditer(rf"([^“”「」『』\n。！？!?]{{1,24}}?)(?:{VERBS_ZH})\s*[：:，,]?\s*[“「]", text):
            name, _g = zh_subject(m.group(1))
            if name and name[0] not in "他她我你它" and name not in ("大家", "众人"):
                cast.add(name)
        for m in re.finditer(rf"[”」]\s*([^，。！？；：“”「」『』\s]{{1,10}}?)(?:{VERBS_ZH})\s*[。，,！!]", text):
            name, _g = zh_subject(m.group(1))
            if name and name[0] not in "他她我你它":
                cast.add(name)
        # Colon beats: 陈默笑了：“…” — a name opening the clause before a colon and a quote.
        for m in re.finditer(r"(?:^|[。！？\n”」])([\u4e00-\u9fff]{2,4}?)(?:[^。！？“”「」\n]{0,12})[：:]\s*[“「]", text):
            cand = _ZH_PREFIX.sub("", m.group(1))
            if 2 <= len(cand) <= 4 and cand[0] not in "他她我你它这那" and cand not in cast.counts \
                    and not any(cand in n or n in cand for n in cast.counts) and text.count(cand) >= 3:
                cast.add(cand, n=2)
        # subtle: a candidate that extends a more frequent one ("八戒慌" of 八戒慌了) is that one.
        names = sorted(cast.counts, key=len)
        for n in names:
            for m2 in names:
                if len(m2) < len(n) and n.startswith(m2) and cast.counts[m2] >= 2:
                    cast.counts[m2] += cast.counts.pop(n)
                    break
        return
    pats = [re.compile(rf"[”\"’]\s*,?\s*(?:{VERBS_EN})\s+(?P<n>{NAME_EN})"),
            re.compile(rf"[”\"’,]\s*(?P<n>{NAME_EN})\s+(?:\w+ly\s+)?(?:{VERBS_EN})\b"),
            re.compile(rf"(?:^|[.!?]\s+|\n)(?P<n>{NAME_EN})\s+(?:\w+ly\s+)?(?:{VERBS_EN})\s*[,:]\s*[“\"]")]
    for pat in pats:
        for m in pat.finditer(text):
            name = clean_name_en(m.group("n"))
            if name:
                cast.add(name)
    # Titled names in narration (Mrs. Pemberton, Captain Brandt) are people even when untagged.
    for m in re.finditer(rf"\b(?:{_TITLE})\.?\s+[A-Z][a-z'’-]+(?:\s+[A-Z][a-z'’-]+)?", text):
        name = clean_name_en(m.group(0))
        if name and len(name.split()) >= 2:
            cast.add(name)


def clean_name_en(name: str) -> str:
    """Drop leading sentence words (``Then Holmes`` → ``Holmes``); '' when nothing name-like is left."""
    words = name.split()
    while words and words[0].casefold() in STOP_EN and words[0].strip(".") not in _TITLE.split("|"):
        words = words[1:]
    if not words or (len(words) == 1 and words[0].strip(".") in _TITLE.split("|")):
        return ""
    if words[-1].casefold() in STOP_EN:
        return ""
    return " ".join(words)


class ProseAttributor:
    """Decides the speakers of one book's quotes, scene by scene (state resets per scene)."""

    def __init__(self, cast: Cast, *, language: str) -> None:
        self.cast = cast
        self.zh = language == "zh"
        names = cast.names()
        self._names_re = None
        if names:
            alts = "|".join(re.escape(n) for n in names)
            self._names_re = re.compile(alts if self.zh else rf"(?<![\w’'-])(?:{alts})(?![\w’'-])")

    # ------------------------------------------------------------ helpers
    def _speaker(self, written: str) -> str | None:
        w = written.strip()
        if not w:
            return None
        canon = self.cast.canonical(w)
        if canon:
            return canon
        if self.zh:
            return w if _CJK_ONLY.match(w) and len(w) <= 4 else None
        if w.split()[0] in ("his", "her", "my", "our", "their"):
            return None
        w = clean_name_en(w) if w[0].isupper() else w
        return (self.cast.canonical(w) or w) if w else None

    def mentions(self, text: str) -> list[tuple[int, str]]:
        """Known names in ``text`` as ``(position, canonical)``."""
        if not self._names_re or not text:
            return []
        out = []
        for m in self._names_re.finditer(text):
            c = self.cast.canonical(m.group(0))
            if c:
                out.append((m.start(), c))
        return out

    def addressed(self, quote: str) -> set[str]:
        """Names the quote speaks to (vocatives), which are not its speaker."""
        out: set[str] = set()
        for pos, name in self.mentions(quote):
            end = pos + len(name)
            before = quote[:pos].rstrip()
            after = quote[end:end + 2]
            if self.zh:
                if (pos == 0 or before[-1:] in "，,！!。？?…") and after[:1] in "，,！!。？?啊呀":
                    out.add(name)
            else:
                tail = quote[pos:]
                m = self._names_re.match(tail) if self._names_re else None
                stop = m.end() if m else len(name)
                nxt = tail[stop:stop + 1]
                if (pos == 0 or before.endswith((",", "!", "?", ".", "dear", "my", "O", "—"))) and nxt in ",!?.—":
                    out.add(name)
        return out

    def called_by(self, quote: str) -> set[str]:
        """Names a quote clearly calls on: ``", Mrs. Pemberton?"``, ``"Mrs. Pemberton?"``, ``“悟空，你…”``.

        Stricter than `addressed`: a name opening an answer (``"Reed, ma'am."``) is not a call.
        """
        out: set[str] = set()
        q = quote.strip()
        for pos, name in self.mentions(q):
            m = self._names_re.match(q, pos) if self._names_re else None
            end = m.end() if m else pos + len(name)
            nxt = q[end:end + 1]
            prev = q[:pos].rstrip()[-1:]
            if self.zh:
                if pos == 0 and nxt in "，,！!" and len(q) > end + 1:
                    out.add(name)
            elif (prev in (",", "—") and nxt in ",?!.") or (pos == 0 and q[end:].strip() in ("?", "!", ".")):
                out.add(name)
        return out

    def _gender_votes(self, speaker: str, narration: str) -> None:
        """A vote from the pronouns in narration about ``speaker``: subjects and possessives only
        (``在他对面`` names someone else, so Chinese counts clause-initial 他/她 alone)."""
        if self.zh:
            he = len(re.findall(r"(?:^|[。！？，；：])\s*他(?!们)", narration))
            she = len(re.findall(r"(?:^|[。！？，；：])\s*她(?!们)", narration))
        else:
            low = f" {narration.casefold()} "
            he = len(re.findall(r"\b(?:he|his|himself)\b", low))
            she = len(re.findall(r"\b(?:she|her|herself)\b", low))
        if he and not she:
            self.cast.vote_gender(speaker, gender="m")
        elif she and not he:
            self.cast.vote_gender(speaker, gender="f")

    # ------------------------------------------------------------ tags
    def _tag_en(self, before: str, after: str) -> tuple[str, str, str] | None:
        """``(kind, written subject, action)`` with kind ``name``/``pron``/``nom``, from the tags."""
        m = _AFTER_TAG_EN.match(after) if after else None
        if m:
            kind, subj = _pick(m)
            if kind == "name" and not clean_name_en(subj):
                m = None
            else:
                a = _ACTION_AFTER_EN.match(after[m.end():])
                action = (a.group("ing") or a.group("adv") or "").strip() if a else ""
                self.cut = ("after", m.end() + (a.end() if a else 0))
                return kind, subj, action
        if before:
            tail = before[-200:]
            m = _BEFORE_TAG_EN.search(tail) or _BEFORE_SENT_EN.search(tail)
            if m:
                kind, subj = _pick(m)
                if kind != "name" or clean_name_en(subj):
                    self.cut = ("before", len(before) - len(tail) + m.start())
                    return kind, subj, ""
        return None

    def _tag_zh(self, before: str, after: str) -> tuple[str, str, str] | None:
        if before:
            m = _ZH_TAG_BEFORE.search(before)
            if m:
                head = before[: m.start()]
                sentence = re.split(r"[。！？!?…]", head)[-1][-40:]
                found = self._first_subject_zh(sentence)
                if found:
                    self.cut = ("before", len(head) - len(sentence))
                    return _verb_gesture(found, m.group("verb"))
        if after:
            m = _ZH_TAG_AFTER.match(after)
            if m:
                found = self._first_subject_zh(m.group("subj"))
                if found:
                    self.cut = ("after", m.end())
                    return _verb_gesture(found, m.group("verb"))
        return None

    def _first_subject_zh(self, sentence: str) -> tuple[str, str, str] | None:
        ms = self.mentions(sentence)
        pron = min((sentence.find(p) for p in _PRON_ZH if p in sentence), default=-1)
        if ms and (pron < 0 or ms[0][0] < pron):
            pos, name = ms[0]
            rest = sentence[pos:]
            rest = rest[len(next(n for n in self.cast.names() if rest.startswith(n))):] \
                if any(rest.startswith(n) for n in self.cast.names()) else rest
            gesture = _clean_gesture_zh(_ZH_PREFIX.sub("", re.split(r"[，、；,]", rest)[-1]))
            if _ZH_OBJ.match(rest) or gesture.startswith(tuple("对向与和跟")):
                gesture = ""
            return "name", name, gesture
        if pron >= 0 and sentence[pron + 1:pron + 2] != "们":
            rest = sentence[pron + 1:]
            return "pron", sentence[pron], _clean_gesture_zh(re.split(r"[，、；,]", rest)[-1])
        cand, gesture = zh_subject(sentence)
        if cand and cand not in ("我", "你", "大家", "众人"):
            return "name", cand, gesture
        return None

    # ------------------------------------------------------------ scenes
    def scene(self, paragraphs: list[str]) -> list[Line]:
        """The lines of one scene (a list of paragraphs), every quote attributed or marked."""
        out: list[Line] = []
        recent: list[str | None] = []   # speakers of recent quote paragraphs
        run = 0                          # untagged paragraphs decided by alternation in a row
        last_mentions: list[str] = []    # names mentioned in the narration of earlier paragraphs
        open_speaker: str | None = None
        reset_len = 120 if self.zh else 250
        self.first_person = False
        self.lead: str | None = None
        self.called: str | None = None  # the one person the last quote spoke to by name
        for par in paragraphs:
            segs = split_quotes(par)
            narr_all = " ".join(s.text for s in segs if not s.quote)
            if self.cast.narrator and re.search(r"我" if self.zh else r"\b(?:I|me|my)\b", narr_all):
                self.first_person = True
            if not any(s.quote for s in segs):
                text = par.strip()
                if text:
                    out.append(Line(text))
                    ms = [n for _p, n in self.mentions(text)]
                    if len(set(ms)) == 1:
                        self._gender_votes(ms[0], text)
                    last_mentions = (last_mentions + ms)[-6:]
                    first_person_here = self.cast.narrator and re.search(
                        r"我" if self.zh else r"\b(?:I|me|my)\b", text)
                    if len(text) > reset_len:
                        self.called = None
                    if len(text) > reset_len or (first_person_here and len(set(ms)) == 1 and ms[0] != (
                            recent[-1] if recent else None)):
                        recent, run = [], 0  # a long pause, or the narrator turning to someone: a new exchange
                open_speaker = None
                continue
            self.lead = None
            if not recent and out and not out[-1].quote:
                ms = {n for _p, n in self.mentions(out[-1].text)}
                self.lead = next(iter(ms)) if len(ms) == 1 else None
            lines, speakers = self._paragraph(segs, recent=recent, run=run, last_mentions=last_mentions,
                                              open_speaker=open_speaker)
            out.extend(lines)
            hows = {ln.how for ln in lines if ln.quote}
            run = run + 1 if hows == {"alternation"} else 0
            if speakers:
                recent = (recent + [speakers[-1]])[-4:]
            else:
                recent, run = [], 0
            narr = " ".join(s.text for s in segs if not s.quote)
            last_mentions = (last_mentions + [n for _p, n in self.mentions(narr)])[-6:]
            open_speaker = speakers[-1] if speakers and segs[-1].quote and segs[-1].open else None
            last_quote = next((ln for ln in reversed(lines) if ln.quote), None)
            called = self.called_by(last_quote.text) - {last_quote.speaker} if last_quote else set()
            self.called = next(iter(called)) if len(called) == 1 else None
        return out

    def _paragraph(self, segs, *, recent, run, last_mentions, open_speaker) -> tuple[list[Line], list[str]]:
        lines: list[Line | None] = []
        quote_at: list[int] = []
        tag_cuts: list[tuple[int, str, int]] = []
        narration = " ".join(s.text for s in segs if not s.quote)
        for i, s in enumerate(segs):
            if not s.quote:
                lines.append(Line(s.text.strip()) if s.text.strip() else None)
                continue
            before = segs[i - 1].text if i > 0 and not segs[i - 1].quote else ""
            after = segs[i + 1].text if i + 1 < len(segs) and not segs[i + 1].quote else ""
            self.cut = None
            tag = self._tag_zh(before, after) if self.zh else self._tag_en(before, after)
            text = s.text.strip()
            if not self.zh and text.endswith(","):
                text = text[:-1].rstrip() + "."
            line = Line(text, quote=True, how="unresolved")
            if tag and self.cut:
                tag_cuts.append((i, *self.cut))
            if tag:
                kind, subj, action = tag
                line.action = action
                if kind == "pron":
                    near = (before[-12:] if self.cut and self.cut[0] == "before" else after[:40])
                    again = bool(re.search(r"又|接着|continued|went on|added", near))
                    if again and recent and recent[-1] and self.cast.fits(recent[-1], pronoun=subj):
                        who, conf = recent[-1], 0.8
                    else:
                        who, conf = self._pronoun(subj, segs, i, recent=recent, last_mentions=last_mentions)
                    if who and who not in self.addressed(s.text):
                        line.speaker, line.how, line.confidence = who, "pronoun", conf
                else:
                    who = self._speaker(subj)
                    if who:
                        line.speaker, line.how, line.confidence = who, "tag", 0.95
                        self._gender_votes(who, narration)
            lines.append(line)
            quote_at.append(len(lines) - 1)
        # The speech tags themselves ("said Holmes, smiling", "八戒笑道：") are not narration.
        for qi, where, cut in tag_cuts:
            k = qi + 1 if where == "after" else qi - 1
            if 0 <= k < len(lines) and lines[k] is not None and not lines[k].quote:
                seg = segs[k].text
                rest = seg[cut:] if where == "after" else seg[:cut]
                rest = rest.strip(" ,;:.，。：；—–-")
                lines[k] = Line(rest) if len(rest) > 2 else None
        quotes = [lines[k] for k in quote_at]
        tagged = [q for q in quotes if q.speaker]
        distinct = {q.speaker for q in tagged}
        # Other quotes of the paragraph: its one tagged speaker, or the nearest tagged one before.
        if tagged:
            last = None
            for q in quotes:
                if q.speaker:
                    last = q.speaker
                elif len(distinct) == 1:
                    q.speaker, q.how, q.confidence = next(iter(distinct)), "paragraph", 0.9
                elif last:
                    q.speaker, q.how, q.confidence = last, "paragraph", 0.7
        else:
            who, how, conf = self._untagged(segs, quotes, recent=recent, run=run, open_speaker=open_speaker)
            if who:
                for q in quotes:
                    q.speaker, q.how, q.confidence = who, how, conf
        # subtle: a guess below the bar must not carry an exchange on (it would seed alternation).
        speakers = [q.speaker for q in quotes if q.speaker and q.confidence >= 0.6]
        return [ln for ln in lines if ln is not None], speakers

    def _pronoun(self, pron: str, segs, i, *, recent, last_mentions) -> tuple[str | None, float]:
        before = " ".join(s.text for s in segs[:i] if not s.quote)
        after_tag = segs[i + 1].text if i + 1 < len(segs) and not segs[i + 1].quote else ""
        addressed = self.addressed(segs[i].text)
        if pron in ("I", "我"):
            return self.cast.narrator, 0.9
        # subtle: "“…,” he said to Holmes" names the listener after the tag, not the speaker.
        listeners = {n for _p, n in self.mentions(after_tag)}
        bad = addressed | listeners

        def fit(name: str | None) -> int:  # 2: known gender fits, 1: unknown, 0: cannot be
            if not name or name in bad or not self.cast.fits(name, pronoun=pron):
                return 0
            return 2 if self.cast.gender(name) else 1

        for _pos, name in reversed(self.mentions(before)):
            if fit(name):
                return name, 0.75 if fit(name) == 2 else 0.7
        if self.called and fit(self.called):
            return self.called, 0.72 if fit(self.called) == 2 else 0.66  # answering the one just named
        last = recent[-1] if recent else None
        other = recent[-2] if len(recent) >= 2 and recent[-2] != last else None
        if other is None and last and self.first_person and last != self.cast.narrator:
            other = self.cast.narrator
        if other and fit(other) == 2:
            return other, 0.7
        if other and fit(other) == 1 and fit(last) < 2:
            return other, 0.58  # gender unknown: kept, but below the default bar
        if last and fit(last) == 2 and fit(other) == 0:
            return last, 0.65  # only the last speaker fits: the same person goes on
        for name in reversed(last_mentions):
            if name != last and fit(name) == 2:
                return name, 0.6
        return None, 0.0

    def _untagged(self, segs, quotes, *, recent, run, open_speaker) -> tuple[str | None, str, float]:
        addressed: set[str] = set()
        for q in quotes:
            addressed |= self.addressed(q.text)
        if open_speaker and segs[0].quote:
            return open_speaker, "continued", 0.85
        for q in quotes:  # a speaker naming themself: "My name is Reed." / “我叫陈默。”
            who = self._self_named(q.text)
            if who:
                return who, "beat", 0.8
        # A beat: a known name as the subject of the narration around the quote.
        for s in segs:
            if s.quote:
                continue
            who = self._beat(s.text)
            if who and who not in addressed:
                self._gender_votes(who, s.text)
                return who, "beat", 0.7
        if self.called and self.called not in addressed:
            return self.called, "addressed", 0.7  # "…, Mrs. Pemberton?" — the next line is her answer
        if self.lead and self.lead not in addressed:
            return self.lead, "beat", 0.62  # the one person the narration just named opens the exchange
        last = recent[-1] if recent else None
        other = recent[-2] if len(recent) >= 2 and recent[-2] != last else None
        if other is None and last and self.first_person and last != self.cast.narrator:
            other = self.cast.narrator  # a first-person narrator is the other half of the exchange
        if last and other and other not in addressed:
            return other, "alternation", max(0.55, 0.65 - 0.01 * run)
        return None, "unresolved", 0.0

    def _self_named(self, quote: str) -> str | None:
        pat = r"(?:我叫|我是|我乃|我就是)" if self.zh else r"\b(?:[Mm]y name is|I am|I'm|[Cc]all me)\s+"
        for m in re.finditer(pat, quote):
            for pos, name in self.mentions(quote[m.end():m.end() + 40]):
                if pos == 0:
                    return name
        return None

    def _beat(self, narration: str) -> str | None:
        text = narration.strip()
        if not text:
            return None
        if self.zh:
            ms = self.mentions(text)
            if ms and ms[0][0] <= 2 and len({n for _p, n in ms}) == 1:
                return ms[0][1]
            return None
        for sent in re.split(r"(?<=[.!?;])\s+", text):
            m = _BEAT_EN.match(sent.strip())
            if m and m.group("name1"):
                name = clean_name_en(m.group("name1"))
                who = self.cast.canonical(name) if name else None
                if who and len({n for _p, n in self.mentions(text)}) == 1:
                    return who
        return None


def speaker_counts(lines: list[Line]) -> Counter[str]:
    """How many quotes each speaker has among ``lines``."""
    return Counter(ln.speaker for ln in lines if ln.quote and ln.speaker)
