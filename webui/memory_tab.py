"""The Memory tab: see, add, edit and forget what a character remembers about a user.

Memories live in the `MemoryStore` (Chroma), keyed by user and character. Editing a
memory replaces it: the old one is forgotten and the new text added with the same slot,
so the store's duplicate/contradiction rules apply to edits exactly as to chat facts.
The table shows escaped text only.
"""
from typing import TYPE_CHECKING, Any

from . import html

import gradio as gr  # this module loads only when the app is built (webui.app.build_app)

if TYPE_CHECKING:
    from roleplay.engine import Engine

COLUMNS = ["id", "memory", "slot", "source"]


def rows(memories: list[Any]) -> list[list[str]]:
    return [[m.id, m.text, m.slot, m.source] for m in memories]


def build(engine: "Engine") -> tuple:
    """Lay out the Memory tab inside the current Blocks context and wire its events.

    Returns ``(refresh, outputs)`` for the card list, like the Chat tab.
    """
    from roleplay.cards.library import list_card_paths
    from roleplay.errors import RoleplayError
    from roleplay.memory import default_user, get_store

    with gr.Row():
        user = gr.Textbox(value=default_user(), label="User id", elem_id="memory-user")
        character = gr.Dropdown(choices=sorted(list_card_paths(engine.settings)), value=None,
                                label="Character", elem_id="memory-character")
        show_btn = gr.Button("Show", size="sm", elem_id="memory-show")
    table = gr.Dataframe(headers=COLUMNS, value=[], interactive=False, wrap=True, elem_id="memory-table",
                         label="Memories (click a row to select it)")
    selected = gr.State(None)
    text = gr.Textbox(label="Memory text (edit the selected one, or write a new one)", lines=2,
                      elem_id="memory-text")
    with gr.Row():
        add_btn = gr.Button("Add as new", size="sm", elem_id="memory-add")
        edit_btn = gr.Button("Save edit", size="sm", elem_id="memory-save-edit")
        forget_btn = gr.Button("Forget selected", size="sm", variant="stop")
        clear_btn = gr.Button("Forget all for this user and character", size="sm", variant="stop")
    status = gr.Markdown("", elem_id="memory-status")

    def show(user_id: str, char: str | None):
        if not char:
            return [], "Pick a character."
        try:
            found = get_store(engine.settings).list(user_id.strip() or default_user(), char)
        except RoleplayError as exc:
            return [], f"⚠ {html.text(exc)}"
        return rows(found), f"{len(found)} memories."

    def select(data: Any, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        if row is None or row >= len(values):
            return None, gr.update()
        return {"id": values[row][0], "slot": values[row][2]}, values[row][1]

    def add(user_id: str, char: str | None, new_text: str):
        if not char or not new_text.strip():
            return gr.update(), "Pick a character and write the memory first."
        try:
            decision = get_store(engine.settings).add(user_id.strip() or default_user(), char,
                                                      new_text.strip(), "webui")
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return show(user_id, char)[0], f"{decision.action}."

    def edit(user_id: str, char: str | None, sel: dict | None, new_text: str):
        if not char or not sel:
            return gr.update(), "Select a memory first."
        uid = user_id.strip() or default_user()
        try:
            store = get_store(engine.settings)
            store.forget(sel["id"], user=uid)
            store.add(uid, char, new_text.strip(), "webui edit", slot=sel.get("slot") or None)
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return show(user_id, char)[0], "Edited."

    def forget(user_id: str, char: str | None, sel: dict | None):
        if not char or not sel:
            return gr.update(), "Select a memory first."
        try:
            ok = get_store(engine.settings).forget(sel["id"], user=user_id.strip() or default_user())
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return show(user_id, char)[0], "Forgotten." if ok else "It was already gone."

    def clear(user_id: str, char: str | None):
        if not char:
            return gr.update(), "Pick a character."
        try:
            n = get_store(engine.settings).clear(user_id.strip() or default_user(), char)
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return [], f"Forgot {n} memories."

    show_btn.click(show, [user, character], [table, status], api_name="memory_list")
    character.change(show, [user, character], [table, status], api_name="memory_character")
    table.select(select, [table], [selected, text], api_name="memory_select")
    add_btn.click(add, [user, character, text], [table, status], api_name="memory_add")
    edit_btn.click(edit, [user, character, selected, text], [table, status], api_name="memory_edit")
    forget_btn.click(forget, [user, character, selected], [table, status], api_name="memory_forget")
    clear_btn.click(clear, [user, character], [table, status], api_name="memory_clear")

    def refresh_cards():
        return gr.update(choices=sorted(list_card_paths(engine.settings)))

    return refresh_cards, [character]
