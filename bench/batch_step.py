"""What continuous batching can gain on this machine at most: prints ONE JSON line.

`bench/serve.py` measures chats end to end; this measures the two parts they are made of,
on the transformers backend's own path (`kv.Batch`, the model with its CPU kernels, each
row's `_Sampler` with the default sampling settings), with no server around them:

- ``step_ms`` per batch size: one decoding step (one token for every row) with every row
  holding ``--width`` cached positions (a role-play prompt with its retrieved scenes);
  ``step_ratio`` = tokens/s at that batch size ÷ tokens/s of one row (the baseline,
  measured in the same run): the most batching can give while every chat is decoding;
- ``read_tok_s``: reading a prompt (``prefill_chunk`` tokens at a time after ``--width``
  cached ones) — compute-bound, so batching cannot speed it up;
- ``chat_ceiling_ratio``: chats that each read ``--read`` new prompt tokens and then write
  ``--reply`` tokens per turn, ``rows`` of them at once on an otherwise idle model, against
  one alone: ``rows × (read + reply·step₁) / (rows × read + reply·stepₙ)``, with reads
  taking their measured time. No server, HTTP, retrieval or client costs are counted, and
  every row is assumed to decode in full batches, so real serving stays below it.

    python bench/batch_step.py [--width 2000] [--rows 1,4,8] [--read 240] [--reply 64]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROLEPLAY_CACHE", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=2000, help="cached positions per row")
    ap.add_argument("--rows", default="1,4,8", help="batch sizes; the first is the baseline")
    ap.add_argument("--read", type=int, default=240, help="prompt tokens a later turn reads")
    ap.add_argument("--reply", type=int, default=64, help="tokens a turn writes")
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()

    import torch

    from roleplay.backends import SamplingParams, get_backend, kv
    from roleplay.backends.scheduler import Limits, _Sampler, decode_step
    from roleplay.config import Settings

    backend = get_backend(Settings.from_env(home=Path(tempfile.mkdtemp()), backend="transformers"))
    model, config = backend.model, backend.model.config
    sizes = [int(n) for n in args.rows.split(",")]
    chunk = Limits().prefill_chunk
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(100, backend.vocab_size - 100, (1, args.width + args.read), generator=gen)

    with torch.inference_mode():
        row = kv.growing_cache(config, args.width + args.read)
        reads = []
        for start in range(0, args.width + args.read, chunk):
            t = time.perf_counter()
            model(input_ids=ids[:, start:start + chunk], past_key_values=row, use_cache=True, logits_to_keep=1)
            if start >= args.width:  # chunks read after `width` cached positions: a later turn's read
                reads.append((min(chunk, args.width + args.read - start), time.perf_counter() - t))
        read_tok_s = sum(n for n, _ in reads) / sum(s for _, s in reads)

        step_ms: dict[int, float] = {}
        for rows in sizes:
            batch = kv.Batch(config)
            for _ in range(rows):  # the same cached row each time: contents do not change the cost
                batch.add(row, args.width, room=args.steps + 8)
            lens = [args.width] * rows
            samplers = [_Sampler(backend, SamplingParams(max_tokens=args.steps + 8, seed=j)) for j in range(rows)]
            tokens = [[int(ids[0, -1])] for _ in range(rows)]
            times = []
            for step in range(args.steps + 2):
                t = time.perf_counter()
                logits = decode_step(model, batch, lens, [t_[-1] for t_ in tokens], backend.device)
                for j in range(rows):
                    tok, _ = samplers[j].pick(logits[j:j + 1], [], tokens[j])
                    tokens[j].append(tok)
                lens = [n + 1 for n in lens]
                if step >= 2:  # two warm-up steps
                    times.append(time.perf_counter() - t)
            step_ms[rows] = statistics.median(times) * 1000

    base = sizes[0]
    step_ratio = {n: round((n / step_ms[n]) / (base / step_ms[base]), 2) for n in sizes}
    read_s = args.read / read_tok_s

    def turn_seconds(rows: int) -> float:
        return rows * read_s + args.reply * step_ms[rows] / 1000

    ceiling = {n: round((n * args.reply / turn_seconds(n)) / (base * args.reply / turn_seconds(base)), 2)
               for n in sizes}
    print(json.dumps({
        "bench": "batch_step", "width": args.width, "read": args.read, "reply": args.reply,
        "threads": torch.get_num_threads(), "step_ms": {n: round(v, 1) for n, v in step_ms.items()},
        "step_ratio": step_ratio, "read_tok_s": round(read_tok_s, 1),
        "chat_ceiling_ratio": ceiling, "baseline_rows": base,
    }))


if __name__ == "__main__":
    main()
