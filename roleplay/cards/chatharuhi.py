"""ChatHaruhi characters → cards: folders, zips and jsonl packages.

A ChatHaruhi character is a ``system_prompt.txt`` plus ``texts/*.txt``, one scene per
file, lines like ``春日:「…」`` / ``Sherlock: …`` (half- or full-width colon), actions
inside brackets (``春日:(笑)「…」``) and ``旁白:`` narration. The scenes are kept verbatim,
every non-blank line, one story per scene, so they can be written as ``stories/*.txt``
beside the card (large corpora stay diffable and out of the YAML). The character's name
is the most frequent speaker other than narration, cross-checked with the system prompt:
a frequent speaker the prompt names wins over a chattier one it does not (a scene-heavy
sidekick must not take over). Speakers whose name holds the character's name or is held
in it (孙悟空 for 悟空) become its ``aliases``. The persona is the system prompt as written.

The jsonl package (ChatHaruhi 2) is read without any hub: each line is a JSON object whose
``text`` (or base64 ``enc_text``) is a scene; the line whose embedding column holds the
string ``system_prompt`` is the prompt, ``config`` lines are skipped, and the embedding
vectors themselves are ignored (we compute our own).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CardError
from .safety import LIMITS
from .schema import ID_RE, Character, Style

#: Speakers that are narration, not characters.
NARRATION = {"旁白", "narration", "narrator", "旁白者", "叙述"}
_LINE = re.compile(r"^\s*([^:：「」『』()（）*\n]{1,40}?)\s*[:：]\s*(.*)$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")


@dataclass
class Scenes:
    """What a ChatHaruhi source holds: the system prompt and its scenes ``[(name, text)]``."""

    system_prompt: str
    scenes: list[tuple[str, str]] = field(default_factory=list)


def speaker_of(line: str) -> str | None:
    """The speaker of a ``Name:「…」`` line, or None for a line without one."""
    m = _LINE.match(line)
    return m.group(1).strip() if m else None


def decode_text(data: bytes, *, file: str | Path | None = None) -> str:
    """UTF-8 (with or without BOM), else GB18030 (older Chinese corpora); CardError otherwise."""
    if len(data) > LIMITS.file_bytes:
        raise CardError(f"file is {len(data)} bytes; the limit is {LIMITS.file_bytes}", file=file)
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise CardError("not UTF-8 or GB18030 text; save it as UTF-8", file=file)


def clean_scene(text: str) -> str:
    """A scene with its line endings normalised and blank lines dropped; every other line kept."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return "\n".join(ln for ln in lines if ln.strip())


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def from_files(files: dict[str, bytes], *, source: str) -> Scenes | None:
    """Find a ChatHaruhi layout (``…/system_prompt.txt`` + ``…/texts/*.txt``) in a file map."""
    prompts = sorted((n for n in files if n.rsplit("/", 1)[-1] == "system_prompt.txt"), key=len)
    for prompt_name in prompts:
        prefix = prompt_name[: -len("system_prompt.txt")]
        texts = sorted((n for n in files if n.startswith(prefix + "texts/") and n.endswith(".txt")
                        and "/" not in n[len(prefix + "texts/"):]), key=_natural_key)
        if not texts:
            continue
        out = Scenes(decode_text(files[prompt_name], file=f"{source}:{prompt_name}").strip())
        for n in texts:
            scene = clean_scene(decode_text(files[n], file=f"{source}:{n}"))
            if scene:
                out.scenes.append((n.rsplit("/", 1)[-1], scene))
        _check_count(out, source)
        return out
    return None


def from_folder(folder: Path) -> Scenes:
    """Read ``folder/system_prompt.txt`` and ``folder/texts/*.txt``."""
    prompt = folder / "system_prompt.txt"
    texts = folder / "texts"
    if not prompt.is_file() or not texts.is_dir():
        raise CardError("not a ChatHaruhi folder: needs system_prompt.txt and texts/*.txt", file=folder)
    files: dict[str, bytes] = {}
    total = 0
    for p in [prompt, *sorted(texts.glob("*.txt"))]:
        if p.is_symlink():
            raise CardError("symbolic links are not followed in imports", file=p)
        data = p.read_bytes()
        total += len(data)
        if total > LIMITS.zip_total_bytes:
            raise CardError(f"the folder holds more than {LIMITS.zip_total_bytes} bytes of text", file=folder)
        files[p.relative_to(folder).as_posix()] = data
        if len(files) > LIMITS.stories + 1:
            raise CardError(f"more than {LIMITS.stories} scene files", file=folder)
    found = from_files(files, source=str(folder))
    if found is None:
        raise CardError("texts/ holds no .txt scene files", file=texts)
    return found


def from_jsonl(text: str, *, source: str) -> Scenes:
    """Read a ChatHaruhi 2 jsonl package (one JSON object per line)."""
    prompt = ""
    out = Scenes("")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise CardError(f"invalid JSON: {exc}".splitlines()[0], file=source, line=lineno) from None
        if not isinstance(rec, dict):
            raise CardError("each line must be a JSON object", file=source, line=lineno)
        body = rec.get("text")
        if body is None and isinstance(rec.get("enc_text"), str):
            try:
                body = base64.b64decode(rec["enc_text"], validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise CardError("bad base64 or UTF-8", file=source, field="enc_text", line=lineno) from None
        markers = {v for v in rec.values() if isinstance(v, str) and v in ("system_prompt", "config")}
        if "config" in markers:
            continue
        if not isinstance(body, str):
            raise CardError("needs a string 'text' (or base64 'enc_text')", file=source, line=lineno)
        if "system_prompt" in markers:
            prompt = body.strip()
            continue
        scene = clean_scene(body)
        if scene:
            out.scenes.append((f"{len(out.scenes) + 1:05d}.txt", scene))
    if not out.scenes:
        raise CardError("no scenes found; a ChatHaruhi jsonl has one {\"text\": …} object per line", file=source)
    out.system_prompt = prompt
    _check_count(out, source)
    return out


def _check_count(scenes: Scenes, source: str) -> None:
    if len(scenes.scenes) > LIMITS.stories:
        raise CardError(f"{len(scenes.scenes)} scenes; the limit is {LIMITS.stories}", file=source)


def detect_name(scenes: Scenes) -> str | None:
    """The most frequent non-narration speaker, preferring one the system prompt names."""
    counts: Counter[str] = Counter()
    for _name, text in scenes.scenes:
        for line in text.split("\n"):
            who = speaker_of(line)
            if who and who.casefold() not in NARRATION:
                counts[who] += 1
    if not counts:
        return None
    ranked = counts.most_common()
    top = ranked[0][1]
    prompt = scenes.system_prompt
    # subtle: a speaker the prompt names wins if it speaks at least a third as often as the
    # chattiest one; the prompt ("You are playing 春日…") is the author's own statement.
    for who, n in ranked:
        if n * 3 >= top and who in prompt:
            return who
    return ranked[0][0]


def detect_aliases(scenes: Scenes, name: str) -> list[str]:
    """Other speaker names of the same character: a speaker whose name holds ``name`` or is
    held in it (孙悟空 / 齐天悟空 for 悟空; 悟空 for 孙悟空), most frequent first.

    Trade-off: only containment is trusted; names with nothing in common (行者, 大圣)
    cannot be told apart from other speakers without reading the story, so the author adds
    those to ``aliases`` by hand. A group line (``行者、八戒:``) is not an alias.
    """
    counts: Counter[str] = Counter()
    for _name, text in scenes.scenes:
        for line in text.split("\n"):
            who = speaker_of(line)
            if who and who != name and len(who) >= 2 and (name in who or who in name) \
                    and not re.search(r"[、,，&和与/]", who) and who.casefold() not in NARRATION:
                counts[who] += 1
    # subtle: a one-off speaker (假悟空, the impostor) is not the character; twice is the floor.
    return [who for who, n in counts.most_common(8) if n >= 2]


def detect_language(text: str) -> str:
    """``zh``/``ja`` when CJK characters dominate the sample, else ``en``."""
    sample = text[:20000]
    cjk = len(_CJK.findall(sample))
    letters = sum(ch.isalpha() for ch in sample) or 1
    if cjk / letters < 0.3:
        return "en"
    return "ja" if len(_KANA.findall(sample)) > cjk * 0.2 else "zh"


def detect_style(text: str) -> Style:
    """Asterisk actions (``*smiles*``) vs brackets; corner quotes 「」 when lines use them."""
    stars = len(re.findall(r"\*[^*\n]{1,200}\*", text))
    parens = len(re.findall(r"[(（][^()（）\n]{1,200}[)）]", text))
    corners = text.count("「")
    doubles = text.count('"') // 2 + text.count("“")
    quote = "corner" if corners and corners >= doubles else ("double" if doubles else "none")
    return Style(action_style="asterisk" if stars > parens else "paren", quote_style=quote)


def slug(text: str) -> str | None:
    """An id from a name (``Sherlock Holmes`` → ``sherlock-holmes``), or None if nothing is left."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-_")[:64].strip("-_")
    return s if s and ID_RE.match(s) else None


def to_card(scenes: Scenes, *, card_id: str | None, fallback_name: str) -> tuple[Character, list[tuple[str, str]]]:
    """A card (persona = system prompt) and its scenes as ``stories/`` files ``[(file name, text)]``."""
    name = detect_name(scenes) or fallback_name
    corpus = "\n".join(t for _n, t in scenes.scenes[:200])
    cid = card_id or slug(name) or slug(fallback_name) or "character"
    card = Character(id=cid, name=name, aliases=detect_aliases(scenes, name),
                     language=detect_language(scenes.system_prompt + corpus),
                     persona=scenes.system_prompt, style=detect_style(corpus),
                     extensions={"chatharuhi": {"scene_files": len(scenes.scenes)}})
    files: list[tuple[str, str]] = []
    used: set[str] = set()
    for i, (fname, text) in enumerate(scenes.scenes):
        stem = re.sub(r"[^\w.-]+", "_", fname.rsplit(".", 1)[0]).strip("._") or f"scene{i}"
        out = f"{stem[:80]}.txt"
        if out in used:
            out = f"{stem[:80]}_{i}.txt"
        used.add(out)
        files.append((out, text + "\n"))
    return card, files
