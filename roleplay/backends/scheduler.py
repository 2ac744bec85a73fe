"""Continuous batching for the transformers backend: one decoding loop serves every request.

Any number of threads submit requests; one scheduler thread owns the model and its caches
and runs a loop. Each turn of the loop:

1. takes in new requests (a wait line ordered by priority, then arrival) and admits them
   while the batch has room (``max_batch`` rows, ``max_tokens_in_flight`` prompt + reply
   tokens); a user's request that finds the batch full of background work takes the place
   of a background row (*preemption*: the row's cache goes to the prefix store and it
   resumes from there later, so nothing is computed twice);
2. reads one *chunk* (``prefill_chunk`` tokens) of the most urgent admitted prompt into its
   own single-row cache, starting from the longest prefix the `kv.PrefixStore` holds — so
   a 2,000-token prompt arriving mid-stream delays the running streams by one chunk at a
   time, not by its whole prefill;
3. when a prompt is fully read, joins its row to the running batch (`kv.Batch`: rows
   right-aligned in one left-padded buffer with spare rows and margins);
4. advances every running row by one token: one forward pass, then each row's own logits
   processors (repetition/presence/frequency penalties, logit bias, JSON-schema mask,
   temperature, top-k/p, min-p), its own seeded generator, its own stop strings. A row that
   ends (end of turn, stop string, ``max_tokens``) or whose consumer went away leaves the
   batch at once; a finished row's prompt + reply cache is kept for the chat's next turn.

Trade-offs:
- Prefill chunks and decoding steps are separate forward passes (vLLM fuses them). Simpler,
  and on two CPU cores the chunk dominates either way; the largest gap a running stream
  sees is one chunk plus one step.
- Rows are right-aligned in one padded cache, so every row attends over the longest row's
  width (masked). Joining or leaving copies one row (a whole-batch copy cost ~0.7 s per
  join and ~0.3 s per leave with 8 rows of ~2,800 positions: 16 % of the time); the batch
  is copied only when it outgrows its buffer, which then keeps room to spare.
- Greedy rows give the same text in a batch as alone (tested): rows never see each other's
  positions, and each row's processors and stop strings are its own.
- Requests wait, never fail, while the batch is full; only a full wait line
  (``max_waiting``) is refused, with `BackendBusy` (the API's 429).
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import BackendError
from .base import REPETITION_WINDOW, BackendBusy, Piece, Priority, SamplingParams, TokenLogprob

log = logging.getLogger(__name__)

_END = object()


@dataclass
class Limits:
    """How much the scheduler takes on at once (see docs/backends.md, "Concurrency")."""

    max_batch: int = 8
    max_waiting: int = 64
    max_tokens_in_flight: int = 65536
    prefill_chunk: int = 256


@dataclass(eq=False)
class Request:
    """One generation: its prompt, parameters, progress and output channel."""

    prompt: list[int]
    params: SamplingParams
    priority: int
    ticket: int
    out: "queue.SimpleQueue[Any]" = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    new: list[int] = field(default_factory=list)
    cache: Any = None          # single-row cache while being read
    filled: int = 0            # tokens of `head` already in `cache`
    reused: int = 0
    text: str = ""             # decoded text emitted so far
    sampler: Any = None        # the row's processors, generator, stop strings, grammar

    @property
    def head(self) -> list[int]:
        """What goes into the cache before decoding: all but the next input token."""
        return (self.prompt + self.new)[:-1]

    @property
    def last(self) -> int:
        return (self.prompt + self.new)[-1]

    @property
    def budget(self) -> int:
        return len(self.prompt) + self.params.max_tokens

    def put(self, item: Any) -> None:
        self.out.put(item)


class Scheduler:
    """The loop described in the module docstring; ``backend`` is a `TransformersBackend`."""

    def __init__(self, backend: Any, limits: Limits) -> None:
        self.backend = backend
        self.limits = limits
        self._inbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._wake = threading.Event()
        self._tickets = itertools.count()
        self._waiting: list[tuple[int, int, Request]] = []  # heap of (priority, ticket, request)
        self._reading: list[Request] = []                     # admitted, prompt being read
        self._rows: list[Request] = []                        # decoding, in batch order
        self._batch: Any = None                               # the rows' joined cache (kv.Batch)
        self._lens: list[int] = []                            # each row's cached tokens
        self._count_lock = threading.Lock()
        self._queued = 0                                      # submitted, not yet admitted
        self._thread = threading.Thread(target=self._loop, name="roleplay-scheduler", daemon=True)
        self._stopped = False
        self._thread.start()
        #: Figures for benchmarks and /health: steps, rows per step, prefill chunks.
        self.stats = {"steps": 0, "rows": 0, "chunks": 0, "preempted": 0, "reused_tokens": 0, "read_tokens": 0}

    # -- the callers' side ----------------------------------------------------------------
    def submit(self, prompt: list[int], params: SamplingParams, priority: int = Priority.USER) -> Request:
        """Queue a generation; raises `BackendBusy` when the wait line is full."""
        if not prompt:
            raise BackendError("empty prompt")
        with self._count_lock:
            if self._queued >= self.limits.max_waiting:
                raise BackendBusy(f"the model has {self._queued} requests waiting (limit "
                                  f"{self.limits.max_waiting}); try again shortly", retry_after=2.0)
            self._queued += 1
        req = Request(prompt=list(prompt), params=params, priority=int(priority), ticket=next(self._tickets))
        self._inbox.put(req)
        self._wake.set()
        return req

    def pieces(self, req: Request) -> Iterator[Piece]:
        """The request's output; leaving early cancels it."""
        try:
            while True:
                item = req.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            req.cancelled.set()
            self._wake.set()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the scheduler thread between steps (scoring, clearing caches)."""
        if threading.current_thread() is self._thread:
            return fn()
        fut: Future = Future()
        self._inbox.put((fn, fut))
        self._wake.set()
        return fut.result()

    @property
    def waiting(self) -> int:
        return self._queued

    @property
    def active(self) -> int:
        return len(self._rows) + len(self._reading)

    def close(self) -> None:
        self._stopped = True
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stopped:
                self._take_inbox()
                self._drop_cancelled()
                self._admit()
                worked = False
                if self._reading:
                    self._read_chunk()
                    worked = True
                if self._rows:
                    self._step()
                    worked = True
                if not worked:
                    self._wake.wait(0.5)
                    self._wake.clear()

    def _take_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Request):
                heapq.heappush(self._waiting, (item.priority, item.ticket, item))
                continue
            fn, fut = item
            try:
                fut.set_result(fn())
            except BaseException as exc:  # reported to the caller
                fut.set_exception(exc)

    def _finish(self, req: Request, reason: str | None) -> None:
        if reason is not None:
            req.put(Piece(finish_reason=reason, prompt_tokens=len(req.prompt), completion_tokens=len(req.new),
                          cached_tokens=req.reused))
            self.backend.last_usage = {"prompt_tokens": len(req.prompt), "completion_tokens": len(req.new),
                                       "reused_tokens": req.reused}
        req.put(_END)
        req.cache = None
        # subtle: under steady load the batch never empties; freed cache buffers must still go
        # back to the OS (rate-limited inside), or RSS creeps far past the store's budget
        self.backend._trim_heap()

    def _fail(self, req: Request, exc: BaseException) -> None:
        req.put(exc if isinstance(exc, BackendError) else
                BackendError(f"generation failed: {type(exc).__name__}: {exc}".splitlines()[0]))
        self._finish(req, None)

    def _drop_cancelled(self) -> None:
        if any(r.cancelled.is_set() for _, _, r in self._waiting):
            gone = [r for _, _, r in self._waiting if r.cancelled.is_set()]
            self._waiting = [e for e in self._waiting if not e[2].cancelled.is_set()]
            heapq.heapify(self._waiting)
            with self._count_lock:
                self._queued -= len(gone)
            for r in gone:
                self._finish(r, None)
        for r in [r for r in self._reading if r.cancelled.is_set()]:
            self._reading.remove(r)
            self._finish(r, None)
        keep = [j for j, r in enumerate(self._rows) if not r.cancelled.is_set()]
        if len(keep) < len(self._rows):
            for j, r in enumerate(self._rows):
                if j not in keep:
                    self._finish(r, None)
            self._select(keep)

    def _in_flight(self) -> int:
        return sum(r.budget for r in self._rows) + sum(r.budget for r in self._reading)

    def _admit(self) -> None:
        while self._waiting:
            prio, _, req = self._waiting[0]
            full = self.active >= self.limits.max_batch
            heavy = self.active and self._in_flight() + req.budget > self.limits.max_tokens_in_flight
            if (full or heavy) and not (prio <= Priority.USER and self._preempt()):
                return
            heapq.heappop(self._waiting)
            with self._count_lock:
                self._queued -= 1
            try:
                if req.sampler is None:  # a preempted request keeps its generator and grammar state
                    req.sampler = _Sampler(self.backend, req.params)
            except BaseException as exc:
                self._fail(req, exc)
                continue
            self._reading.append(req)

    def _preempt(self) -> bool:
        """Make room for a user's request by parking the newest background row."""
        victims = [j for j, r in enumerate(self._rows) if r.priority > Priority.USER]
        if not victims:
            victims_reading = [r for r in self._reading if r.priority > Priority.USER]
            if not victims_reading:
                return False
            r = victims_reading[-1]
            self._reading.remove(r)
            if r.cache is not None and r.filled >= 16 and self.backend.reuse_cache:
                self.backend._store.put(r.head[:r.filled], r.cache)
            r.cache, r.filled = None, 0
        else:
            j = max(victims, key=lambda k: self._rows[k].ticket)
            r = self._rows[j]
            if self.backend.reuse_cache:
                n = self._lens[j]
                self.backend._store.put(r.head[:n], self._batch.row(j, n))
            self._select([k for k in range(len(self._rows)) if k != j])
        heapq.heappush(self._waiting, (r.priority, r.ticket, r))
        with self._count_lock:
            self._queued += 1
        self.stats["preempted"] += 1
        return True

    def _read_chunk(self) -> None:
        """Read one chunk of the most urgent prompt; join the batch when it is all read."""
        import torch

        req = min(self._reading, key=lambda r: (r.priority, r.ticket))
        head = req.head
        model = self.backend.model
        try:
            if req.cache is None:
                # subtle: taken only now, when reading starts, so prompts admitted together
                # reuse each other (a batch of one character's turns reads their shared
                # system prompt once)
                req.cache, req.filled = self.backend._prefix_cache(head, len(head))
                req.reused = max(req.reused, req.filled)
                self.stats["reused_tokens"] += req.filled
            end = min(len(head), req.filled + self.limits.prefill_chunk)
            if end > req.filled:
                model(input_ids=torch.tensor([head[req.filled:end]], device=self.backend.device),
                      past_key_values=req.cache, use_cache=True, logits_to_keep=1)
                self.stats["chunks"] += 1
                self.stats["read_tokens"] += end - req.filled
            req.filled = end
        except BaseException as exc:
            self._reading.remove(req)
            self._fail(req, exc)
            return
        if req.filled < len(head):
            return
        self._reading.remove(req)
        if self.backend.reuse_cache and len(head) >= 16:
            self.backend._store.put(head, req.cache)  # the next turn of this chat starts here
        self._join(req)

    def _join(self, req: Request) -> None:
        from . import kv

        n = len(req.head)
        if self._batch is None:
            self._batch = kv.Batch(self.backend.model.config)
        room = max(r.params.max_tokens - len(r.new) for r in [*self._rows, req]) + 1
        self._batch.add(req.cache, n, room=room)
        self._lens = [*self._lens, n]
        req.cache = None
        self._rows.append(req)

    def _select(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` in the batch (their order may change)."""
        if not keep:
            self._rows, self._lens, self._batch = [], [], None
            self.backend._trim_heap()
            return
        order = self._batch.keep(keep)
        self._rows = [self._rows[j] for j in order]
        self._lens = [self._lens[j] for j in order]
        self._batch.set_width(max(self._lens))  # the longest row may have left: attend over less

    def _step(self) -> None:
        """One token for every running row."""
        rows = self._rows
        try:
            logits = decode_step(self.backend.model, self._batch, self._lens, [r.last for r in rows],
                                 self.backend.device)
        except BaseException as exc:
            for r in rows:
                self._fail(r, exc)
            self._rows, self._lens, self._batch = [], [], None
            return
        self._lens = [n + 1 for n in self._lens]
        self.stats["steps"] += 1
        self.stats["rows"] += len(rows)
        keep = []
        for j, req in enumerate(rows):
            try:
                tok, lp = req.sampler.pick(logits[j:j + 1], req.prompt, req.new)
            except BaseException as exc:
                self._fail(req, exc)
                continue
            req.new.append(tok)
            reason = req.sampler.finished(tok, req.new)
            text = ""
            full = self.backend.tokenizer.decode(req.new, skip_special_tokens=True)
            if not full.endswith("\ufffd") or reason is not None:  # subtle: half a UTF-8 character waits
                text, req.text = full[len(req.text):], full
            if text or lp is not None:
                req.put(Piece(text=text, logprob=lp))
            if reason is None and not req.cancelled.is_set():
                keep.append(j)
                continue
            if reason is not None and self.backend.reuse_cache:
                n = self._lens[j]  # prompt + reply, for this chat's next turn
                self.backend._store.put((req.prompt + req.new)[:n], self._batch.row(j, n))
            self._finish(req, "length" if reason == "length" else "stop" if reason else None)
        if len(keep) < len(rows):
            self._select(keep)


def decode_step(model: Any, batch: Any, lens: list[int], tokens: list[int], device: Any) -> Any:
    """One forward pass over the running batch (`kv.Batch`, rows holding ``lens`` positions,
    right-aligned): each row's next input token in, each row's float logits out."""
    import torch

    width = batch.width
    pads = torch.tensor([width - n for n in lens], device=device)
    mask = (torch.arange(width + 1, device=device)[None, :] >= pads[:, None]).long()
    out = model(input_ids=torch.tensor([[t] for t in tokens], device=device), attention_mask=mask,
                position_ids=torch.tensor([[n] for n in lens], device=device),
                past_key_values=batch.cache, use_cache=True)
    return out.logits[:, -1].float()


class _Sampler:
    """One request's way of picking tokens: processors, seed, stop strings, grammar."""

    def __init__(self, backend: Any, params: SamplingParams) -> None:
        import torch

        self.params = params
        self.backend = backend
        self.processors = backend._processors(params)
        self.eos = set(backend.eos_ids)
        self.stops = backend._stop_checker(params.stop) if params.stop else None
        self.generator = None
        if params.seed is not None and not params.greedy:
            self.generator = torch.Generator(device=backend.device).manual_seed(params.seed)
        self.grammar = backend._grammar(params.json_schema) if params.json_schema else None
        self.bias = None
        if params.logit_bias:
            vocab = backend.vocab_size
            ids = [i for i in params.logit_bias if 0 <= i < vocab]
            self.bias = (torch.tensor(ids, device=backend.device),
                         torch.tensor([params.logit_bias[i] for i in ids], device=backend.device))

    def pick(self, logits: Any, prompt: list[int], new: list[int]) -> tuple[int, TokenLogprob | None]:
        import torch

        params = self.params
        raw = logits
        if self.bias is not None:
            logits = logits.clone()
            logits[0, self.bias[0]] += self.bias[1]
        if new and (params.presence_penalty or params.frequency_penalty):
            ids, counts = torch.unique(torch.tensor(new, device=logits.device), return_counts=True)
            logits = logits.clone()
            logits[0, ids] -= params.presence_penalty + params.frequency_penalty * counts.to(logits.dtype)
        if self.grammar is not None:
            logits = self.grammar.mask(logits)
        # all the penalty reads; the slice first, so a step does not copy the whole prompt
        seen = torch.tensor([(prompt[-REPETITION_WINDOW:] + new)[-REPETITION_WINDOW:]], device=logits.device)
        scores = self.processors(seen, logits)
        if params.greedy:
            tok = int(scores.argmax(dim=-1))
        else:
            probs = torch.softmax(scores, dim=-1)
            tok = int(torch.multinomial(probs, num_samples=1, generator=self.generator))
        if self.grammar is not None:
            self.grammar.accept(tok)
        lp = None
        if params.logprobs is not None:
            logp = torch.log_softmax(raw[0], dim=-1)
            top = []
            if params.logprobs:
                vals, idx = logp.topk(params.logprobs)
                top = [(self.backend.token_text(int(i)), float(v)) for v, i in zip(vals, idx)]
            lp = TokenLogprob(self.backend.token_text(tok), float(logp[tok]), top)
        return tok, lp

    def finished(self, tok: int, new: list[int]) -> str | None:
        """None while the row goes on; else "eos", "stop" or "length"."""
        if tok in self.eos or (self.grammar is not None and self.grammar.done()):
            return "eos"  # end of turn (or the JSON value is complete)
        if self.stops is not None and self.stops.hit(new):
            return "stop"
        if len(new) >= self.params.max_tokens:
            return "length"
        return None
