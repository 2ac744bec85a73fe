"""Chapters and scene breaks, and scenes written as ChatHaruhi stories.

`chapters` yields a book's chapters lazily (``Chapter 3``, ``CHAPTER III``, ``第三回``,
``第12章``, ``ACT II``, Markdown headings; EPUB chapters come from the book itself);
`scene_texts` cuts a chapter at scene breaks (``* * *``, ``***``, ``---``, ``◇◇◇``,
``SCENE 2``, ``第二场``) and returns each scene's paragraphs.

`stories_for` turns a scene's lines into stories in the ChatHaruhi line format —
``Name:「(action) line」`` for speech, ``旁白:「…」`` for narration — keeping only stretches
where the character speaks, cut into windows of at most `STORY_CHARS` characters at line
boundaries (retrieval ranks short, focused stories better than whole chapters), and
trimming long narration to its first sentences.

Trade-off: heading patterns cover the common conventions; a book with none is one
chapter split only at scene breaks, which still works, only with coarser stories.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .lines import Line

_CN_NUM = "一二三四五六七八九十百千零〇两壹贰叁肆伍陆柒捌玖拾"
CHAPTER_RE = re.compile(
    rf"^[ \t]*(?:(?:CHAPTER|Chapter|BOOK|Book|PART|Part|ACT|Act)[ \t]+(?:[IVXLCDM]+|\d+|[A-Z][a-z]+)\b[^\n]{{0,70}}"
    rf"|第[{_CN_NUM}\d]{{1,6}}[章回节卷幕部集][^\n]{{0,40}}|#{{1,3}}[ \t]+[^\n]{{1,80}})[ \t]*$", re.M)
SCENE_BREAK_RE = re.compile(
    rf"^[ \t]*(?:(?:\*[ \t]*){{3,}}|(?:-[ \t]*){{3,}}|(?:~[ \t]*){{3,}}|#|§|[◇◆○●☆★＊]{{1,6}}|(?:SCENE|Scene)[ \t]+"
    rf"(?:[IVXLC]+|\d+)\b[^\n]{{0,60}}|第[{_CN_NUM}\d]{{1,4}}场[^\n]{{0,30}})[ \t]*$", re.M)
#: The longest story written (characters); a scene is cut into windows of about this size.
STORY_CHARS = 1200
STORY_CHARS_ZH = 600
#: Narration longer than this is trimmed to its first sentences.
NARRATION_CHARS = 240
NARRATION_SPEAKER = "旁白"


@dataclass
class Chapter:
    index: int
    title: str
    text: str


def count_chapters(text: str) -> int:
    """How many chapters `chapters` will yield (for a progress bar's total)."""
    return max(1, sum(1 for _ in CHAPTER_RE.finditer(text)) + (0 if _starts_with_heading(text) else 1))


def _starts_with_heading(text: str) -> bool:
    m = CHAPTER_RE.search(text)
    return bool(m) and not text[: m.start()].strip()


def chapters(text: str, *, given: list[tuple[str, str]] | None = None) -> Iterator[Chapter]:
    """The chapters of ``text`` in order (lazily), or the ``given`` ``(title, text)`` ones (EPUB)."""
    if given:
        for i, (title, body) in enumerate(given):
            yield Chapter(i, title, body)
        return
    start, title, idx = 0, "", 0
    for m in CHAPTER_RE.finditer(text):
        body = text[start:m.start()]
        if body.strip():
            yield Chapter(idx, title, body)
            idx += 1
        start, title = m.end(), m.group(0).strip().lstrip("#").strip()
    body = text[start:]
    if body.strip() or idx == 0:
        yield Chapter(idx, title, body)


def scene_texts(chapter_text: str) -> list[list[str]]:
    """The chapter's scenes, each a list of non-empty paragraphs (one per line)."""
    scenes: list[list[str]] = []
    for part in SCENE_BREAK_RE.split(chapter_text):
        paras = [p.strip() for p in part.split("\n") if p.strip()]
        if paras:
            scenes.append(paras)
    return scenes


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    m = None
    for m in re.finditer(r"[.!?。！？…]", cut):
        pass
    return cut[: m.end()] if m and m.end() > limit // 3 else cut.rstrip() + "…"


def format_line(line: Line, *, language: str) -> str:
    """One story line: ``Name:「(action) text」`` or ``旁白:「…」``."""
    text = " ".join(line.text.split()).replace("「", "『").replace("」", "』")
    if not line.quote:
        return f"{NARRATION_SPEAKER}:「{_trim(text, NARRATION_CHARS // (2 if language == 'zh' else 1))}」"
    who = line.speaker or "?"
    note = ""
    if line.action:
        act = line.action.replace("(", "").replace(")", "")
        note = f"（{act}）" if language == "zh" else f"({act}) "
    return f"{who}:「{note}{text}」"


def stories_for(lines: list[Line], *, names: set[str], language: str, min_confidence: float) -> list[str]:
    """Stories (ChatHaruhi text) from one scene's lines where a speaker in ``names`` talks.

    Quotes below ``min_confidence`` are written as ``?:「…」`` (speaker unknown), never
    under the character's name.
    """
    limit = STORY_CHARS_ZH if language == "zh" else STORY_CHARS
    rendered: list[tuple[str, bool]] = []
    for ln in lines:
        sure = ln.quote and ln.speaker is not None and ln.confidence >= min_confidence
        shown = ln if sure or not ln.quote else Line(ln.text, quote=True, speaker=None)
        rendered.append((format_line(shown, language=language), bool(sure and ln.speaker in names)))
    if not any(mine for _t, mine in rendered):
        return []
    stories: list[str] = []
    cur: list[str] = []
    cur_mine = False
    size = 0
    for text, mine in rendered:
        if cur and size + len(text) > limit:
            if cur_mine:
                stories.append("\n".join(cur))
            # subtle: keep the last line as context for the next window, so a reply is not cut from its cue
            cur, size, cur_mine = cur[-1:], len(cur[-1]), False
        cur.append(text)
        size += len(text) + 1
        cur_mine = cur_mine or mine
    if cur and cur_mine:
        stories.append("\n".join(cur))
    return [_strip_edges(s) for s in stories]


def _strip_edges(story: str) -> str:
    """Drop narration-only lines at a story's two ends beyond one of each (less noise to retrieve)."""
    lines = story.split("\n")
    while len(lines) > 2 and lines[0].startswith(NARRATION_SPEAKER) and lines[1].startswith(NARRATION_SPEAKER):
        lines.pop(0)
    while len(lines) > 2 and lines[-1].startswith(NARRATION_SPEAKER) and lines[-2].startswith(NARRATION_SPEAKER):
        lines.pop()
    return "\n".join(lines)
