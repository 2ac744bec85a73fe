"""The ``roleplay`` command. Commands are thin: parse, call the library, print.

Each area registers its commands from its own module (``register(subparsers)``).
Errors: a `RoleplayError` prints one line on stderr and exits 2 (a traceback only with
``--debug``). Commands that take ``--json`` print exactly one JSON document on stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from ..config import Settings
from ..errors import RoleplayError

#: Modules that contribute commands, in help order.
COMMAND_MODULES = ["cards", "store", "generate", "chat", "serve", "evaluate", "author"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="roleplay", description="Role-play chatbot engine with character cards.")
    parser.add_argument("--home", help="data folder (default: $ROLEPLAY_HOME or ~/.roleplay)")
    parser.add_argument("--backend", help="auto | transformers | vllm | openai | llamacpp (default: auto — llama.cpp "
                        "for GGUF on the CPU, vLLM or transformers on CUDA)")
    parser.add_argument("--model", help="model name, folder or GGUF file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--chroma-url", help="Chroma server URL (default: embedded store under the data folder)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    from pathlib import Path

    return Settings.from_env(home=Path(args.home).expanduser() if args.home else None,
                             backend=args.backend, model=args.model, chroma_url=args.chroma_url)


def emit(args: argparse.Namespace, payload: Any, text: str | Callable[[], str] | None = None) -> None:
    """Print ``payload`` as one JSON document with ``--json``, else the human text."""
    if getattr(args, "json", False):
        json.dump(payload, sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        out = text() if callable(text) else text
        if out is None:
            out = json.dumps(payload, ensure_ascii=False, indent=2, default=str)
        print(out)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.settings = settings_from_args(args)
        rc = args.func(args)
        return int(rc or 0)
    except RoleplayError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())
