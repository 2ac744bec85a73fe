#!/usr/bin/env bash
# GPU check of the generation backends; prints one JSON line (see bench/gpu_check.py).
#   CUDA + vLLM      → the vllm backend, streaming and a batch of 32
#   CUDA, no vLLM    → transformers backend on a random ~1B Llama vs raw generate (batch 1, 32)
#   no CUDA          → a message and {"skipped": ...}, exit 0
# Extra arguments go to the Python script (e.g. --tiny, --tokens 32). Bounded to 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
exec timeout 300 "$PY" bench/gpu_check.py "$@"
