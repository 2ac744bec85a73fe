"""KV caches, prefix reuse, batched decoding and CPU kernels of the transformers backend.

Real SmolLM2-135M on the CPU; greedy and short wherever texts are compared.
"""
from __future__ import annotations

import pytest
import torch

from roleplay.backends import SamplingParams
from roleplay.backends import cpu_kernels, kv

SHERLOCK = [{"role": "system", "content": "You are Sherlock Holmes, the detective. Stay in character."},
            {"role": "user", "content": "Good morning, Holmes. What are you working on today?"}]
PIRATE = [{"role": "system", "content": "You are Captain Flint, a pirate. Speak like one."},
          {"role": "user", "content": "Where is the treasure buried, captain?"}]


@pytest.fixture(scope="module")
def backend(transformers_backend):
    """This file tests the transformers backend's internals (the default is llama.cpp on the CPU)."""
    return transformers_backend


@pytest.fixture
def fresh(backend):
    """The session backend with an empty prefix store, reuse on, restored afterwards."""
    saved = backend.reuse_cache
    backend.reuse_cache = True
    backend.clear_kv_cache()
    yield backend
    backend.reuse_cache = saved
    backend.clear_kv_cache()


def _filled(config, ids_len: int, seed: int = 0):
    """A growing cache holding ``ids_len`` positions of random keys/values."""
    cache = kv.growing_cache(config, ids_len)
    gen = torch.Generator().manual_seed(seed)
    text = config.get_text_config(decoder=True)
    heads = text.num_key_value_heads
    dim = text.hidden_size // text.num_attention_heads
    for layer in cache.layers:
        layer.update(torch.randn(1, heads, ids_len, dim, generator=gen), torch.randn(1, heads, ids_len, dim, generator=gen))
    return cache


def test_growing_layer_matches_concatenation_and_appends_in_place():
    grow, plain = kv.GrowingLayer(reserve=10), kv.DynamicLayer()
    chunks = [torch.randn(2, 3, n, 4) for n in (4, 1, 1, 1, 1, 1, 1, 5)]
    ptrs = set()
    for c in chunks:
        k, v = grow.update(c, c + 1)
        pk, pv = plain.update(c, c + 1)
        assert torch.equal(k, pk) and torch.equal(v, pv)
        ptrs.add(k.data_ptr())
    assert len(ptrs) == 2  # one buffer up to the reserve (10), one more past it (15 > 10)
    grow.crop(-6)
    plain.crop(-6)
    extra = torch.randn(2, 3, 2, 4)
    assert torch.equal(grow.update(extra, extra)[0], plain.update(extra, extra)[0])


def test_batch_rows_are_right_aligned_over_zero_padding(backend):
    config = backend.model.config
    rows = [_filled(config, 5, seed=1), _filled(config, 3, seed=2), _filled(config, 4, seed=4)]
    batch = kv.Batch(config)
    for row, n in zip(rows, (5, 3, 4)):
        batch.add(row, n, room=8)  # room for rows doubles: 1, 2, 4
    keys = batch.layers[0].keys
    assert batch.width == 5 and batch.rows == 3
    assert keys.shape[0] == 3 and keys.shape[2] == 5
    assert torch.equal(keys[0], rows[0].layers[0].keys[0])
    assert torch.equal(keys[1, :, 2:], rows[1].layers[0].keys[0])
    assert not keys[1, :, :2].any()  # padding is zero, never uninitialised memory
    back = batch.row(1, 3)
    assert torch.equal(back.layers[-1].values, rows[1].layers[-1].values)
    # a longer row joins: the others are padded further on the left, and nothing is copied
    buffer = batch.layers[0].kbuf.data_ptr()
    longer = _filled(config, 7, seed=3)
    batch.add(longer, 7, room=8)
    keys = batch.layers[0].keys
    assert batch.width == 7 and keys.shape[0] == 4 and keys.shape[2] == 7
    assert batch.layers[0].kbuf.data_ptr() == buffer  # joined within the spare rows and margin
    assert torch.equal(keys[0, :, 2:], rows[0].layers[0].keys[0])
    assert torch.equal(keys[1, :, 4:], rows[1].layers[0].keys[0]) and not keys[1, :, :4].any()
    assert torch.equal(keys[3], longer.layers[0].keys[0])
    # decoding appends in place
    layer = batch.layers[0]
    step = torch.randn(4, layer.keys.shape[1], 1, layer.keys.shape[3])
    k, _ = layer.update(step, step)
    assert k.shape[2] == 8 and torch.equal(k[:, :, -1:], step) and layer.kbuf.data_ptr() == buffer


def test_batch_rows_leave_by_moving_the_last_row_into_their_place(backend):
    config = backend.model.config
    lens = [4, 9, 6, 3]
    rows = [_filled(config, n, seed=10 + i) for i, n in enumerate(lens)]
    batch = kv.Batch(config)
    for row, n in zip(rows, lens):
        batch.add(row, n, room=4)
    buffer = batch.layers[0].kbuf.data_ptr()
    order = batch.keep([0, 2, 3])  # row 1, the longest, leaves
    assert order == [0, 3, 2]  # the last row moved into its place
    batch.set_width(max(lens[j] for j in order))
    assert batch.rows == 3 and batch.width == 6 and batch.layers[0].kbuf.data_ptr() == buffer
    for layer, source_layers in zip(batch.layers[:2], zip(*[r.layers for r in rows])):
        for position, j in enumerate(order):
            assert torch.equal(layer.keys[position, :, 6 - lens[j]:], source_layers[j].keys[0])
            assert torch.equal(layer.values[position, :, 6 - lens[j]:], source_layers[j].values[0])
    assert batch.keep([1]) == [1] and batch.rows == 1  # row 1 of the new order stays


def test_prefix_store_longest_match_supersedes_and_evicts_by_bytes(backend):
    config = backend.model.config
    one = kv.cache_nbytes(_filled(config, 40))
    store = kv.PrefixStore(max_bytes=int(2.5 * one))
    store.put(list(range(40)), _filled(config, 40))
    store.put([7] * 40, _filled(config, 40))
    key, shared = store.match(list(range(30)) + [99] * 10)
    assert shared == 30 and store.get(key)[0] == list(range(40))
    # an entry extending another replaces it (a chat's next turn)
    longer = list(range(40)) + [5, 6]
    store.put(longer, _filled(config, 42))
    assert len(store) == 2 and store.match(longer)[1] == 42
    # a third entry goes over the budget: the least recently used one leaves
    store.match([7] * 3)  # the [7]*40 entry is now the most recently used
    store.put([9] * 40, _filled(config, 40))
    assert store.match(longer)[1] == 0 and store.match([7] * 40)[1] == 40
    assert store.nbytes <= store.max_bytes
    store.put([1] * 40, _filled(config, 400))  # bigger than the whole budget: not kept
    assert store.match([1] * 40)[1] == 0
    short = kv.PrefixStore(max_bytes=10 * one, min_tokens=16)
    short.put([3] * 8, _filled(config, 8))  # too short for any prompt to reuse: not kept
    assert len(short) == 0


def test_next_turn_reuses_its_own_chat_after_another_chat(fresh):
    greedy = SamplingParams(max_tokens=16, temperature=0)
    first = fresh.generate(SHERLOCK, greedy)
    fresh.generate(PIRATE, greedy)  # a different conversation in between
    turn2 = SHERLOCK + [{"role": "assistant", "content": first},
                        {"role": "user", "content": "And who is your client?"}]
    with_reuse = fresh.generate(turn2, greedy)
    assert fresh.last_usage["reused_tokens"] >= len(fresh.prompt_ids(SHERLOCK))
    fresh.reuse_cache = False
    assert fresh.generate(turn2, greedy) == with_reuse
    assert fresh.last_usage["reused_tokens"] == 0


def test_batch_rows_finishing_early_match_one_at_a_time(fresh):
    batch = [[{"role": "user", "content": "Say only the word yes."}], SHERLOCK, PIRATE,
             SHERLOCK + [{"role": "assistant", "content": "(looks up from the microscope)"}]]
    params = SamplingParams(max_tokens=48, temperature=0)
    stats = dict(fresh.scheduler.stats)
    batched = fresh.generate_batch(batch, params)
    reused = fresh.scheduler.stats["reused_tokens"] - stats["reused_tokens"]
    read = fresh.scheduler.stats["read_tokens"] - stats["read_tokens"]
    assert reused > 0  # the two Sherlock rows share their prefix
    # every prompt token but the last (the first decoding step's input) was read or reused
    assert reused + read == sum(len(fresh.prompt_ids(m)) - 1 for m in batch)
    fresh.reuse_cache = False
    singles = [fresh.generate(m, params) for m in batch]
    assert batched == singles
    lengths = [fresh.count_tokens(t) for t in singles]
    assert min(lengths) < 20 < max(lengths)  # rows really ended at different steps


def test_batch_rows_are_kept_for_the_next_turn(fresh):
    params = SamplingParams(max_tokens=12, temperature=0)
    replies = fresh.generate_batch([SHERLOCK, PIRATE], params)
    turn2 = PIRATE + [{"role": "assistant", "content": replies[1]}, {"role": "user", "content": "Arr, go on."}]
    fresh.generate(turn2, params)
    assert fresh.last_usage["reused_tokens"] >= len(fresh.prompt_ids(PIRATE))


def test_batch_stop_strings_and_seeds(fresh):
    greedy = SamplingParams(max_tokens=20, temperature=0)
    full = fresh.generate(SHERLOCK, greedy)
    stop = " " + full.split()[3]
    params = SamplingParams(max_tokens=20, temperature=0, stop=[stop])
    assert fresh.generate_batch([SHERLOCK, PIRATE], params)[0] == full[: full.index(stop)]
    sampled = SamplingParams(max_tokens=16, temperature=1.0, seed=11)
    first = fresh.generate_batch([SHERLOCK, PIRATE], sampled)
    assert fresh.generate_batch([SHERLOCK, PIRATE], sampled) == first
    assert all(first)


def test_models_with_other_caches_fall_back_to_padded_generate(fresh):
    params = SamplingParams(max_tokens=12, temperature=0)
    expected = fresh.generate_batch([SHERLOCK, PIRATE], params)
    fresh.clear_kv_cache()
    fresh.own_cache = False
    try:
        assert fresh.generate_batch([SHERLOCK, PIRATE], params) == expected
        assert fresh.generate(SHERLOCK, params) == expected[0]
        assert len(fresh._store) == 0  # nothing kept on this path
    finally:
        fresh.own_cache = True


def test_kv_cache_budget_zero_keeps_nothing(backend):
    from roleplay.backends.transformers_backend import TransformersBackend

    off = TransformersBackend.from_model(backend.model, backend.tokenizer, model_name="off", kv_cache_mb=0)
    off.generate(SHERLOCK, SamplingParams(max_tokens=4, temperature=0))
    off.generate(SHERLOCK, SamplingParams(max_tokens=4, temperature=0))
    assert off.last_usage["reused_tokens"] == 0 and len(off._store) == 0
    off.close()


def test_cpu_kernels_are_on_and_agree_with_the_reference(backend):
    assert backend.model.config._attn_implementation == cpu_kernels.GQA_ATTENTION
    linear = backend.model.model.layers[0].mlp.up_proj
    x = torch.randn(5, linear.in_features)
    with torch.inference_mode():
        assert torch.allclose(linear(x), torch.nn.functional.linear(x, linear.weight), atol=1e-4)
    module = backend.model.model.layers[0].self_attn
    text = backend.model.config.get_text_config(decoder=True)
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    for q_len in (1, 6):
        q = torch.randn(2, heads, q_len, 64)
        k, v = torch.randn(2, kv_heads, 10, 64), torch.randn(2, kv_heads, 10, 64)
        mask = torch.ones(2, 1, q_len, 10, dtype=torch.bool)
        mask[1, :, :, :3] = False  # row 1 is left-padded by 3
        out, _ = cpu_kernels.gqa_sdpa(module, q, k, v, mask, scaling=0.125)
        rep = heads // kv_heads
        ref = torch.nn.functional.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), attn_mask=mask, scale=0.125)
        assert torch.allclose(out, ref.transpose(1, 2), atol=1e-5)


def test_heap_trimmer_is_rate_limited():
    trimmer = kv.HeapTrimmer(interval=3600)
    assert trimmer._trim is not None  # glibc here: freed cache memory can be returned
    calls = []
    trimmer._trim = calls.append
    trimmer()
    assert calls == []  # within the interval: skipped
    trimmer.interval = 0
    trimmer()
    trimmer()
    assert calls == [0, 0]
