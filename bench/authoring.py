"""Authoring benchmark: extracting one character from a generated ~700,000-character novel.

The novel is generated here (seeded, original sentences; English by default, ``--zh`` for
Chinese): chapters of narration and dialogue between five people, with every kind of
speech tag the extractor reads (after and before the quote, pronouns, untagged runs).
Figures, printed as ONE JSON line:

- ``baseline_chars_per_s``: reading the file and one regex scan for quotes over the same
  text (what any tool pays to look at the book at all), measured in the same run;
- ``chars_per_s`` and ``ratio`` = chars_per_s / baseline_chars_per_s: the whole extraction
  (decoding, two attribution passes, stories) against that floor;
- ``extract_s``, ``peak_mb`` (tracemalloc peak of a second extraction, Python objects) and
  ``book_mb`` (the text's size as a Python string) — memory is bounded by the book;
- ``quotes``, ``attributed``, ``character_lines``, ``stories``; ``accuracy`` (confident and
  right over all quotes) and the character's ``precision``/``recall`` against the
  generator's true speakers (a third pass, untimed).

Usage: ``python bench/authoring.py [--chars N] [--chapters N] [--zh]``
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_EN_PEOPLE = [("Holloway", "he"), ("Mrs. Ashby", "she"), ("Doctor Crane", "he"), ("Lydia", "she"), ("Pike", "he")]
_EN_LINES = ["Where were you last night?", "I have told you everything I know.", "That is not quite true, is it?",
             "We shall see about that in the morning.", "The train leaves at six, not seven.",
             "Nobody comes to this house by accident.", "You are asking the wrong question.",
             "I would rather not say.", "Then I must guess, and you will not like my guess.",
             "The letter was burnt before anyone could read it.", "Come in out of the cold.",
             "It is later than you think.", "I never liked the sea.", "Tell me about the key.",
             "There were two sets of footprints.", "Perhaps, or perhaps not."]
_EN_NARR = ["The fire had burned low in the grate.", "Rain rattled against the windows of the old house.",
            "A clock somewhere struck the half hour.", "The lamp threw long shadows on the wall.",
            "Outside, a cart went by on the wet cobbles.", "The tea had gone cold in its cup."]
_EN_VERBS = ["said", "asked", "replied", "answered", "remarked", "muttered"]
_EN_ACTS = ["smiling", "frowning", "leaning forward", "without looking up", "quietly"]
_ZH_PEOPLE = [("孙悟空", "他"), ("八戒", "他"), ("唐僧", "他"), ("沙僧", "他"), ("白龙", "他")]
_ZH_LINES = ["这山里有妖怪，大家小心。", "师父莫怕，有我在此。", "我走不动了，歇一歇吧。", "前面好像有一座庙。",
             "天色晚了，今夜在哪里安歇？", "你这呆子，又在偷懒。", "我几时偷懒了？", "快走，快走，莫误了时辰。",
             "这水清得很，可以喝。", "那妖精变化多端，不可大意。"]
_ZH_NARR = ["山路崎岖，松柏森森。", "一阵风过，树叶沙沙作响。", "远处传来几声猿啼。", "夕阳西下，天边一片通红。"]


def generate_novel(*, chars: int = 700_000, chapters: int = 200, zh: bool = False, seed: int = 7,
                   labels: list[str] | None = None) -> str:
    """A generated novel of about ``chars`` characters in ``chapters`` chapters.

    When ``labels`` is a list, the true speaker of every quote is appended to it in order.
    """
    rnd = random.Random(seed)
    people = _ZH_PEOPLE if zh else _EN_PEOPLE
    per_chapter = max(200, chars // chapters)
    out: list[str] = []
    for c in range(1, chapters + 1):
        parts = [f"第{c}回" if zh else f"Chapter {c}", ""]
        size = 0
        while size < per_chapter:
            a, b = rnd.sample(people, 2)
            narr = rnd.choice(_ZH_NARR if zh else _EN_NARR)
            parts.append(narr)
            speaker = a
            for turn in range(rnd.randint(2, 6)):
                line = rnd.choice(_ZH_LINES if zh else _EN_LINES)
                form = rnd.random()
                if zh:
                    if form < 0.5:
                        p = f"{speaker[0]}道：“{line}”"
                    elif form < 0.7:
                        p = f"{speaker[0]}笑道：“{line}”"
                    elif form < 0.85:
                        p = f"“{line}”{speaker[0]}说。"
                    else:
                        p = f"“{line}”" if turn >= 2 else f"{speaker[0]}道：“{line}”"
                else:
                    name = speaker[0]
                    if form < 0.35:
                        p = f"\"{line[:-1]},\" said {name}, {rnd.choice(_EN_ACTS)}." if line.endswith(".") \
                            else f"\"{line}\" {rnd.choice(_EN_VERBS)} {name}."
                    elif form < 0.55:
                        p = f"{name} {rnd.choice(_EN_VERBS)}: \"{line}\""
                    elif form < 0.75 and turn >= 1:
                        p = f"\"{line}\" {speaker[1]} {rnd.choice(_EN_VERBS)}."
                    elif turn >= 2:
                        p = f"\"{line}\""
                    else:
                        p = f"\"{line}\" {rnd.choice(_EN_VERBS)} {name}."
                parts.append(p)
                if labels is not None:
                    labels.append(speaker[0])
                speaker = b if speaker is a else a
            if rnd.random() < 0.1:
                parts.append("＊＊＊" if zh else "* * *")
            size = sum(len(x) + 1 for x in parts)
        out.append("\n".join(parts))
    return "\n\n".join(out) + "\n"


def baseline(path: Path) -> tuple[float, int]:
    """Read the file and scan it once for quotes: seconds and quotes found."""
    t = time.perf_counter()
    text = path.read_bytes().decode("utf-8")
    n = len(re.findall(r"“[^”]*”|\"[^\"\n]*\"|「[^」]*」", text))
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=700_000)
    ap.add_argument("--chapters", type=int, default=200)
    ap.add_argument("--zh", action="store_true", help="a Chinese novel instead of an English one")
    args = ap.parse_args()
    from roleplay.authoring import extract

    labels: list[str] = []
    text = generate_novel(chars=args.chars, chapters=args.chapters, zh=args.zh, labels=labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("novel_zh.txt" if args.zh else "novel.txt")
        path.write_text(text, encoding="utf-8")
        base_s = min(baseline(path)[0] for _ in range(3))
        character = "孙悟空" if args.zh else "Holloway"
        aliases = ["悟空"] if args.zh else []
        t = time.perf_counter()
        ex = extract(path, character=character, aliases=aliases)
        secs = time.perf_counter() - t
        # subtle: tracemalloc slows Python allocation several-fold, so memory is a second run.
        tracemalloc.start()
        extract(path, character=character, aliases=aliases)
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        acc, prec, rec = _truth(path, labels, character, aliases)
    n = len(text)
    print(json.dumps({"bench": "authoring", "language": "zh" if args.zh else "en", "chars": n,
                      "chapters": ex.chapters, "baseline_chars_per_s": round(n / base_s),
                      "chars_per_s": round(n / secs), "ratio": round((n / secs) / (n / base_s), 4),
                      "extract_s": round(secs, 2), "peak_mb": round(peak / 2**20, 1),
                      "book_mb": round(sys.getsizeof(text) / 2**20, 1), "quotes": ex.quotes,
                      "true_quotes": len(labels), "attributed": ex.attributed,
                      "character_lines": len(ex.lines), "true_character_lines": labels.count(character),
                      "stories": len(ex.stories), "accuracy": round(acc, 3), "precision": round(prec, 3),
                      "recall": round(rec, 3)}))


def _truth(path: Path, labels: list[str], character: str, aliases: list[str]) -> tuple[float, float, float]:
    """Accuracy over all quotes, and the character's precision/recall, against ``labels``."""
    from roleplay.authoring.extract import MIN_CONFIDENCE, Attribution
    from roleplay.authoring.reading import read_book

    run = Attribution(read_book(path), character=character, aliases=aliases)
    preds = [ln.speaker if ln.confidence >= MIN_CONFIDENCE else None
             for _c, lines in run.scenes() for ln in lines if ln.quote]
    pairs = list(zip(preds, labels))
    right = sum(p == t for p, t in pairs)
    put = sum(p == character for p, _t in pairs)
    tp = sum(p == t == character for p, t in pairs)
    return right / max(1, len(pairs)), tp / max(1, put), tp / max(1, labels.count(character))


if __name__ == "__main__":
    main()
