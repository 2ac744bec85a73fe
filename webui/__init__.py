"""The Gradio web UI (``roleplay webui``): `build_app(engine)` and `launch`.

Imports nothing heavy at package import; Gradio loads when the app is built.
"""
from __future__ import annotations

__all__ = ["build_app", "launch"]


def __getattr__(name: str):
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
