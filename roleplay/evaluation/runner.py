"""The batched, resumable evaluation loop.

A *match* is one suite item played by two systems (pairwise mode, RPBench-Auto style) or
by all systems at once (score mode). Matches advance in lock-step: each step gathers the
current turn of every active match and sends them to the backend together — one
``reply_batch`` per system, one judge batch, one simulated-user batch — instead of one
request at a time. A window of ``batch_size`` matches is active; when one finishes its
record is appended to ``results.jsonl`` (flushed and fsynced) and the next match joins,
so an interrupted run loses at most the matches in flight, and re-running the same
command skips the finished ones.

Trade-offs:
- The window keeps batches full and resume granular; it does not reorder the suite, so
  results are reproducible for a given seed and batch size (sampling on a batched
  backend can differ slightly between batch sizes; greedy decoding does not).
- A/B order is drawn per turn from a generator seeded by the run seed and the match key,
  so it does not depend on which other matches share the batch. A share of turns
  (``both_orders``) is judged twice, in both orders, to measure position bias.
- The winner's reply continues the history; on a tie or a judge failure the reply that
  continues is drawn at random (so failures do not favour either side).
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..cards.schema import Character
from ..cards.yaml_io import atomic_write
from ..config import Settings
from ..errors import ConfigError, invalid
from . import metrics as M
from .judge import DEFAULT_DIMENSIONS, DIMENSIONS, Context, Judge, UserSimulator, Verdict, vote
from .suite import Suite, SuiteItem, item_character, item_opening
from .systems import SystemPool, SystemSpec, resolve_system

RESULTS = "results.jsonl"
RUN_FILE = "run.json"


class JudgeSpec(BaseModel):
    """The judge (also the simulated user): backend/model None mean the run's defaults."""

    model_config = ConfigDict(extra="forbid")
    backend: str | None = None
    model: str | None = None
    method: Literal["json", "logprob"] = "logprob"
    retries: int = Field(2, ge=0, le=10)
    max_tokens: int = Field(160, ge=8, le=4096)
    user_max_tokens: int = Field(60, ge=4, le=1024)


class RunConfig(BaseModel):
    """Everything that decides a run's results (saved as ``run.json`` beside them)."""

    model_config = ConfigDict(extra="forbid")

    #: Systems under test; presets (``engine``, ``plain``, ``plain@MODEL``) or mappings.
    systems: list[SystemSpec | str | dict] = Field(default_factory=lambda: ["engine", "plain"], min_length=1)
    #: The system every other one is compared with in pairwise mode (default: the last).
    baseline: str | None = None
    #: ``baseline``: each system against the baseline; ``all``: every pair (round robin).
    pairs: Literal["baseline", "all"] = "baseline"
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    #: More judges that vote with ``judge`` on every pairwise verdict (majority; agreement reported).
    judges: list[JudgeSpec] = Field(default_factory=list)
    mode: Literal["pairwise", "score"] = "pairwise"
    dimensions: list[str] = Field(default_factory=lambda: list(DEFAULT_DIMENSIONS))
    turns: int | None = Field(None, ge=1, le=100)
    batch_size: int = Field(8, ge=1, le=1024)
    seed: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)
    max_tokens: int = Field(120, ge=1, le=8192)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    #: Share of pairwise turns judged in both A/B orders (position-bias check).
    both_orders: float = Field(0.25, ge=0.0, le=1.0)
    probes: bool = True
    #: Embed replies to measure style similarity to the card's own lines.
    style_similarity: bool = True

    def resolved(self) -> list[SystemSpec]:
        specs = [resolve_system(s) for s in self.systems]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"system names must be unique, got {names}")
        if self.mode == "pairwise" and len(specs) < 2:
            raise ConfigError("pairwise mode needs at least two systems (a candidate and a baseline)")
        if self.baseline is not None and self.baseline not in names:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the systems {names}")
        if self.judges and self.mode != "pairwise":
            raise ConfigError("several judges vote on pairwise verdicts only; use mode: pairwise or one judge")
        bad = [d for d in self.dimensions if d not in DIMENSIONS]
        if bad:
            raise ConfigError(f"unknown dimension(s) {bad}; choose from {', '.join(DIMENSIONS)}")
        return specs

    def fingerprint(self) -> str:
        """What must match for a run folder to be resumed (not batch size or limit)."""
        data = self.model_dump(mode="json", exclude={"batch_size", "limit"})
        data["systems"] = [s.model_dump(mode="json") for s in self.resolved()]
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_run_config(path: str | Path) -> RunConfig:
    """A run config from YAML; errors name the file and field."""
    from ..cards.yaml_io import parse_yaml, read_text
    from ..errors import CardError

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"run config {p}: no such file")
    try:
        raw = parse_yaml(read_text(p), file=str(p))
    except CardError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a run config is a mapping (systems:, judge:, mode:, turns: …)")
    try:
        return RunConfig.model_validate(json.loads(json.dumps(raw)))
    except ValidationError as exc:
        raise invalid(exc, f"{p}: ") from None


@dataclass
class Match:
    """One item played by ``systems``; the mutable state of the loop."""

    key: str
    item: SuiteItem
    card: Character
    systems: list[str]
    ctx: Context
    turns: int
    rng: random.Random
    pending_user: str | None = None
    user_source: str = ""
    turn: int = 0
    phase: str = "turn"  # turn | probe | done
    record: dict = field(default_factory=dict)


def _match_key(item_id: str, systems: list[str], mode: str) -> str:
    return f"{item_id}::{'~'.join(systems) if mode == 'pairwise' else 'score'}"


def read_results(run_dir: Path) -> list[dict]:
    """Records in ``results.jsonl``; a torn last line (crash mid-write) is dropped."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def prepare_run_folder(out_dir: Path, fingerprint: str, meta: dict) -> None:
    """Create or reopen a run folder: refuse one made with other settings, (re)write
    ``run.json`` with ``meta``, and drop a torn last line of ``results.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            old = {}
        if old.get("fingerprint") not in (None, fingerprint):
            raise ConfigError(f"{out_dir} holds a run with different settings; "
                              "choose another output folder (-o) or delete that one")
    meta = {"fingerprint": fingerprint, **meta, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(run_file, json.dumps(meta, ensure_ascii=False, indent=2))
    _repair_results(out_dir / RESULTS)


def _repair_results(path: Path) -> None:
    """Drop a torn last line so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write(path, data[: data.rfind(b"\n") + 1])


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line, flushed and fsynced (a crash loses at most the line in flight)."""
    import os

    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class Runner:
    """Runs a suite under a config into a run folder. Use `run_eval` for the one-call form."""

    def __init__(self, suite: Suite, config: RunConfig, out_dir: str | Path, *,
                 settings: Settings | None = None, progress: bool = True) -> None:
        self.suite = suite
        self.config = config
        self.specs = {s.name: s for s in config.resolved()}
        self.out_dir = Path(out_dir)
        self.settings = settings or Settings.from_env()
        self.progress = progress
        self.pool = SystemPool(self.settings)
        self._judge: Judge | None = None
        self._voters: list[Judge] | None = None
        self._user: UserSimulator | None = None
        self._embedder = None
        self.stats = {"steps": 0, "reply_calls": 0, "replies": 0, "judge_calls": 0}

    # ------------------------------------------------------------ setup
    @property
    def judge(self) -> Judge:
        if self._judge is None:
            j = self.config.judge
            backend = self.pool.backend(j.backend, j.model)
            self._judge = Judge(backend, method=j.method, retries=j.retries, max_tokens=j.max_tokens,
                                seed=self.config.seed)
            self._user = UserSimulator(backend, max_tokens=j.user_max_tokens, seed=self.config.seed)
        return self._judge

    @property
    def voters(self) -> list[Judge]:
        """``judge`` then every extra judge of ``judges`` (one entry when there are none)."""
        if self._voters is None:
            extra = []
            for j in self.config.judges:
                backend = self.pool.backend(j.backend, j.model)
                extra.append(Judge(backend, method=j.method, retries=j.retries, max_tokens=j.max_tokens,
                                   seed=self.config.seed))
            self._voters = [self.judge, *extra]
        return self._voters

    def pairwise(self, triples: list[tuple[Context, str, str]]) -> list[Verdict]:
        """Verdicts for ``triples``: the judge's own, or the vote of all judges."""
        if not self.config.judges:
            return self.judge.pairwise(triples)
        per_judge = [j.pairwise(triples) for j in self.voters]
        return [vote([vs[i] for vs in per_judge]) for i in range(len(triples))]

    @property
    def user(self) -> UserSimulator:
        _ = self.judge
        assert self._user is not None
        return self._user

    def pairings(self) -> list[list[str]]:
        names = list(self.specs)
        if self.config.mode == "score":
            return [names]
        if self.config.pairs == "all":
            return [[a, b] for i, a in enumerate(names) for b in names[i + 1:]]
        base = self.config.baseline or names[-1]
        return [[n, base] for n in names if n != base]

    def _prepare_folder(self) -> set[str]:
        meta = {"suite": self.suite.name, "config": self.config.model_dump(mode="json"),
                "systems": {n: s.model_dump(mode="json") for n, s in self.specs.items()},
                "settings": {"backend": self.settings.backend, "model": self.settings.model}}
        prepare_run_folder(self.out_dir, self.config.fingerprint(), meta)
        return {r["key"] for r in read_results(self.out_dir) if "key" in r}

    def _new_match(self, item: SuiteItem, systems: list[str]) -> Match:
        card = item_character(item, self.settings)
        user_name = item.user_name or card.user_name
        ctx = Context(card=card, user_name=user_name, user_persona=item.user_persona, scene=item.scene,
                      objectives=item.objectives, progression=item.progression)
        opening = item_opening(item, card)
        if opening:
            ctx.history.append({"role": "assistant", "name": card.name, "content": opening})
        key = _match_key(item.id, systems, self.config.mode)
        m = Match(key=key, item=item, card=card, systems=systems, ctx=ctx,
                  turns=self.suite.item_turns(item, self.config.turns),
                  rng=random.Random(f"{self.config.seed}:{key}"))
        if item.first_message:
            m.pending_user, m.user_source = item.first_message, "suite"
        m.record = {"key": key, "item": item.id, "character": card.id, "character_name": card.name,
                    "language": card.language, "tags": item.tags, "mode": self.config.mode, "systems": systems,
                    "judge": self.config.judge.model_dump(mode="json"), "opening": opening,
                    "user_name": user_name, "turns": [], "probes": [], "finished_early": False,
                    "started": time.time()}
        if item.source is not None:
            m.record["source"] = item.source
        return m

    # ------------------------------------------------------------ main loop
    def run(self) -> Path:
        """Play every unfinished match; return the run folder."""
        done = self._prepare_folder()
        items = self.suite.items[: self.config.limit] if self.config.limit else list(self.suite.items)
        todo: list[tuple[SuiteItem, list[str]]] = [
            (item, pair) for item in items for pair in self.pairings()
            if _match_key(item.id, pair, self.config.mode) not in done]
        total = sum(self.suite.item_turns(i, self.config.turns) + (len(i.probes) if self.config.probes else 0)
                    for i, _ in todo)
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=f"eval {self.suite.name}", unit="turn", file=sys.stderr,
                       dynamic_ncols=True)
        active: list[Match] = []
        queue = list(todo)
        try:
            while queue or active:
                while queue and len(active) < self.config.batch_size:
                    item, pair = queue.pop(0)
                    active.append(self._new_match(item, pair))
                advanced = self._step(active)
                if bar is not None:
                    bar.update(advanced)
                for m in [m for m in active if m.phase == "done"]:
                    self._finish(m)
                    active.remove(m)
                    if bar is not None:
                        # early-stopped scenes skip their remaining turns
                        bar.update(max(0, m.turns - len(m.record["turns"])))
        finally:
            if bar is not None:
                bar.close()
        from .report import write_report

        write_report(self.out_dir)
        return self.out_dir

    def _step(self, active: list[Match]) -> int:
        self.stats["steps"] += 1
        turn_ms = [m for m in active if m.phase == "turn"]
        probe_ms = [m for m in active if m.phase == "probe"]
        # 1. user messages for matches that need one (batched)
        need = [m for m in turn_ms if m.pending_user is None]
        for m, (text, raw, fallback) in zip(need, self.user.next_messages([m.ctx for m in need])):
            m.pending_user = text
            m.user_source = "fallback" if fallback else "simulator"
            m.record.setdefault("user_raw", []).append(raw)
        # 2. every system answers (one batch per system)
        jobs: list[tuple[Match, str, str, str]] = []  # (match, system, user_text, kind)
        for m in turn_ms:
            jobs += [(m, s, m.pending_user or "", "turn") for s in m.systems]
        for m in probe_ms:
            for q in m.item.probes:
                jobs += [(m, s, q, "probe") for s in m.systems]
        replies = self._replies(jobs)
        # 3. judge and advance
        if turn_ms:
            self._judge_turns(turn_ms, replies)
        if probe_ms:
            self._judge_probes(probe_ms, replies)
        return len(turn_ms) + sum(len(m.item.probes) for m in probe_ms)

    def _replies(self, jobs: list[tuple[Match, str, str, str]]) -> dict[tuple[str, str, str, str], dict]:
        """Generate every job's reply; keyed by (match, system, kind, user text).

        Systems that share an engine (same backend and model) and sampling parameters go
        into the same batches — options travel per request — so the default comparison
        (engine vs plain on one model) fills each batch with both systems' turns.
        """
        from ..backends.base import SamplingParams

        out: dict[tuple[str, str, str, str], dict] = {}
        groups: dict[tuple[int, str], list[tuple[Match, str, str, str]]] = {}
        engines: dict[int, Any] = {}
        params_of: dict[str, SamplingParams] = {}
        for job in jobs:
            spec = self.specs[job[1]]
            engine = self.pool.engine(spec)
            engines[id(engine)] = engine
            params = SamplingParams(**{"max_tokens": self.config.max_tokens, "temperature": self.config.temperature,
                                       "seed": self.config.seed, **spec.params})
            pkey = params.model_dump_json()
            params_of[pkey] = params
            groups.setdefault((id(engine), pkey), []).append(job)
        options = {name: self.pool.options(spec) for name, spec in self.specs.items()}
        bs = self.config.batch_size
        for (eid, pkey), gjobs in groups.items():
            for start in range(0, len(gjobs), bs):
                chunk = gjobs[start:start + bs]
                from ..engine import Turn

                turns = [Turn(m.card, list(m.ctx.history), text, options=options[s], user_name=m.ctx.user_name,
                              user_persona=m.item.user_persona) for m, s, text, _k in chunk]
                t0 = time.perf_counter()
                results = engines[eid].reply_batch(turns, params_of[pkey])
                dt = time.perf_counter() - t0
                self.stats["reply_calls"] += 1
                self.stats["replies"] += len(chunk)
                for (m, s, text, kind), rep in zip(chunk, results):
                    out[(m.key, s, kind, text)] = _reply_record(rep, m.card, kind=kind, item=m.item.id,
                                                                batch_seconds=dt / len(chunk))
        return out

    def _judge_turns(self, ms: list[Match], replies: dict) -> None:
        cfg = self.config
        if cfg.mode == "score":
            items, owners = [], []
            for m in ms:
                for s in m.systems:
                    items.append((m.ctx, replies[(m.key, s, "turn", m.pending_user)]["text"]))
                    owners.append((m, s))
            scores = self.judge.score(items, list(cfg.dimensions))
            self.stats["judge_calls"] += 1
            per: dict[str, dict[str, dict]] = {}
            for (m, s), sc in zip(owners, scores):
                per.setdefault(m.key, {})[s] = sc
            for m in ms:
                sc = per[m.key]

                def total(s: str) -> float:
                    vals = [v for v in sc[s]["scores"].values() if v is not None]
                    return sum(vals) / len(vals) if vals else -1.0

                best = max(m.systems, key=lambda s: (total(s), -m.systems.index(s)))
                self._advance(m, replies, {"scores": sc}, best, finished=False, next_user=None)
            return
        # pairwise: draw the order, judge all pairs in one batch (plus the swapped share)
        triples, orders, swaps = [], [], []
        for m in ms:
            a, b = m.systems if m.rng.random() < 0.5 else m.systems[::-1]
            ra = replies[(m.key, a, "turn", m.pending_user)]["text"]
            rb = replies[(m.key, b, "turn", m.pending_user)]["text"]
            orders.append((a, b))
            triples.append((m.ctx, ra, rb))
            swaps.append(m.rng.random() < cfg.both_orders)
        verdicts = self.pairwise(triples)
        swap_idx = [i for i, s in enumerate(swaps) if s]
        swapped = self.pairwise([(triples[i][0], triples[i][2], triples[i][1]) for i in swap_idx]) if swap_idx else []
        self.stats["judge_calls"] += 1 + bool(swap_idx)
        swap_of = dict(zip(swap_idx, swapped))
        for i, m in enumerate(ms):
            a, b = orders[i]
            v = verdicts[i]
            winner = {"A": a, "B": b}.get(v.winner or "")
            info: dict[str, Any] = {"order": [a, b], "verdict": {**v.as_dict(), "winner_system": winner,
                                                                 "prompt": v.prompt}}
            if i in swap_of:
                sv = swap_of[i]
                info["swap"] = {**sv.as_dict(), "winner_system": {"A": b, "B": a}.get(sv.winner or "")}
            cont = winner or (a if m.rng.random() < 0.5 else b)
            self._advance(m, replies, info, cont, finished=v.finished and winner is not None,
                          next_user=v.next_user or None)

    def _advance(self, m: Match, replies: dict, info: dict, cont: str, *, finished: bool,
                 next_user: str | None) -> None:
        user_text = m.pending_user or ""
        rec = {"turn": m.turn, "user": user_text, "user_source": m.user_source,
               "replies": {s: replies[(m.key, s, "turn", user_text)] for s in m.systems},
               "continued_with": cont, **info}
        m.record["turns"].append(rec)
        m.ctx.history.append({"role": "user", "name": m.ctx.user_name, "content": user_text})
        m.ctx.history.append({"role": "assistant", "name": m.card.name, "content": rec["replies"][cont]["text"]})
        m.turn += 1
        m.pending_user, m.user_source = (next_user, "judge") if next_user else (None, "")
        if finished and m.turn < m.turns:
            m.record["finished_early"] = True
        if finished or m.turn >= m.turns:
            m.phase = "probe" if (self.config.probes and m.item.probes) else "done"

    def _judge_probes(self, ms: list[Match], replies: dict) -> None:
        triples, owners = [], []
        for m in ms:
            for q in m.item.probes:
                for s in m.systems:
                    triples.append((m.ctx, q, replies[(m.key, s, "probe", q)]["text"]))
                    owners.append((m, q, s))
        judged = self.judge.probe(triples)
        for (m, q, s), (_c, _q, text), jp in zip(owners, triples, judged):
            rec = replies[(m.key, s, "probe", q)]
            rule = M.probe_pass(text)
            # pass: in character, and the rules or the judge see "I do not know"
            rec["probe"] = {"rule_pass": rule, "judge_pass": jp,
                            "pass": (not rec["metrics"]["ooc"]) and (rule or bool(jp))}
        for m in ms:
            m.record["probes"] = [{"question": q, "replies": {s: replies[(m.key, s, "probe", q)] for s in m.systems}}
                                  for q in m.item.probes]
            m.phase = "done"

    def _finish(self, m: Match) -> None:
        if self.config.style_similarity:
            self._style_similarity(m)
        m.record["ended"] = time.time()
        append_record(self.out_dir / RESULTS, m.record)

    def _style_similarity(self, m: Match) -> None:
        recs = [t["replies"][s] for t in m.record["turns"] for s in m.systems]
        if not recs:
            return
        try:
            if self._embedder is None:
                from ..store.embeddings import get_embedder

                self._embedder = get_embedder(self.settings.embedder)
            sims = M.style_similarity([r["text"] for r in recs], m.card, embedder=self._embedder)
        except Exception as exc:  # noqa: BLE001 - an optional metric must not sink the run
            m.record["style_similarity_error"] = f"{type(exc).__name__}: {exc}"[:200]
            return
        if sims is not None:
            for r, v in zip(recs, sims):
                r["metrics"]["style_similarity"] = v


def _reply_record(rep: Any, card: Character, *, kind: str, item: str, batch_seconds: float) -> dict:
    text = getattr(rep, "text", "") or ""
    prompt = getattr(rep, "prompt", None)
    stories = list(getattr(prompt, "stories", []) or [])
    return {
        "text": text,
        "kind": kind,
        "item": item,
        "emotion": getattr(rep, "emotion", None),
        "note": getattr(rep, "note", None),
        "intent": getattr(rep, "intent", None),
        "retrieval": list(getattr(rep, "story_ids", []) or []) if prompt is not None else None,
        "retrieval_scores": [round(float(getattr(s, "score", 0.0)), 4) for s in stories],
        "lore": list(getattr(rep, "lore_names", []) or []),
        "prompt": list(getattr(prompt, "messages", []) or []),
        "prompt_tokens": getattr(rep, "prompt_tokens", None),
        "completion_tokens": getattr(rep, "completion_tokens", None),
        "seconds": round(batch_seconds, 4),
        "metrics": M.reply_metrics(text, card),
    }


def run_eval(suite: Suite, config: RunConfig | None = None, out_dir: str | Path | None = None, *,
             settings: Settings | None = None, progress: bool = True) -> Path:
    """Run ``suite`` (pairwise engine vs plain by default) into ``out_dir``; return the folder.

    The default folder is ``runs/<suite>-<mode>-<method>`` under the current directory.
    """
    config = config or RunConfig()
    if out_dir is None:
        out_dir = Path("runs") / f"{suite.name}-{config.mode}-{config.judge.method}"
    return Runner(suite, config, out_dir, settings=settings, progress=progress).run()
