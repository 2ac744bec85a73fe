"""Stories as index items: chunking, metadata, content hashes and near-duplicate collapse.

A story (a short ChatHaruhi scene, lines ``Name:「…」``) is the retrieval unit. Trade-offs:
- A story over `MAX_CHUNK_CHARS` is split at line boundaries (a line longer than that at
  sentence ends, then hard) so one 50,000-character scrape cannot fill a prompt budget
  alone; chunks keep their story's source label.
- A story of `WINDOW_MIN_LINES` lines or more also gets line windows, indexed
  beside it (retrieval scores a story by its best window too); shorter stories, the
  common case in hand-written cards, cost nothing extra.
- Near-duplicates (common in scraped corpora) are found on the *text*, not embeddings:
  character 4-gram shingles of the normalised text (case, spaces and punctuation
  dropped), MinHash + LSH banding for candidates, exact Jaccard ≥ `DUPLICATE_JACCARD`
  to confirm. Text shingles catch copy-paste variants without flagging two different
  scenes that merely mean the same, and need no embeddings of unchanged stories. The
  first occurrence (card order) is kept; the others are recorded on it.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import numpy as np

from ..tokens import WIDE_CHAR

MAX_CHUNK_CHARS = 2000
#: Line windows (see `line_windows`): lines per window, lines between starts, and the
#: shortest story that gets windows.
WINDOW_LINES, WINDOW_STEP, WINDOW_MIN_LINES = 4, 4, 8
DUPLICATE_JACCARD = 0.85
_SHINGLE = 4
_BANDS, _ROWS = 6, 4  # 24 MinHash values; P(candidate | J=0.85) ≈ 0.99, | J=0.3 ≈ 0.05
_BUCKET_CAP = 64      # bounds the work on pathological corpora (thousands of near-copies)

_SPEAKER = re.compile(r"^\s*([^\s:：「」()（）*][^:：「」\n]{0,39}?)\s*[:：]")
_ACTION = re.compile(r"\([^()\n]{1,200}\)|（[^（）\n]{1,200}）|\*[^*\n]{1,200}\*")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？…」”])")


@dataclass
class Item:
    """One indexed unit: a whole story or one chunk of a long one."""

    id: str
    text: str
    source: str
    chunk: int = 0
    chunks: int = 1
    duplicates: list[str] = field(default_factory=list)

    def metadata(self, character: str) -> dict:
        """Chroma metadata (scalars only: Chroma stores str/int/float/bool)."""
        return {
            "character": character,
            "source": self.source,
            "story": story_index(self.source),
            "chunk": self.chunk,
            "chunks": self.chunks,
            "speakers": ", ".join(speakers(self.text)),
            "language": language(self.text),
            "has_action": bool(_ACTION.search(self.text)),
            "hash": self.id,
            "chars": len(self.text),
            "duplicates": json.dumps(self.duplicates, ensure_ascii=False),
        }


def story_index(source: str) -> int:
    """The index in ``card.stories`` for a ``card:N`` label, else -1 (a stories file)."""
    if source.startswith("card:"):
        try:
            return int(source[5:])
        except ValueError:
            return -1
    return -1


def speakers(text: str) -> list[str]:
    """Speaker names in order of first appearance (``Name:`` / ``Name：`` line starts)."""
    out: list[str] = []
    for line in text.splitlines():
        m = _SPEAKER.match(line)
        if m:
            name = m.group(1).strip()
            if name and name not in out:
                out.append(name)
    return out


def language(text: str) -> str:
    """``zh`` when CJK characters are at least a fifth of the letters, else ``en``."""
    wide = len(WIDE_CHAR.findall(text))
    letters = len(_LETTER.findall(text)) or 1
    return "zh" if wide / letters >= 0.2 else "en"


def has_action(text: str) -> bool:
    return bool(_ACTION.search(text))


def content_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def chunk_text(text: str, *, limit: int = MAX_CHUNK_CHARS) -> list[str]:
    """Split at line boundaries into pieces of at most ``limit`` characters."""
    if len(text) <= limit:
        return [text]
    pieces: list[str] = []
    for line in text.splitlines():
        while len(line) > limit:  # one huge line: cut at the last sentence end that fits
            cut = max((m.start() for m in _SENTENCE_END.finditer(line, 0, limit) if m.start() > limit // 2),
                      default=limit)
            pieces.append(line[:cut])
            line = line[cut:]
        pieces.append(line)
    chunks: list[str] = []
    cur: list[str] = []
    size = 0
    for piece in pieces:
        if cur and size + len(piece) + 1 > limit:
            chunks.append("\n".join(cur))
            cur, size = [], 0
        cur.append(piece)
        size += len(piece) + 1
    if cur:
        chunks.append("\n".join(cur))
    return [c.strip() for c in chunks if c.strip()]


def line_windows(text: str, *, size: int | None = None, step: int | None = None,
                 min_lines: int | None = None) -> list[str]:
    """Windows of ``size`` lines, ``step`` apart (by default side by side, the last one
    flush with the end), of a story with at least ``min_lines`` lines (none for a shorter
    one: its own embedding is already that sharp).

    A long scene's embedding averages its small talk with its one important exchange; a
    window's does not, so the exchange can be found (and across languages) by its window.
    """
    size, step = size or WINDOW_LINES, step or WINDOW_STEP
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < (min_lines or WINDOW_MIN_LINES):
        return []
    starts = list(range(0, len(lines) - size + 1, step))
    if starts[-1] + size < len(lines):
        starts.append(len(lines) - size)  # the tail is never left out
    return ["\n".join(lines[s:s + size]) for s in starts]


def build_items(stories: list[tuple[str, str]]) -> tuple[list[Item], int]:
    """Items for ``(source, text)`` stories, near-duplicates collapsed.

    Returns the kept items (card order) and how many were collapsed into them.
    """
    raw: list[Item] = []
    for source, text in stories:
        text = text.strip()
        if not text:
            continue
        parts = chunk_text(text)
        for i, part in enumerate(parts):
            raw.append(Item(id=content_hash(part), text=part, source=source, chunk=i, chunks=len(parts)))
    keep = collapse_duplicates([it.text for it in raw])
    kept: list[Item] = []
    by_pos: dict[int, Item] = {}
    for pos, rep in enumerate(keep):
        if rep == pos:
            by_pos[pos] = raw[pos]
            kept.append(raw[pos])
    for pos, rep in enumerate(keep):
        if rep != pos:
            by_pos[rep].duplicates.append(raw[pos].source)
    return kept, len(raw) - len(kept)


def _normalise(text: str) -> str:
    return _NON_WORD.sub("", text.lower())


def _shingles(norm: str) -> np.ndarray:
    """Sorted unique 64-bit hashes of the character 4-grams of a normalised text."""
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < _SHINGLE:
        codes = np.concatenate([codes, np.zeros(_SHINGLE - len(codes), dtype=np.uint64)])
    n = len(codes) - _SHINGLE + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrap-around arithmetic is the hash
        for k in range(_SHINGLE):
            h = h * np.uint64(1_000_003) + codes[k:k + n]
    return np.unique(h)


_rng = np.random.default_rng(20240601)  # fixed: MinHash signatures stay reproducible
_A = _rng.integers(1, 2**61 - 1, size=_BANDS * _ROWS, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 2**61 - 1, size=_BANDS * _ROWS, dtype=np.uint64)


def _minhash(sh: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (sh[:, None] * _A[None, :] + _B[None, :]).min(axis=0)


def collapse_duplicates(texts: list[str], *, threshold: float = DUPLICATE_JACCARD) -> list[int]:
    """For each text, the position of the text it duplicates (itself when kept)."""
    rep = list(range(len(texts)))
    buckets: dict[tuple[int, bytes], list[int]] = {}
    exact: dict[str, int] = {}
    shingles: dict[int, np.ndarray] = {}
    for i, text in enumerate(texts):
        norm = _normalise(text)
        if norm in exact:
            rep[i] = exact[norm]
            continue
        sh = _shingles(norm)
        sig = _minhash(sh)
        keys = [(b, sig[b * _ROWS:(b + 1) * _ROWS].tobytes()) for b in range(_BANDS)]
        seen: set[int] = set()
        match = -1
        for key in keys:
            for j in buckets.get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                other = shingles[j]
                inter = len(np.intersect1d(sh, other, assume_unique=True))
                if inter / (len(sh) + len(other) - inter) >= threshold:
                    match = j
                    break
            if match >= 0:
                break
        if match >= 0:
            rep[i] = match
            continue
        exact[norm] = i
        shingles[i] = sh
        for key in keys:
            bucket = buckets.setdefault(key, [])
            if len(bucket) < _BUCKET_CAP:
                bucket.append(i)
    return rep


def fingerprint(stories: list[tuple[str, str]], *, embedder: str, version: int | str) -> str:
    """A hash of everything the index depends on: stories, their labels, the embedder.

    One join, one encode and one SHA-1 (hardware-accelerated; blake2b measured 10x
    slower here) rather than two hash updates per story.
    """
    parts = [f"v{version}", embedder]
    for source, text in stories:
        parts.append(source)
        parts.append(text)
    return hashlib.sha1("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
