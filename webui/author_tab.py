"""The Author tab: edit a card as a form and as raw YAML, preview, try, save, import, export.

The raw YAML is the source of truth (it keeps the author's comments and every field);
the form edits the common text fields of it. Leaving a form field merges it into the YAML
(when the result validates), and leaving the YAML editor refreshes the form, so the two
never drift apart. Validation runs the real loader (`parse_yaml` + `character_from_data`)
and shows its `CardError` inline: at the form field it names (the field turns red with
the reason under it) and, with its line number, under the YAML editor.

Saving writes to the user's card folder (``ROLEPLAY_HOME/characters/<id>``), which takes
priority over bundled cards, so editing a bundled character never modifies the repository;
the card's pictures and ``stories/*.txt`` are copied along on the first save
(`roleplay.cards.library.save_to_library`). The write is atomic and is followed by a
re-index of the card's lines.

Layout: `build` lays out the components (`_layout`) and wires them (`_wire`) to the
module-level event handlers below, which take the engine and the event's values, so each
one can be read (and called) alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import gradio as gr  # this module loads only when the app is built (webui.app.build_app)

from . import cards_view, html
from roleplay.cards.library import attach, list_card_paths, save_to_library
from roleplay.engine import Turn
from roleplay.errors import CardError, RoleplayError

if TYPE_CHECKING:
    from roleplay.cards import Character
    from roleplay.engine import Engine

#: Form fields, in display order: (field, label, lines).
FORM_FIELDS: list[tuple[str, str, int]] = [
    ("id", "Id (folder name: a-z, 0-9, _ and -)", 1),
    ("name", "Name", 1),
    ("language", "Language (en, zh, …)", 1),
    ("user_name", "Default user name ({{user}})", 1),
    ("nickname", "Nickname", 1),
    ("tags", "Tags (comma-separated)", 1),
    ("persona", "Persona", 6),
    ("scenario", "Scenario", 3),
    ("greetings", "Greetings (separate several with a line holding only ---)", 4),
    ("system_prompt", "System prompt (extra instructions)", 2),
    ("creator_notes", "Creator notes", 2),
]
FIELD_NAMES = [f for f, _, _ in FORM_FIELDS]
GREETING_SEPARATOR = "\n---\n"
EXPORT_FORMATS = ["V2 PNG", "V3 PNG", "V2 JSON", "V3 JSON"]
EDITOR_FILE = "character.yaml"

NEW_CARD_YAML = """\
id: new-character
name: New Character
language: en
user_name: User
persona: |
  Describe who {{char}} is and how they speak.
greetings:
  - (looks up) Oh, hello there.
emotions:
  happy: ["(smiles)"]
stories: []
"""


def form_values(data: Any) -> list[str]:
    """Form field values from card data (missing fields are blank)."""
    data = data if isinstance(data, dict) else {}
    out = []
    for field in FIELD_NAMES:
        value = data.get(field, "")
        if field == "tags" and isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif field == "greetings" and isinstance(value, list):
            value = GREETING_SEPARATOR.join(str(v).strip("\n") for v in value)
        out.append("" if value is None else str(value) if not isinstance(value, (list, dict)) else str(value))
    return out


def _form_to_data(field: str, value: str) -> Any:
    if field == "tags":
        return [t.strip() for t in value.split(",") if t.strip()]
    if field == "greetings":
        return [g.strip("\n") for g in ("\n" + value + "\n").split(GREETING_SEPARATOR) if g.strip()]
    return value


def draft(yaml_text: str, values: list[str] | None) -> tuple[Any, "Character"]:
    """Validate the editor's YAML with the form's values merged in.

    Returns ``(round-trip data, card)``; raises `CardError` (with field and line).
    Form fields left blank that the YAML does not have are not added.
    """
    from roleplay.cards.yaml_io import character_from_data, parse_yaml

    data = parse_yaml(yaml_text or "", file=EDITOR_FILE)
    if values is not None and isinstance(data, dict):
        for field, value in zip(FIELD_NAMES, values):
            value = value or ""
            new = _form_to_data(field, value)
            if field not in data and not new:
                continue
            data[field] = new
    card = character_from_data(data, file=EDITOR_FILE, raw=data)
    return data, card


def preview_markdown(prompt: Any) -> str:
    """The composed prompt: token counts per part, retrieved lines, lore, then the messages."""
    parts = getattr(prompt, "parts", {}) or {}
    lines = ["| part | tokens |", "|---|---:|"]
    lines += [f"| {html.inline(k)} | {int(v)} |" for k, v in parts.items()]
    lines.append(f"| **total** | **{sum(int(v) for v in parts.values())}** |")
    stories = getattr(prompt, "stories", []) or []
    lines.append("\n**Retrieved lines**" if stories else "\n**Retrieved lines:** none")
    lines += [f"- `{html.inline(s.id, limit=40)}` score {s.score:.2f}: {html.inline(s.text, limit=300)}"
              for s in stories]
    lore = getattr(prompt, "lore", []) or []
    if lore:
        lines.append("\n**Lorebook entries**")
        lines += [f"- {html.inline(h.name or '#' + str(h.index))}: {html.inline(h.content, limit=200)}" for h in lore]
    note = getattr(prompt, "note", None)
    if note is not None:
        lines.append(f"\n**Stage note:** {html.text(getattr(note, 'note', ''))} "
                     f"({html.text(getattr(note, 'intent', ''))} → {html.text(getattr(note, 'emotion', ''))})")
    lines.append("\n**Messages sent to the model**")
    for m in getattr(prompt, "messages", []) or []:
        lines.append(f"\n_{html.text(m.get('role'))}_\n\n{html.code_block(m.get('content'))}")
    prefill = getattr(prompt, "prefill", "")
    if prefill:
        lines.append(f"\n_prefill_\n\n{html.code_block(prefill)}")
    return "\n".join(lines)


# -- event handlers ----------------------------------------------------------------------

def card_choices(engine: "Engine") -> list[str]:
    return sorted(list_card_paths(engine.settings))


def field_updates(err: CardError | None) -> list:
    """Inline errors: the form field named by ``err`` turns red with the reason."""
    base = err.field.replace("[", ".").split(".")[0] if err is not None and err.field else None
    return [gr.update(info=f"⚠ {err.reason}", elem_classes=["field-error"]) if name == base
            else gr.update(info="", elem_classes=[]) for name, _label, _lines in FORM_FIELDS]


def yaml_error_md(err: CardError | None) -> str:
    if err is None:
        return ""
    where = (f"line {err.line}: " if err.line else "") + (f"{err.field}: " if err.field else "")
    return f"<span class='error-text'>⚠ {html.text(where + err.reason)}</span>"


def load(engine: "Engine", card_id: str | None) -> list:
    """Open a card in the editor: form values, YAML, source path, error, status, avatar."""
    from roleplay.cards import find_card, load_card
    from roleplay.cards.yaml_io import parse_yaml, read_text

    if not card_id:
        return [gr.update()] * (len(FORM_FIELDS) + 5)
    try:
        path = find_card(card_id, engine.settings)
        text = read_text(path)
        values = form_values(parse_yaml(text, file=str(path)))
        try:
            img = cards_view.avatar(load_card(path))
        except CardError:
            img = None
        return [*values, text, str(path), "", f"Loaded `{html.text(path)}`.", img]
    except CardError as exc:
        return [*([gr.update()] * len(FORM_FIELDS)), gr.update(), None, yaml_error_md(exc),
                "Could not load the card.", None]


def new_card() -> list:
    from roleplay.cards.yaml_io import parse_yaml

    return [*form_values(parse_yaml(NEW_CARD_YAML, file=EDITOR_FILE)), NEW_CARD_YAML, None, "",
            "A new card: edit it, then Save.", None]


#: Where the status text sits in `load`'s outputs.
STATUS_AT = len(FORM_FIELDS) + 3


def sync_from_form(yaml_text: str, *values: str) -> list:
    """Leaving a form field (or Validate): validate, then merge into the YAML (comments kept)."""
    from roleplay.cards.yaml_io import dump_card

    try:
        _data, card = draft(yaml_text, list(values))
    except CardError as exc:
        return [*field_updates(exc), gr.update(), yaml_error_md(exc), "Fix the highlighted field."]
    return [*field_updates(None), dump_card(card, previous_text=yaml_text), "", "Valid."]


def sync_from_yaml(yaml_text: str) -> list:
    """Leaving the YAML editor: validate and refresh the form."""
    from roleplay.cards.yaml_io import parse_yaml

    try:
        data = parse_yaml(yaml_text or "", file=EDITOR_FILE)
    except CardError as exc:
        return [*([gr.update()] * len(FORM_FIELDS)), yaml_error_md(exc), "The YAML does not parse."]
    values = form_values(data)
    try:
        draft(yaml_text, None)
    except CardError as exc:
        return [*(gr.update(value=v, **u) for v, u in zip(values, _plain_updates(field_updates(exc)))),
                yaml_error_md(exc), "Fix the error shown."]
    return [*(gr.update(value=v, info="", elem_classes=[]) for v in values), "", "Valid."]


def save(engine: "Engine", yaml_text: str, source: str | None, *values: str) -> list:
    """Save to the user's card folder, then re-index the card's lines."""
    from roleplay.cards.yaml_io import dump_card

    try:
        _data, card = draft(yaml_text, list(values))
        text = dump_card(card, previous_text=yaml_text)
        saved = save_to_library(draft(text, None)[1], engine.settings, text=text, source=source)
    except CardError as exc:
        return [*field_updates(exc), gr.update(), gr.update(), yaml_error_md(exc),
                "<span class='error-text'>Not saved: fix the highlighted error.</span>", gr.update()]
    note = f"Saved to `{html.text(saved.path)}`."
    try:
        engine.retriever.index(saved)
        note += " Re-indexed its lines."
    except Exception as exc:  # the card is saved; a failed index is reported, not fatal
        note += f" (Re-index failed: {html.text(exc)}; run `roleplay index {html.text(saved.id)}`.)"
    return [*field_updates(None), text, str(saved.path), "", note,
            gr.update(choices=card_choices(engine), value=saved.id)]


def preview(engine: "Engine", yaml_text: str, source: str | None, message: str, *values: str) -> str:
    try:
        card = attach(draft(yaml_text, list(values))[1], source)
        prompt = engine.prepare(Turn(card, [], message or "Hello!", user_name=card.user_name))
    except RoleplayError as exc:
        return yaml_error_md(exc) if isinstance(exc, CardError) else f"⚠ {html.text(exc)}"
    return preview_markdown(prompt)


def _shown(history: list) -> list[dict]:
    return [{"role": h["role"], "content": html.text(h["content"])} for h in history]


def side_send(engine: "Engine", yaml_text: str, source: str | None, history: list, text: str,
              *values: str) -> Iterator:
    """The "Try it" side chat with the unsaved draft (nothing is stored)."""
    from roleplay.backends.base import SamplingParams

    text = (text or "").strip()
    shown = _shown(history)
    if not text:
        yield shown, history, ""
        return
    try:
        card = attach(draft(yaml_text, list(values))[1], source)
    except CardError as exc:
        yield shown + [{"role": "assistant", "content": yaml_error_md(exc)}], history, text
        return
    shown = shown + [{"role": "user", "content": html.text(text)}]
    so_far, reply = "", None
    try:
        for item in engine.stream(Turn(card, history, text, user_name=card.user_name),
                                  SamplingParams(max_tokens=96)):
            if isinstance(item, str):
                so_far += item
                yield shown + [{"role": "assistant", "content": html.text(so_far)}], history, ""
            else:
                reply = item
    except RoleplayError as exc:
        yield shown + [{"role": "assistant", "content": f"⚠ {html.text(exc)}"}], history, ""
        return
    final = reply.text if reply is not None else so_far
    new_hist = history + [{"role": "user", "name": card.user_name, "content": text},
                          {"role": "assistant", "name": card.name, "content": final}]
    yield _shown(new_hist), new_hist, ""


def import_upload(engine: "Engine", path: str | None) -> list:
    """Import, then open the imported card in the editor (as picking it would)."""
    unchanged = [gr.update()] * (len(FORM_FIELDS) + 5)
    if not path:
        unchanged[STATUS_AT] = "Choose a file to import."
        return [gr.update(), *unchanged]
    try:
        from roleplay.cards.importer import import_card

        card = import_card(Path(path), out_dir=engine.settings.user_characters).card
    except RoleplayError as exc:
        unchanged[STATUS_AT] = f"<span class='error-text'>⚠ Import failed: {html.text(exc)}</span>"
        return [gr.update(), *unchanged]
    loaded = load(engine, card.id)
    loaded[STATUS_AT] = f"Imported **{html.text(card.name)}** as `{html.text(card.id)}`."
    return [gr.update(choices=card_choices(engine), value=card.id), *loaded]


def export(engine: "Engine", yaml_text: str, source: str | None, fmt: str, *values: str) -> tuple:
    try:
        from roleplay.cards.exporter import export_card

        card = attach(draft(yaml_text, list(values))[1], source)
        version, kind = fmt.lower().split()
        out = engine.settings.home / "exports" / f"{card.id}.{version}.{kind}"
        path = export_card(card, fmt=f"{version}-{kind}", out=out)
    except RoleplayError as exc:
        return None, f"<span class='error-text'>⚠ Export failed: {html.text(exc)}</span>"
    return str(path), f"Exported to `{html.text(path)}`."


# -- the tab -----------------------------------------------------------------------------

@dataclass
class AuthorUI:
    """The Author tab's components that events read or write."""

    card_dd: Any
    new_btn: Any
    src: Any
    fields: list
    yaml_code: Any
    yaml_error: Any
    validate_btn: Any
    save_btn: Any
    status: Any
    avatar_img: Any
    test_msg: Any
    preview_btn: Any
    preview_md: Any
    side_chat: Any
    side_hist: Any
    side_msg: Any
    upload: Any
    export_fmt: Any
    export_btn: Any
    export_file: Any


def build(engine: "Engine") -> None:
    """Lay out the Author tab inside the current Blocks context and wire its events."""
    _wire(engine, _layout(engine))


def _layout(engine: "Engine") -> AuthorUI:
    with gr.Row():
        card_dd = gr.Dropdown(choices=card_choices(engine), value=None, label="Card to edit", scale=3,
                              elem_id="author-card")
        new_btn = gr.Button("New card", size="sm", scale=1)
    src = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Tabs():
                with gr.Tab("Form", id="author-form"):
                    fields = [gr.Textbox(label=label, lines=lines, max_lines=max(lines, 20),
                                         elem_id=f"author-{name}") for name, label, lines in FORM_FIELDS]
                with gr.Tab("YAML", id="author-yaml-tab"):
                    yaml_code = gr.Code(value="", language="yaml", lines=24, label="character.yaml",
                                        elem_id="author-yaml")
            yaml_error = gr.Markdown("", elem_id="author-yaml-error")
            with gr.Row():
                validate_btn = gr.Button("Validate", size="sm", elem_id="author-validate")
                save_btn = gr.Button("Save", variant="primary", size="sm", elem_id="author-save")
            status = gr.Markdown("", elem_id="author-status")
        with gr.Column(scale=2):
            avatar_img = gr.Image(value=None, type="pil", label="Avatar", height=220, interactive=False)
            with gr.Accordion("Prompt preview", open=True):
                test_msg = gr.Textbox(label="Test message", value="Hello! Who are you?", elem_id="author-test")
                preview_btn = gr.Button("Preview prompt", size="sm", elem_id="author-preview")
                preview_md = gr.Markdown("", elem_id="author-preview-out")
            with gr.Accordion("Try it", open=False):
                side_chat = gr.Chatbot(value=[], height=260, label="Side chat (unsaved card)",
                                       feedback_options=None, elem_id="author-chat")
                side_hist = gr.State([])
                side_msg = gr.Textbox(placeholder="Message the draft card…", show_label=False,
                                      elem_id="author-chat-input")
            with gr.Accordion("Import / export", open=False):
                upload = gr.File(label="Import a ChatHaruhi zip, a V1/V2/V3 JSON or PNG card, or a YAML card",
                                 file_types=[".zip", ".json", ".png", ".yaml", ".yml"], type="filepath",
                                 elem_id="author-upload")
                export_fmt = gr.Dropdown(choices=EXPORT_FORMATS, value="V2 PNG", label="Export as",
                                         elem_id="author-export-format")
                export_btn = gr.Button("Export", size="sm", elem_id="author-export")
                export_file = gr.File(label="Exported card", interactive=False, elem_id="author-export-file")
            with gr.Accordion("Extract from a book", open=False, elem_id="author-extract"):
                from . import author_extract

                author_extract.build(engine, card_dd=card_dd, choices=partial(card_choices, engine))
    return AuthorUI(card_dd, new_btn, src, fields, yaml_code, yaml_error, validate_btn, save_btn, status,
                    avatar_img, test_msg, preview_btn, preview_md, side_chat, side_hist, side_msg, upload,
                    export_fmt, export_btn, export_file)


def _wire(engine: "Engine", ui: AuthorUI) -> None:
    fields = ui.fields
    load_outputs = [*fields, ui.yaml_code, ui.src, ui.yaml_error, ui.status, ui.avatar_img]
    form_sync_outputs = [*fields, ui.yaml_code, ui.yaml_error, ui.status]
    ui.card_dd.input(partial(load, engine), [ui.card_dd], load_outputs, api_name="author_load")
    ui.new_btn.click(new_card, None, load_outputs, api_name="author_new")
    for (name, _label, _lines), box in zip(FORM_FIELDS, fields):
        box.blur(sync_from_form, [ui.yaml_code, *fields], form_sync_outputs, api_name=f"author_form_{name}",
                 api_visibility="undocumented")
    ui.yaml_code.blur(sync_from_yaml, [ui.yaml_code], [*fields, ui.yaml_error, ui.status],
                      api_name="author_yaml_sync")
    ui.validate_btn.click(sync_from_form, [ui.yaml_code, *fields], form_sync_outputs, api_name="author_validate")
    ui.save_btn.click(partial(save, engine), [ui.yaml_code, ui.src, *fields],
                      [*fields, ui.yaml_code, ui.src, ui.yaml_error, ui.status, ui.card_dd], api_name="author_save")
    ui.preview_btn.click(partial(preview, engine), [ui.yaml_code, ui.src, ui.test_msg, *fields], [ui.preview_md],
                         api_name="author_preview")
    ui.side_msg.submit(partial(side_send, engine), [ui.yaml_code, ui.src, ui.side_hist, ui.side_msg, *fields],
                       [ui.side_chat, ui.side_hist, ui.side_msg], api_name="author_try")
    ui.upload.upload(partial(import_upload, engine), [ui.upload], [ui.card_dd, *load_outputs],
                     api_name="author_import")
    ui.export_btn.click(partial(export, engine), [ui.yaml_code, ui.src, ui.export_fmt, *fields],
                        [ui.export_file, ui.status], api_name="author_export")


def _plain_updates(updates: list) -> list[dict]:
    """gr.update(...) results as dicts without their ``__type__`` key, to merge with a value."""
    return [{k: v for k, v in u.items() if k != "__type__"} for u in updates]
