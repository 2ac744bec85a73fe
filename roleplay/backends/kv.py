"""KV-cache machinery for the transformers backend, tuned for CPU decoding.

Two pieces, measured on SmolLM2-135M on two cores (bench/eval.py, docs/backends.md):

- `GrowingLayer`: a cache layer that appends into spare capacity. transformers'
  ``DynamicLayer`` concatenates, copying the whole cache every token; with a batch of 8
  rows of 1,100 tokens that is ~400 MB of copying per step.
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

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.get_seq_length()
        if n and self._owns_views():
            self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]  # one copy, capacity kept
            self.keys, self.values = self._kbuf[:, :, :n], self._vbuf[:, :, :n]
        else:
            super().batch_select_indices(indices)

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


def join_rows(batch: DynamicCache | None, width: int, lens: list[int], rows: list[DynamicCache],
              row_lens: list[int], *, model_config: Any, reserve: int) -> tuple[DynamicCache, int]:
    """``batch`` (rows right-aligned at ``width``, ``lens`` tokens each) plus single-row caches.

    Returns the joined cache, every row right-aligned at the new width (the longest row),
    padding zeroed, and that width. One copy of the batch: the cost of joining a running
    batch (continuous batching) is about one decoding step.
    """
    new_width = max([*lens, *row_lens, 1])
    old = max(lens, default=0)  # the live columns of the old batch: [width - old, width)
    cache = growing_cache(model_config, reserve)
    assert cache is not None
    n_old = len(lens)
    for i, layer in enumerate(cache.layers):
        sources = [r.layers[i] for r in rows if r.layers[i].is_initialized]
        ref = batch.layers[i].keys if batch is not None and n_old else (sources[0].keys if sources else None)
        if ref is None:
            continue
        _, h, _, d = ref.shape
        cap = max(reserve, new_width) + 64
        # zeros, not empty: masked positions still go through the softmax·V product, and
        # uninitialised memory may hold NaN, which a zero weight does not cancel.
        kbuf = ref.new_zeros((n_old + len(rows), h, cap, d))
        vbuf = ref.new_zeros((n_old + len(rows), h, cap, d))
        if batch is not None and n_old and old:
            src = batch.layers[i]
            kbuf[:n_old, :, new_width - old:new_width] = src.keys[:, :, width - old:width]
            vbuf[:n_old, :, new_width - old:new_width] = src.values[:, :, width - old:width]
        for j, (row, n) in enumerate(zip(rows, row_lens)):
            if n:
                kbuf[n_old + j, :, new_width - n:new_width] = row.layers[i].keys[0, :, :n]
                vbuf[n_old + j, :, new_width - n:new_width] = row.layers[i].values[0, :, :n]
        layer.lazy_initialization(ref, ref)
        layer._kbuf, layer._vbuf = kbuf, vbuf
        layer.keys, layer.values = kbuf[:, :, :new_width], vbuf[:, :, :new_width]
    return cache, new_width


def extract_row(cache: DynamicCache, row: int, start: int, end: int, config: Any) -> DynamicCache:
    """A single-row growing cache copied from positions ``start:end`` of batch row ``row``."""
    out = growing_cache(config, end - start)
    assert out is not None
    for src, dst in zip(cache.layers, out.layers):
        dst.update(src.keys[row:row + 1, :, start:end], src.values[row:row + 1, :, start:end])
    return out


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
