"""Scoring attribution against a labelled text: accuracy, and one character's precision/recall.

A labelled text marks each quote's true speaker right after it: ``"…," said he.⟦Holmes⟧``
(after the closing quote mark) or, in a play, at the end of the speech line. ``⟦-⟧`` marks
quoted words nobody says (a sign, a title). `score` strips the markers, runs the real
extractor on the clean text, and matches its quotes to the labels by their words, so a
quote the extractor splits or misses counts as wrong instead of shifting every label after it.

Counting: a quote is *correct* when the confident prediction names its speaker (or, for
``-``, when nobody is named). *Precision* is over the quotes put in the character's mouth,
*recall* over the character's true quotes.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from .extract import MIN_CONFIDENCE, Attribution
from .reading import Book
from .speakers import core

MARK = re.compile(r"⟦([^⟧]*)⟧")
_OPENERS = {"”": "“", "」": "「", "』": "『", "’": "‘", '"': '"', "»": "«"}
_PLAY = re.compile(r"^\s*(?:[A-Z][A-Z'’ .-]{0,28}[A-Z]\s*[.:]|[\u3400-\u9fff·]{1,8}\s*[：:])\s*"
                   r"(?:\[[^\]]*\]|\([^)]*\)|（[^）]*）)?\s*")


def key(text: str) -> str:
    """Words of a quote, normalised for matching (letters and digits, casefolded, first 40)."""
    return re.sub(r"[\W_]+", "", text.casefold())[:40]


def parse_labelled(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(clean text, [(quote key, speaker)])`` from a labelled text."""
    labels: list[tuple[str, str]] = []
    clean: list[str] = []
    last = 0
    for m in MARK.finditer(text):
        before = text[:m.start()]
        line_start = max(before.rfind("\n"), before.rfind("⟧")) + 1
        at = max((before.rfind(c, line_start) for c in _OPENERS), default=-1)
        if at >= 0 and not (before[at] in "’'" and at + 1 < len(before) and before[at + 1].isalpha()):
            before = before[:at + 1]  # the marker follows a tag ("…," said he.⟦X⟧): the quote before it
        closer = before[-1:] if before else ""
        if closer in _OPENERS:
            opener = _OPENERS[closer]
            depth, j = 0, len(before) - 2
            while j >= 0:
                ch = before[j]
                if ch == closer and opener != closer:
                    depth += 1
                elif ch == opener:
                    if depth == 0:
                        break
                    depth -= 1
                j -= 1
            quote = before[j + 1:-1]
        else:
            line = before[before.rfind("\n") + 1:]
            quote = _PLAY.sub("", line, count=1)
        labels.append((key(quote), m.group(1).strip()))
        clean.append(text[last:m.start()])
        last = m.end()
    clean.append(text[last:])
    return "".join(clean), labels


def score(text: str, *, character: str, aliases: list[str] | tuple[str, ...] = (), narrator: str = "I",
          speakers: dict[str, list[str]] | None = None, language: str = "auto",
          min_confidence: float = MIN_CONFIDENCE) -> dict[str, Any]:
    """Attribution accuracy over every labelled quote and ``character``'s precision/recall.

    ``speakers`` maps each labelled speaker to the other names the extractor may give them.
    """
    clean, labels = parse_labelled(text)
    run = Attribution(Book(text=clean, title="labelled"), character=character, aliases=aliases,
                      language=language, narrator=narrator)
    queue: dict[str, list[str]] = defaultdict(list)
    for k, who in labels:
        queue[k].append(who)
    names = {lab: {lab, *(speakers or {}).get(lab, [])} for _k, lab in labels}

    def same(pred: str | None, label: str) -> bool:
        if label == "-":
            return pred is None
        if pred is None:
            return False
        if pred in names.get(label, {label}) or (label == character and pred == character):
            return True
        return core(label) in core(pred).split() if " " not in core(label) else core(label) == core(pred)

    correct = decided = tp = fp = 0
    wrong: list[str] = []
    for _chapter, lines in run.scenes():
        for ln in lines:
            if not ln.quote:
                continue
            k = key(ln.text)
            if not queue.get(k):
                continue
            label = queue[k].pop(0)
            pred = ln.speaker if ln.speaker is not None and ln.confidence >= min_confidence else None
            decided += pred is not None
            if same(pred, label):
                correct += 1
            elif len(wrong) < 40:
                wrong.append(f"{label} → {pred} ({ln.how}): {ln.text[:50]}")
            if pred == character:
                tp += label == character
                fp += label != character
    true_char = sum(1 for _k, lab in labels if lab == character)
    total = len(labels)
    return {"quotes": total, "matched": total - sum(len(v) for v in queue.values()), "decided": decided,
            "correct": correct, "accuracy": correct / total if total else 0.0,
            "character": character, "character_quotes": true_char, "put_in_mouth": tp + fp,
            "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / true_char if true_char else 0.0,
            "wrong": wrong}
