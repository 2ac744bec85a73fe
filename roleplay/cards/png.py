"""PNG text chunks (``tEXt``/``zTXt``/``iTXt``) read and written without an image library.

SillyTavern cards carry their JSON base64-encoded in a ``tEXt`` chunk (``chara`` for V2,
``ccv3`` for V3). Parsing walks the chunk list by hand so a hostile file is bounded before
anything is decoded: chunk count, chunk size, CRCs, truncation and the decoded size of
compressed text are all checked, and pixels are never touched here (see `images.py` for
that). Writing keeps every other chunk byte for byte and inserts the text chunks just
before ``IEND``, as SillyTavern does.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..errors import CardError
from .safety import LIMITS

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")


def iter_chunks(data: bytes, *, file: str | Path | None = None) -> list[tuple[bytes, bytes]]:
    """``[(type, payload)]`` of a PNG, up to and including ``IEND``; CardError on damage."""
    if not data.startswith(SIGNATURE):
        raise CardError("not a PNG file (bad signature)", file=file)
    out: list[tuple[bytes, bytes]] = []
    pos = len(SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise CardError(f"truncated PNG: chunk header cut at byte {pos}; the file is incomplete", file=file)
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if length > LIMITS.png_text_bytes and ctype in _TEXT_TYPES:
            raise CardError(f"PNG text chunk of {length} bytes; the limit is {LIMITS.png_text_bytes}", file=file)
        end = pos + 12 + length
        if end > len(data):
            raise CardError(f"truncated PNG: chunk {ctype!r} at byte {pos} runs past the end of the file",
                            file=file)
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + payload) & 0xFFFFFFFF != crc:
            raise CardError(f"corrupt PNG: bad checksum in chunk {ctype!r} at byte {pos}", file=file)
        out.append((ctype, payload))
        if len(out) > LIMITS.png_chunks:
            raise CardError(f"more than {LIMITS.png_chunks} PNG chunks", file=file)
        pos = end
        if ctype == b"IEND":
            return out


def _inflate(blob: bytes, *, file: str | Path | None) -> bytes:
    """Decompress with a hard output bound (a zlib bomb stops at the limit)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(blob, LIMITS.png_text_bytes + 1)
    except zlib.error:
        raise CardError("corrupt PNG: compressed text chunk does not inflate", file=file) from None
    if len(out) > LIMITS.png_text_bytes or d.unconsumed_tail:
        raise CardError(f"PNG text inflates past {LIMITS.png_text_bytes} bytes", file=file)
    return out


def read_text_chunks(data: bytes, *, file: str | Path | None = None) -> dict[str, str]:
    """Keyword -> text of every text chunk (the first chunk of a keyword wins)."""
    found: dict[str, str] = {}
    for ctype, payload in iter_chunks(data, file=file):
        if ctype not in _TEXT_TYPES:
            continue
        key_b, sep, rest = payload.partition(b"\x00")
        if not sep:
            continue  # malformed text chunk: no keyword terminator; not ours to judge
        key = key_b.decode("latin-1")
        if ctype == b"tEXt":
            text = rest.decode("latin-1")
        elif ctype == b"zTXt":
            text = _inflate(rest[1:], file=file).decode("latin-1")
        else:  # iTXt: flag, method, language\0, translated keyword\0, UTF-8 text
            if len(rest) < 2:
                continue
            compressed = rest[0] == 1
            tail = rest[2:]
            _lang, _, tail = tail.partition(b"\x00")
            _tkey, _, body = tail.partition(b"\x00")
            raw = _inflate(body, file=file) if compressed else body
            text = raw.decode("utf-8", errors="replace")
        found.setdefault(key, text)
    return found


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)


def write_text_chunks(png: bytes, texts: dict[str, str]) -> bytes:
    """``png`` with ``texts`` as ``tEXt`` chunks before ``IEND``; same-named chunks are replaced.

    Values must be Latin-1 (base64 card payloads are ASCII).
    """
    chunks = iter_chunks(png)
    out = [SIGNATURE]
    for ctype, payload in chunks:
        if ctype in _TEXT_TYPES and payload.partition(b"\x00")[0].decode("latin-1") in texts:
            continue
        if ctype == b"IEND":
            for key, value in texts.items():
                out.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1")))
        out.append(_chunk(ctype, payload))
    return b"".join(out)
