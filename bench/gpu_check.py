"""GPU check for the generation backends: prints ONE JSON line (run via bench/gpu_check.sh).

- CUDA + vLLM installed: the ``vllm`` backend on the default model (SmolLM2-135M, its
  converted folder): one streamed reply and a batch of 32, tokens/s each.
- CUDA without vLLM: the ``transformers`` backend on CUDA with a randomly initialised
  Llama-style ~1B model built in code (no download), against raw ``model.generate`` on the
  same token ids: tokens/s at batch 1 (our stream vs raw) and 32 concurrent streams
  through the continuous-batching scheduler (against one stream alone, and against raw
  left-padded ``generate`` of the same 32 prompts), with the ratios.
- No CUDA: prints a message and a JSON line with ``"skipped"``, exit code 0.

``--tiny`` runs the transformers path with a tiny random model on whatever device is
there (CPU here): it checks this script's code, not speed. Everything is bounded (a few
dozen new tokens per measurement); the whole check takes well under 5 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROLEPLAY_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PROMPTS = ["Tell me about the fog over Baker Street.", "Holmes, a client is here!",
           "What do you deduce from this pocket watch?", "Shall we take a cab to Scotland Yard?"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tokenizer_for_check():
    """The SmolLM2 tokenizer from the model cache, else a byte-level ChatML tokenizer built here."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    models = Path(os.environ["ROLEPLAY_CACHE"]) / "models"
    for folder in sorted(models.glob("SmolLM2*")) if models.is_dir() else []:
        if (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(folder), "smollm2"
    from tokenizers import Tokenizer, decoders, models as tmodels, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(tmodels.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    fast.chat_template = CHATML
    return fast, "byte-level"


def check_transformers(*, tiny: bool, new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from roleplay.backends import SamplingParams
    from roleplay.backends.scheduler import Limits
    from roleplay.backends.transformers_backend import TransformersBackend

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer, tok_name = tokenizer_for_check()
    if tiny:
        sizes = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)
    else:  # TinyLlama-1.1B's shape
        sizes = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                     num_key_value_heads=4)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, **sizes,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params_b = sum(p.numel() for p in model.parameters()) / 1e9
    backend = TransformersBackend.from_model(model, tokenizer, model_name="random-llama",
                                             limits=Limits(max_batch=32), reuse_cache=False)
    # subtle: a random model may emit end-of-turn at any step; without EOS ids both sides
    # always generate exactly ``new_tokens``, so tokens/s compare like with like.
    backend.eos_ids = []
    params = SamplingParams(max_tokens=new_tokens, temperature=0, repetition_penalty=1.0)
    chats = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + " " * (i % 3)}] for i in range(32)]
    ids = [backend.prompt_ids(c) for c in chats]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def raw(rows: list[list[int]]) -> float:
        width = max(map(len, rows))
        x = torch.tensor([[backend.pad_id] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(x, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=backend.pad_id)
        sync()
        return (out.shape[1] - width) * len(rows) / (time.perf_counter() - start)

    def ours_stream() -> float:
        sync()
        start = time.perf_counter()
        g = backend.stream(chats[0], params)
        g.collect()
        sync()
        return (g.completion_tokens or 0) / (time.perf_counter() - start)

    def ours_concurrent() -> float:
        """32 streams submitted at once from 32 threads: the scheduler batches them."""
        import threading

        counts: list[int] = []

        def one(chat: list[dict]) -> None:
            g = backend.stream(chat, params)
            g.collect()
            counts.append(g.completion_tokens or 0)

        threads = [threading.Thread(target=one, args=(c,)) for c in chats]
        sync()
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sync()
        return sum(counts) / (time.perf_counter() - start)

    raw([ids[0]]), ours_stream()  # warm-up (CUDA kernels, allocator)
    b1_raw, b1_ours = raw([ids[0]]), ours_stream()
    b32_raw, b32_ours = raw(ids), ours_concurrent()
    return {"path": "transformers", "device": device, "dtype": str(dtype).replace("torch.", ""),
            "model": f"random Llama {params_b:.2f}B params", "tokenizer": tok_name, "new_tokens": new_tokens,
            "batch1_raw_tok_s": round(b1_raw, 1), "batch1_engine_tok_s": round(b1_ours, 1),
            "batch1_ratio": round(b1_ours / b1_raw, 3),
            "batch32_raw_tok_s": round(b32_raw, 1), "concurrent32_engine_tok_s": round(b32_ours, 1),
            "concurrent32_vs_raw_batch": round(b32_ours / b32_raw, 3),
            "concurrent32_vs_one_stream": round(b32_ours / b1_ours, 2)}


def check_vllm(*, new_tokens: int) -> dict:
    from roleplay.backends import SamplingParams, get_backend
    from roleplay.config import Settings

    start = time.perf_counter()
    backend = get_backend(Settings.from_env(backend="vllm"))
    load_s = time.perf_counter() - start
    params = SamplingParams(max_tokens=new_tokens, temperature=0)
    chat = [{"role": "user", "content": PROMPTS[0]}]
    start = time.perf_counter()
    chunks = list(backend.stream(chat, params))
    stream_s = time.perf_counter() - start
    batch = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(32)]
    start = time.perf_counter()
    texts = backend.generate_batch(batch, params)
    batch_s = time.perf_counter() - start
    tokens = sum(backend.count_tokens(t) for t in texts)
    result = {"path": "vllm", "model": backend.model_name, "load_s": round(load_s, 1),
              "stream_chunks": len(chunks), "stream_tok_s": round(backend.count_tokens("".join(chunks)) / stream_s, 1),
              "batch32_tok_s": round(tokens / batch_s, 1), "batch32_nonempty": sum(bool(t.strip()) for t in texts)}
    backend.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="GPU check of the generation backends (one JSON line)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model on any device (code check)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per measurement")
    args = parser.parse_args()
    import torch

    if args.tiny:
        result = check_transformers(tiny=True, new_tokens=min(args.tokens, 16))
    elif not torch.cuda.is_available():
        log("gpu_check: no CUDA device here; nothing to check (run it on a CUDA machine, or use --tiny)")
        result = {"skipped": "no CUDA device"}
    elif find_spec("vllm") is not None:
        log("gpu_check: CUDA and vLLM found: checking the vllm backend")
        result = check_vllm(new_tokens=args.tokens)
    else:
        log("gpu_check: CUDA without vLLM: transformers backend on a random ~1B Llama")
        result = check_transformers(tiny=False, new_tokens=args.tokens)
    print(json.dumps({"bench": "gpu_check", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
