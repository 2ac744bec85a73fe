"""``roleplay serve`` (OpenAI-compatible API) and ``roleplay webui`` (Gradio UI).

Both bind to 127.0.0.1 by default. Binding beyond loopback exposes the model and every
card to the network, so it requires credentials: ``serve`` needs ``--api-key`` (or
``ROLEPLAY_API_KEYS``), ``webui`` needs ``--auth user:pass`` or ``--auth-file``; without
them the command refuses to start with one clear error (exit 2).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path

from ..errors import ConfigError

#: Uploads (cards, zips, PNGs) above this are refused by the web UI.
DEFAULT_MAX_FILE_SIZE = "32mb"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``webui`` to the `roleplay` parser."""
    p = sub.add_parser("serve", help="serve the characters through an OpenAI-compatible API",
                       description="OpenAI-compatible API: /v1/models lists characters as "
                                   "roleplay/<id>; /v1/chat/completions chats with them.")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; "
                   "anything beyond loopback requires --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="accepted 'Authorization: Bearer' key (repeatable; also ROLEPLAY_API_KEYS, "
                        "comma-separated); optional on loopback")
    p.add_argument("--max-body", type=int, default=None, metavar="BYTES",
                   help="largest request body (default 4 MiB); larger gets HTTP 413")
    p.set_defaults(func=cmd_serve)

    w = sub.add_parser("webui", help="start the Gradio web UI",
                       description="The web UI: chat, author cards, memories, evaluation.")
    w.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; "
                   "anything beyond loopback requires --auth or --auth-file)")
    w.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    w.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                   help="a login (repeatable)")
    w.add_argument("--auth-file", type=Path, metavar="FILE",
                   help="a file of 'user:pass' lines ('#' comments allowed)")
    w.add_argument("--share", action="store_true", help="also open a public gradio.live link "
                   "(requires --auth or --auth-file)")
    w.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE,
                   help=f"largest upload (default {DEFAULT_MAX_FILE_SIZE})")
    w.add_argument("--api", action="store_true",
                   help="also serve the OpenAI-compatible API at /v1 from this process (one model for both)")
    w.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="with --api: accepted 'Authorization: Bearer' key (as for serve)")
    w.set_defaults(func=cmd_webui)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve beyond loopback


def api_keys_from(args_keys: list[str]) -> list[str]:
    env = [k.strip() for k in os.environ.get("ROLEPLAY_API_KEYS", "").split(",")]
    return [k for k in [*args_keys, *env] if k]


def parse_auth(values: list[str], auth_file: Path | None) -> list[tuple[str, str]]:
    """Logins from ``--auth`` values and an auth file; errors name the bad entry."""
    entries: list[tuple[str, str, str]] = [(v, "--auth", "") for v in values]
    if auth_file is not None:
        try:
            text = auth_file.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"--auth-file {auth_file}: cannot read ({exc.strerror})") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((line, f"--auth-file {auth_file}", f":{n}"))
    logins = []
    for value, where, line in entries:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"{where}{line}: expected 'user:password' (both non-empty)")
        logins.append((user, password))
    return logins


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..engine import Engine
    from ..server.app import DEFAULT_MAX_BODY_BYTES, create_app

    keys = api_keys_from(args.api_key)
    if not is_loopback(args.host) and not keys:
        raise ConfigError(f"--host {args.host} is beyond loopback: pass --api-key KEY (or set "
                          "ROLEPLAY_API_KEYS) so that only clients with the key can chat")
    app = create_app(Engine(args.settings), api_keys=keys, max_body_bytes=args.max_body or DEFAULT_MAX_BODY_BYTES)
    print(f"roleplay API on http://{args.host}:{args.port}/v1 "
          f"({'API key required' if keys else 'no API key'}; backend {args.settings.backend})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_webui(args: argparse.Namespace) -> int:
    from ..engine import Engine

    logins = parse_auth(args.auth, args.auth_file)
    if (args.share or not is_loopback(args.host)) and not logins:
        why = "--share" if args.share else f"--host {args.host} is beyond loopback"
        raise ConfigError(f"{why}: pass --auth user:password or --auth-file FILE so that only "
                          "you can use the UI")
    from webui.app import build_app, launch, serve_with_api

    engine = Engine(args.settings)
    if args.api:
        keys = api_keys_from(args.api_key)
        if args.share:
            raise ConfigError("--share cannot be combined with --api: serve the API on a host you control")
        if not is_loopback(args.host) and not keys:
            raise ConfigError(f"--api with --host {args.host}: pass --api-key KEY (or set ROLEPLAY_API_KEYS)")
        serve_with_api(build_app(engine), engine, host=args.host, port=args.port, auth=logins, api_keys=keys,
                       max_file_size=args.max_file_size)
        return 0
    launch(build_app(engine), host=args.host, port=args.port, auth=logins,
           share=args.share, max_file_size=args.max_file_size)
    return 0
