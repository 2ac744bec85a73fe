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
                chat_refresh = chat_tab.build(engine)
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
    # Files the UI hands out (card exports) are written under the home folder; Gradio only
    # serves folders it is told about, so `launch` allows exactly this one.
    demo.roleplay_file_dirs = [str(engine.settings.home / "exports")]
    return demo


def launch(demo: "gr.Blocks", *, host: str = "127.0.0.1", port: int | None = None,
           auth: list[tuple[str, str]] | None = None, share: bool = False,
           max_file_size: str | int = "32mb", prevent_thread_lock: bool = False,
           quiet: bool = False) -> Any:
    """Queue and launch ``demo`` with our CSS, upload limit and optional logins."""
    demo.queue(default_concurrency_limit=4)
    return demo.launch(server_name=host, server_port=port, share=share, auth=auth or None,
                       max_file_size=max_file_size, prevent_thread_lock=prevent_thread_lock,
                       allowed_paths=getattr(demo, "roleplay_file_dirs", None),
                       show_error=True, quiet=quiet, css=CSS, footer_links=["api"])
