"""From an OpenAI chat request to the engine's `Turn`: what the client's messages mean.

Clients such as SillyTavern send a whole prompt of their own: a main prompt, the
character's description, example dialogue, the chat, and instructions after it. This
module reads that shape back into what the engine needs (docs/api.md, "How a request
becomes a turn"):

- **mode.** A system instruction after the history asking for the user's next line
  (SillyTavern's impersonation prompt, "… from the point of view of NAME …") → mode
  ``impersonate``. The final message being the character's (or followed only by a
  continue nudge, "[Continue your last message …]") → mode ``continue``: that message is
  the partial text to extend. No user message at all → the character speaks next
  (empty send). ``continue_final_message`` (vLLM's field) overrides the guess.
- **personas.** ``roleplay/<id>`` uses our card. The client's system messages before the
  history that are short (at most `CLIENT_NOTE_WORDS` words: "Answer briefly", the main
  prompt) are kept as extra instructions; longer ones are taken to be the client's own
  character card and dropped, and so is its example dialogue — our card and its retrieval
  already say who the character is, and two personas confuse a model.
  ``roleplay/custom`` builds a card from the client's prompt instead: its system messages
  are the persona, its example dialogue the stories retrieved each turn, and the engine
  still adds stage notes.
- **names.** The user's name: the ``name`` of the latest user message, else the name in
  an impersonation prompt, else the one in SillyTavern's main prompt ("… between A and
  B."), else the client's signed-in user name (Open WebUI's header), else the card's
  ``user_name``. ``user`` (OpenAI's end-user id; else Open WebUI's user-id header)
  selects whose long-term memories are read; a name never does (two people may share one).
- **instructions.** System messages after the history stay after it, in order.

Trade-offs: detection works on SillyTavern's default prompts (and close rewrites of
them); a client with other wording can say what it means with ``continue_final_message``.
The custom card's id is a hash of the client's prompt, so each distinct prompt gets its
own retrieval index (re-used while the prompt stays the same).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cards.macros import expand
from ..cards.schema import Character
from .schemas import CUSTOM_MODEL, ChatCompletionRequest, ChatMessage

if TYPE_CHECKING:
    from ..engine import Turn

#: ``max_tokens`` when a request names none (a role-play reply rarely needs more).
DEFAULT_MAX_TOKENS = 200
#: The most a request gets whatever it asks; the engine lowers it further to the room the
#: prompt leaves in the model's context.
MAX_TOKENS_CEILING = 32768
#: Client system messages up to this many words count as instructions (kept for ``roleplay/<id>``).
CLIENT_NOTE_WORDS = 80
#: Names SillyTavern gives example-dialogue messages.
EXAMPLE_NAMES = {"example_user": "user", "example_assistant": "assistant"}
_IMPERSONATE = re.compile(r"point of view of\s+([^,.\]\n]{1,64}?)\s*[,.\]]", re.IGNORECASE)
_CONTINUE_NUDGE = re.compile(r"^\W*continue\b.{0,80}\b(message|reply|response)\b", re.IGNORECASE | re.DOTALL)
_MAIN_PROMPT = re.compile(r"next reply in a fictional chat between\s+(.{1,64}?)\s+and\s+(.{1,64}?)\s*\.",
                          re.IGNORECASE)
_EXAMPLE_MARKER = re.compile(r"^\s*\[\s*example chat\s*\]\s*$", re.IGNORECASE)
_CHAT_MARKER = re.compile(r"^\s*\[\s*start a new (group )?chat[^\]]*\]\s*$", re.IGNORECASE)


class RequestShapeError(ValueError):
    """The conversation cannot be mapped (the server answers 400 naming ``param``)."""

    def __init__(self, message: str, *, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Reading:
    """What the client's messages say, before any card is involved."""

    context: list[str] = field(default_factory=list)      # system messages before/among the history
    examples: list[list[tuple[str, str]]] = field(default_factory=list)  # blocks of (role, text)
    chat: list[ChatMessage] = field(default_factory=list)  # user/assistant messages, in order
    instructions: list[str] = field(default_factory=list)  # system messages after the history
    mode: str = "reply"
    impersonated_name: str | None = None
    names: tuple[str, str] | None = None                    # (char, user) from the main prompt


def read_messages(messages: list[ChatMessage], *, continue_final: bool | None = None) -> Reading:
    """Sort the client's messages into context, examples, chat and trailing instructions."""
    out = Reading()
    last_chat = max((i for i, m in enumerate(messages) if m.role in ("user", "assistant")
                     and (m.name or "") not in EXAMPLE_NAMES), default=-1)
    block: list[tuple[str, str]] | None = None
    for i, m in enumerate(messages):
        text = m.text()
        if m.role == "tool":
            continue
        if (m.name or "") in EXAMPLE_NAMES:
            if block is None:
                block = []
                out.examples.append(block)
            block.append((EXAMPLE_NAMES[m.name or ""], text))
            continue
        if m.role in ("system", "developer"):
            if _EXAMPLE_MARKER.match(text):
                block = []
                out.examples.append(block)
                continue
            if _CHAT_MARKER.match(text):
                block = None
                continue
            if not text.strip():
                continue
            names = _MAIN_PROMPT.search(text)
            if names and out.names is None:
                out.names = (names.group(1).strip(), names.group(2).strip())
            (out.instructions if i > last_chat else out.context).append(text)
            continue
        block = None
        out.chat.append(m)
    out.examples = [b for b in out.examples if b]

    last = out.chat[-1] if out.chat else None
    for text in list(out.instructions):
        match = _IMPERSONATE.search(text)
        if match:
            out.instructions.remove(text)
            out.mode, out.impersonated_name = "impersonate", match.group(1).strip()
            return out
    nudges = [t for t in out.instructions if _CONTINUE_NUDGE.match(t)]
    if continue_final is not None:
        if continue_final and (last is None or last.role != "assistant"):
            raise RequestShapeError("continue_final_message is true but the last message is not the "
                                    "assistant's partial message", param="continue_final_message")
        out.mode = "continue" if continue_final else "reply"
    elif last is not None and last.role == "assistant" and (nudges or not out.instructions):
        # A trailing character message is a prefill to extend — unless there is no user message
        # at all: then it is the greeting, and an empty send lets the character speak next.
        if nudges or any(m.role == "user" for m in out.chat):
            out.mode = "continue"
    if out.mode == "continue":
        for t in nudges:
            out.instructions.remove(t)
    return out


def user_name_of(reading: Reading, *, default: str) -> str:
    """The user's name, by the precedence documented above (``default``: the card's)."""
    for m in reversed(reading.chat):
        if m.role == "user" and m.name and m.name.strip():
            return m.name.strip()
    if reading.impersonated_name:
        return reading.impersonated_name
    if reading.names:
        return reading.names[1]
    return default


def custom_card(reading: Reading, *, user_name: str | None = None) -> Character:
    """A card made of the client's own prompt: system messages → persona, examples → stories."""
    from ..cards.chatharuhi import detect_language, detect_style

    char = (reading.names[0] if reading.names else "") or next(
        (m.name for m in reading.chat if m.role == "assistant" and m.name), None) or "Character"
    user = user_name or user_name_of(reading, default="User")
    persona = "\n\n".join(t.strip() for t in reading.context)
    stories = ["\n".join(f"{char if role == 'assistant' else user}: {_unprefixed(text, char, user)}"
                         for role, text in block) for block in reading.examples]
    stories = [s for s in stories if s.strip()]
    digest = hashlib.sha1("\x00".join([char, persona, *stories]).encode("utf-8")).hexdigest()[:12]
    sample = "\n".join([persona, *stories])
    return Character(id=f"{CUSTOM_MODEL}-{digest}", name=char[:100], user_name=user[:100], persona=persona,
                     stories=stories, language=detect_language(sample), style=detect_style(sample),
                     extensions={"api": {"custom": True}})


def _unprefixed(text: str, char: str, user: str) -> str:
    """Example lines may already start with ``Name:`` (SillyTavern keeps them); drop it once."""
    for name in (char, user):
        if text.startswith(name + ":"):
            return text[len(name) + 1:].strip()
    return text.strip()


def build_turn(body: ChatCompletionRequest, *, card: Character | None, client_user: str | None = None,
               client_name: str | None = None) -> "Turn":
    """The engine turn for ``body``: against our ``card``, or (None) ``roleplay/custom``.

    ``client_user``/``client_name`` are what the client says about its signed-in user
    outside the body (Open WebUI's ``X-OpenWebUI-User-Id``/``-Name`` headers): the memory
    user when ``body.user`` is unset, the name when the messages name nobody.
    """
    from ..engine import Turn

    reading = read_messages(body.messages, continue_final=body.continue_final_message)
    if card is None:
        user_name = user_name_of(reading, default=client_name or "User")
        card = custom_card(reading, user_name=user_name)
    else:
        user_name = user_name_of(reading, default=client_name or card.user_name)
        notes = [expand(t, char=card.name, user=user_name).strip() for t in reading.context
                 if len(t.split()) <= CLIENT_NOTE_WORDS]
        if notes:
            card = card.model_copy(update={"system_prompt": "\n\n".join([card.system_prompt, *notes]).strip()})
    history: list[dict[str, Any]] = []
    for m in reading.chat:
        if m.role == "user":
            history.append({"role": "user", "name": (m.name or user_name).strip() or user_name,
                            "content": m.text()})
        else:
            history.append({"role": "assistant", "name": card.name, "content": m.text()})
    user_text, partial = "", ""
    if reading.mode == "continue":
        partial = history.pop()["content"]
    elif reading.mode == "reply" and history and history[-1]["role"] == "user":
        user_text = history.pop()["content"]
        if not user_text.strip():
            user_text = ""  # an empty box: the character speaks next
    instructions = [expand(t, char=card.name, user=user_name) for t in reading.instructions]
    return Turn(card=card, history=history, user_text=user_text, user_name=user_name,
                memory_user=body.user or client_user or None, partial=partial,
                mode=reading.mode,  # type: ignore[arg-type]
                instructions=instructions)


def dropped_context(body: ChatCompletionRequest) -> int:
    """How many of the client's system messages ``roleplay/<id>`` leaves out (a response header)."""
    reading = read_messages(body.messages, continue_final=body.continue_final_message)
    return sum(1 for t in reading.context if len(t.split()) > CLIENT_NOTE_WORDS) + len(reading.examples)
