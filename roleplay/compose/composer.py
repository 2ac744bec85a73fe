"""The prompt composer: card + retrieval + stage note + history → chat messages.

Messages come out in a fixed order that keeps the prompt prefix stable from turn to turn
(so vLLM / llama.cpp / the transformers backend can reuse their KV cache):

1. system — card system prompt, ``before_char`` constant lore, persona, scenario, user
   persona, style rules (the bracket convention), knowledge boundary, ``after_char``
   constant lore, then the user memories and the rolling summary (the parts that change
   most often come last);
2. system — the retrieved stories ("classic scenes of {{char}}"), if any;
3. the history (oldest turns dropped first to fit the budget), with the anchored
   story blocks (``anchored``) before the messages that brought them;
4. system — the triggered lorebook entries, if any;
5. user — the new message;
6. system — the instruct-mode stage direction and the card's post-history instructions;
7. assistant — the prefill (the stage note in ``prefill`` mode), continued by the model.

Trade-offs and safety:
- Templates are Jinja2 files (package data, one set per language, English fallback)
  rendered with `StrictUndefined`, so a misspelt variable fails loudly. Card and user
  text are *data* passed into the templates, never template source: ``{{ 7*7 }}`` in a
  persona is printed as typed. A user ``template_dir`` renders in Jinja2's
  `SandboxedEnvironment`; anything it does wrong becomes a one-line `ConfigError`.
- The default order is the one above (the retrieved lines sit next to the persona, as
  in ChatHaruhi). To keep that prefix stable the engine reuses the last story block
  while it is still relevant; here, memories are shown in a fixed order (oldest first)
  whatever their relevance order, and the history is trimmed in chunks
  (`history_start`), so its start moves every few turns, not every turn.
  ``cache_friendly`` instead moves memories and stories after the history too
  (measured in docs/prompting.md).
- Triggered lore sits after the history, next to the message that triggered it: entries
  come and go as keys enter and leave the scan depth, and before the history each
  change made a prefix cache read the whole history again (~1,200 tokens; measured on
  llama.cpp, a Sherlock chat re-read 247 and then 402 tokens for one entry's arrival
  and departure). Here an entry costs its own tokens plus the last exchange per turn.
- Stories, lore and the instruction are separate system messages rather than being
  folded into the first one: that keeps message 1 byte-identical across turns. Strict
  chat templates that allow a single leading system message must merge them (the
  backend's job, where such a model is used).
- Budgets are counted on the content of each part with the given ``count_tokens``
  (the model's tokenizer when loaded), not on the template's framing text, so they are
  comparable across templates; `ComposedPrompt.parts` reports them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..cards import macros
from ..cards.safety import LIMITS
from ..cards.schema import Character
from ..config import Budgets
from ..errors import ConfigError, RoleplayError
from .postprocess import bracket_pair, format_note
from .stage import StageNote

STAGE_MODES = ("prefill", "instruct", "off")
#: Default share of the history budget the history is trimmed down to when it overflows.
#: Each trim makes a prefix cache read the kept history again, so the lower the share, the
#: rarer and cheaper the re-reads, and the less history the model sees on average. Half,
#: as llama.cpp's own context shift discards half of the context when it fills; 40-turn
#: chats read 20 % fewer prompt tokens per turn than at 0.65 and show 11 % less history
#: on average (`bench/history.py`; docs/prompting.md, "History trimmed in chunks").
HISTORY_TRIM_TO = 0.5
#: Example notes shown in the style rules, per bracket style.
_EXAMPLE_NOTE = {"en": "raises an eyebrow", "zh": "微微一笑"}


@dataclass
class ComposedPrompt:
    """The chat messages for one turn and what went into them.

    ``messages`` ends with the assistant prefill when there is one (``prefill``);
    ``parts`` gives tokens per part: system, memories, summary, stories, lorebook,
    history, user, instruction, prefill and total (memories and summary are inside
    system; lorebook counts constant and triggered entries).
    """

    messages: list[dict]
    prefill: str
    parts: dict[str, int]
    stories: list[Any] = field(default_factory=list)
    lore: list[Any] = field(default_factory=list)
    memories: list[str] = field(default_factory=list)
    note: StageNote | None = None
    #: Stories added mid-chat, as shown: ``(history index, stories)`` (see `Composer.compose`).
    anchored: list[tuple[int, list[Any]]] = field(default_factory=list)

    def shown_stories(self) -> list[Any]:
        """Every story in the prompt, in prompt order: the block, then the anchored ones."""
        return [*self.stories, *(s for _, items in self.anchored for s in items)]


def _builtin_templates() -> Path:
    return Path(str(resources.files("roleplay.compose") / "templates"))


def card_language(card: Character) -> str:
    return (card.language or "en").lower().split("-")[0].split("_")[0]


def _fit(items: Iterable[Any], text_of: Callable[[Any], str], budget: int,
         count_tokens: Callable[[str], int]) -> tuple[list[Any], int]:
    """Keep items in order while their texts fit ``budget``; skip one that does not fit."""
    kept, used = [], 0
    for item in items:
        n = count_tokens(text_of(item))
        if used + n <= budget:
            kept.append(item)
            used += n
    return kept, used


def _strip_index(message: dict) -> dict:
    return {k: v for k, v in message.items() if k != "_i"}


def _insert_before_user_run(messages: list[dict], at: int, block: dict, *, floor: int) -> None:
    """Insert ``block`` at ``at``, moved back before any user lines that end
    ``messages[:at]``, so those lines still join the user message after it (`_merge`)
    and roles keep alternating; never before index ``floor``."""
    while at > floor and messages[at - 1]["role"] == "user":
        at -= 1
    messages.insert(at, block)


def _memory_items(memories: Iterable[Any], expand: Callable[[str], str]) -> list[tuple[float, str, str]]:
    """``(created, text, kind)`` per usable memory, relevance order kept. Strings are facts
    with no time (0.0); `roleplay.memory.Memory` objects and ``{text, kind, created}``
    mappings carry theirs (``kind`` "event": this story's promises, shown apart)."""
    out = []
    for m in memories:
        get = m.get if isinstance(m, dict) else (lambda key, default=None, m=m: getattr(m, key, default))
        text = m if isinstance(m, str) else get("text")
        if isinstance(text, str) and text.strip():
            created = 0.0 if isinstance(m, str) else get("created", 0.0)
            kind = "fact" if isinstance(m, str) else (get("kind", "fact") or "fact")
            out.append((float(created or 0.0), expand(text), str(kind)))
    return out


def _tail_fit(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest suffix of ``text`` within ``budget`` tokens (a summary's newest part)."""
    if count_tokens(text) <= budget:
        return text
    lo, hi = 0, len(text)  # binary search on the start index
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(text[mid:]) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:].lstrip()


def history_start(sizes: Sequence[int], budget: int, *, trim_to: float = HISTORY_TRIM_TO) -> int:
    """Index of the oldest turn kept when turns of ``sizes`` tokens must fit ``budget``.

    The chat is replayed from its first turn: a turn is appended, and when the window
    overflows ``budget`` the oldest turns are dropped down to ``trim_to`` × budget at
    once (the newest turn always stays if it fits alone). The window's start therefore
    moves every few turns instead of every turn — each move breaks the cached prompt
    prefix from the history on. Replaying keeps the composer stateless: the same history
    always gives the same start. ``trim_to=1.0`` drops only as many turns as needed.
    """
    start, used = 0, 0
    low = budget * trim_to
    for i, n in enumerate(sizes):
        used += n
        if used > budget:
            while start < i and used > low:
                used -= sizes[start]
                start += 1
            if used > budget:  # the newest turn alone is over budget
                used -= sizes[start]
                start += 1
    return start


class Composer:
    """Renders prompts from templates.

    Args:
        template_dir: a folder of the user's own ``*.j2`` templates (same names as the
            built-in ones: ``system_en.j2``, ``stories_zh.j2`` …); missing ones fall back
            to the built-ins. Rendered in a sandbox.

    >>> Composer().compose(card, [], "Hello", user_name="Watson", budgets=Budgets(),
    ...                    count_tokens=len).messages[-1]["role"]  # doctest: +SKIP
    'user'
    """

    def __init__(self, *, template_dir: Path | None = None) -> None:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        builtin = jinja2.FileSystemLoader(str(_builtin_templates()))
        options = dict(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
                       lstrip_blocks=True, keep_trailing_newline=False)
        self.template_dir = Path(template_dir).expanduser() if template_dir else None
        if self.template_dir is not None:
            if not self.template_dir.is_dir():
                raise ConfigError(f"template folder {self.template_dir} does not exist; "
                                  "create it or drop the template_dir option")
            loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(self.template_dir)), builtin])
            self._env: Any = SandboxedEnvironment(loader=loader, **options)
        else:
            # Built-in templates are ours (trusted); data never reaches them as source.
            self._env = jinja2.Environment(loader=builtin, **options)

    # -- rendering ----------------------------------------------------------------
    def render(self, part: str, language: str, **context: Any) -> str:
        """Render template ``{part}_{language}.j2`` (or ``{part}_en.j2``) with ``context``."""
        import jinja2
        from jinja2.sandbox import SecurityError

        names = [f"{part}_{language}.j2", f"{part}_en.j2"]
        where = self.template_dir or "built-in templates"
        try:
            template = self._env.select_template(names)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: "
                              f"{exc.message}; fix the template") from None
        except jinja2.TemplatesNotFound:
            raise ConfigError(f"no template {' or '.join(names)} in {where}") from None
        try:
            return template.render(**context).strip()
        except SecurityError as exc:
            raise ConfigError(f"template {template.name} in {where} was stopped by the sandbox: "
                              f"{str(exc).rstrip('.')}; user templates may only use the variables they are given") from None
        except jinja2.UndefinedError as exc:
            if "unsafe" in str(exc) or "__" in str(exc):
                raise ConfigError(f"template {template.name} in {where} was stopped by the sandbox: "
                                  f"{str(exc).rstrip('.')}") from None
            raise ConfigError(f"template {template.name} in {where}: {exc}; "
                              "see docs/prompting.md for the variables each template gets") from None
        except RoleplayError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure inside a user template
            raise ConfigError(f"template {template.name} in {where} failed: "
                              f"{type(exc).__name__}: {exc}".splitlines()[0]) from None

    # -- composing ----------------------------------------------------------------
    def compose(self, card: Character, history: Sequence[dict], user_text: str, *, user_name: str,
                user_persona: str = "", stories: Sequence[Any] = (), lore: Sequence[Any] = (),
                memories: Sequence[str] = (), summary: str = "", note: StageNote | None = None,
                stage_mode: str = "prefill", budgets: Budgets, count_tokens: Callable[[str], int],
                others: Sequence[str] = (), plain: bool = False,
                cache_friendly: bool = False, history_trim_to: float = HISTORY_TRIM_TO,
                anchored: Sequence[tuple[int, Sequence[Any]]] = ()) -> ComposedPrompt:
        """Build the chat messages for one turn.

        Args:
            card: the speaking character.
            history: earlier messages, oldest first: ``{"role": "user"|"assistant",
                "name": speaker, "content": text}``.
            user_text: the new user message ("" for none, e.g. a group turn).
            user_name: the user's name (``{{user}}``).
            stories: retrieved stories (`RetrievedStory` or plain strings), best first.
            lore: lorebook hits (`LoreHit`), constant entries included.
            memories: facts about the user, most relevant first: strings, or objects with
                ``text`` and optionally ``created`` (`roleplay.memory.Memory`). The most
                relevant that fit the budget are kept, then shown oldest first (by
                ``created``, then text), so the system message stays byte-identical
                while the same memories come back in a different relevance order.
            summary: the rolling summary of older turns.
            note: the StageDirector's decision (None: no stage direction).
            stage_mode: ``prefill`` | ``instruct`` | ``off``.
            budgets: token budgets per part; count_tokens: the token counter.
            others: other characters in a group chat.
            plain: the evaluation baseline — plain persona system prompt, history, message.
            cache_friendly: put the per-turn parts (memories, stories, triggered lore)
                after the history, right before the new message, so that the system
                message and the history form a prefix that stays the same across turns.
            history_trim_to: when the history overflows its budget, drop whole oldest
                turns down to this share of it at once (`history_start`); 1.0 drops only
                as many as needed.
            anchored: stories added mid-chat, ``(i, stories)``: a block shown right before
                ``history[i]`` (``i == len(history)``: before the new message), so it stays
                where it was first read while the chat goes on and leaves with the turns
                trimmed off the history's start. They share the story budget with
                ``stories`` (which are fitted first); ignored with ``cache_friendly``.

        Raises:
            ConfigError: a bad argument or a failing template.
        """
        if stage_mode not in STAGE_MODES:
            raise ConfigError(f"stage_mode {stage_mode!r}: choose one of {', '.join(STAGE_MODES)}")
        if not isinstance(user_text, str):
            raise ConfigError("the user message must be a string")
        if len(user_text) > LIMITS.string_chars:
            raise ConfigError(f"the user message is {len(user_text)} characters; the limit is "
                              f"{LIMITS.string_chars}")
        user_name = user_name or card.user_name
        others = [o for o in others if o and o != card.name]
        lang = card_language(card)

        def x(text: str) -> str:
            return macros.expand(text or "", char=card.name, user=user_name).strip()

        turns = self._history_messages(card, history, user_name=user_name, group=bool(others))
        kept_turns, history_tokens = self._fit_history(turns, budgets.history, count_tokens, history_trim_to)
        history_flat = [m for turn in kept_turns for m in turn]
        user_msg = (f"{user_name}: {user_text}" if others else user_text) if user_text else ""

        parts = dict.fromkeys(("system", "memories", "summary", "stories", "lorebook", "history",
                               "user", "instruction", "prefill", "total"), 0)
        if plain:
            system = self.render("plain", lang, char=card.name, user=user_name,
                                 persona=x(card.persona), scenario=x(card.scenario))
            messages = [{"role": "system", "content": system}]
            messages += [_strip_index(m) for m in history_flat]
            if user_msg:
                messages.append({"role": "user", "content": user_msg})
            messages = self._merge(messages)
            parts.update(system=count_tokens(system), history=history_tokens,
                         user=count_tokens(user_msg) if user_msg else 0)
            parts["total"] = sum(count_tokens(m["content"]) for m in messages)
            return ComposedPrompt(messages=messages, prefill="", parts=parts)

        # Lorebook: constant entries go into the system message, triggered ones after the stories.
        lore_kept, lore_tokens = _fit(lore, lambda h: x(getattr(h, "content", "")), budgets.lorebook, count_tokens)
        constant = [h for h in lore_kept if getattr(h, "constant", False)]
        triggered = [h for h in lore_kept if not getattr(h, "constant", False)]

        def position(hit: Any) -> str:
            idx = getattr(hit, "index", -1)
            if isinstance(idx, int) and 0 <= idx < len(card.lorebook):
                return card.lorebook[idx].position
            return "after_char"

        mem_kept, mem_tokens = _fit(_memory_items(memories, x), lambda m: m[1], budgets.memories, count_tokens)
        mem_kept = sorted(mem_kept)  # stable order: oldest first, then text
        mem_view = [{"text": text, "kind": kind} for _, text, kind in mem_kept]  # for the templates
        mem_kept = [text for _, text, _ in mem_kept]
        summary_text = _tail_fit(x(summary).strip(), budgets.summary, count_tokens) if summary else ""
        opening, closing = bracket_pair(card)
        system = self.render(
            "system", lang, char=card.name, user=user_name, others=others,
            card_system=x(card.system_prompt), persona=x(card.persona), scenario=x(card.scenario),
            user_persona=x(user_persona), open=opening, close=closing,
            example_note=format_note(_EXAMPLE_NOTE.get(lang, _EXAMPLE_NOTE["en"]), card),
            known=[x(k) for k in card.knowledge.known], unknown=[x(k) for k in card.knowledge.unknown],
            lore_before=[x(h.content) for h in constant if position(h) == "before_char"],
            lore_after=[x(h.content) for h in constant if position(h) != "before_char"],
            memories=[] if cache_friendly else mem_view, summary=summary_text)
        story_text = lambda s: x(getattr(s, "text", s) or "")  # noqa: E731
        stories_kept, story_tokens = _fit(stories, story_text, budgets.stories, count_tokens)

        def story_block(items: Sequence[Any]) -> dict:
            return {"role": "system", "content": self.render(
                "stories", lang, char=card.name, user=user_name, stories=[story_text(s).strip() for s in items])}

        per_turn: list[dict] = []  # parts that change with every message
        if mem_kept and cache_friendly:
            per_turn.append({"role": "system", "content": self.render(
                "memories", lang, char=card.name, user=user_name, memories=mem_view)})
        if stories_kept:
            per_turn.append(story_block(stories_kept))
        # Anchored blocks, oldest first, where their turn still is in the window.
        first = history_flat[0]["_i"] if history_flat else len(history)
        anchors_kept: list[tuple[int, list[Any]]] = []
        for at, items in sorted(((int(a), list(b)) for a, b in anchored if not cache_friendly), key=lambda a: a[0]):
            if first <= at <= len(history):
                kept, n = _fit(items, story_text, budgets.stories - story_tokens, count_tokens)
                if kept:
                    anchors_kept.append((at, kept))
                    story_tokens += n
        history_msgs = list(history_flat)
        for at, items in reversed(anchors_kept):  # from the end, so earlier indexes stay valid
            pos = next((j for j, m in enumerate(history_msgs) if m.get("_i", -1) >= at), len(history_msgs))
            _insert_before_user_run(history_msgs, pos, story_block(items), floor=0)
        history_msgs = self._merge([_strip_index(m) for m in history_msgs])
        messages = [{"role": "system", "content": system}]
        if cache_friendly:
            messages += history_msgs + per_turn
        else:
            messages += per_turn + history_msgs
        if triggered:  # after the history: see the module docstring (why)
            _insert_before_user_run(messages, len(messages), {"role": "system", "content": self.render(
                "lore", lang, char=card.name, user=user_name, entries=[x(h.content).strip() for h in triggered])},
                floor=1)
        if user_msg:
            messages.append({"role": "user", "content": user_msg})

        instruct_note = note if (note is not None and stage_mode == "instruct") else None
        instruction = self.render("instruct", lang, char=card.name, user=user_name,
                                  emotion=instruct_note.emotion if instruct_note else "",
                                  note=instruct_note.note if instruct_note else "",
                                  post_history=x(card.post_history_instructions))
        if instruction:
            messages.append({"role": "system", "content": instruction})
        prefill = note.note if (note is not None and stage_mode == "prefill") else ""
        messages = self._merge(messages)
        if prefill:
            messages.append({"role": "assistant", "content": prefill})

        parts.update(system=count_tokens(system), memories=mem_tokens,
                     summary=count_tokens(summary_text) if summary_text else 0,
                     stories=story_tokens, lorebook=lore_tokens, history=history_tokens,
                     user=count_tokens(user_msg) if user_msg else 0,
                     instruction=count_tokens(instruction) if instruction else 0,
                     prefill=count_tokens(prefill) if prefill else 0)
        parts["total"] = sum(count_tokens(m["content"]) for m in messages)
        return ComposedPrompt(messages=messages, prefill=prefill, parts=parts, stories=stories_kept,
                              lore=lore_kept, memories=mem_kept, note=note, anchored=anchors_kept)

    # -- history ------------------------------------------------------------------
    @staticmethod
    def _history_messages(card: Character, history: Sequence[dict], *, user_name: str,
                          group: bool) -> list[list[dict]]:
        """History as turns (a turn starts at a user message), other speakers as ``Name: text``.

        Each message carries ``_i``, its index in ``history`` (dropped before rendering)."""
        if not isinstance(history, (list, tuple)):
            raise ConfigError("history must be a list of {'role', 'name', 'content'} messages")
        turns: list[list[dict]] = []
        for i, item in enumerate(history):
            if (not isinstance(item, dict) or item.get("role") not in ("user", "assistant")
                    or not isinstance(item.get("content"), str)):
                raise ConfigError(f"history[{i}]: expected {{'role': 'user'|'assistant', 'name': str, "
                                  f"'content': str}}, got {str(item)[:80]!r}")
            name = item.get("name") or (user_name if item["role"] == "user" else card.name)
            content = item["content"]
            if item["role"] == "assistant" and name == card.name:
                # The character's own lines may be card greetings: expand their macros.
                msg = {"role": "assistant", "content": macros.expand(content, char=card.name, user=user_name)}
            elif item["role"] == "assistant" or group:
                # Another character (or the user in a group): label the speaker.
                msg = {"role": "user", "content": f"{name}: {content}"}
            else:
                msg = {"role": "user", "content": content}
            msg["_i"] = i  # where it came from: anchored story blocks are placed by it
            if item["role"] == "user" or not turns:
                turns.append([])
            turns[-1].append(msg)
        return turns

    @staticmethod
    def _fit_history(turns: list[list[dict]], budget: int, count_tokens: Callable[[str], int],
                     trim_to: float = 1.0) -> tuple[list[list[dict]], int]:
        """Drop whole oldest turns so the rest fits ``budget`` (in chunks, see `history_start`)."""
        sizes = [sum(count_tokens(m["content"]) for m in turn) for turn in turns]
        start = history_start(sizes, budget, trim_to=trim_to)
        return turns[start:], sum(sizes[start:])

    @staticmethod
    def _merge(messages: list[dict]) -> list[dict]:
        """Join consecutive user messages (group lines), so roles alternate where they can."""
        out: list[dict] = []
        for m in messages:
            if out and m["role"] == "user" and out[-1]["role"] == "user":
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n" + m["content"]}
            else:
                out.append(dict(m))
        return out
