"""The Gradio web UI: one Blocks app with Chat, Author, Memory and Eval tabs.

`build_app(engine)` assembles the tabs, each built by its own module; `launch` is the one
way to start it (the CLI and the tests both use it) so the upload limit, auth and theme
are applied identically everywhere. The UI holds no engine logic: every event calls the
`roleplay` Python API (Engine, Session, MemoryStore, cards).

Trade-off: gradio 6 takes CSS and theme at ``launch`` rather than in ``Blocks``, so they
live here beside `launch` instead of in each tab.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import html

if TYPE_CHECKING:
    import gradio as gr

    from roleplay.engine import Engine

#: Small touches: red inline field errors, a compact gallery, readable badges.
CSS = """
.field-error textarea, .field-error input { border-color: #d33 !important; }
.error-text { color: #c22; font-weight: 600; }
.why-panel code { white-space: pre-wrap; }
#chat-gallery { min-height: 160px; }
"""


def backend_label(engine: "Engine") -> str:
    """Which backend and model serve replies (from settings: never loads the model)."""
    s = engine.settings
    model = s.model or "SmolLM2-135M-Instruct (default)"
    return f"**Backend:** {html.text(s.backend)} · **Model:** {html.text(model)}"


def build_app(engine: "Engine") -> "gr.Blocks":
    """The whole UI for ``engine``; call `launch` (or ``.launch``) on the result."""
    import gradio as gr

    from . import author_tab, chat_tab, eval_tab, memory_tab

    with gr.Blocks(title="roleplay") as demo:
        gr.Markdown("## roleplay — chat with characters")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as chat:
                chat_refresh, chat_open = chat_tab.build(engine)
            with gr.Tab("Author", id="author"):
                author_tab.build(engine)
            with gr.Tab("Memory", id="memory") as memory:
                memory_refresh = memory_tab.build(engine)
            with gr.Tab("Eval", id="eval"):
                eval_tab.build(engine)
        # Card lists are re-read on page load and when their tab is opened: a card imported
        # or saved in the Author tab appears without restarting the server.
        for tab, (fn, outputs), name in [(chat, chat_refresh, "chat"), (memory, memory_refresh, "memory")]:
            demo.load(fn, None, outputs, api_name=f"{name}_cards_on_load")
            tab.select(fn, None, outputs, api_name=f"{name}_cards_on_open")
        demo.load(*chat_open, api_name="chat_open")  # a fresh page opens ready to chat
    # Files the UI hands out (card exports) are written under the home folder; Gradio only
    # serves folders it is told about, so `launch` allows exactly this one.
    demo.roleplay_file_dirs = [str(engine.settings.home / "exports")]
    return demo


#: Chat events Gradio runs at once. High on purpose: the backend owns concurrency (it
#: batches concurrent replies and queues the rest), so Gradio should not serialise users.
UI_CONCURRENCY = 64


def serve_with_api(demo: "gr.Blocks", engine: "Engine", *, host: str = "127.0.0.1", port: int = 7860,
                   auth: list[tuple[str, str]] | None = None, api_keys: list[str] | None = None,
                   max_file_size: str | int = "32mb") -> None:
    """One process, both faces: the web UI at ``/`` and the OpenAI-compatible API at ``/v1``,
    sharing one engine (one loaded model serves browser and API clients together)."""
    import gradio as gr
    import uvicorn

    from roleplay.server.app import DEFAULT_MAX_BODY_BYTES, create_app

    # Uploads go through the same app, so its body limit must let the UI's largest upload in.
    limit = max(DEFAULT_MAX_BODY_BYTES, _bytes(max_file_size) + 2**20)
    app = create_app(engine, api_keys=api_keys, max_body_bytes=limit)
    demo.queue(default_concurrency_limit=UI_CONCURRENCY)
    app = gr.mount_gradio_app(app, demo, path="", auth=auth or None, max_file_size=max_file_size,
                              allowed_paths=getattr(demo, "roleplay_file_dirs", None), show_error=True,
                              css=CSS, footer_links=["api"])
    print(f"roleplay web UI on http://{host}:{port}/ and API on http://{host}:{port}/v1", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _bytes(size: str | int) -> int:
    """``"32mb"`` → bytes (Gradio's size strings)."""
    if isinstance(size, int):
        return size
    text = size.strip().lower()
    for unit, mult in (("gb", 2**30), ("mb", 2**20), ("kb", 2**10), ("b", 1)):
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * mult)
    return int(text)


def launch(demo: "gr.Blocks", *, host: str = "127.0.0.1", port: int | None = None,
           auth: list[tuple[str, str]] | None = None, share: bool = False,
           max_file_size: str | int = "32mb", prevent_thread_lock: bool = False,
           quiet: bool = False) -> Any:
    """Queue and launch ``demo`` with our CSS, upload limit and optional logins."""
    demo.queue(default_concurrency_limit=UI_CONCURRENCY)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth or None,
                       max_file_size=max_file_size, prevent_thread_lock=prevent_thread_lock,
                       allowed_paths=getattr(demo, "roleplay_file_dirs", None),
                       show_error=True, quiet=quiet, css=CSS, footer_links=["api"])
