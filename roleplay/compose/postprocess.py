"""Post-processing of model replies: cut, bracket style, quote wrappers, whitespace.

One code path serves whole replies and streams: `StreamCleaner` is fed chunks and
returns only text that can no longer change, and `postprocess` is ``feed(text) +
finish()``. Trade-offs:

- Cutting is literal-marker based (``\\nWatson:``, ``Watson:「``, ``<|im_end|>``,
  ``\\nuser:`` …), not a parser: cheap, predictable and streamable. A character who
  legitimately writes ``Watson:`` at the start of a line is cut there too — acceptable,
  since that is exactly how a small model starts speaking for someone else.
- Streaming holds back only the tail that could still become a marker (plus one
  character of look-ahead for ``*`` pairs and closing quotes), so text flows with a
  delay of a few characters, and what was emitted is never taken back.
- Quote handling touches only ChatHaruhi's 「…」 line wrapper opened at the start of a
  speech segment (dropped for ``quote_style: none``, kept for ``corner``, turned into
  double quotes for ``double``); ordinary double quotes in prose are left alone.
- Bracket conversion is character-local (``(`` ↔ ``（``, brackets → ``*``) except
  ``*…*`` → brackets, which pairs asterisks; an unclosed one is closed at the end.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..cards.schema import Character

#: Special tokens and chat-template leftovers: everything from here on is a new turn.
ROLE_TAGS = ("<|", "</s>", "[INST]", "[/INST]", "<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>")
#: Generic role words that start a new turn when they begin a line (compared lower-cased).
ROLE_WORDS = ("user", "assistant", "system", "human")
_COLONS = (":", "：", " :", " ：")

#: ChatHaruhi's line wrapper, which models imitate from the retrieved stories. Plain
#: double quotes are left alone: in English prose they are ordinary punctuation.
_OPEN_QUOTE, _CLOSE_QUOTE = "「", "」"


def is_cjk_language(language: str) -> bool:
    """Whether a card language writes full-width brackets (zh, ja)."""
    return language.lower().split("-")[0] in {"zh", "ja", "yue", "wuu", "cmn"}


def bracket_pair(card: Character) -> tuple[str, str]:
    """The card's action brackets: ``（）`` (zh paren), ``()`` (paren) or ``**`` (asterisk)."""
    if card.style.action_style == "asterisk":
        return "*", "*"
    return ("（", "）") if is_cjk_language(card.language) else ("(", ")")


def format_note(note: str, card: Character) -> str:
    """Wrap an action note in the card's brackets, whatever brackets it came with.

    >>> format_note("（皱眉）", card_en)  # doctest: +SKIP
    '(皱眉)'
    """
    core = note.strip()
    while len(core) >= 2 and core[0] in "(（*[" and core[-1] in ")）*]":
        core = core[1:-1].strip()
    if not core:
        return ""
    opening, closing = bracket_pair(card)
    return f"{opening}{core}{closing}"


def _name_variants(names: Iterable[str]) -> list[str]:
    """Full names plus their first word ("Sherlock Holmes" → also "Sherlock")."""
    out: list[str] = []
    for name in names:
        name = (name or "").strip()
        if not name:
            continue
        for v in (name, name.split()[0]):
            if len(v) >= 2 and v not in out:
                out.append(v)
    return out


class StreamCleaner:
    """Incremental post-processor for one reply.

    Args:
        card: the speaking character (bracket and quote style, own name).
        speakers: other speakers' names (group members); the reply is cut where one starts.
        user_name: the user's name in this chat; also a cut marker.

    ``feed(chunk)`` returns the text that is final so far; ``finish()`` the rest.
    ``done`` turns true once a cut marker was seen (callers may stop generating).
    """

    def __init__(self, card: Character, *, speakers: Iterable[str] = (), user_name: str = "") -> None:
        self.card = card
        self.done = False
        self._raw = "\n"        # everything fed, after a virtual leading newline
        self._pos = 1           # raw text before this index has passed the marker stage
        self._pending = ""      # marker-safe text not yet through the character stage
        self._ws = ""           # held whitespace (emitted only if more text follows)
        self._emitted_any = False
        self._star_open = False
        self._in_quote = False  # inside a 「…」 wrapper opened at the start of a speech segment
        self._at_segment_start = True
        self._open, self._close = bracket_pair(card)
        self._cjk = is_cjk_language(card.language)
        own = _name_variants([card.name, card.nickname, card.id])
        others = [n for n in _name_variants([*speakers, user_name]) if n not in own]
        # (marker, lower-cased comparison?, action) — "cut" ends the reply, "drop"
        # removes the marker (own-name prefixes), "role" drops at the very start (a
        # leftover "assistant:") and cuts anywhere else (the model began a new turn).
        markers: list[tuple[str, bool, str]] = [(t, False, "cut") for t in ROLE_TAGS]
        for word in ROLE_WORDS:
            markers += [("\n" + word + c, True, "role") for c in _COLONS]
        for name in others:
            markers += [("\n" + name + c, False, "cut") for c in _COLONS]
            markers += [(name + c + q, False, "cut") for c in (":", "：") for q in ("「", " 「")]
            markers += [("\n**" + name + "**" + c, False, "cut") for c in (":", "：")]
        for name in own:
            markers += [("\n" + name + c + sp, False, "drop") for c in _COLONS for sp in ("", " ")]
        self._markers = markers

    # -- marker stage -------------------------------------------------------------
    def _holdback(self, text: str, start: int) -> int:
        """Length of the longest tail of ``text[start:]`` that is a proper prefix of a marker."""
        best = 0
        lower = text.lower()
        tail_len = len(text) - start
        for marker, fold, _ in self._markers:
            hay = lower if fold else text
            for j in range(min(len(marker) - 1, tail_len), best, -1):
                if hay.endswith(marker[:j]):
                    best = j
                    break
        return best

    def _scan(self, final: bool) -> str:
        """Move raw text past the marker stage; return the text that is safe to transform."""
        out = []
        raw = self._raw
        lower = raw.lower()
        while not self.done:
            hit, hit_at = None, len(raw) + 1
            for marker, fold, action in self._markers:
                # subtle: search from one before _pos so a newline already passed can still
                # start a line marker; the virtual leading newline sits at index 0.
                i = (lower if fold else raw).find(marker, self._pos - 1 if marker[0] == "\n" else self._pos)
                # the longest marker wins at one position ("\nSherlock: " over "\nSherlock:")
                if i != -1 and (i < hit_at or (i == hit_at and hit is not None and len(marker) > len(hit[0]))):
                    hit, hit_at = (marker, action), i
            if hit is None:
                break
            marker, action = hit
            if action == "role":
                action = "drop" if hit_at == 0 else "cut"
            keep_newline = marker.startswith("\n") and hit_at >= self._pos
            out.append(raw[self._pos:hit_at] + ("\n" if keep_newline and action == "drop" else ""))
            if action == "cut":
                self.done = True
                self._pos = len(raw)
                return "".join(out)
            self._pos = hit_at + len(marker)
        if self.done:
            return "".join(out)
        # subtle: the tail considered starts one character early, so "\nWat" is held even
        # when its newline already went out (markers re-find that newline via _pos - 1).
        end = len(raw) if final else len(raw) - self._holdback(raw, self._pos - 1)
        if end > self._pos:
            out.append(raw[self._pos:end])
            self._pos = end
        return "".join(out)

    # -- character stage ----------------------------------------------------------
    def _emit(self, text: str, out: list[str]) -> None:
        for ch in text:
            if ch.isspace():
                if self._emitted_any:
                    self._ws += ch
                continue
            out.append(self._ws)
            self._ws = ""
            out.append(ch)
            self._emitted_any = True

    def _transform(self, final: bool) -> str:
        out: list[str] = []
        text = self._pending
        i = 0
        style = self.card.style
        while i < len(text):
            ch = text[i]
            nxt = text[i + 1] if i + 1 < len(text) else None
            if nxt is None and not final and ch == "*":
                break  # need one character of look-ahead
            if ch == "*" and style.action_style == "paren":
                if nxt == "*":  # markdown bold: drop the pair
                    i += 2
                    continue
                if self._star_open:
                    self._emit(self._close, out)
                    self._star_open = False
                elif nxt is not None and not nxt.isspace():
                    self._emit(self._open, out)
                    self._star_open = True
                else:
                    self._emit(ch, out)
                i += 1
                continue
            if style.action_style == "asterisk" and ch in "(（)）*":
                self._emit("*", out)
                self._star_open = ch in "(（" or (ch == "*" and not self._star_open)
                self._at_segment_start = not self._star_open
                i += 1
                continue
            if style.action_style == "paren" and ch in "(（)）":
                opening = ch in "(（"
                self._emit(self._open if opening else self._close, out)
                self._at_segment_start = not opening
                i += 1
                continue
            if not self._in_quote and self._at_segment_start and ch == _OPEN_QUOTE:
                self._in_quote = True
                self._emit(self._quote_pair()[0], out)
                i += 1
                continue
            if self._in_quote and ch == _CLOSE_QUOTE:
                self._in_quote = False
                self._emit(self._quote_pair()[1], out)
                i += 1
                continue
            if ch == "\n":
                self._at_segment_start = True
            elif not ch.isspace():
                self._at_segment_start = False
            self._emit(ch, out)
            i += 1
        self._pending = text[i:]
        return "".join(out)

    def _quote_pair(self) -> tuple[str, str]:
        style = self.card.style.quote_style
        if style == "corner":
            return "「", "」"
        if style == "double":
            return ("“", "”") if self._cjk else ('"', '"')
        return "", ""

    # -- public -------------------------------------------------------------------
    def feed(self, chunk: str) -> str:
        """Add generated text; return the part of the cleaned reply that is now final."""
        if self.done or not chunk:
            return ""
        self._raw += chunk
        self._pending += self._scan(final=False)
        return self._transform(final=self.done)

    def finish(self) -> str:
        """End of generation: flush held text, close an open ``*`` note, drop trailing space."""
        if not self.done:
            self._pending += self._scan(final=True)
        out = [self._transform(final=True)]
        if self._star_open and self._emitted_any:
            out.append(self._close)
            self._star_open = False
        self._ws = ""
        return "".join(out)


def postprocess(text: str, card: Character, *, speakers: Iterable[str] = (), user_name: str = "") -> str:
    """Clean a whole reply (see `StreamCleaner`).

    >>> postprocess("(smiles) Indeed.\\nWatson: What?", card, speakers=[], user_name="Watson")  # doctest: +SKIP
    '(smiles) Indeed.'
    """
    cleaner = StreamCleaner(card, speakers=speakers, user_name=user_name)
    return cleaner.feed(text) + cleaner.finish()
