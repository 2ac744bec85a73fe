"""Soak: 16 concurrent streaming clients against ``roleplay serve`` for 60 s (issue 8).

Same harness as bench/serve.py (a fresh data folder, the default CPU model, warm-up,
a single-client TTFT baseline, isolation checks per reply), with more clients for longer,
and the server process's resident memory read before and after the load. Requests in
flight at the deadline finish, so the run is bounded. Prints ONE JSON line: requests done,
errors (target 0), crossed replies (target 0), p50/p95 TTFT, the ratio to the
single-client baseline, and RSS growth.

    python bench/soak.py [--clients 16] [--seconds 60] [--max-tokens 16]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import run  # noqa: E402  (the shared harness lives beside this script)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--baseline-requests", type=int, default=3)
    a = ap.parse_args()
    result = run("soak", clients=a.clients, seconds=a.seconds, max_tokens=a.max_tokens,
                 baseline_requests=a.baseline_requests)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 and result["crossed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
