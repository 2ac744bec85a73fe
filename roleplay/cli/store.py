"""CLI commands for this area (see roleplay/cli/__init__.py)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the `roleplay` parser."""
