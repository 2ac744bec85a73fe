"""The Chat tab: pick a character, chat with streaming replies, swipes, edits and sessions.

Every event reloads the chat from the sessions database (`Session.load`) and acts on it
through the `Session` API, so the page holds only the session id: a browser refresh, a
second tab or a server restart loses nothing that was completed. The chat view is rebuilt
from `Session.messages` after each action (one message per row, in order), which is why a
clicked row index maps straight onto a message id.

A fresh page opens ready to chat (`open_page`): the last used character (the most
recently updated session's first one), else the first bundled card, its greeting shown.
Trade-off: that chat is saved only when the first message is sent (`send` starts the
session then), so merely opening the page never leaves empty sessions behind.

Untrusted text (card fields, replies, the user's own messages) is escaped with
`webui.html` before it is shown. `build` lays out the components (`_layout`) and wires
them (`_wire`) to the module-level event handlers, which take the engine first.
"""
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Iterator

from . import cards_view, html
from roleplay.errors import RoleplayError, SessionError

import gradio as gr  # this module loads only when the app is built (webui.app.build_app)

if TYPE_CHECKING:
    from roleplay.engine import Engine


# -- views of the Session API ------------------------------------------------------------

def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key ``name`` of a message/reply object."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _swipe_info(m: Any) -> tuple[int, int]:
    """``(active swipe index, number of swipes)`` of an assistant message."""
    return int(_get(m, "swipe_id", 0) or 0), max(int(_get(m, "swipe_count", 0) or 0), 1)


def render_message(m: Any) -> dict:
    """One Session message as a Chatbot row (escaped text, emotion badge, swipe counter)."""
    role = _get(m, "role")
    content = html.text(_get(m, "text", _get(m, "content", "")))
    if role == "assistant":
        extras = []
        emotion = _get(m, "emotion") or ""
        if emotion:
            extras.append(html.badge(emotion))
        idx, count = _swipe_info(m)
        if count > 1:
            extras.append(html.badge(f"swipe {idx + 1}/{count}"))
        status = _get(m, "status", "complete")
        if status and status != "complete":
            extras.append(html.badge(status))
        if extras:
            content += "\n\n" + " ".join(extras)
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": content}


def render_history(session: Any) -> list[dict]:
    return [render_message(m) for m in session.messages]


def why_panel(reply: Any) -> str:
    """Markdown for the "Why this reply" panel: stage note, retrieved lines, lore, memories."""
    if reply is None:
        return "_No reply yet._"
    parts = []
    note = _get(reply, "note") or ""
    emotion, intent = html.text(_get(reply, "emotion")) or "—", html.text(_get(reply, "intent")) or "—"
    parts.append(f"**Stage note:** {html.text(note) or '—'} · **emotion:** {emotion} · **user intent:** {intent}")
    prompt = _get(reply, "prompt")
    stories = list(_get(prompt, "stories", []) or []) if prompt is not None else []
    if stories:
        parts.append("**Retrieved lines**")
        parts.extend(f"- `{html.inline(_get(s, 'id'), limit=40)}` ({_get(s, 'score', 0):.2f}) "
                     f"{html.inline(_get(s, 'text'), limit=300)}" for s in stories)
    elif _get(reply, "story_ids"):
        parts.append("**Retrieved lines:** " + ", ".join(html.inline(s, limit=40) for s in _get(reply, "story_ids")))
    else:
        parts.append("**Retrieved lines:** none")
    lore = list(_get(prompt, "lore", []) or []) if prompt is not None else []
    if lore:
        parts.append("**Lorebook entries**")
        parts.extend(f"- **{html.inline(_get(h, 'name') or '#' + str(_get(h, 'index')))}** "
                     f"({html.inline(', '.join(_get(h, 'why', []) or []), limit=80)}): "
                     f"{html.inline(_get(h, 'content'), limit=300)}" for h in lore)
    else:
        names = _get(reply, "lore_names") or []
        parts.append("**Lorebook entries:** " + (", ".join(html.inline(n) for n in names) or "none"))
    memories = _get(reply, "memories") or []
    parts.append("**Memories:** " + ("" if memories else "none"))
    parts.extend(f"- {html.inline(m, limit=300)}" for m in memories)
    return "\n\n".join(parts)  # blank lines: each part its own paragraph or list item


def sampling(temperature: float, top_p: float, max_tokens: float, seed: float | None):
    from roleplay.backends.base import SamplingParams

    seed_val = int(seed) if seed not in (None, "") and int(seed) >= 0 else None
    return SamplingParams(temperature=float(temperature), top_p=float(top_p),
                          max_tokens=int(max_tokens), seed=seed_val)


def _load(engine: "Engine", sid: str | None):
    from roleplay.sessions import Session

    if not sid:
        raise SessionError("pick a character first (click a portrait in the gallery)")
    return Session.load(engine, sid)


def _message_id(session: Any, index: int | None, *, role: str | None = None) -> Any:
    """The id of the message at chat row ``index`` (default: the last one, of ``role``)."""
    msgs = list(session.messages)
    if index is None or index < 0 or index >= len(msgs):
        cands = [m for m in msgs if role is None or _get(m, "role") == role]
        if not cands:
            raise SessionError("there is no such message yet")
        return _get(cands[-1], "id")
    return _get(msgs[index], "id")


def _last_assistant(session: Any) -> Any:
    for m in reversed(list(session.messages)):
        if _get(m, "role") == "assistant":
            return m
    return None


# -- event handlers ----------------------------------------------------------------------
NO_REPLY = "_No reply yet._"


def error_md(exc: Exception) -> str:
    return f"<span class='error-text'>⚠ {html.text(exc)}</span>"


def card_info(card: Any) -> str:
    # tags go in code spans (html.badge), which Markdown always shows literally
    return f"### {html.text(card.name)}\n" + " ".join(html.badge(t) for t in card.tags)


def view(session: Any, *, note: str = "") -> tuple:
    """Outputs shared by most events: chat, emotion picture/badge, status."""
    card = session.card()
    last = _last_assistant(session)
    emotion = _get(last, "emotion") if last is not None else None
    badge = f"**{html.text(card.name)}** feels {html.badge(emotion)}" if emotion else ""
    return render_history(session), cards_view.emotion_image(card, emotion), badge, note


def session_choices(engine: "Engine", card_id: str | None) -> list[tuple[str, str]]:
    from roleplay.sessions import Session

    if not card_id:
        return []
    return [(f"{s['title'] or s['id']} · {s['messages']} message{'' if s['messages'] == 1 else 's'} ({s['id']})",
             s["id"])
            for s in Session.list(engine, character=card_id, limit=50)]


def pick(shown: list[tuple[str, str]], evt: gr.SelectData) -> str | None:
    """The card id of the clicked portrait. ``shown`` is ``(id, caption)`` in gallery order.

    subtle: the page's gallery and this State can disagree for a moment: a page opens with
    the gallery as built at start-up and its load event then refreshes both; while that
    refresh is in flight the State may already be new and the page's list still old. The
    click carries the page's index and caption, so the caption says which card the user
    saw and decides; the index only breaks ties between equal captions.
    """
    index = evt.index if isinstance(evt.index, int) else None
    value = evt.value if isinstance(evt.value, dict) else {}
    caption = value.get("caption")
    if index is not None and 0 <= index < len(shown) and (caption is None or shown[index][1] == caption):
        return shown[index][0]
    return next((card_id for card_id, text in shown if text == caption), None)


def shown_cards(items: list[tuple[Any, str]], ids: list[str]) -> list[tuple[str, str]]:
    """The ``(id, caption)`` pairs `pick` maps a gallery click with."""
    return list(zip(ids, (caption for _img, caption in items)))


def refresh_cards(engine: "Engine"):
    new_items, new_ids, _errors = cards_view.gallery_items(engine.settings)
    return new_items, gr.update(choices=new_ids), shown_cards(new_items, new_ids)


def opening_character(engine: "Engine", ids: list[str]) -> str | None:
    """The card a fresh page opens with: the most recently updated session's first
    character, else the first bundled card (in gallery order), else the first card."""
    from roleplay.config import BUNDLED_CHARACTERS
    from roleplay.sessions import Session

    try:
        last = Session.list(engine, limit=1)
    except RoleplayError:  # an unreadable sessions database must not keep the page from opening
        last = []
    if last and last[0]["characters"] and last[0]["characters"][0] in ids:
        return last[0]["characters"][0]
    bundled = {p.parent.name for p in BUNDLED_CHARACTERS.glob("*/character.yaml")}
    return next((i for i in ids if i in bundled), ids[0] if ids else None)


def open_page(engine: "Engine", session_id: str | None = None) -> tuple:
    """A fresh page: the opening character picked, its greeting shown, nothing saved yet
    (nothing changes when the user already started a chat)."""
    from roleplay.cards import list_cards
    from roleplay.sessions.session import greetings

    if session_id:
        return (gr.update(),) * 9
    cards, _errors = list_cards(engine.settings)
    ids = [c.id for c in sorted(cards, key=lambda c: c.name.lower())]  # the gallery's order
    card_id = opening_character(engine, ids)
    if card_id is None:
        return (gr.update(), None, [], None, "", "Add a character card to start.", "", gr.update(), NO_REPLY)
    card = next(c for c in cards if c.id == card_id)
    texts = greetings(card, user_name=card.user_name or "User")
    chat = [render_message({"role": "assistant", "text": texts[0], "swipe_count": len(texts)})] if texts else []
    return (gr.update(value=card_id), None, chat, cards_view.avatar(card), "",
            f"Chatting with **{html.text(card.name)}**: say something.", card_info(card),
            gr.update(choices=session_choices(engine, card_id), value=None), NO_REPLY)


def new_chat(engine: "Engine", card_id: str | None, name: str, persona_text: str):
    from roleplay.sessions import Session

    if not card_id:
        return (None, [], None, "", "Pick a character.", "", gr.update(), NO_REPLY)
    try:
        card = engine.card(card_id)
        session = Session.new(engine, [card_id], user_name=(name or "").strip() or None,
                              user_persona=persona_text or "")
    except RoleplayError as exc:
        return (None, [], None, "", error_md(exc), "", gr.update(), NO_REPLY)
    chat, img, badge, note = view(session, note=f"New chat `{session.id}`")
    return (session.id, chat, img, badge, note, card_info(card),
            gr.update(choices=session_choices(engine, card_id), value=session.id), NO_REPLY)


def send(engine: "Engine", session_id: str | None, text: str, t: float, p: float, mx: float, sd: float,
         card_id: str | None = None, name: str | None = None, persona_text: str | None = None) -> Iterator[tuple]:
    """Send a message; on a fresh page (no session yet) the chat with ``card_id`` starts here."""
    from roleplay.sessions import Session

    text = (text or "").strip()
    if not text:
        yield gr.update(), gr.update(), gr.update(), gr.update(), "Type a message first.", gr.update(), gr.update()
        return
    try:
        params = sampling(t, p, mx, sd)
        if not session_id and card_id:
            session = Session.new(engine, [card_id], user_name=(name or "").strip() or None,
                                  user_persona=persona_text or "")
        else:
            session = _load(engine, session_id)
    except RoleplayError as exc:
        yield gr.update(), text, gr.update(), gr.update(), error_md(exc), gr.update(), gr.update()
        return
    for out in _stream(engine, session, session.stream(text, params=params), user_text=text):
        yield (*out, session.id)


def _stream(engine: "Engine", session: Any, stream: Iterator, *, user_text: str | None = None) -> Iterator[tuple]:
    """Show a stream's chunks as a growing last assistant row, then the saved state."""
    base = render_history(session)
    if user_text is not None:
        base = base + [{"role": "user", "content": html.text(user_text)}]
    elif base and base[-1]["role"] == "assistant":
        base = base[:-1]  # regenerate/continue replace the last reply's row while streaming
    so_far, reply = "", None
    try:
        for item in stream:
            if isinstance(item, str):
                so_far += item
                yield (base + [{"role": "assistant", "content": html.text(so_far)}], "",
                       gr.update(), gr.update(), "…", gr.update())
            else:
                reply = item
    except RoleplayError as exc:
        chat, img, badge, _ = view(_load(engine, session.id))
        yield chat, "", img, badge, error_md(exc), gr.update()
        return
    chat, img, badge, _ = view(_load(engine, session.id))
    tokens = _get(reply, "completion_tokens", 0)
    yield chat, "", img, badge, f"Reply saved ({tokens} tokens).", why_panel(reply)


def _rerun(engine: "Engine", session_id: str | None, params: tuple, *, action: str) -> Iterator[tuple]:
    """Stream ``Session.<action>`` (``regenerate_stream`` or ``continue_stream``)."""
    try:
        session = _load(engine, session_id)
        stream = getattr(session, action)(params=sampling(*params))
    except RoleplayError as exc:
        yield gr.update(), gr.update(), gr.update(), gr.update(), error_md(exc), gr.update()
        return
    yield from _stream(engine, session, stream)


def regenerate(engine: "Engine", session_id: str | None, t: float, p: float, mx: float, sd: float) -> Iterator:
    yield from _rerun(engine, session_id, (t, p, mx, sd), action="regenerate_stream")


def continue_(engine: "Engine", session_id: str | None, t: float, p: float, mx: float, sd: float) -> Iterator:
    yield from _rerun(engine, session_id, (t, p, mx, sd), action="continue_stream")


def swipe(engine: "Engine", session_id: str | None, step: int):
    try:
        session = _load(engine, session_id)
        last = _last_assistant(session)
        if last is None:
            return gr.update(), gr.update(), gr.update(), "No reply to swipe yet."
        idx, count = _swipe_info(last)
        target = min(max(idx + step, 0), count - 1)
        if target != idx:
            session.choose_swipe(_get(last, "id"), target)
        return view(_load(engine, session_id), note=f"swipe {target + 1}/{count}")
    except RoleplayError as exc:
        return gr.update(), gr.update(), gr.update(), error_md(exc)


def select_message(engine: "Engine", session_id: str | None, evt: gr.SelectData):
    try:
        session = _load(engine, session_id)
    except RoleplayError as exc:
        return None, gr.update(), error_md(exc)
    msgs = list(session.messages)
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if index is None or index >= len(msgs):
        return None, gr.update(), ""
    return index, _get(msgs[index], "text", ""), f"Selected message {index + 1}."


def save_edit(engine: "Engine", session_id: str | None, index: int | None, text: str):
    try:
        session = _load(engine, session_id)
        session.edit(_message_id(session, index), text)
        return view(_load(engine, session_id), note="Edited.")
    except RoleplayError as exc:
        return gr.update(), gr.update(), gr.update(), error_md(exc)


def delete_from(engine: "Engine", session_id: str | None, index: int | None):
    try:
        session = _load(engine, session_id)
        session.delete_from(_message_id(session, index))
        return (*view(_load(engine, session_id), note="Deleted from the selected message on."), None)
    except RoleplayError as exc:
        return gr.update(), gr.update(), gr.update(), error_md(exc), gr.update()


def fork(engine: "Engine", session_id: str | None, index: int | None, card_id: str | None):
    try:
        session = _load(engine, session_id)
        forked = session.fork(_message_id(session, index))
        chat, img, badge, _ = view(_load(engine, forked.id))
        return (forked.id, chat, img, badge, f"Forked into `{forked.id}`.",
                gr.update(choices=session_choices(engine, card_id), value=forked.id))
    except RoleplayError as exc:
        return gr.update(), gr.update(), gr.update(), gr.update(), error_md(exc), gr.update()


def resume(engine: "Engine", chosen: str | None):
    try:
        session = _load(engine, (chosen or "").strip())
        chat, img, badge, _ = view(session)
        return session.id, chat, img, badge, f"Resumed `{session.id}`.", card_info(session.card())
    except RoleplayError as exc:
        return gr.update(), gr.update(), gr.update(), gr.update(), error_md(exc), gr.update()


# -- the tab -----------------------------------------------------------------------------

@dataclass
class ChatUI:
    """The Chat tab's components that events read or write."""

    gallery: Any
    char_id: Any
    card_ids: Any
    char_info: Any
    emotion_img: Any
    emotion_md: Any
    user_name: Any
    persona: Any
    sampling: list
    sessions_dd: Any
    new_btn: Any
    resume_btn: Any
    fork_btn: Any
    chatbot: Any
    status: Any
    msg: Any
    send_btn: Any
    regen_btn: Any
    prev_btn: Any
    next_btn: Any
    cont_btn: Any
    del_btn: Any
    edit_box: Any
    edit_btn: Any
    why_md: Any
    sid: Any
    selected: Any


def build(engine: "Engine") -> tuple:
    """Lay out the Chat tab inside the current Blocks context and wire its events.

    Returns ``((refresh, outputs), (open_page, inputs, outputs))``: the app calls
    ``refresh`` on page load and when the tab is opened, so cards imported or saved in
    the Author tab show up without a restart, and ``open_page`` on page load.
    """
    ui = _layout(engine)
    _wire(engine, ui)
    opened = [ui.char_id, ui.sid, ui.chatbot, ui.emotion_img, ui.emotion_md, ui.status, ui.char_info,
              ui.sessions_dd, ui.why_md]
    return ((partial(refresh_cards, engine), [ui.gallery, ui.char_id, ui.card_ids]),
            (partial(open_page, engine), [ui.sid], opened))


def _layout(engine: "Engine") -> ChatUI:
    from .app import backend_label

    items, ids, load_errors = cards_view.gallery_items(engine.settings)
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            gallery = gr.Gallery(value=items, label="Characters", columns=2, height=300, allow_preview=False,
                                 object_fit="cover", elem_id="chat-gallery", interactive=False)
            char_id = gr.Dropdown(choices=ids, value=None, label="Character", elem_id="chat-character")
            card_ids = gr.State(shown_cards(items, ids))  # the gallery's order, for mapping a click
            if load_errors:
                gr.Markdown("Cards that failed to load:\n" + "\n".join(f"- {html.inline(e, limit=300)}"
                                                                          for e in load_errors))
            char_info = gr.Markdown("", elem_id="chat-character-info")
            emotion_img = gr.Image(value=None, label="Mood", type="pil", height=220, interactive=False,
                                   elem_id="chat-emotion-image")
            emotion_md = gr.Markdown("", elem_id="chat-emotion")
            with gr.Accordion("You", open=False):
                user_name = gr.Textbox(label="Your name", placeholder="the card's default", elem_id="chat-user-name")
                persona = gr.Textbox(label="Your persona", lines=2, placeholder="who you are in this story")
            with gr.Accordion("Sampling", open=False):
                temperature = gr.Slider(0.0, 2.0, value=0.8, step=0.05, label="Temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="Top p")
                max_tokens = gr.Slider(8, 1024, value=160, step=8, label="Max tokens", elem_id="chat-max-tokens")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Accordion("Sessions", open=False):
                sessions_dd = gr.Dropdown(choices=[], label="Saved chats with this character (or paste an id)",
                                          allow_custom_value=True, elem_id="chat-sessions")
                with gr.Row():
                    new_btn = gr.Button("New chat", size="sm")
                    resume_btn = gr.Button("Resume", size="sm")
                    fork_btn = gr.Button("Fork at selected", size="sm", elem_id="chat-fork")
            gr.Markdown(backend_label(engine), elem_id="chat-backend")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(value=[], label="Chat", height=480, elem_id="chatbot",
                                 feedback_options=None, buttons=["copy"])
            status = gr.Markdown("", elem_id="chat-status")
            with gr.Row():
                msg = gr.Textbox(placeholder="Say something… (Enter to send)", show_label=False, scale=5,
                                 elem_id="chat-input")
                send_btn = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
            with gr.Row():
                regen_btn = gr.Button("↻ Regenerate", size="sm", elem_id="chat-regenerate")
                prev_btn = gr.Button("◀", size="sm", elem_id="chat-prev")
                next_btn = gr.Button("▶", size="sm", elem_id="chat-next")
                cont_btn = gr.Button("Continue", size="sm", elem_id="chat-continue")
                del_btn = gr.Button("Delete from selected", size="sm", elem_id="chat-delete")
            with gr.Row():
                edit_box = gr.Textbox(label="Edit the selected message (click a message to select it)",
                                      lines=2, scale=5, elem_id="chat-edit")
                edit_btn = gr.Button("Save edit", size="sm", scale=1, elem_id="chat-save-edit")
            with gr.Accordion("Why this reply", open=False, elem_classes=["why-panel"]):
                why_md = gr.Markdown(NO_REPLY, elem_id="chat-why")
    return ChatUI(gallery, char_id, card_ids, char_info, emotion_img, emotion_md, user_name, persona,
                  [temperature, top_p, max_tokens, seed], sessions_dd, new_btn, resume_btn, fork_btn, chatbot,
                  status, msg, send_btn, regen_btn, prev_btn, next_btn, cont_btn, del_btn, edit_box, edit_btn,
                  why_md, gr.State(None), gr.State(None))


def _wire(engine: "Engine", ui: ChatUI) -> None:
    view_outputs = [ui.chatbot, ui.emotion_img, ui.emotion_md, ui.status]
    new_inputs = [ui.char_id, ui.user_name, ui.persona]
    new_outputs = [ui.sid, ui.chatbot, ui.emotion_img, ui.emotion_md, ui.status, ui.char_info, ui.sessions_dd,
                   ui.why_md]
    stream_outputs = [ui.chatbot, ui.msg, ui.emotion_img, ui.emotion_md, ui.status, ui.why_md]
    start = partial(new_chat, engine)
    # a click in the gallery starts a chat with that character; so does choosing it in the
    # dropdown (`input`: the user's choice, not the page setting it on open)
    ui.gallery.select(pick, [ui.card_ids], ui.char_id, api_name="pick_character").then(
        start, new_inputs, new_outputs, api_name="pick_character_chat", api_visibility="undocumented")
    ui.char_id.input(start, new_inputs, new_outputs, api_name="new_chat")
    ui.new_btn.click(start, new_inputs, new_outputs, api_name="new_chat_button")
    # the Chatbot's own trash button starts a fresh chat (the old one stays saved)
    ui.chatbot.clear(start, new_inputs, new_outputs, api_name="clear_chat")
    send_args = dict(fn=partial(send, engine), inputs=[ui.sid, ui.msg, *ui.sampling, *new_inputs],
                     outputs=[*stream_outputs, ui.sid])
    ui.msg.submit(**send_args, api_name="send")
    ui.send_btn.click(**send_args, api_name="send_button")
    ui.regen_btn.click(partial(regenerate, engine), [ui.sid, *ui.sampling], stream_outputs, api_name="regenerate")
    ui.cont_btn.click(partial(continue_, engine), [ui.sid, *ui.sampling], stream_outputs, api_name="continue")
    ui.prev_btn.click(partial(swipe, engine, step=-1), [ui.sid], view_outputs, api_name="swipe_prev")
    ui.next_btn.click(partial(swipe, engine, step=+1), [ui.sid], view_outputs, api_name="swipe_next")
    # subtle: not a partial — Gradio finds the `evt: gr.SelectData` parameter by type hints,
    # which it cannot read through functools.partial
    def on_select(session_id: str | None, evt: gr.SelectData):
        return select_message(engine, session_id, evt)

    ui.chatbot.select(on_select, [ui.sid], [ui.selected, ui.edit_box, ui.status], api_name="select_message")
    ui.edit_btn.click(partial(save_edit, engine), [ui.sid, ui.selected, ui.edit_box], view_outputs,
                      api_name="edit_message")
    ui.del_btn.click(partial(delete_from, engine), [ui.sid, ui.selected], [*view_outputs, ui.selected],
                     api_name="delete_from")
    ui.fork_btn.click(partial(fork, engine), [ui.sid, ui.selected, ui.char_id],
                      [ui.sid, ui.chatbot, ui.emotion_img, ui.emotion_md, ui.status, ui.sessions_dd],
                      api_name="fork")
    ui.resume_btn.click(partial(resume, engine), [ui.sessions_dd],
                        [ui.sid, ui.chatbot, ui.emotion_img, ui.emotion_md, ui.status, ui.char_info],
                        api_name="resume")
