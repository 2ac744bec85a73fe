"""The judge model's roles: pairwise verdicts, 1–5 scores, probe checks, and the simulated user.

Two methods, both batched over all conversations of a step:
- ``json``: the judge writes an object (``{"winner": "A", "next_user_message": …}``). Its
  answer is prefilled with ``{"winner": "`` so even a small model starts the object; the
  parser then accepts code fences, text around the object, single quotes, bare keys and
  Python literals, and falls back to a ``winner: A`` pattern. Unparseable answers are
  retried (bounded, new seed) and then counted as failures — never guessed.
- ``logprob``: compare the judge's next-token log-probabilities of "A" and "B" (or of the
  digits 1–5 for scores: the expected score). It always yields a verdict, and works with
  small local models that cannot keep to a JSON format. The user's next message is then
  written in a separate, batched generation by the `UserSimulator`.

Trade-offs: prompts are short and plain English (the judge reads zh dialogue fine in
that frame), Jinja2 templates under ``evaluation/templates/`` rendered by the composer's
strict environment with card macros expanded like everywhere else; the transcript shown
to the judge is clipped to the last turns so the prompt fits small context windows. Randomising the A/B order is the runner's job; this
module only sees "A" and "B".
"""
from __future__ import annotations

import ast
import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..backends.base import Backend, SamplingParams
from ..cards.macros import expand
from ..cards.schema import Character
from ..errors import BackendError

Method = Literal["json", "logprob"]

#: CharacterEval-style dimensions and what the judge is told each means.
DIMENSIONS: dict[str, str] = {
    "fluency": "the reply reads smoothly, with correct grammar and natural wording",
    "coherence": "the reply follows from what was just said and stays on topic",
    "consistency": "the reply agrees with the character's earlier replies in this conversation",
    "persona_behavior": "actions and attitudes fit the character's personality",
    "persona_utterance": "the way of speaking (words, tone, catchphrases) fits the character",
    "knowledge_accuracy": "facts about the character's own world are right",
    "knowledge_hallucination": "the reply does not invent knowledge the character cannot have (5 = none invented)",
    "human_likeness": "the reply sounds like a person, not an assistant or a machine",
    "empathy": "the reply notices and answers the other person's feelings",
}
DEFAULT_DIMENSIONS = ("fluency", "coherence", "persona_behavior", "persona_utterance", "human_likeness")

_TRANSCRIPT_TURNS = 4
_CLIP = 400


@dataclass
class Context:
    """What the judge and the simulated user know about one conversation."""

    card: Character
    user_name: str
    user_persona: str = ""
    scene: str = ""
    objectives: str = ""
    progression: str = ""
    #: ``[{"role": "user"|"assistant", "name": str, "content": str}]``, oldest first.
    history: list[dict] = field(default_factory=list)


@dataclass
class Verdict:
    """One pairwise judgement. ``winner`` is "A", "B", "tie", or None when it failed."""

    winner: str | None
    next_user: str = ""
    finished: bool = False
    reason: str = ""
    raw: list[str] = field(default_factory=list)
    attempts: int = 0
    failed: bool = False
    logprobs: dict[str, float] | None = None
    prompt: list[dict] = field(default_factory=list)

    #: With several judges: each judge's winner ("A", "B", "tie" or None), in judge order.
    votes: list[str | None] | None = None

    def as_dict(self) -> dict:
        out = {"winner": self.winner, "next_user": self.next_user, "finished": self.finished,
               "reason": self.reason, "raw": self.raw, "attempts": self.attempts, "failed": self.failed,
               "logprobs": self.logprobs}
        if self.votes is not None:
            out["votes"] = self.votes
        return out


def vote(verdicts: list[Verdict]) -> Verdict:
    """One verdict from several judges' verdicts on the same pair: the majority of A/B votes.

    Equal A and B votes make a tie; when every judge failed, the vote failed. The first
    judge's verdict supplies the next user message and the finished flag (it is also the
    simulated user), and every judge's raw text is kept.

    >>> vote([Verdict("A"), Verdict("B"), Verdict("A")]).winner
    'A'
    >>> vote([Verdict("A"), Verdict(None, failed=True)]).votes
    ['A', None]
    """
    if not verdicts:
        raise ValueError("vote() needs at least one verdict")
    first = verdicts[0]
    votes = [None if v.failed else v.winner for v in verdicts]
    a, b = votes.count("A"), votes.count("B")
    if all(v is None for v in votes):
        winner, failed = None, True
    else:
        winner, failed = ("A" if a > b else "B" if b > a else "tie"), False
    return Verdict(winner=winner, next_user=first.next_user, finished=first.finished, reason=first.reason,
                   raw=[r for v in verdicts for r in v.raw], attempts=max(v.attempts for v in verdicts),
                   failed=failed, logprobs=first.logprobs, prompt=first.prompt, votes=votes)


# ---------------------------------------------------------------- robust JSON parsing

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{…}`` span in ``text``, respecting quoted strings."""
    out, depth, start, quote, esc = [], 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'" and depth > 0:
            # subtle: an apostrophe inside a bare word (don't) is not a quote
            if ch == "'" and i > 0 and text[i - 1].isalnum():
                continue
            quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    if depth > 0 and start >= 0:  # unterminated: try closing it
        out.append(text[start:] + ("\"" if quote else "") + "}" * depth)
    return out


def parse_json_object(text: str) -> dict | None:
    """The first JSON-like object in ``text`` (fences, trailing text, single quotes…), or None.

    >>> parse_json_object("Sure! ```json\\n{'winner': 'A', next: true}\\n``` done")
    {'winner': 'A', 'next': True}
    """
    candidates: list[str] = [m.group(1) for m in _FENCE.finditer(text)]
    candidates.append(text)
    for cand in candidates:
        for obj in _balanced_objects(cand):
            parsed = _loads_lenient(obj)
            if isinstance(parsed, dict):
                return parsed
    return None


def _loads_lenient(s: str) -> Any:
    try:
        return json.loads(s)
    except (json.JSONDecodeError, ValueError):
        pass
    fixed = re.sub(r",\s*([}\]])", r"\1", s)  # trailing commas
    fixed = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', fixed)  # bare keys
    try:
        return json.loads(fixed)
    except (json.JSONDecodeError, ValueError):
        pass
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", fixed)))
    try:
        return ast.literal_eval(py)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


# subtle: the negative lookahead rejects a copied format line ("A" or "B" or "tie"), which
# small judges often echo instead of answering.
_WINNER_RE = re.compile(r"winner\W{0,6}(model[_ ]?)?([AB]|tie)\b(?![\"']?\s*(?:or\b|[|/]))", re.IGNORECASE)


def parse_verdict(text: str) -> dict | None:
    """A normalised verdict ``{winner, next_user, finished, reason}`` from the judge's text."""
    obj = parse_json_object(text)
    winner = None
    if obj is not None:
        raw_w = str(obj.get("winner", obj.get("better", ""))).strip().lower()
        raw_w = raw_w.removeprefix("model_").removeprefix("model ").removeprefix("reply ")
        winner = {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie"}.get(raw_w)
    if winner is None:
        if obj is not None:  # an object without a valid winner (e.g. the echoed template)
            return None
        m = _WINNER_RE.search(text)
        if not m:
            return None
        winner = "tie" if m.group(2).lower() == "tie" else m.group(2).upper()
        obj = obj or {}
    next_user = obj.get("next_user_message", obj.get("next_round_user_speaks", obj.get("next_user", "")))
    finished = obj.get("scene_finished", obj.get("is_chat_finished", False))
    return {"winner": winner, "next_user": str(next_user or "").strip(),
            "finished": finished is True or str(finished).lower() == "true",
            "reason": str(obj.get("reason", obj.get("decision_reason", "")) or "")}


# ---------------------------------------------------------------- prompts

def _clip(text: str, n: int = _CLIP) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + "…"


_TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.lru_cache(maxsize=1)
def _composer():
    """The composer's strict Jinja2 environment, pointed at the evaluation templates.

    subtle: passed as the composer's ``template_dir``, so they render in its sandboxed,
    StrictUndefined environment with its error handling — one environment, not two.
    """
    from ..compose.composer import Composer

    return Composer(template_dir=_TEMPLATES)


def render(part: str, ctx: Context, **extra: Any) -> str:
    """Template ``{part}_{language}.j2`` (English fallback) with the context's card fields.

    Card text is macro-expanded (``{{char}}``, ``<USER>``…) with `cards.macros.expand` and
    passed in as data, never as template source.
    """
    card = ctx.card

    def x(text: str) -> str:
        return expand(text or "", char=card.name, user=ctx.user_name).strip()

    lang = (card.language or "en").lower().split("-")[0].split("_")[0]
    values: dict[str, Any] = {
        "char": card.name, "user": ctx.user_name, "persona": _clip(x(card.persona), 600),
        "scenario": _clip(x(card.scenario), 300) if card.scenario.strip() else "",
        "scene": _clip(ctx.scene, 700) if ctx.scene.strip() else "",
        "unknown": list(card.knowledge.unknown[:8]),
        "user_persona": _clip(ctx.user_persona, 300) if ctx.user_persona else "",
        "objectives": _clip(ctx.objectives, 500) if ctx.objectives.strip() else "",
        "progression": _clip(ctx.progression, 300) if ctx.progression.strip() else ""}
    return _composer().render(part, lang, **{**values, **extra})


def transcript(ctx: Context, *, turns: int = _TRANSCRIPT_TURNS) -> str:
    lines = [f"{m.get('name') or m['role']}: {_clip(m['content'], 400)}" for m in ctx.history[-2 * turns:]]
    return "\n".join(lines) if lines else "(the conversation has not started)"


def pairwise_messages(ctx: Context, reply_a: str, reply_b: str, *, method: Method) -> list[dict]:
    msgs = [{"role": "system", "content": render("judge_pairwise_system", ctx)},
            {"role": "user", "content": render("judge_pairwise", ctx, transcript=transcript(ctx), method=method,
                                               reply_a=_clip(reply_a), reply_b=_clip(reply_b))}]
    if method == "json":
        msgs.append({"role": "assistant", "content": '{"winner": "'})
    return msgs


def score_messages(ctx: Context, reply: str, dims: list[str], *, method: Method) -> list[dict]:
    if method != "json" and len(dims) != 1:
        raise ValueError("the logprob method scores one dimension per prompt")
    msgs = [{"role": "system", "content": render("judge_score_system", ctx)},
            {"role": "user", "content": render("judge_score", ctx, transcript=transcript(ctx), reply=_clip(reply),
                                               method=method, criteria=[(d, DIMENSIONS[d]) for d in dims])}]
    if method == "json":
        msgs.append({"role": "assistant", "content": "{"})
    return msgs


def probe_messages(ctx: Context, question: str, reply: str) -> list[dict]:
    return [{"role": "system", "content": render("judge_probe_system", ctx)},
            {"role": "user", "content": render("judge_probe", ctx, question=_clip(question, 300), reply=_clip(reply))}]


def _softmax(logps: dict[str, float]) -> dict[str, float]:
    m = max(logps.values())
    ex = {k: math.exp(v - m) for k, v in logps.items()}
    total = sum(ex.values())
    return {k: v / total for k, v in ex.items()}


# ---------------------------------------------------------------- the judge

class Judge:
    """A judge model: pairwise verdicts, scores and probe checks, batched per call."""

    def __init__(self, backend: Backend, *, method: Method = "logprob", retries: int = 2,
                 max_tokens: int = 160, seed: int = 0) -> None:
        if method not in ("json", "logprob"):
            raise ValueError(f"unknown judge method {method!r}")
        self.backend = backend
        self.method = method
        self.retries = retries
        self.max_tokens = max_tokens
        self.seed = seed

    def _params(self, attempt: int, max_tokens: int | None = None) -> SamplingParams:
        # attempt 0 greedy (reproducible); retries sample with a new seed to leave a bad rut
        return SamplingParams(max_tokens=max_tokens or self.max_tokens, temperature=0.0 if attempt == 0 else 0.7,
                              top_p=0.95, repetition_penalty=1.05, seed=self.seed + attempt)

    def _generate_parsed(self, prompts: list[list[dict]], parse, *, max_tokens: int | None = None):
        """Generate for every prompt, retrying unparsed ones; ``(parsed|None, raws, attempts)``."""
        n = len(prompts)
        parsed: list[Any] = [None] * n
        raws: list[list[str]] = [[] for _ in range(n)]
        attempts = [0] * n
        todo = list(range(n))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            outs = self.backend.generate_batch([prompts[i] for i in todo], self._params(attempt, max_tokens))
            still = []
            for i, out in zip(todo, outs):
                prefill = prompts[i][-1]["content"] if prompts[i][-1]["role"] == "assistant" else ""
                text = prefill + out
                raws[i].append(text)
                attempts[i] += 1
                parsed[i] = parse(text)
                if parsed[i] is None:
                    still.append(i)
            todo = still
        return parsed, raws, attempts

    def pairwise(self, items: list[tuple[Context, str, str]]) -> list[Verdict]:
        """Verdicts for ``(context, reply_a, reply_b)`` triples (one batched call per attempt)."""
        prompts = [pairwise_messages(ctx, a, b, method=self.method) for ctx, a, b in items]
        if self.method == "json":
            parsed, raws, attempts = self._generate_parsed(prompts, parse_verdict)
            out = []
            for p, raw, att, prompt in zip(parsed, raws, attempts, prompts):
                if p is None:
                    out.append(Verdict(winner=None, raw=raw, attempts=att, failed=True, prompt=prompt))
                else:
                    out.append(Verdict(winner=p["winner"], next_user=p["next_user"], finished=p["finished"],
                                       reason=p["reason"], raw=raw, attempts=att, prompt=prompt))
            return out
        out = []
        for prompt in prompts:
            try:
                lp = self.backend.choice_logprobs(prompt, ["A", "B"])
            except BackendError as exc:
                out.append(Verdict(winner=None, raw=[str(exc)], attempts=1, failed=True, prompt=prompt))
                continue
            a, b = lp.get("A", -math.inf), lp.get("B", -math.inf)
            winner = "tie" if a == b else ("A" if a > b else "B")
            out.append(Verdict(winner=winner, raw=[json.dumps(lp)], attempts=1, logprobs=lp, prompt=prompt))
        return out

    def score(self, items: list[tuple[Context, str]], dims: list[str]) -> list[dict]:
        """Per reply: ``{"scores": {dim: float|None}, "raw": [...], "failed": bool}``."""
        for d in dims:
            if d not in DIMENSIONS:
                raise ValueError(f"unknown dimension {d!r}; choose from {', '.join(DIMENSIONS)}")
        if self.method == "json":
            prompts = [score_messages(ctx, r, list(dims), method="json") for ctx, r in items]

            def parse(text: str) -> dict | None:
                obj = parse_json_object(text)
                if not obj:
                    return None
                vals = {}
                for d in dims:
                    try:
                        v = float(obj.get(d))
                    except (TypeError, ValueError):
                        return None
                    if not 1 <= v <= 5:
                        return None
                    vals[d] = v
                return vals

            parsed, raws, attempts = self._generate_parsed(prompts, parse, max_tokens=16 + 12 * len(dims))
            return [{"scores": p or {d: None for d in dims}, "raw": raw, "attempts": att, "failed": p is None}
                    for p, raw, att in zip(parsed, raws, attempts)]
        out = []
        digits = ["1", "2", "3", "4", "5"]
        for ctx, reply in items:
            scores, raw, failed = {}, [], False
            for d in dims:
                try:
                    lp = self.backend.choice_logprobs(score_messages(ctx, reply, [d], method="logprob"), digits)
                except BackendError as exc:
                    scores[d], failed = None, True
                    raw.append(str(exc))
                    continue
                probs = _softmax(lp)
                scores[d] = sum(int(k) * p for k, p in probs.items())
                raw.append(json.dumps(lp))
            out.append({"scores": scores, "raw": raw, "attempts": 1, "failed": failed})
        return out

    def probe(self, items: list[tuple[Context, str, str]]) -> list[bool | None]:
        """The judge's yes/no on ``(context, question, reply)``: admits not knowing, in character."""
        out: list[bool | None] = []
        for ctx, q, r in items:
            try:
                lp = self.backend.choice_logprobs(probe_messages(ctx, q, r), ["Yes", "No"])
            except BackendError:
                out.append(None)
                continue
            out.append(lp.get("Yes", -math.inf) > lp.get("No", -math.inf))
        return out


# ---------------------------------------------------------------- the simulated user

_NAME_PREFIX = re.compile(r"^\s*[\w .'\u3400-\u9fff-]{1,30}[:：]\s*")


class UserSimulator:
    """Writes the user's next message (batched), in the persona the suite item gives."""

    def __init__(self, backend: Backend, *, max_tokens: int = 60, seed: int = 0) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.seed = seed

    def messages(self, ctx: Context) -> list[dict]:
        card = ctx.card
        scene = ctx.scene or card.scenario
        system = render("user_simulator", ctx, scene=_clip(expand(scene, char=card.name, user=ctx.user_name), 400)
                        if scene else "")
        # Roles flipped: the character speaks as "user", the simulated user as "assistant".
        msgs = [{"role": "system", "content": system}]
        for m in ctx.history[-2 * _TRANSCRIPT_TURNS:]:
            role = "assistant" if m["role"] == "user" else "user"
            msgs.append({"role": role, "content": _clip(m["content"], 400)})
        if len(msgs) == 1 or msgs[-1]["role"] == "assistant":
            msgs.append({"role": "user", "content": render("user_start", ctx)})
        return msgs

    def next_messages(self, contexts: list[Context]) -> list[tuple[str, str, bool]]:
        """``(message, raw, fallback_used)`` per context; a fallback line when empty."""
        if not contexts:
            return []
        prompts = [self.messages(c) for c in contexts]
        params = SamplingParams(max_tokens=self.max_tokens, temperature=0.7, top_p=0.9,
                                repetition_penalty=1.1, seed=self.seed)
        outs = self.backend.generate_batch(prompts, params)
        result = []
        for ctx, raw in zip(contexts, outs):
            text = clean_user_text(raw, user_name=ctx.user_name, char_name=ctx.card.name)
            if text:
                result.append((text, raw, False))
            else:
                zh = ctx.card.language.lower().startswith("zh")
                result.append(("然后呢？" if zh else "And then what?", raw, True))
        return result


def clean_user_text(raw: str, *, user_name: str, char_name: str) -> str:
    """First paragraph of a simulated user's message, without a ``Name:`` prefix or the reply."""
    text = raw.strip().split("\n\n")[0].strip()
    text = _NAME_PREFIX.sub("", text, count=1) if text.lower().startswith(
        (user_name.lower(), "user", "me")) else text
    for marker in (f"\n{char_name}:", f"\n{char_name}：", f"{char_name}:", f"{char_name}："):
        idx = text.find(marker)
        if idx > 0:
            text = text[:idx]
    return text.strip().strip('"').strip()[:400]
