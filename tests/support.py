"""Helpers shared by several test files (imported as ``support``; tests/ is on sys.path)."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_webui(home: Path, backend) -> Iterator[tuple[str, object]]:
    """The real Gradio app on a free loopback port, with small prompt budgets (fast replies).

    Yields ``(url, settings)``; the app is closed afterwards.
    """
    from roleplay.config import Budgets, Settings
    from roleplay.engine import Engine
    from webui.app import build_app, launch

    settings = Settings.from_env(home=home, budgets=Budgets(stories=120, lorebook=60, memories=40,
                                                             history=120, summary=40))
    demo = build_app(Engine(settings, backend=backend))
    port = free_port()
    launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", settings
    finally:
        demo.close()


#: Debian's chromium, driven by Playwright in the browser tests.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def wait_for(page, predicate, *, timeout_ms: int, what: str):
    """Poll ``predicate()`` until truthy; returns its value (fails naming ``what``)."""
    deadline = time.time() + timeout_ms / 1000
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(150)
    raise AssertionError(f"timed out waiting for {what}")
