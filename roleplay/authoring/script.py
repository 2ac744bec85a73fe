"""Plays, screenplays and subtitles: the speaker is written at the start of the line.

Forms read: ``HAMLET. To be…`` / ``LADY MACBETH: …`` / ``Holmes: …`` / ``孙悟空：…`` (a
speaker line), a screenplay cue (a line of capitals alone, ``HOLMES``, with the speech on
the lines after it), and stage directions in brackets — alone on a line they are
narration, at the start of a speech (``HAMLET. [Aside] …``, ``(to Watson)``) they become
the line's action. `looks_like_script` decides whether a text is a script at all: a
prose novel where a few lines start ``Name:`` stays prose.

Trade-off: a speaker must be written the same way each time to be counted as one person
(scripts are consistent about it); aliases still merge through `Cast`.
"""
from __future__ import annotations

import re
from collections import Counter

from .lines import Line
from .speakers import Cast

_EN_CAPS = re.compile(r"^\s*(?P<who>[A-Z][A-Z'’ .-]{0,28}[A-Z])\s*[.:：]\s+(?P<text>\S.*)$")
_EN_TITLE = re.compile(r"^\s*(?P<who>[A-Z][a-zA-Z'’-]+(?: [A-Z][a-zA-Z'’-]+){0,2})\s*[:：]\s*(?P<text>\S.*)$")
_ZH = re.compile(r"^\s*(?P<who>[\u3400-\u9fff·]{1,8})\s*[：:]\s*(?P<text>[^“「\s].*)$")
_CUE = re.compile(r"^\s*(?P<who>[A-Z][A-Z'’ .-]{0,28}[A-Z])\s*(?:\((?:CONT'D|V\.O\.|O\.S\.|cont'd)\))?\s*$")
_HEADING = re.compile(r"^\s*(?:INT\.|EXT\.|INT/EXT|FADE IN|FADE OUT|CUT TO|ACT\b|SCENE\b|THE END|第.{1,4}[幕场])")
_DIRECTION = re.compile(r"^\s*(?:\[[^\]]*\]|\([^)]*\)|（[^）]*）)\s*$")
_LEAD_DIRECTION = re.compile(r"^\s*(?:\[(?P<a>[^\]]{1,80})\]|\((?P<b>[^)]{1,80})\)|（(?P<c>[^）]{1,40})）)\s*")
_NOT_SPEAKERS = {"NOTE", "CHAPTER", "ACT", "SCENE", "THE END", "EXIT", "EXEUNT", "ENTER", "TITLE", "PART",
                 "INT", "EXT", "FADE IN", "FADE OUT", "CUT TO"}
_ZH_VERB_END = re.compile(r"(?:道|说|问|答|喊|叫|嚷|吼)$")


def speaker_line(line: str) -> tuple[str, str] | None:
    """``(speaker, speech)`` for a ``NAME. …`` / ``NAME: …`` line, else None."""
    for pat in (_EN_CAPS, _ZH, _EN_TITLE):
        m = pat.match(line)
        if m:
            who = m.group("who").strip(" .")
            if who.upper() in _NOT_SPEAKERS or _HEADING.match(line):
                return None
            if pat is _ZH and _ZH_VERB_END.search(who):
                return None  # 悟空道：“…” is prose, not a script line
            return who, m.group("text").strip()
    return None


def looks_like_script(text: str) -> bool:
    """True when speaker lines make up much of the text and a few speakers repeat."""
    lines = [ln for ln in text[:400_000].split("\n") if ln.strip()]
    if len(lines) < 4:
        return False
    who: Counter[str] = Counter()
    hits = 0
    for i, ln in enumerate(lines):
        sl = speaker_line(ln)
        if sl:
            hits += 1
            who[sl[0]] += 1
        elif _CUE.match(ln) and i + 1 < len(lines) and not _CUE.match(lines[i + 1]) and not _HEADING.match(ln):
            hits += 1
            who[_CUE.match(ln).group("who").strip()] += 1
    repeaters = [w for w, n in who.items() if n >= 2]
    return hits >= 0.3 * len(lines) and len(repeaters) >= 2


def _action_and_text(speech: str) -> tuple[str, str]:
    m = _LEAD_DIRECTION.match(speech)
    if m:
        return (m.group("a") or m.group("b") or m.group("c") or "").strip(), speech[m.end():].strip()
    return "", speech


def script_scene(paragraphs: list[str], cast: Cast) -> list[Line]:
    """The lines of one scene of a script; every speech is attributed to its written speaker."""
    out: list[Line] = []
    cue: str | None = None
    for block in paragraphs:
        for raw in block.split("\n"):
            line = raw.strip()
            if not line:
                cue = None
                continue
            if _DIRECTION.match(line) or _HEADING.match(line):
                out.append(Line(line.strip("[]()（）").strip()))
                continue
            sl = speaker_line(line)
            if sl:
                who, speech = sl
                cue = None
            elif _CUE.match(line) and line.strip().upper() not in _NOT_SPEAKERS:
                cue = _CUE.match(line).group("who").strip()
                continue
            elif cue:
                who, speech = cue, line
            else:
                out.append(Line(line))
                continue
            action, speech = _action_and_text(speech)
            if not speech:
                if action:
                    out.append(Line(action))
                continue
            if out and out[-1].quote and out[-1].speaker == (cast.canonical(who) or who) and cue:
                out[-1].text += " " + speech  # a screenplay speech over several lines
                continue
            out.append(Line(speech, quote=True, speaker=cast.canonical(who) or who, how="script",
                            confidence=0.98, action=action))
    return out


def discover_script(text: str, cast: Cast) -> None:
    """Count the written speakers of a script into ``cast``."""
    lines = text.split("\n")
    for i, ln in enumerate(lines):
        sl = speaker_line(ln)
        if sl:
            cast.add(sl[0])
        elif _CUE.match(ln) and i + 1 < len(lines) and lines[i + 1].strip() and not _HEADING.match(ln):
            who = _CUE.match(ln).group("who").strip()
            if who.upper() not in _NOT_SPEAKERS:
                cast.add(who)
