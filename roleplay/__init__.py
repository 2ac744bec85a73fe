"""roleplay: a role-play chatbot engine with character cards.

Public API (imported lazily so ``import roleplay`` stays light)::

    from roleplay import Engine, Settings, load_card
"""
from __future__ import annotations

from .cards import Character, get_card, load_card, save_card
from .config import Settings
from .errors import RoleplayError

__version__ = "0.1.0"

__all__ = ["Character", "Engine", "RoleplayError", "Session", "Settings", "get_card",
           "load_card", "save_card", "__version__"]


def __getattr__(name: str):
    if name == "Engine":
        from .engine import Engine
        return Engine
    if name == "Session":
        from .sessions import Session
        return Session
    raise AttributeError(name)
