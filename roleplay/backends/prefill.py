"""Who reads their prompt next, for llama.cpp: the shortest read first, long reads in pieces.

llama.cpp's server fills each step's prompt budget (``n_batch``) from its slots in slot
order, so one slot's long read (a chat whose retrieved stories changed: ~1,500 tokens)
takes every step until it is done, and a chat behind it that only needs its ~40 new
tokens waits for all of it. Measured on the CPU default, 4 chats in their second turn:
two chats that reused all but 29 and 62 tokens waited 27–31 s for their first token
behind two that re-read 1,014 and 1,432.

`PrefillLine` puts requests in order of how much they have left to read (estimated from
the prompts sent before: the longest shared prefix, which is how llama.cpp picks a slot,
and the runs KV shifting moves, `reused_with_shift`)
and lets one read at a time; a long read goes in pieces of ``piece`` tokens (llama.cpp
caches each piece: a request for the prefix with ``max_tokens`` 0), so a short read that
arrives meanwhile waits for one piece at most. Decoding slots are not held up: their
tokens ride along in every step, as before.

Shortest-first alone starves: with eight chats, short reads keep arriving and a chat's cold
first turn (~2,000 tokens) waited behind ~25 of them. So a request's place is what it has
left to read minus what others read while it waited: a read waits behind at most about its
own length of shorter reads, then goes before newcomers.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: Prompt tokens read per piece: ~2–3 s of reading on one core for SmolLM2.
PIECE = 256


def reused_with_shift(cached: Sequence[int], prompt: Sequence[int], min_chunk: int) -> int:
    """Tokens at the start of ``prompt`` a cache holding ``cached`` serves when runs of at
    least ``min_chunk`` matching tokens may be moved to new positions (llama.cpp's
    ``n_cache_reuse``, the same walk): after the common prefix, cached tokens that the
    prompt dropped are skipped and each later run that matches the prompt's next tokens
    is kept. An insertion in the prompt ends the walk (what follows it is read anew).
    ``min_chunk`` 0: the common prefix only."""
    n_past = 0
    while n_past < min(len(cached), len(prompt)) and cached[n_past] == prompt[n_past]:
        n_past += 1
    if min_chunk <= 0:
        return n_past
    head_c = head_p = n_past
    while head_c < len(cached) and head_p < len(prompt):
        n = 0
        while head_c + n < len(cached) and head_p + n < len(prompt) and cached[head_c + n] == prompt[head_p + n]:
            n += 1
        if n >= min_chunk:
            n_past, head_c, head_p = n_past + n, head_c + n, head_p + n
        else:
            head_c += 1
    return n_past


class PrefillLine:
    """The order in which requests read their prompts (see the module docstring)."""

    def __init__(self, *, piece: int = PIECE, remember: int = 64, shift: int = 0) -> None:
        self.piece = piece
        self.shift = shift  # llama.cpp's n_cache_reuse: moved runs count as cached
        self._recent: deque[tuple[int, ...]] = deque(maxlen=remember)  # prompts sent, newest last
        self._cond = threading.Condition()
        self._left: dict[int, int] = {}  # ticket → tokens still to read
        self._waited: dict[int, int] = {}  # ticket → tokens others read while it was in line
        self._reading: int | None = None  # the ticket whose piece llama.cpp is reading
        self._ticket = 0

    def cached(self, ids: Sequence[int]) -> int:
        """Tokens of ``ids`` that a slot probably holds. llama.cpp sends a request to the
        slot whose prompt shares the longest prefix with it; with ``shift``, later runs it
        can move count too (`reused_with_shift`). Replies are not remembered, so this
        errs low."""
        best, best_old = 0, ()
        with self._cond:
            recent = list(self._recent)
        for old in reversed(recent):  # newest first: on a tie, the latest prompt
            shared = reused_with_shift(old, ids, 0)  # the common prefix
            if shared > best:
                best, best_old = shared, old
        if self.shift and best_old:
            best = reused_with_shift(best_old, ids, self.shift)
        return best

    @contextmanager
    def reading(self, ids: Sequence[int]) -> Iterator["_Reader"]:
        """Take a place in line for ``ids``; the reader says when and what to send."""
        start = self.cached(ids)
        with self._cond:
            self._ticket += 1
            ticket = self._ticket
            self._left[ticket] = len(ids) - start
            self._waited[ticket] = 0
        reader = _Reader(self, ticket, list(ids), start)
        try:
            yield reader
        finally:
            with self._cond:
                self._left.pop(ticket, None)
                self._waited.pop(ticket, None)
                if self._reading == ticket:
                    self._reading = None
                self._recent.append(tuple(ids))
                self._cond.notify_all()

    # -- used by _Reader ------------------------------------------------------------------------
    def _next(self) -> int:
        return min(self._left, key=lambda t: (self._left[t] - self._waited[t], t))

    def _wait_turn(self, ticket: int) -> None:
        with self._cond:
            while not (self._reading is None and self._next() == ticket):
                self._cond.wait()
            self._reading = ticket
            turn = min(self._left[ticket], self.piece)  # what this turn reads: a piece or the rest
            for other in self._waited:
                if other != ticket:
                    self._waited[other] += turn

    def _read(self, ticket: int, tokens: int, *, done: bool) -> None:
        with self._cond:
            if done:
                self._left.pop(ticket, None)
                self._waited.pop(ticket, None)
            else:
                self._left[ticket] = max(0, self._left[ticket] - tokens)
            if self._reading == ticket:
                self._reading = None
            self._cond.notify_all()


class _Reader:
    def __init__(self, line: PrefillLine, ticket: int, ids: list[int], start: int) -> None:
        self.line, self.ticket, self.ids, self.start = line, ticket, ids, start

    def pieces(self) -> Iterator[list[int]]:
        """Prefixes to send (with ``max_tokens`` 0) before the request itself; each is
        yielded when it is this request's turn, and counts as read when the next is asked."""
        end = self.start
        while len(self.ids) - end > self.line.piece:
            end += self.line.piece
            self.line._wait_turn(self.ticket)
            yield self.ids[:end]
            self.line._read(self.ticket, self.line.piece, done=False)

    def wait_turn(self) -> None:
        """Block until the request itself may be sent."""
        self.line._wait_turn(self.ticket)

    def first_token(self) -> None:
        """The request's first token came: its prompt is read, the next may go."""
        self.line._read(self.ticket, 0, done=True)
