"""Reading a book into plain text: .txt/.md in any detectable encoding, .epub, .srt.

A `Book` is the decoded text plus what kind of text it is (``prose``, ``play`` or
``subtitles``); chapters and scenes are found later (`scenes`). Everything is read into
memory once: a book is bounded by `MAX_BOOK_BYTES` (a long novel is a few MB), so the
whole pipeline stays bounded too, and a bigger file is refused with one clear error
instead of being half-read.

Encodings: BOMs first (UTF-8/16/32), then strict UTF-8, then UTF-16 without a BOM (seen
from where the NUL bytes sit), then GB18030 when it decodes strictly into mostly CJK
text, and only then `charset_normalizer`'s guess. Trade-off: the fixed order is cheaper
and more predictable than asking the detector first, which on short or repetitive
Chinese samples guesses Thai or Baltic code pages. Binary files (NUL bytes, known magic
numbers, control characters) are refused, never decoded into garbage.

EPUB goes through `ebooklib` (spine order; each XHTML document is a chapter, its text
taken with lxml); SRT is parsed here (it is numbered cues of a few lines each).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CardError

#: The largest book read (bytes on disk). A 700,000-character Chinese novel is ~2 MB.
MAX_BOOK_BYTES = 32 * 1024 * 1024
SUFFIXES = (".txt", ".md", ".markdown", ".text", ".epub", ".srt")

_MAGIC = {b"%PDF": "a PDF", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
          b"\x7fELF": "a program", b"MZ": "a Windows program", b"PK\x03\x04": "a zip archive",
          b"\x1f\x8b": "a gzip archive", b"Rar!": "a RAR archive", b"7z\xbc\xaf": "a 7z archive",
          b"\xd0\xcf\x11\xe0": "an old Word/Office file", b"SQLite format": "a SQLite database"}
#: CJK ideographs with CJK and full-width punctuation (“”：，。！ are common in Chinese text).
_CJK_TEXT = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef\u2010-\u2027]")


@dataclass
class Book:
    """A decoded book: its text, kind and where it came from."""

    text: str
    kind: str = "prose"            # prose | play | subtitles
    title: str = ""
    source: str = ""
    encoding: str = "utf-8"
    #: For EPUB: the text of each spine document (chapters come from the book itself).
    chapters: list[tuple[str, str]] = field(default_factory=list)


def read_book(path: str | Path) -> Book:
    """Read ``path`` (.txt, .md, .epub, .srt) into a `Book`; `CardError` naming the file otherwise."""
    path = Path(path)
    try:
        if not path.is_file():
            raise CardError("no such file; give the path of a .txt, .md, .epub or .srt book", file=path)
        size = path.stat().st_size
    except OSError as exc:
        raise CardError(f"cannot read: {exc.strerror}", file=path) from None
    if size > MAX_BOOK_BYTES:
        raise CardError(f"the file is {size / 2**20:.1f} MiB; books up to {MAX_BOOK_BYTES // 2**20} MiB are "
                        "read: split it into volumes and extract each", file=path)
    if size == 0:
        raise CardError("the file is empty; give a book with some text in it", file=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read: {exc.strerror}", file=path) from None
    suffix = path.suffix.lower()
    title = path.stem.replace("_", " ").strip()
    if suffix == ".epub" or (data.startswith(b"PK\x03\x04") and b"application/epub+zip" in data[:200]):
        return read_epub(path, data=data, title=title)
    text, encoding = decode(data, file=path)
    if suffix == ".srt" or _looks_like_srt(text):
        return Book(text=srt_to_text(text, file=path), kind="subtitles", title=title, source=str(path),
                    encoding=encoding)
    return Book(text=text, title=title, source=str(path), encoding=encoding)


def decode(data: bytes, *, file: str | Path | None = None) -> tuple[str, str]:
    """Decode book bytes; returns ``(text, encoding)`` or raises one clear `CardError`."""
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            raise CardError(f"this is {what}, not text; save the book as .txt (UTF-8), .epub or .srt", file=file)
    text, enc = _decode(data, file=file)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sample = text[:200_000]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\t\f\v") + sample.count("\ufffd")
    if controls > max(8, len(sample) // 200):
        raise CardError(f"this looks like a binary file, not text ({controls} control characters in the first "
                        f"{len(sample)}); save the book as .txt (UTF-8)", file=file)
    return text, enc


def _decode(data: bytes, *, file: str | Path | None) -> tuple[str, str]:
    boms = [(b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
            (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")]
    for bom, enc in boms:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError as exc:
                raise CardError(f"starts with a {enc} byte-order mark but is not valid {enc} at byte "
                                f"{exc.start}; re-save it as UTF-8", file=file) from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    head = data[:65536]
    even_nuls, odd_nuls = head[0::2].count(0), head[1::2].count(0)
    if odd_nuls > len(head) // 8 and even_nuls < odd_nuls // 4 or even_nuls > len(head) // 8 and odd_nuls < even_nuls // 4:
        enc = "utf-16-le" if odd_nuls > even_nuls else "utf-16-be"
        try:
            return data[: len(data) // 2 * 2].decode(enc), enc
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("gb18030")
        wide = [ch for ch in text[:100_000] if ord(ch) > 127]
        if wide and len(_CJK_TEXT.findall("".join(wide))) >= 0.8 * len(wide) and "\x00" not in text:
            return text, "gb18030"
    except UnicodeDecodeError:
        pass
    if len(data) % 2 == 0:
        # UTF-16 without a BOM and with little ASCII (Chinese text): the byte order whose
        # decoding is almost all CJK, punctuation and plain ASCII wins.
        best = None
        for enc in ("utf-16-le", "utf-16-be"):
            try:
                sample = data[:65536].decode(enc)
            except UnicodeDecodeError:
                continue
            ok = len(_CJK_TEXT.findall(sample)) + sum(1 for ch in sample if " " <= ch <= "~" or ch in "\n\r\t")
            if ok >= 0.97 * len(sample) and (best is None or ok > best[0]):
                best = (ok, enc)
        if best:
            try:
                return data.decode(best[1]), best[1]
            except UnicodeDecodeError:
                pass
    if b"\x00" in head:
        raise CardError("this is a binary file (it holds NUL bytes), not text; save the book as .txt (UTF-8)",
                        file=file)
    import charset_normalizer

    best = charset_normalizer.from_bytes(head).best()
    if best is not None and best.encoding:
        try:
            return data.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            pass
    raise CardError("cannot tell the text's encoding (not UTF-8, UTF-16, GB18030 or a single-byte code "
                    "page); re-save it as UTF-8", file=file)


def read_epub(path: Path, *, data: bytes | None = None, title: str = "") -> Book:
    """An EPUB's spine documents as chapters (`ebooklib`; text via lxml)."""
    import warnings

    try:
        import ebooklib
        from ebooklib import epub
    except ModuleNotFoundError:  # pragma: no cover - it is a dependency
        raise CardError("reading .epub needs ebooklib: pip install ebooklib", file=path) from None
    from lxml import etree, html as lxml_html

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = epub.read_epub(str(path), options={"ignore_ncx": True})
    except Exception as exc:  # ebooklib raises bare zip/XML/KeyError exceptions for broken books
        raise CardError(f"not a readable EPUB ({type(exc).__name__}: {str(exc)[:120]}); re-export it or save "
                        "it as .txt", file=path) from None
    meta = book.get_metadata("DC", "title")
    if meta and meta[0] and meta[0][0]:
        title = str(meta[0][0]).strip()
    chapters: list[tuple[str, str]] = []
    for item_id, _linear in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        try:
            root = lxml_html.fromstring(item.get_content())
        except (etree.ParserError, ValueError):
            continue
        for bad in root.xpath("//script|//style"):
            bad.getparent().remove(bad)
        heading = root.xpath("string((//h1|//h2|//h3)[1])").strip()
        blocks = [" ".join(el.text_content().split()) for el in
                  root.xpath("//p|//h1|//h2|//h3|//h4|//li|//blockquote[not(p)]|//div[not(p) and not(div)]")]
        text = "\n".join(b for b in blocks if b)
        if text.strip():
            chapters.append((heading, text))
    if not chapters:
        raise CardError("the EPUB holds no text chapters", file=path)
    return Book(text="\n\n".join(t for _h, t in chapters), title=title, source=str(path), encoding="epub",
                chapters=chapters)


_SRT_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})\s*-->\s*(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})")
_TAGS = re.compile(r"<[^>]{1,40}>|\{\\[^}]{0,40}\}")
#: Cues further apart than this (seconds) start a new scene.
SRT_SCENE_GAP = 8.0


def _looks_like_srt(text: str) -> bool:
    head = text[:2000].lstrip("\ufeff \n")
    lines = head.split("\n", 2)
    return len(lines) >= 2 and lines[0].strip().isdigit() and bool(_SRT_TIME.match(lines[1]))


def srt_to_text(text: str, *, file: str | Path | None = None) -> str:
    """SRT cues as script lines: ``NAME: line`` where a speaker is marked, narration otherwise.

    A speaker is marked as ``NAME: …``, ``[NAME] …`` or ``(NAME) …`` at the start of a cue line;
    unmarked lines (``- …`` dialogue dashes too) become narration. A pause longer than
    `SRT_SCENE_GAP` between cues becomes a scene break (``* * *``).
    """
    out: list[str] = []
    last_end: float | None = None
    cues = 0
    for block in re.split(r"\n\s*\n", text.strip("\ufeff \n")):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if lines and lines[0].strip().isdigit():
            lines = lines[1:]
        if not lines:
            continue
        m = _SRT_TIME.match(lines[0])
        if not m:
            continue
        cues += 1
        g = [int(x) for x in m.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        if last_end is not None and start - last_end > SRT_SCENE_GAP:
            out.append("* * *")
        last_end = end
        for ln in lines[1:]:
            ln = _TAGS.sub("", ln).strip()
            if not ln:
                continue
            marked = re.match(r"^\[([^\]]{1,30})\]\s*(.+)$", ln) or re.match(r"^[(（]([^)）]{1,30})[)）]\s*(.+)$", ln)
            if marked and not marked.group(1).isupper() and len(marked.group(1).split()) > 3:
                marked = None
            if marked:
                out.append(f"{marked.group(1).strip()}: {marked.group(2).strip()}")
            else:
                out.append(ln.lstrip("-–— ").strip() if ln.startswith(("-", "–", "—")) else ln)
    if not cues:
        raise CardError("no subtitle cues found (expected '1', then '00:00:01,000 --> 00:00:02,000', then text)",
                        file=file)
    return "\n".join(out)
