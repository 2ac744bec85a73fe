"""The Author tab's "Extract from a book" flow: upload, pick a speaker, review, save.

Uploading a book (.txt, .md, .epub, .srt) lists its speakers by line count; picking one
(plus any other names the book uses for them) extracts that character's lines and drafts
a card, shown for review as YAML with the extraction report and sample stories; Save
writes the card folder (``character.yaml`` + ``stories/*.txt``) to the user's cards and
indexes it. All the work is `roleplay.authoring`; this module only lays out and wires.

Trade-off: the extraction between "Extract" and "Save" stays on the server in a small
per-process cache keyed by a token in the page's state (a book's text is megabytes, too
big to round-trip through the browser); the cache keeps the last few drafts only.
"""
from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

from . import html

if TYPE_CHECKING:
    from roleplay.engine import Engine

#: Drafts waiting for Save: token -> (Extraction, Character). Oldest dropped past `KEEP`.
_DRAFTS: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
KEEP = 8
BOOK_TYPES = [".txt", ".md", ".epub", ".srt"]


def speakers_report(path: str) -> tuple[list[str], str]:
    """Speaker names (most lines first) and a one-paragraph summary of the book."""
    from roleplay.authoring import extract

    ex = extract(path)
    names = [n for n, _c in ex.speakers.most_common(60)]
    if not names:
        return [], (f"No speakers found: {ex.quotes} quotes, none attributed. A book needs quoted speech "
                    "with tags (\"…,\" said Holmes / 悟空道：“…”) or script lines (NAME: …).")
    top = ", ".join(f"{html.text(n)} ({c})" for n, c in ex.speakers.most_common(8))
    return names, (f"**{ex.quotes}** quotes in {ex.chapters} chapters ({ex.kind}, {ex.language}); "
                   f"**{ex.attributed}** attributed, {ex.unresolved} unresolved. Speakers: {top}.")


def draft(path: str, *, character: str, aliases: str, progress: bool = False) -> tuple[str, str, str]:
    """Extract and draft; returns ``(token, yaml, review markdown)``.

    With ``progress`` the extraction's tqdm bar runs (Gradio mirrors it in the page)."""
    from roleplay.authoring import draft_card, extract
    from roleplay.cards.yaml_io import dump_card

    names = [a.strip() for a in (aliases or "").split(",") if a.strip()]
    ex = extract(path, character=character, aliases=names, progress=progress)
    card = draft_card(ex)
    token = uuid.uuid4().hex
    _DRAFTS[token] = (ex, card)
    while len(_DRAFTS) > KEEP:
        _DRAFTS.popitem(last=False)
    r = ex.report()
    lines = [f"**{html.text(card.name)}**: {r['character_lines']} lines, mean confidence "
             f"{r['character_confidence']:.2f}, {r['stories']} stories, {len(card.lorebook)} lorebook entries.",
             f"Book: {r['quotes']} quotes, {r['attributed']} attributed, {r['unresolved']} unresolved.",
             f"Rules: {html.text(', '.join(f'{k} {v}' for k, v in r['rules'].items()))}."]
    if ex.forms:
        lines.append(f"Also written as: {html.text(', '.join(ex.forms))}.")
    if ex.stories:
        lines.append("\n**First story**\n\n" + html.code_block(ex.stories[0]))
    if ex.unresolved_samples:
        lines.append("\n**Some unresolved quotes** (not put in anyone's mouth)\n")
        lines += [f"- {html.inline(s, limit=120)}" for s in ex.unresolved_samples[:5]]
    return token, dump_card(card), "\n".join(lines)


def save(engine: "Engine", *, token: str | None, overwrite: bool = False):
    """Write the draft behind ``token``; returns the `ImportResult`."""
    from roleplay.authoring import write_draft
    from roleplay.errors import SessionError

    if not token or token not in _DRAFTS:
        raise SessionError("no draft to save: upload a book, pick a speaker and press Extract first")
    ex, card = _DRAFTS[token]
    result = write_draft(ex, card, out_dir=engine.settings.user_characters, overwrite=overwrite)
    _DRAFTS.pop(token, None)
    return result


def build(engine: "Engine", *, card_dd: Any, choices: Callable[[], list[str]]) -> None:
    """Lay out the flow inside the current Blocks context; ``card_dd`` is refreshed on save."""
    import gradio as gr

    from roleplay.errors import RoleplayError

    book = gr.File(label="A novel, play or script (.txt, .md, .epub, .srt)", file_types=BOOK_TYPES,
                   type="filepath", elem_id="author-book")
    summary = gr.Markdown("", elem_id="author-book-summary")
    speaker = gr.Dropdown(choices=[], value=None, label="Character (detected speakers, most lines first)",
                          allow_custom_value=True, elem_id="author-speaker")
    aliases = gr.Textbox(label="Other names for them (comma-separated)", elem_id="author-aliases")
    extract_btn = gr.Button("Extract", size="sm", elem_id="author-extract-btn")
    review = gr.Markdown("", elem_id="author-draft-review")
    draft_yaml = gr.Code(value="", language="yaml", lines=14, label="Draft card (review before saving)",
                         interactive=False, elem_id="author-draft-yaml")
    replace = gr.Checkbox(value=False, label="Replace a card with the same id", elem_id="author-draft-replace")
    save_btn = gr.Button("Save draft", variant="primary", size="sm", elem_id="author-draft-save")
    status = gr.Markdown("", elem_id="author-draft-status")
    token = gr.State(None)

    def on_upload(path: str | None):
        if not path:
            return gr.update(choices=[], value=None), ""
        try:
            names, text = speakers_report(path)
        except RoleplayError as exc:
            return gr.update(choices=[], value=None), f"<span class='error-text'>⚠ {html.text(exc)}</span>"
        return gr.update(choices=names, value=names[0] if names else None), text

    def on_extract(path: str | None, who: str | None, other: str, progress=gr.Progress(track_tqdm=True)):
        if not path or not who:
            return None, "", "", "Upload a book and pick a character first."
        try:
            tok, text, md = draft(path, character=who, aliases=other, progress=True)
        except RoleplayError as exc:
            return None, "", "", f"<span class='error-text'>⚠ {html.text(exc)}</span>"
        return tok, text, md, "Review the draft, then Save."

    def on_save(tok: str | None, overwrite: bool):
        try:
            result = save(engine, token=tok, overwrite=overwrite)
        except RoleplayError as exc:
            return tok, f"<span class='error-text'>⚠ Not saved: {html.text(exc)}</span>", gr.update()
        note = f"Saved **{html.text(result.card.name)}** to `{html.text(result.path)}`."
        try:
            engine.retriever.index(result.card)
            note += " Indexed its lines; pick it in *Card to edit* to edit it."
        except Exception as exc:  # the card is saved; a failed index is reported, not fatal
            note += f" (Indexing failed: {html.text(exc)}; run `roleplay index {html.text(result.card.id)}`.)"
        return None, note, gr.update(choices=choices())

    book.upload(on_upload, [book], [speaker, summary], api_name="author_book_speakers")
    extract_btn.click(on_extract, [book, speaker, aliases], [token, draft_yaml, review, status],
                      api_name="author_book_extract")
    save_btn.click(on_save, [token, replace], [token, status, card_dd], api_name="author_book_save")
