"""The transformers backend's continuous-batching scheduler, on the real SmolLM2 model.

Concurrent streams that arrive at different times must each get exactly their solo greedy
text; a cancelled stream must free its row; a long prompt arriving mid-stream must be read
in chunks (the running streams' largest gap is compared with one chunk's own time, not
with a wall-clock threshold); background work must not hold up a user's reply; a full
wait line must be refused with `BackendBusy`.
"""
from __future__ import annotations

import threading
import time

import pytest

from roleplay.backends.base import BackendBusy, Priority, SamplingParams
from roleplay.backends.scheduler import Limits
from roleplay.backends.transformers_backend import TransformersBackend

GREEDY = SamplingParams(max_tokens=24, temperature=0)
CHATS = [[{"role": "user", "content": text}] for text in (
    "Describe a rainy street in one sentence.", "What is the capital of France?",
    "Name three colours.", "Tell me about owls.", "Write a greeting for a pirate.",
    "How do bees make honey?", "Say something kind.", "What is a violin?")]


@pytest.fixture(scope="module")
def sched(transformers_backend):
    """A backend of its own over the shared model: own scheduler, own (empty) caches."""
    b = TransformersBackend.from_model(transformers_backend.model, transformers_backend.tokenizer,
                                       model_name="sched", limits=Limits(max_batch=8, max_waiting=4,
                                                                         prefill_chunk=64))
    yield b
    b.close()


def test_eight_streams_arriving_at_different_times_match_their_solo_text(sched):
    solo = []
    for chat in CHATS:
        sched.clear_kv_cache()
        solo.append(sched.generate(chat, GREEDY))
    sched.clear_kv_cache()
    results: dict[int, str] = {}
    overlap = {"max": 0}

    def run(i: int) -> None:
        time.sleep(0.15 * i)  # staggered: each joins a batch that is already decoding
        g = sched.stream(CHATS[i], GREEDY)
        parts = []
        for chunk in g:
            overlap["max"] = max(overlap["max"], sched.scheduler.active)
            parts.append(chunk)
        results[i] = "".join(parts)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(CHATS))]
    steps = sched.scheduler.stats["steps"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(CHATS))] == solo
    assert overlap["max"] >= 3  # they really shared the decoding loop
    # fewer steps than one request after another would take
    assert sched.scheduler.stats["steps"] - steps < sum(len(sched.tokenizer(s)["input_ids"]) + 1 for s in solo)


def test_a_cancelled_stream_frees_its_row(sched):
    g = sched.stream(CHATS[0], SamplingParams(max_tokens=200, temperature=0))
    next(g)
    assert sched.scheduler.active == 1
    g.close()
    deadline = time.monotonic() + 30
    while sched.scheduler.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sched.scheduler.active == 0
    assert g.finish_reason == "stop"


def test_a_long_prompt_arriving_mid_stream_is_read_in_chunks(sched):
    sched.clear_kv_cache()
    long_chat = [{"role": "user", "content": "Summarise this. " + "The old clock ticked in the hall. " * 120}]
    n_long = len(sched.prompt_ids(long_chat))
    chunk = sched.scheduler.limits.prefill_chunk
    assert n_long > 4 * chunk
    # one chunk's own time, and a whole prefill's, on this machine now
    import torch

    ids = sched.prompt_ids(long_chat)
    t0 = time.perf_counter()
    sched.scheduler.call(lambda: sched.model(input_ids=torch.tensor([ids[:chunk]]), use_cache=True))
    chunk_s = time.perf_counter() - t0
    stamps: list[float] = []
    running = sched.stream(CHATS[1], SamplingParams(max_tokens=60, temperature=0))
    stamps.append(time.perf_counter())
    for i, _ in enumerate(running):
        stamps.append(time.perf_counter())
        if i == 2:
            late = threading.Thread(target=lambda: sched.generate(long_chat, SamplingParams(max_tokens=2,
                                                                                           temperature=0)))
            late.start()
    late.join()
    gaps = [b - a for a, b in zip(stamps[3:], stamps[4:])]
    chunks = -(-n_long // chunk)
    # Read whole, the long prompt would stop the stream for ~chunks × chunk_s; read in chunks,
    # the largest gap is about one chunk plus one decoding step.
    assert max(gaps) < chunks * chunk_s / 2, (max(gaps), chunk_s, chunks)


def test_background_work_does_not_hold_up_a_users_reply(transformers_backend):
    b = TransformersBackend.from_model(transformers_backend.model, transformers_backend.tokenizer,
                                       model_name="prio", limits=Limits(max_batch=2, max_waiting=16))
    try:
        long = SamplingParams(max_tokens=120, temperature=0)
        background = [threading.Thread(target=b.generate, args=(CHATS[i], long),
                                       kwargs={"priority": Priority.BACKGROUND}) for i in range(4)]
        for t in background:
            t.start()
        deadline = time.monotonic() + 60
        while len(b.scheduler._rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(b.scheduler._rows) == 2  # the batch is full of background work
        steps = b.scheduler.stats["steps"]
        g = b.stream(CHATS[6], SamplingParams(max_tokens=8, temperature=0))
        next(g)
        # the user's first token came within a few steps (one prefill), not after 120-token jobs
        assert b.scheduler.stats["steps"] - steps <= 3
        assert b.scheduler.stats["preempted"] >= 1
        g.collect()
        for t in background:
            t.join()
    finally:
        b.close()


def test_a_full_wait_line_is_refused(transformers_backend):
    b = TransformersBackend.from_model(transformers_backend.model, transformers_backend.tokenizer,
                                       model_name="busy", limits=Limits(max_batch=1, max_waiting=1))
    try:
        first = b.stream(CHATS[0], SamplingParams(max_tokens=100, temperature=0))
        next(first)  # decoding: the batch (1 row) is full
        second = b.stream(CHATS[1], SamplingParams(max_tokens=4, temperature=0))  # waits
        with pytest.raises(BackendBusy) as err:
            b.stream(CHATS[2], SamplingParams(max_tokens=4, temperature=0))
        assert err.value.retry_after > 0
        first.close()
        assert second.collect()  # the waiting request got its turn once a row was free
    finally:
        b.close()


def test_finish_reason_and_logprobs(sched):
    g = sched.stream(CHATS[3], SamplingParams(max_tokens=5, temperature=0, logprobs=2))
    text = g.collect()
    assert g.finish_reason == "length" and g.completion_tokens == 5
    assert len(g.logprobs) == 5 and all(len(t.top) == 2 for t in g.logprobs)
    assert "".join(t.token for t in g.logprobs) == text
    short = sched.stream([{"role": "user", "content": "Reply with the single word: yes"}],
                         SamplingParams(max_tokens=50, temperature=0))
    short.collect()
    assert short.finish_reason == "stop" and short.completion_tokens < 50


def test_json_schema_output_is_valid_json(sched):
    import json

    schema = {"type": "object", "properties": {"facts": {"type": "array", "items": {"type": "string"},
                                                         "maxItems": 3}},
              "required": ["facts"], "additionalProperties": False}
    out = sched.generate([{"role": "user", "content": "I live in Hamburg and I love clocks. List facts."}],
                         SamplingParams(max_tokens=120, temperature=0, json_schema=schema))
    data = json.loads(out)
    assert isinstance(data["facts"], list)


def test_penalties_and_logit_bias_change_the_text(sched):
    base = sched.generate(CHATS[2], GREEDY)
    first = sched.tokenizer(base, add_special_tokens=False)["input_ids"][0]
    banned = sched.generate(CHATS[2], SamplingParams(max_tokens=24, temperature=0, logit_bias={first: -100}))
    assert not banned.startswith(sched.tokenizer.decode([first]))
    penal = sched.generate(CHATS[2], SamplingParams(max_tokens=24, temperature=0, frequency_penalty=2.0,
                                                    presence_penalty=2.0))
    assert penal != base
