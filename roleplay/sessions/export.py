"""Session exports: a Markdown transcript, and DPO preference pairs from swipes.

DPO pairs use TRL's conversational preference format, one JSON object per line:
``{"prompt": [{"role", "content"}…], "chosen": [{"role": "assistant", …}],
"rejected": [{"role": "assistant", …}]}`` — one line per *non-chosen* swipe of every
reply that has several, so a user's swipe choices become training data for
``trl.DPOTrainer`` as is. Trade-off: the prompt is the conversation as the speaking
character saw it (its own lines as ``assistant``, the rest as ``user`` prefixed with
the speaker's name in group chats) behind a short system message with its persona (the
``dpo`` template in the card's language, macros expanded as in a chat), not the exact
composed prompt (retrieved stories change as the index changes); only complete swipes
are used, so a half reply never becomes training data.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from ..cards.macros import expand

if TYPE_CHECKING:
    from ..cards.schema import Character
    from ..compose.composer import Composer
    from .session import Session

#: Longest system message of a DPO pair, in characters.
SYSTEM_CHARS = 2000


def to_markdown(session: "Session") -> str:
    """A readable transcript: title, characters, summary, then ``**Name:** text`` per message."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.created))
    lines = [f"# {session.title}", "",
             f"*Characters: {', '.join(c.name for c in session.cards)} · User: {session.user_name} · "
             f"Started {when} · Session `{session.id}`*", ""]
    if session.summary:
        lines += [f"> Story so far: {session.summary}", ""]
    for m in session.messages:
        tag = ""
        if m.swipe_count > 1:
            tag += f" *(swipe {m.swipe_id + 1}/{m.swipe_count})*"
        if not m.complete:
            tag += f" *({m.status})*"
        lines += [f"**{m.speaker}:**{tag} {m.text}", ""]
    return "\n".join(lines).rstrip() + "\n"


def dpo_pairs(session: "Session") -> list[dict]:
    """Preference pairs from every reply with more than one complete swipe."""
    from ..compose.composer import Composer

    composer = Composer()
    msgs = session.messages
    pairs: list[dict] = []
    for i, m in enumerate(msgs):
        if m.role != "assistant" or m.swipe_count < 2:
            continue
        swipes = [s for s in session.swipes(m.id) if s.status == "complete"]
        chosen = next((s for s in swipes if s.active), None)
        if chosen is None or len(swipes) < 2:
            continue
        card = session.card(m.character_id)
        prompt = [{"role": "system", "content": _system(composer, card, user_name=session.user_name)}]
        for h in msgs[:i]:
            if not h.complete:
                continue
            own = h.character_id == card.id
            named = session.is_group or (h.role == "user" and h.speaker != session.user_name)
            content = h.text if own or not named else f"{h.speaker}: {h.text}"
            prompt.append({"role": "assistant" if own else "user", "content": content})
        for s in swipes:
            if s is chosen:
                continue
            pairs.append({"prompt": prompt,
                          "chosen": [{"role": "assistant", "content": chosen.text}],
                          "rejected": [{"role": "assistant", "content": s.text}],
                          "session_id": session.id, "message_id": m.id, "character": card.id})
    return pairs


def _system(composer: "Composer", card: "Character", *, user_name: str) -> str:
    """The pair's system message: who the character is (at most `SYSTEM_CHARS`)."""
    persona = expand(card.persona, char=card.name, user=user_name).strip()
    return composer.render("dpo", card.language, char=card.name, persona=persona).strip()[:SYSTEM_CHARS]


def dpo_jsonl(session: "Session") -> str:
    """`dpo_pairs` as JSON Lines."""
    return "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in dpo_pairs(session))
