"""The Eval tab (placeholder until `roleplay.evaluation` exposes its runner API).

Evaluation is being built in `roleplay/evaluation`; until its public entry point lands,
this tab says so and points at the CLI instead of duplicating any evaluation logic here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roleplay.engine import Engine


def build(engine: "Engine") -> None:
    """Lay out the Eval tab inside the current Blocks context."""
    import gradio as gr

    gr.Markdown("### Evaluation is coming\nRPBench-style evaluation will run from here: pick a suite, "
                "a candidate, a baseline and a judge, then read the report. Until then use "
                "`roleplay eval --help` on the command line.", elem_id="eval-placeholder")
