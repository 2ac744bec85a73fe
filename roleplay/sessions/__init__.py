"""Persistent chat sessions: SQLite history, swipes, forks, group chat, exports.

``from roleplay.sessions import Session`` — see `session.Session` and docs/sessions.md.
"""
from __future__ import annotations

from .session import Message, Session, SessionSettings, Swipe

__all__ = ["Message", "Session", "SessionSettings", "Swipe"]
