"""The Memory tab: see, add, edit and forget what a character remembers about a user.

Memories live in the `MemoryStore` (Chroma), keyed by user and character: facts about the
user (shared by every character unless `memory_shared_facts` is off, shown as ``*``) and
this story's events. "Show history" adds the past versions of changed facts, each with
the time it was true and the message it came from. Editing a fact with a slot stores the
new text as a change (the old text goes to the history, as when the user says it in
chat); a free memory is replaced. The table shows escaped text only.
"""
from typing import TYPE_CHECKING, Any

from . import html

import gradio as gr  # this module loads only when the app is built (webui.app.build_app)

if TYPE_CHECKING:
    from roleplay.engine import Engine

COLUMNS = ["id", "memory", "kind", "slot", "valid", "source"]


def rows(memories: list[Any]) -> list[list[str]]:
    """Table rows; a past version's text is marked and its ``valid`` column has an end."""
    return [[m.id, m.text if m.current else f"(past) {m.text}", m.kind, m.slot,
             m.validity(), m.source] for m in memories]


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
        history = gr.Checkbox(value=False, label="Show history", elem_id="memory-history")
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

    def show(user_id: str, char: str | None, past: bool = False):
        if not char:
            return [], "Pick a character."
        try:
            store = get_store(engine.settings)
            uid = user_id.strip() or default_user()
            found = store.history(uid, char) if past else store.list(uid, char)
        except RoleplayError as exc:
            return [], f"⚠ {html.text(exc)}"
        current = sum(m.current for m in found)
        extra = f" ({len(found) - current} past versions)" if past else ""
        return rows(found), f"{current} memories.{extra}"

    def select(data: Any, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        values = data.values.tolist() if hasattr(data, "values") else data
        if row is None or row >= len(values):
            return None, gr.update()
        if str(values[row][1]).startswith("(past) "):
            return None, gr.update()  # past versions are history: forget or edit the current one
        return {"id": values[row][0], "slot": values[row][3], "kind": values[row][2]}, values[row][1]

    def add(user_id: str, char: str | None, new_text: str, past: bool = False):
        if not char or not new_text.strip():
            return gr.update(), "Pick a character and write the memory first."
        try:
            decision = get_store(engine.settings).add(user_id.strip() or default_user(), char,
                                                      new_text.strip(), "webui")
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return show(user_id, char, past)[0], f"{decision.action}."

    def edit(user_id: str, char: str | None, sel: dict | None, new_text: str, past: bool = False):
        if not char or not sel:
            return gr.update(), "Select a memory first."
        uid = user_id.strip() or default_user()
        try:
            store = get_store(engine.settings)
            if not sel.get("slot"):  # a free memory has no history to keep: replace it
                store.forget(sel["id"], user=uid)
            store.add(uid, char, new_text.strip(), "webui edit", slot=sel.get("slot") or None,
                      kind=sel.get("kind") or "fact")
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return show(user_id, char, past)[0], "Edited."

    def forget(user_id: str, char: str | None, sel: dict | None, past: bool = False):
        if not char or not sel:
            return gr.update(), "Select a memory first."
        try:
            ok = get_store(engine.settings).forget(sel["id"], user=user_id.strip() or default_user())
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return show(user_id, char, past)[0], "Forgotten (with its history)." if ok else "It was already gone."

    def clear(user_id: str, char: str | None):
        if not char:
            return gr.update(), "Pick a character."
        try:
            n = get_store(engine.settings).clear(user_id.strip() or default_user(), char)
        except RoleplayError as exc:
            return gr.update(), f"⚠ {html.text(exc)}"
        return [], f"Forgot {n} memories (facts shared with other characters included)."

    show_btn.click(show, [user, character, history], [table, status], api_name="memory_list")
    character.change(show, [user, character, history], [table, status], api_name="memory_character")
    history.change(show, [user, character, history], [table, status], api_name="memory_history")
    table.select(select, [table], [selected, text], api_name="memory_select")
    add_btn.click(add, [user, character, text, history], [table, status], api_name="memory_add")
    edit_btn.click(edit, [user, character, selected, text, history], [table, status], api_name="memory_edit")
    forget_btn.click(forget, [user, character, selected, history], [table, status], api_name="memory_forget")
    clear_btn.click(clear, [user, character], [table, status], api_name="memory_clear")

    def refresh_cards():
        return gr.update(choices=sorted(list_card_paths(engine.settings)))

    return refresh_cards, [character]
