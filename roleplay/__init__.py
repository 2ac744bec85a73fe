"""roleplay: a role-play chatbot engine with character cards.

Public API (imported lazily so ``import roleplay`` stays light)::

    from roleplay import Engine, Settings, load_card
"""
from __future__ import annotations

import os as _os

# subtle: OpenMP (torch, llama.cpp, the e5 embedder) spins idle threads for ~300k loops by
# default; on a machine with more busy threads than cores (a server: the model, the
# embedder, Chroma, HTTP workers) every barrier then waits for a descheduled spinner.
# Measured with SmolLM2 on two loaded cores: a 512-token prefill 18 s spinning, 2.2 s
# passive; decoding steps and llama.cpp unchanged (docs/concurrency.md). Read once, when
# the OpenMP library loads, so it is set here before anything imports torch; an explicit
# OMP_WAIT_POLICY from the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
