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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import main  # noqa: E402  (the shared harness lives beside this script)

if __name__ == "__main__":
    sys.exit(main("soak", clients="16", seconds=60.0, description=__doc__.splitlines()[0]))
