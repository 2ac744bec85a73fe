"""The Engine: one stateless role-play turn — retrieve, direct, compose, generate, clean.

``Engine`` wires the retriever (Chroma stories + lorebook), the StageDirector, the
Composer and a backend. It keeps no conversation state: callers pass the history
(`roleplay.sessions.Session` adds persistence and memory on top); the CLI, web UI, API
server and evaluation all call it, so no entry point holds engine logic.

Trade-offs:
- Everything heavy is lazy: the backend loads on the first generation (or when a caller
  passes one), the retriever and embedder on the first retrieval. ``prepare`` alone
  (``roleplay prompt``) counts tokens with the model's tokenizer only if the backend is
  already loaded, else with `roleplay.tokens.approx_tokens`.
- The reply text *includes* the prefilled stage note: the model continued it, so it is
  part of what the character said and did. Streams yield it first, before generation.
- Stories retrieved anew each turn would change the prompt right after the system
  message every turn. The engine remembers each conversation's stories as last shown
  (in memory, LRU) and keeps them while they still serve the new message (the fresh
  best story is among them, or their best scores within ``story_keep_margin``); when the
  topic moves on, the new best stories are *anchored* before the message that brought
  them (``story_anchor``), so the prompt before them stays cached; when those overflow
  their share of the budget, the oldest anchored block gives way (llama.cpp moves what
  follows it instead of reading it again); only with no anchored block left is the
  block rebuilt, keeping its still-relevant start (``story_reuse``). Measured in
  docs/prompting.md (bench/stories.py): 48 % fewer prompt tokens re-read per turn than
  rebuilding on each new topic (63 % with KV shifting), the expected scene shown as
  often (0.824 / 0.724 on new topics / follow-ups against 0.818 / 0.736).
  ``cache_friendly`` is the other trade (see the composer).
- Post-processing runs incrementally (`StreamCleaner`); when it sees the model start
  another speaker's line it stops consuming the backend's stream (which cancels the
  generation) — the speaker-line markers are also passed to the backend as stop strings.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .cards import macros
from .cards.schema import Character
from .config import Budgets, Settings
from .errors import ConfigError, invalid
from .reply import ReplyRecord
from .compose.composer import HISTORY_TRIM_TO, ComposedPrompt, Composer, card_language
from .compose.postprocess import StreamCleaner
from .compose.stage import StageDirector, StageNote

if TYPE_CHECKING:  # heavy modules stay out of ``import roleplay.engine``
    from .backends.base import Backend, SamplingParams
    from .store.retriever import Retriever

#: How many recent history messages the retriever and lorebook see besides the new one.
CONTEXT_MESSAGES = 4
#: Context kept free for the reply when budgets are fitted to the model's context (the
#: default ``max_tokens``; a request for more gets what is left, see `Engine.stream`).
REPLY_RESERVE = 200
#: Tokens the budgets do not count: chat-template tags around each message, the headings
#: of the story / lore / memory blocks, the stage note (measured: ~150 on a full prompt).
FRAMING = 256
#: A leading action note of a reply: (…), （…） or *…*.
_LEADING_NOTE = re.compile(r"^\s*(\([^()\n]{1,80}\)|（[^（）\n]{1,80}）|\*[^*\n]{1,80}\*)")
#: Conversations whose last story blocks are remembered (for ``story_reuse``).
STORY_MEMORY = 512


class EngineOptions(BaseModel):
    """How a turn is built. Invalid values raise `ConfigError` naming the field."""

    model_config = ConfigDict(extra="forbid")

    #: Retrieve the character's canonical lines (stories) for the prompt.
    retrieval: bool = True
    #: Insert lorebook entries (constant and triggered).
    lorebook: bool = True
    #: ``prefill``: the assistant turn starts with the note; ``instruct``: an instruction
    #: names the emotion and note; ``off``: no stage direction.
    stage_mode: Literal["prefill", "instruct", "off"] = "prefill"
    #: A folder of the user's own Jinja2 templates (rendered sandboxed).
    template_dir: Path | None = None
    #: The evaluation baseline: plain persona prompt, history and message only.
    plain: bool = False
    #: How many stories to retrieve at most (None: as many as the budget allows).
    story_k: int | None = Field(None, ge=1, le=100)
    #: Put memories, stories and triggered lore after the history (before the new
    #: message) so the system message and history stay a stable, cacheable prefix.
    cache_friendly: bool = False
    #: Story-block reuse across turns, for prefix caches (0: plain per-turn retrieval).
    #: The previous turn's whole block is kept while it is still relevant (see
    #: ``story_keep_margin``); when the conversation moves on, the block is rebuilt and
    #: this share of the story budget may still be filled, in their previous order, by
    #: old stories that are still among the current candidates.
    story_reuse: float = Field(0.5, ge=0.0, le=1.0)
    #: Keep the previous turn's story block unchanged while the fresh best story is in it
    #: or its best story's hybrid score (0–1) for the new conversation is within this
    #: margin of the fresh best's; None rebuilds the block every turn.
    story_keep_margin: float | None = Field(0.15, ge=0.0, le=1.0)
    #: Share of the story budget kept for stories added mid-chat. When the conversation
    #: moves on, the new best stories are *anchored*: shown right before the message that
    #: brought them and left there (the prompt before them stays the same), instead of
    #: rebuilding the block after the system message (which makes a prefix cache read
    #: the whole history again). The block then gets the rest of the budget; when the
    #: anchored stories would overflow their share, the oldest anchored block gives way;
    #: only when none is left to give way is the block rebuilt. 0: off (always rebuild).
    story_anchor: float = Field(0.4, ge=0.0, le=1.0)
    #: When the history overflows its budget, drop whole oldest turns down to this share
    #: of the budget at once (1.0: only as many as needed), so the prompt prefix after
    #: the history's start breaks every few turns rather than every turn.
    history_trim_to: float = Field(HISTORY_TRIM_TO, ge=0.1, le=1.0)
    #: Story source labels (``card:3``, ``stories/a.txt#2``) never to retrieve this turn:
    #: canon evaluation leaves the scene under test out so the answer cannot leak in.
    exclude_sources: list[str] = Field(default_factory=list)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid(exc, "engine option ", default_field="options", show_input=True) from None


@dataclass
class Reply(ReplyRecord):
    """One generated reply and how it was made.

    ``text`` is post-processed and starts with the prefilled note (if any); for a
    continuation it is the whole extended message. ``finish_reason`` is ``stop`` or
    ``length`` (``max_tokens`` cut it). ``timings`` holds ``retrieve_ms``, ``stage_ms``,
    ``compose_ms``, ``generate_ms`` and ``total_ms``. ``message_id`` is set once a session
    saved it.
    """

    finish_reason: str = "stop"
    logprobs: list[Any] | None = field(default=None, repr=False)
    prompt: ComposedPrompt | None = field(default=None, repr=False)
    message_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """`record` plus the finish reason and the composed prompt's parts."""
        return {**self.record(), "finish_reason": self.finish_reason,
                "parts": self.prompt.parts if self.prompt else {}}


@dataclass
class Turn:
    """Everything one turn is made from (the engine's single input).

    Args:
        card: the speaking character (a loaded card, or its id).
        history: earlier messages, oldest first: ``{"role": "user"|"assistant", "name":
            speaker, "content": text}``.
        user_text: the new message; "" lets the character speak next without one.
        user_name: the user's name (default: the card's ``user_name``).
        memories: memory texts for the prompt; None lets the engine recall them for
            ``memory_user`` (none without one).
        memory_user: whose long-term memories to read when ``memories`` is None.
        mode: ``reply``; ``continue`` extends ``partial`` (the character's unfinished
            message) without repeating it; ``impersonate`` writes the user's next line.
        instructions: system messages the client put after the history (kept there).
    """

    card: Character | str
    history: Sequence[dict] = ()
    user_text: str = ""
    user_name: str | None = None
    user_persona: str = ""
    memories: Sequence[Any] | None = None
    memory_user: str | None = None
    summary: str = ""
    others: Sequence[str] = ()
    options: "EngineOptions | None" = None
    mode: Literal["reply", "continue", "impersonate"] = "reply"
    partial: str = ""
    instructions: Sequence[str] = ()


def last_note(history: Sequence[dict], card: Character) -> str | None:
    """The action note that opened this character's latest reply in ``history``, if any."""
    for item in reversed(history):
        if isinstance(item, dict) and item.get("role") == "assistant" and item.get("name", card.name) == card.name:
            m = _LEADING_NOTE.match(str(item.get("content", "")))
            return m.group(1) if m else None
    return None


def conversation_key(card: Character, messages: Sequence[dict]) -> str:
    """A fingerprint of a conversation up to and including its last user message.

    Turn N stores its story block under the key of ``history + [user message]``; turn
    N+1 (history grown by that message and the reply) and a regeneration of turn N+1 look
    it up with the key of their history — the same messages up to that user message.
    """
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
                     default=-1)
    data = [[card.id]] + [[str(m.get("role")), str(m.get("content"))] for m in messages[:last_user + 1]]
    return hashlib.sha1(json.dumps(data, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoryState:
    """A conversation's stories as last shown: the block after the system message and the
    anchored blocks ``(history index, stories)`` (`EngineOptions.story_anchor`)."""

    block: list[Any]
    anchored: list[tuple[int, list[Any]]]


def _sid(story: Any) -> str:
    return str(getattr(story, "id", ""))


def keep_block(previous: Sequence[Any], candidates: Sequence[Any], margin: float) -> bool:
    """Whether last turn's story block still serves the new conversation.

    ``candidates`` are this turn's retrieved stories, best first (hybrid scores in 0–1);
    the block is kept when the fresh best story is in it, or when the block's best story
    is among the candidates and scores within ``margin`` of the fresh best. Only the
    closest scene has to hold up (what ChatHaruhi-style retrieval is for); the rest of
    the block is background the model has already seen.
    """
    if not previous or not candidates:
        return False
    ids = {str(getattr(s, "id", "")) for s in previous}
    top = candidates[0]
    if str(getattr(top, "id", "")) in ids:
        return True
    best = max((float(getattr(s, "score", 0.0)) for s in candidates if str(getattr(s, "id", "")) in ids),
               default=None)
    return best is not None and best >= float(getattr(top, "score", 0.0)) - margin


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)


class Engine:
    """Builds prompts and generates replies for one turn at a time.

    Args:
        settings: where data lives, which backend/model/embedder; default from the env.
        backend: an already loaded backend (else `get_backend(settings)` on first use).
        retriever: a retriever (else one over ``settings`` on first use).

    >>> engine = Engine()                                                # doctest: +SKIP
    >>> engine.reply(Turn("sherlock", [], "Hello, Holmes!")).text             # doctest: +SKIP
    '(looks up from his chemicals) Watson! …'
    """

    def __init__(self, settings: Settings | None = None, *, backend: "Backend | None" = None,
                 retriever: "Retriever | None" = None) -> None:
        self.settings = settings or Settings.from_env()
        self._backend = backend
        self._retriever = retriever
        self._director: StageDirector | None = None
        self._composers: dict[Path | None, Composer] = {}
        self._story_memory: OrderedDict[str, StoryState] = OrderedDict()
        self._lock = threading.Lock()

    # -- lazy parts ---------------------------------------------------------------
    @property
    def backend(self) -> "Backend":
        if self._backend is None:
            from .backends import get_backend

            self._backend = get_backend(self.settings)
        return self._backend

    @property
    def retriever(self) -> "Retriever":
        with self._lock:  # the web UI and API server call one engine from many threads
            if self._retriever is None:
                from .store.retriever import Retriever

                self._retriever = Retriever(self.settings)
        return self._retriever

    @property
    def director(self) -> StageDirector:
        with self._lock:
            if self._director is None:
                from .store.embeddings import get_embedder

                self._director = StageDirector(get_embedder(self.settings.embedder))
        return self._director

    def composer(self, template_dir: Path | None = None) -> Composer:
        """The composer for ``template_dir`` (built-in templates for None), cached."""
        key = Path(template_dir).expanduser().resolve() if template_dir else None
        with self._lock:
            if key not in self._composers:
                self._composers[key] = Composer(template_dir=key)
            return self._composers[key]

    def card(self, card_id: str) -> Character:
        """Load a card by id from the configured card folders."""
        from .cards.library import get_card

        return get_card(card_id, self.settings)

    def _card(self, card: Character | str) -> Character:
        return self.card(card) if isinstance(card, str) else card

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``: the model's tokenizer when loaded, else the approximation."""
        if self._backend is not None:
            return self._backend.count_tokens(text)
        from .tokens import approx_tokens

        return approx_tokens(text)

    # -- one turn -----------------------------------------------------------------
    def prepare(self, turn: Turn) -> ComposedPrompt:
        """Retrieve, recall, direct and compose the prompt for ``turn`` (no generation).

        This is exactly what a real turn sends (`roleplay prompt` and the Author tab's
        preview use it); leave parts out with ``turn.options`` or ``turn.memories=[]``.
        """
        return self._prepare(self._resolve(turn))[0]

    def request(self, turn: Turn, params: "SamplingParams | None" = None) -> tuple[ComposedPrompt, "SamplingParams"]:
        """The prompt and the sampling parameters that ``turn`` sends to the backend (no
        generation): stop strings added, ``max_tokens`` fitted to the context. Benchmarks
        use it to send the engine's exact requests to a model directly."""
        _, prompt, _, params = self._request(turn, params)
        return prompt, params

    def _request(self, turn: Turn, params: "SamplingParams | None") -> tuple[Turn, ComposedPrompt, dict, "SamplingParams"]:
        backend = self.backend  # loaded first so budgets count with the model's tokenizer
        turn = self._resolve(turn)
        prompt, timings = self._prepare(turn)
        return turn, prompt, timings, self._fit_reply(self._stop_params(params, turn), prompt, backend)

    def _resolve(self, turn: Turn) -> Turn:
        """``turn`` with its card loaded, user name and options defaulted, memories recalled."""
        card = self._card(turn.card)
        if not isinstance(turn.history, (list, tuple)):
            raise ConfigError("history must be a list of {'role', 'name', 'content'} messages")
        if turn.mode not in ("reply", "continue", "impersonate"):
            raise ConfigError(f"turn mode {turn.mode!r}: choose reply, continue or impersonate")
        turn = replace(turn, card=card, user_name=turn.user_name or card.user_name,
                       options=turn.options or EngineOptions())
        if turn.memories is None:
            turn = replace(turn, memories=self._recall(turn) if turn.memory_user else [])
        return turn

    def _conversation(self, turn: Turn) -> list[str]:
        recent = [str(m.get("content", "")) for m in turn.history[-CONTEXT_MESSAGES:] if isinstance(m, dict)]
        return [t for t in [*recent, turn.user_text] if t and t.strip()] or [""]

    def _recall(self, turn: Turn) -> list[Any]:
        """The memories of ``turn.memory_user`` for this turn (the one memory lookup)."""
        from .errors import RoleplayError
        from .memory import recall

        try:
            found = recall(self.settings, user=str(turn.memory_user), character=turn.card.id,
                           conversation=self._conversation(turn), budget_tokens=self.settings.budgets.memories,
                           count_tokens=self.count_tokens)
        except RoleplayError:
            return []  # memory enriches a turn; a broken store must not fail the chat
        return list(found)  # Memory objects: text, kind (fact | event) and time reach the composer

    def _prepare(self, turn: Turn) -> tuple[ComposedPrompt, dict[str, float]]:
        card, options, user_text, history = turn.card, turn.options, turn.user_text, turn.history
        assert isinstance(card, Character) and options is not None  # subtle: _resolve ran first
        if turn.mode != "reply":
            options = options.model_copy(update={"stage_mode": "off"})  # the text decides, not a new note
        timings: dict[str, float] = {}
        conversation = self._conversation(turn)
        budgets = self.fitted_budgets(turn)

        start = time.perf_counter()
        stories: list[Any] = []
        anchored: list[tuple[int, list[Any]]] = []
        lore: list[Any] = []
        if not options.plain:
            if options.retrieval and card.all_stories():
                stories, anchored = self._stories(card, history, conversation, options, budgets.stories)
            if options.lorebook and card.lorebook:
                lore = self.retriever.lore(card, conversation, budget_tokens=budgets.lorebook,
                                           count_tokens=self.count_tokens)
        timings["retrieve_ms"] = _ms(start)

        start = time.perf_counter()
        note: StageNote | None = None
        if not options.plain and options.stage_mode != "off":
            # newest anchored stories first: they are about where the chat is now
            shown = [st for _, items in reversed(anchored) for st in items] + stories
            note = self.director.direct(card, user_text or conversation[-1], shown,
                                        previous=last_note(history, card))
            # Palette notes may name {{user}}/{{char}}: the prefill is card text too.
            note.note = macros.expand(note.note, char=card.name, user=turn.user_name)
        timings["stage_ms"] = _ms(start)

        start = time.perf_counter()
        composer = self.composer(options.template_dir)
        prompt = composer.compose(
            card, history, user_text, user_name=turn.user_name, user_persona=turn.user_persona,
            stories=stories, lore=lore, memories=turn.memories or (), summary=turn.summary, note=note,
            stage_mode=options.stage_mode, budgets=budgets, count_tokens=self.count_tokens,
            others=list(turn.others), plain=options.plain, cache_friendly=options.cache_friendly,
            history_trim_to=options.history_trim_to, anchored=anchored)
        messages = [m for m in prompt.messages if not (m["role"] == "assistant" and m is prompt.messages[-1]
                                                       and prompt.prefill)]
        messages += [{"role": "system", "content": t} for t in turn.instructions if t.strip()]
        if turn.mode == "continue":
            messages.append({"role": "assistant", "content": turn.partial})
        elif turn.mode == "impersonate":
            messages.append({"role": "system", "content": composer.render(
                "impersonate", card_language(card), char=card.name, user=turn.user_name,
                user_persona=turn.user_persona)})
        elif prompt.prefill:
            messages.append({"role": "assistant", "content": prompt.prefill})
        prompt.messages = messages
        timings["compose_ms"] = _ms(start)
        if prompt.stories and user_text and options.story_reuse > 0:
            self._remember(conversation_key(card, [*history, {"role": "user", "content": user_text}]),
                           StoryState(list(prompt.stories), list(prompt.anchored)))
        return prompt, timings

    def fitted_budgets(self, turn: Turn) -> Budgets:
        """``settings.budgets``, scaled down (in steps of 5 %) when they could not all be
        full within the loaded model's context.

        The budgets do not count the card's own text (persona, scenario, rules: ~650
        tokens for the bundled English cards, ~1,400 for the Chinese ones in SmolLM2's
        tokenizer), so full budgets plus a reply can overflow a 4,096-token context. Only
        parts this chat can fill count: the lorebook up to the card's enabled entries,
        memories only for a memory user (or given memories), the summary only once there
        is one. The scale depends on the card, the user persona and those facts, not on
        the turn's text, so the budgets — and the history's trim points — stay put.
        """
        budgets = self.settings.budgets
        backend = self._backend
        context = getattr(backend, "context_length", None) if backend is not None else None
        ids = getattr(backend, "prompt_ids", None)
        if not isinstance(context, int) or not callable(ids):
            return budgets
        card = turn.card
        assert isinstance(card, Character)
        empty = Budgets(stories=0, lorebook=0, memories=0, history=0, summary=0)
        bare = self.composer(turn.options.template_dir if turn.options else None).compose(
            card, [], "", user_name=turn.user_name or card.user_name, user_persona=turn.user_persona,
            budgets=empty, count_tokens=self.count_tokens, stage_mode="off", others=list(turn.others),
            plain=bool(turn.options and turn.options.plain))
        room = context - REPLY_RESERVE - FRAMING - len(ids(bare.messages))
        lore = sum(self.count_tokens(e.content) for e in card.lorebook if e.enabled)
        used = {"stories": budgets.stories, "history": budgets.history,
                "lorebook": min(budgets.lorebook, lore),
                "memories": budgets.memories if (turn.memory_user or turn.memories) else 0,
                "summary": budgets.summary if turn.summary else 0}
        total = sum(used.values())
        if total <= room:
            return budgets
        scale = max(0.0, math.floor(20 * room / total) / 20) if total else 0.0
        return Budgets(**{k: int(v * scale) for k, v in budgets.model_dump().items()})

    def _stories(self, card: Character, history: Sequence[dict], conversation: list[str],
                 options: EngineOptions, budget: int) -> tuple[list[Any], list[tuple[int, list[Any]]]]:
        """The story block (best first) and the anchored blocks ``(history index, stories)``.

        With ``story_reuse`` > 0 and a remembered state for this conversation:
        - *sticky*: block and anchored stories stay as they were while the fresh best story
          is among them or their best scores within ``story_keep_margin`` of the fresh
          best (`keep_block`); the prompt then stays identical up to the new message;
        - *anchor*: otherwise the fresh best story, and other new ones within the margin
          of it, become a new anchored block before the new message, if they fit the
          anchored share (``story_anchor``) left over;
        - *give way*: if not, the oldest anchored blocks leave until the fresh best fits,
          and the room they leave goes to the new topic's best stories in order;
        - *rebuild*: else (no anchored block left to give way) the longest start of the
          old block whose stories are all still candidates (within ``story_reuse`` of the
          block's budget) is kept, the best new stories fill the block, and the anchored
          blocks are dropped.
        """
        anchor_share = 0.0 if options.cache_friendly or options.story_reuse <= 0 else options.story_anchor
        block_budget = int(budget * (1.0 - anchor_share))
        self.retriever.ensure_indexed(card)
        with self._lock:
            state = self._story_memory.get(conversation_key(card, history)) if options.story_reuse > 0 else None
        previous = list(state.block) if state else []
        anchored = [(at, list(items)) for at, items in state.anchored] if state and anchor_share else []
        pool_budget = budget * 3 if previous else budget  # a wider pool, so old stories can still qualify
        candidates = self.retriever.stories(card, conversation, budget_tokens=pool_budget,
                                            count_tokens=self.count_tokens,
                                            k=None if previous else options.story_k,
                                            **({"exclude_sources": options.exclude_sources}
                                               if options.exclude_sources else {}))
        if options.exclude_sources:  # and never the remembered copy of a left-out scene
            def allowed(items: list[Any]) -> list[Any]:
                return [s for s in items if getattr(s, "source", None) not in options.exclude_sources]
            previous = allowed(previous)
            anchored = [(at, allowed(items)) for at, items in anchored]
            anchored = [(at, items) for at, items in anchored if items]
        if not previous:
            return self._fill([], candidates, block_budget, budget, options.story_k), []
        by_id = {_sid(s): s for s in candidates}

        def fresh(items: list[Any]) -> list[Any]:  # the same texts, fresh objects for their scores
            return [by_id.get(_sid(s), s) for s in items]

        present = previous + [s for _, items in anchored for s in items]
        if options.story_keep_margin is not None and keep_block(present, candidates, options.story_keep_margin):
            return fresh(previous), [(at, fresh(items)) for at, items in anchored]
        if anchor_share and candidates:
            margin = options.story_keep_margin or 0.0
            best = float(getattr(candidates[0], "score", 0.0))
            gave_way = False
            while True:
                present = previous + [s for _, items in anchored for s in items]
                ids = {_sid(s) for s in present}
                new = [s for s in candidates if _sid(s) not in ids]
                room = budget - sum(self._tokens(s) for s in present)
                add: list[Any] = []
                for story in new:
                    # after a block gave way, its room goes to the new topic's next best
                    # stories too (a follow-up then finds more than the one scene)
                    if (story is not new[0] and not gave_way
                            and float(getattr(story, "score", 0.0)) < best - margin):
                        break
                    if self._tokens(story) <= room:
                        add.append(story)
                        room -= self._tokens(story)
                if add and add[0] is new[0]:
                    return fresh(previous), [(at, fresh(items)) for at, items in anchored] + [(len(history), add)]
                if not (anchored and new):
                    break
                # the oldest anchored block gives way: dropping it is cheap for a cache that
                # moves what follows (llama.cpp's KV shifting), and for a prefix cache it
                # re-reads less than rebuilding the block after the system message
                anchored = anchored[1:]
                gave_way = True
        kept: list[Any] = []
        used = 0
        for old in previous:
            story = by_id.get(_sid(old))
            if story is None:
                break  # a prefix only: a gap would change everything after it anyway
            # (the first may pass the block's share, as in `_fill`)
            if used + self._tokens(story) > options.story_reuse * (block_budget if kept else budget):
                break
            kept.append(story)
            used += self._tokens(story)
        # the fresh best story always gets in: old stories give way from the end
        top = candidates[0] if candidates else None
        while kept and top is not None and top not in kept and used + self._tokens(top) > block_budget:
            used -= self._tokens(kept.pop())
        return self._fill(kept, candidates, block_budget, budget, options.story_k), []

    def _fill(self, kept: list[Any], candidates: list[Any], limit: int, budget: int, k: int | None) -> list[Any]:
        """``kept``, then the best other candidates while they fit ``limit`` tokens; the best
        story even past ``limit`` when nothing else is in (it still has to fit ``budget``),
        so a small budget whose anchored share leaves no room still gets one story."""
        out, used = list(kept), sum(self._tokens(s) for s in kept)
        ids = {_sid(s) for s in kept}
        for story in candidates:
            tokens = self._tokens(story)
            if _sid(story) not in ids and used + tokens <= (limit if out else budget):
                out.append(story)
                used += tokens
        return out[:k] if k else out

    def _tokens(self, story: Any) -> int:
        return getattr(story, "tokens", None) or self.count_tokens(getattr(story, "text", str(story)))

    def _remember(self, key: str, state: "StoryState") -> None:
        with self._lock:
            self._story_memory[key] = state
            self._story_memory.move_to_end(key)
            while len(self._story_memory) > STORY_MEMORY:
                self._story_memory.popitem(last=False)

    @staticmethod
    def _fit_reply(params: "SamplingParams", prompt: ComposedPrompt, backend: "Backend") -> "SamplingParams":
        """``params`` with ``max_tokens`` lowered to what the model's context leaves after
        the prompt (the reply then ends with ``finish_reason`` "length").

        The one place the room for a reply is counted (on the exact prompt ids); the API
        reports a lowered ``max_tokens`` from here (`Engine.stream`'s ``on_params``).

        Raises:
            ContextOverflow: the prompt alone fills the context.
        """
        from .errors import ContextOverflow

        context = getattr(backend, "context_length", None)
        ids = getattr(backend, "prompt_ids", None)
        if not isinstance(context, int) or not callable(ids):
            return params  # the backend (a remote server) counts for itself
        used = len(ids(prompt.messages))
        room = context - used
        if room < 1:
            raise ContextOverflow(f"the prompt ({used} tokens) leaves no room for a reply in the model's context "
                                  f"of {context} tokens; send a shorter conversation or message")
        if room < params.max_tokens:
            return params.model_copy(update={"max_tokens": room})
        return params

    def _stop_params(self, params: "SamplingParams | None", turn: Turn) -> "SamplingParams":
        """``params`` plus stop strings where another speaker's line would begin."""
        from .backends.base import SamplingParams

        params = params or SamplingParams()
        stops = list(params.stop)
        card = turn.card
        speaking = turn.user_name if turn.mode == "impersonate" else card.name
        for name in [turn.user_name, card.name, *turn.others]:
            if name and name != speaking:
                for s in (f"\n{name}:", f"\n{name}："):
                    if s not in stops and len(stops) < 16:
                        stops.append(s)
        return params.model_copy(update={"stop": stops})

    def stream(self, turn: Turn, params: "SamplingParams | None" = None, *, priority: int = 0,
               on_params: Callable[["SamplingParams"], None] | None = None) -> Iterator[str | Reply]:
        """Yield the reply's post-processed text chunks, then one final `Reply`.

        The first chunk is the prefilled stage note (in ``prefill`` mode); a continuation
        yields only the new text. Stop iterating early to cancel generation.
        ``on_params`` is called, before the first item, with the sampling parameters the
        backend really gets (``max_tokens`` fitted to the context, stop strings added).

        Raises:
            ContextOverflow: the prompt alone fills the model's context.
        """
        total = time.perf_counter()
        turn, prompt, timings, params = self._request(turn, params)
        backend = self.backend
        if on_params is not None:
            on_params(params)
        card = turn.card
        if turn.mode == "impersonate":  # the user's line: cleaned as the user's, not the card's
            speaker = card.model_copy(update={"name": turn.user_name})
            cleaner = StreamCleaner(speaker, speakers=[card.name, *turn.others], user_name=card.name)
        else:
            cleaner = StreamCleaner(card, speakers=list(turn.others), user_name=turn.user_name)
        text: list[str] = []
        start = time.perf_counter()
        # subtle: submitted before the note is shown, so a busy backend refuses the turn
        # (the API's 429) before anything of it was sent
        generation = backend.stream(prompt.messages, params, priority=priority)
        try:
            if turn.mode == "continue":
                cleaner.feed(turn.partial)  # already shown: cleaned along, not sent again
            elif prompt.prefill:
                out = cleaner.feed(prompt.prefill)
                if out:
                    text.append(out)
                    yield out
            for chunk in generation:
                out = cleaner.feed(chunk)
                if out:
                    text.append(out)
                    yield out
                if cleaner.done:
                    break
        finally:
            generation.close()  # cancels the generation when we stopped early
        out = cleaner.finish()
        if out:
            text.append(out)
            yield out
        timings["generate_ms"] = _ms(start)
        timings["total_ms"] = _ms(total)
        yield self._reply(turn, "".join(text), generation, prompt, timings)

    def _reply(self, turn: Turn, text: str, generation: Any, prompt: ComposedPrompt,
               timings: dict[str, float]) -> Reply:
        backend = self.backend
        if turn.mode == "continue":
            text = turn.partial + text  # subtle: the model writes its own leading space (" word")
        elif turn.mode == "impersonate":
            text = text.strip()
        prompt_tokens = generation.prompt_tokens
        if prompt_tokens is None:
            ids = getattr(backend, "prompt_ids", None)
            prompt_tokens = len(ids(prompt.messages)) if callable(ids) else backend.count_tokens(
                backend.render(prompt.messages))
        completion = generation.completion_tokens
        if completion is None:
            completion = backend.count_tokens(generation.text) if generation.text else 0
        note = prompt.note
        return Reply(text=text, emotion=note.emotion if note else "", note=note.note if note else "",
                     intent=note.intent if note else "",
                     story_ids=[str(getattr(s, "id", i)) for i, s in enumerate(prompt.shown_stories())],
                     lore_names=[str(getattr(h, "name", "")) for h in prompt.lore],
                     memories=list(prompt.memories), prompt_tokens=prompt_tokens,
                     completion_tokens=completion, timings=timings,
                     finish_reason=generation.finish_reason or "stop", logprobs=generation.logprobs,
                     prompt=prompt)

    def remember(self, turn: Turn, reply: "Reply | str" = "", *, source: str = "",
                 characters: Sequence[str] | None = None, llm: bool = True) -> None:
        """Hand the turn's memory work to the background worker (a queue put, microseconds).

        Facts the user told (``turn.user_text``) and the character's promises (``reply``)
        are stored for ``turn.memory_user`` with each of ``characters`` (default: the
        turn's card); ``llm`` adds the model pass, at background priority. Nothing without
        a memory user or a user message. Sessions and the API both call this.
        """
        if not turn.memory_user or not turn.user_text.strip() or turn.mode != "reply":
            return
        from .memory.store import get_store, remember
        from .memory.worker import get_worker

        card = self._card(turn.card)
        get_worker().submit(remember, get_store(self.settings), str(turn.memory_user),
                            list(characters or [card.id]), turn.user_text, source,
                            backend=self.backend if llm else None, reply=getattr(reply, "text", reply))

    def reply(self, turn: Turn, params: "SamplingParams | None" = None, *, priority: int = 0) -> Reply:
        """Generate one whole reply (`stream` collected)."""
        *_, final = self.stream(turn, params, priority=priority)
        return final  # type: ignore[return-value]  # stream always ends with its Reply

    def reply_batch(self, turns: Sequence[Turn], params: "SamplingParams | None" = None, *,
                    priority: int = 0) -> list[Reply]:
        """Replies for many independent turns: all submitted at once, so the backend batches
        them (continuous batching, vLLM, llama.cpp slots); results in input order.

        ``params`` is one `SamplingParams` for all, or a list with one per turn.
        """
        turns = list(turns)
        for i, t in enumerate(turns):
            if not isinstance(t, Turn):
                raise ConfigError(f"turns[{i}]: expected a Turn, got {type(t).__name__}")
        per = list(params) if isinstance(params, (list, tuple)) else [params] * len(turns)
        if len(per) != len(turns):
            raise ConfigError(f"reply_batch: {len(per)} sampling parameter sets for {len(turns)} turns")
        if not turns:
            return []
        # load once, before the threads (and import the store's modules on one thread:
        # concurrent first imports of one package can see it half-initialised)
        self.backend, self.retriever, self.director  # noqa: B018
        workers = min(len(turns), max(1, self.backend.max_concurrency))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roleplay-turns") as pool:
            replies = list(pool.map(lambda tp: self.reply(tp[0], tp[1], priority=priority), zip(turns, per)))
        for r in replies:
            r.timings["batch_size"] = len(turns)
        return replies
