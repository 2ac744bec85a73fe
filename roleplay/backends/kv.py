"""KV-cache machinery for the transformers backend, tuned for CPU decoding.

Three pieces, measured on SmolLM2-135M on two cores (bench/eval.py, docs/backends.md):

- `GrowingLayer`: a cache layer that appends into spare capacity. transformers'
  ``DynamicLayer`` concatenates, copying the whole cache every token; with a batch of 8
  rows of 1,100 tokens that is ~400 MB of copying per step.
- `Batch`: the scheduler's running batch, rows right-aligned in one buffer with spare rows
  and margins, so a row joins or leaves by copying that row, not the whole batch.
- `PrefixStore`: caches of recent prompts (and prompt + reply), least recently used first
  out, within a byte budget. A new prompt starts from the longest stored prefix it shares,
  so a chat's next turn, a judge prompt asked in both orders, or eight prompts of one
  character in a batch only compute what is new.

Only models whose every layer is a plain full-attention ``DynamicLayer`` use these
(`growing_cache` returns None otherwise); sliding-window and hybrid models keep
transformers' own caches and left-padded ``generate``.
"""
from __future__ import annotations

import ctypes
import time
from collections import OrderedDict
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are views into a buffer with spare capacity.

    ``reserve`` is the length the caller expects to reach (prompt + new tokens), so a whole
    generation needs one allocation; past it the buffer grows by a quarter at a time. ``crop`` keeps working (it slices the view);
    anything that replaces ``keys`` with a fresh tensor just makes the next update copy
    once into a new buffer.
    """

    def __init__(self, reserve: int = 0) -> None:
        super().__init__()
        self.reserve = reserve
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None

    def _owns_views(self) -> bool:
        return (self._kbuf is not None and self._vbuf is not None
                and self.keys.data_ptr() == self._kbuf.data_ptr() and self.keys.stride() == self._kbuf.stride()
                and self.values.data_ptr() == self._vbuf.data_ptr())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, add = self.get_seq_length(), key_states.shape[-2]
        buf = self._kbuf
        fits = (buf is not None and n + add <= buf.shape[-2] and buf.shape[:2] == key_states.shape[:2]
                and (n == 0 or self._owns_views()))
        if not fits:
            b, h, _, d = key_states.shape
            need = n + add
            cap = self.reserve if self.reserve >= need else need + max(64, need // 4)
            kbuf, vbuf = key_states.new_empty((b, h, cap, d)), value_states.new_empty((b, h, cap, d))
            if n:
                kbuf[:, :, :n] = self.keys
                vbuf[:, :, :n] = self.values
            self._kbuf, self._vbuf = kbuf, vbuf
        self._kbuf[:, :, n:n + add] = key_states
        self._vbuf[:, :, n:n + add] = value_states
        self.keys, self.values = self._kbuf[:, :, :n + add], self._vbuf[:, :, :n + add]
        return self.keys, self.values

    def nbytes(self) -> int:
        if not self.is_initialized or self.keys is None:
            return 0
        if self._kbuf is not None and self._owns_views():
            return self._kbuf.nbytes + self._vbuf.nbytes
        return self.keys.nbytes + self.values.nbytes


def growing_cache(config: Any, reserve: int = 0) -> DynamicCache | None:
    """An empty cache of `GrowingLayer`s for ``config``, or None if the model needs other layers."""
    cache = DynamicCache(config=config)
    layers = getattr(config.get_text_config(decoder=True), "num_hidden_layers", None)
    if layers is None or len(cache.layers) != layers or any(type(x) is not DynamicLayer for x in cache.layers):
        return None
    cache.layers = [GrowingLayer(reserve) for _ in range(layers)]
    return cache


def copy_prefix(source: DynamicCache, length: int, config: Any, reserve: int) -> DynamicCache:
    """A new growing cache holding a copy of the first ``length`` positions of ``source`` (batch 1)."""
    cache = growing_cache(config, reserve)
    assert cache is not None  # subtle: sources are only ever made by growing_cache
    if length:
        for src, dst in zip(source.layers, cache.layers):
            dst.update(src.keys[:, :, :length], src.values[:, :, :length])
    return cache


class BatchLayer(DynamicLayer):
    """One layer of the running batch (`Batch`): ``keys``/``values`` are the views
    ``buf[:rows, :, start:end]`` of a buffer with spare rows, a left margin and room on the
    right, so rows join, leave and the batch grows without copying the batch each time."""

    def __init__(self) -> None:
        super().__init__()
        self.kbuf: torch.Tensor | None = None
        self.vbuf: torch.Tensor | None = None
        self.rows = self.start = self.end = 0

    def view(self) -> None:
        assert self.kbuf is not None and self.vbuf is not None
        self.keys = self.kbuf[:self.rows, :, self.start:self.end]
        self.values = self.vbuf[:self.rows, :, self.start:self.end]

    def resize(self, *, rows: int, margin: int, room: int) -> None:
        """Move the live rows into a new zeroed buffer of ``rows`` rows, ``margin`` free
        columns before them and ``room`` after (the one copy, done rarely)."""
        assert self.kbuf is not None and self.vbuf is not None
        _, h, _, d = self.kbuf.shape
        width = self.end - self.start
        # zeros, not empty: masked positions still go through the softmax·V product, and
        # uninitialised memory may hold NaN, which a zero weight does not cancel.
        kbuf = self.kbuf.new_zeros((rows, h, margin + width + room, d))
        vbuf = self.vbuf.new_zeros((rows, h, margin + width + room, d))
        if self.rows and width:
            kbuf[:self.rows, :, margin:margin + width] = self.kbuf[:self.rows, :, self.start:self.end]
            vbuf[:self.rows, :, margin:margin + width] = self.vbuf[:self.rows, :, self.start:self.end]
        self.kbuf, self.vbuf, self.start, self.end = kbuf, vbuf, margin, margin + width
        self.view()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.kbuf is not None and self.vbuf is not None and key_states.shape[0] == self.rows
        add = key_states.shape[-2]
        if self.end + add > self.kbuf.shape[2]:
            self.resize(rows=self.kbuf.shape[0], margin=MARGIN, room=add + ROOM)
        self.kbuf[:self.rows, :, self.end:self.end + add] = key_states
        self.vbuf[:self.rows, :, self.end:self.end + add] = value_states
        self.end += add
        self.view()
        return self.keys, self.values


#: `BatchLayer` columns kept free before the rows (a longer row joins without a copy) and
#: after them besides the longest reply's (the rows' columns move right one per step, so
#: the batch is copied about once per ``ROOM`` steps). Each costs 8 rows × 46 KB per column
#: with SmolLM2: ~190 MB and ~95 MB.
MARGIN = 512
ROOM = 256


class Batch:
    """The scheduler's running batch: single-row caches right-aligned in one `BatchLayer`
    buffer per layer (left-padded: every row's last token in the same column).

    A row joins by one row copy (its own cache), leaves by moving the last row into its
    place (one row copy; the rows' order changes, `keep` says how), and the width shrinks
    by moving ``start`` when the longest row leaves. Only growing past the buffer's rows,
    margin or room copies the batch, and each time leaves room to spare.
    """

    def __init__(self, model_config: Any) -> None:
        layers = getattr(model_config.get_text_config(decoder=True), "num_hidden_layers", None)
        self.config = model_config
        self.cache = DynamicCache(config=model_config)
        self.cache.layers = [BatchLayer() for _ in range(int(layers or len(self.cache.layers)))]

    @property
    def layers(self) -> list[BatchLayer]:
        return self.cache.layers  # type: ignore[return-value]

    @property
    def rows(self) -> int:
        return self.layers[0].rows

    @property
    def width(self) -> int:
        return self.layers[0].end - self.layers[0].start

    def add(self, row: DynamicCache, n: int, *, room: int) -> None:
        """Append ``row`` (a single-row cache holding ``n`` positions) as the last row;
        ``room``: positions the batch may still append (the longest reply left)."""
        for mine, theirs in zip(self.layers, row.layers):
            if mine.kbuf is None:
                assert theirs.is_initialized  # subtle: a read prompt has at least one position
                mine.lazy_initialization(theirs.keys, theirs.values)
                _, h, _, d = theirs.keys.shape
                mine.kbuf, mine.vbuf = theirs.keys.new_zeros((1, h, 0, d)), theirs.values.new_zeros((1, h, 0, d))
                mine.start = mine.end = 0  # sized by the resize below
            width = mine.end - mine.start
            left = max(0, n - width)  # columns the row needs before the others' start
            rows = mine.kbuf.shape[0]
            if mine.rows == rows or mine.start < left or mine.end + room > mine.kbuf.shape[2]:
                mine.resize(rows=2 * rows if mine.rows == rows else rows, margin=left + MARGIN, room=room + ROOM)
            mine.start -= left
            if n:
                mine.kbuf[mine.rows, :, mine.end - n:mine.end] = theirs.keys[0, :, :n]
                mine.vbuf[mine.rows, :, mine.end - n:mine.end] = theirs.values[0, :, :n]
            # this slot may hold an earlier row's positions before ``end - n``: masked, and
            # finite, so harmless; the zeros matter only where nothing was ever written
            mine.rows += 1
            mine.view()

    def keep(self, keep: list[int]) -> list[int]:
        """Keep only the rows at ``keep``; returns, for each row now in the batch, its old
        index (rows past the new end move into the places of rows that left)."""
        kept = sorted(set(keep))
        n = len(kept)
        order = list(range(n))
        kept_set = set(kept)
        holes = [i for i in range(n) if i not in kept_set]
        movers = [j for j in kept if j >= n]
        for hole, mover in zip(holes, movers):
            order[hole] = mover
        for layer in self.layers:
            if layer.kbuf is None:
                continue
            for hole, mover in zip(holes, movers):
                layer.kbuf[hole, :, layer.start:layer.end] = layer.kbuf[mover, :, layer.start:layer.end]
                layer.vbuf[hole, :, layer.start:layer.end] = layer.vbuf[mover, :, layer.start:layer.end]
            layer.rows = n
            layer.view()
        return order

    def row(self, j: int, n: int) -> DynamicCache:
        """Row ``j``'s last ``n`` positions (its own, right-aligned) as a single-row growing
        cache, for the prefix store."""
        out = growing_cache(self.config, n)
        assert out is not None
        for src, dst in zip(self.layers, out.layers):
            first = src.end - src.start - n  # in the layer's view of the live columns
            dst.update(src.keys[j:j + 1, :, first:], src.values[j:j + 1, :, first:])
        return out

    def set_width(self, width: int) -> None:
        """Attend over the last ``width`` columns only (the longest row left the batch)."""
        for layer in self.layers:
            if layer.kbuf is not None:
                layer.start = layer.end - width
                layer.view()




def cache_nbytes(cache: DynamicCache) -> int:
    return sum(layer.nbytes() if isinstance(layer, GrowingLayer) else 0 for layer in cache.layers)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixStore:
    """Kept single-row caches keyed by the token ids they hold; LRU within ``max_bytes``.

    Caches shorter than ``min_tokens`` are not kept: no prompt would reuse them.
    """

    def __init__(self, max_bytes: int, min_tokens: int = 0) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[int, tuple[list[int], DynamicCache, int]] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(size for _, _, size in self._entries.values())

    def match(self, ids: list[int]) -> tuple[int | None, int]:
        """The entry sharing the longest prefix with ``ids`` (marked recently used) and that length."""
        best, best_len = None, 0
        for key, (held, _, _) in self._entries.items():
            n = common_prefix(held, ids)
            if n > best_len:
                best, best_len = key, n
        if best is not None:
            self._entries.move_to_end(best)
        return best, best_len

    def get(self, key: int) -> tuple[list[int], DynamicCache]:
        held, cache, _ = self._entries[key]
        return held, cache

    def take(self, key: int) -> DynamicCache:
        """Remove and return an entry (the caller may then crop and extend it in place)."""
        return self._entries.pop(key)[1]

    def put(self, ids: list[int], cache: DynamicCache) -> None:
        """Keep ``cache`` (holding exactly ``ids``); entries it extends are dropped as superseded."""
        size = cache_nbytes(cache)
        if not ids or len(ids) < self.min_tokens or size > self.max_bytes:
            return
        for key in [k for k, (held, _, _) in self._entries.items()
                    if len(held) <= len(ids) and ids[:len(held)] == held]:
            del self._entries[key]
        self._entries[self._next] = (list(ids), cache, size)
        self._next += 1
        total = self.nbytes
        while total > self.max_bytes and self._entries:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            total -= dropped

    def clear(self) -> None:
        self._entries.clear()


class HeapTrimmer:
    """Give freed cache memory back to the OS, at most every ``interval`` seconds.

    Caches of many sizes come and go (kept, evicted, stacked for a batch); glibc keeps the
    freed pages in its heap, so without this a server's RSS creeps far past the store's
    budget (measured: +1.9 GB over the budget after 12 batches, still rising; with a trim
    after each batch it stays flat). ``malloc_trim`` costs ~50 ms, hence the interval. A
    no-op where glibc is not the C library.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = time.monotonic()
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    def __call__(self) -> None:
        now = time.monotonic()
        if self._trim is not None and now - self._last >= self.interval:
            self._trim(0)
            self._last = now
