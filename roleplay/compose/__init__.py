"""Prompt composition: Jinja2 templates, stage directions, reply post-processing.

``Composer`` builds chat messages, ``StageDirector`` picks the turn's emotion and action
note, ``postprocess``/``StreamCleaner`` clean replies. Imports here are light (numpy and
the embedder load only when a director classifies).
"""
from .composer import ComposedPrompt, Composer
from .postprocess import StreamCleaner, format_note, postprocess
from .stage import StageDirector, StageNote

__all__ = ["ComposedPrompt", "Composer", "StageDirector", "StageNote", "StreamCleaner",
           "format_note", "postprocess"]
