"""Reference-based evaluation: every system writes one reply per item, scored against the real line.

Canon continuation (`canon`) and the benchmark readers (`benchmarks`) both produce
`RefItem`s — a card, the dialogue so far, the message to answer, the line the character
really said (or None) — and this module does the rest: generation (batched, resumable),
metrics, intervals, paired comparisons, ``summary.json`` and ``report.md``.

Trade-offs:
- Judge-free on purpose: semantic similarity (the project's multilingual embedder),
  ROUGE-L and chrF against the reference, speaker attribution when the caller gives an
  attributor, and the rule metrics of `metrics.reply_metrics`. They work on a CPU and with
  any model; they measure closeness to one canonical line, which undervalues a good reply
  that goes elsewhere — read them as "how much like the canon", not "how good".
- Every figure carries a 95 % bootstrap interval that resamples *groups* (scenes or
  benchmark dialogues), since cut points of one scene are not independent; each system
  is compared with the baseline (the last system) on the same items: mean difference,
  its interval, and an exact sign test.
- One reply per (item, system), greedy by default, appended to ``results.jsonl`` as soon
  as its batch is done; re-running the same command skips what is there, and a folder
  made with other settings is refused (the same contract as the pairwise runner).
- Batches hold one system's replies at a time (so seconds per item are that system's own);
  retrieval is told to leave out the item's own scene
  (``exclude_sources``); a retrieved story from that scene stops the run rather than
  contaminating the figures.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..cards.schema import Character
from ..cards.yaml_io import atomic_write
from ..config import Settings
from ..errors import ConfigError, RoleplayError
from . import metrics as M
from .overlap import chrf, rouge_l
from .runner import RESULTS, append_record, prepare_run_folder, read_results
from .stats import cluster_bootstrap_ci, paired_comparison
from .systems import SystemPool, SystemSpec, resolve_system

#: Metrics in report order: key -> (label, higher is better).
METRICS: dict[str, tuple[str, bool]] = {
    "semantic": ("semantic sim.", True),
    "rouge_l": ("ROUGE-L", True),
    "chrf": ("chrF", True),
    "attributed": ("attributed right", True),
    "attribution_rank": ("attribution rank", False),
    "has_note": ("action notes", True),
    "style_ok": ("bracket style ok", True),
    "language_ok": ("language ok", True),
    "ooc": ("OOC leaks", False),
}


@dataclass
class RefItem:
    """One moment to continue: the dialogue so far and the character's real next line."""

    id: str
    card: Character
    #: ``[{"role": "user"|"assistant", "name": str, "content": str}]``, oldest first.
    history: list[dict]
    user_text: str
    user_name: str
    #: The line the character really said next (None: no reference, rule metrics only).
    reference: str | None
    #: The bootstrap cluster (a scene, a benchmark dialogue).
    group: str
    #: Story source labels (``card:3``) retrieval must leave out for this item.
    exclude: list[str] = field(default_factory=list)
    #: Other speakers present (stop strings, post-processing).
    others: list[str] = field(default_factory=list)
    #: The benchmark record this item came from (written back with the output).
    source: dict | None = None


@dataclass
class Generated:
    """One system's reply to one item."""

    text: str
    story_ids: list[str] = field(default_factory=list)
    story_sources: list[str] = field(default_factory=list)
    seconds: float = 0.0


class System(Protocol):
    """Anything that writes replies for items: an engine configuration, or a planted stand-in."""

    name: str

    def generate(self, items: list[RefItem], *, max_tokens: int, seed: int) -> list[Generated]: ...


class EngineSystem:
    """A `SystemSpec` served by the shared engine of its backend and model."""

    def __init__(self, spec: SystemSpec, pool: SystemPool, *, batch_size: int = 8) -> None:
        self.spec = spec
        self.name = spec.name
        self.pool = pool
        self.batch_size = batch_size
        self.options = pool.options(spec)  # validated now: a typo fails before any model loads

    @property
    def engine(self):
        return self.pool.engine(self.spec)

    def request(self, item: RefItem) -> Any:
        """The engine `Turn` for ``item`` (its own scene left out of retrieval)."""
        from ..engine import Turn

        # subtle: story_reuse remembers blocks per conversation; canon turns are independent.
        options = self.options.model_copy(update={"exclude_sources": list(item.exclude), "story_reuse": 0.0})
        return Turn(item.card, list(item.history), item.user_text, options=options, user_name=item.user_name,
                    others=list(item.others))

    def params(self, *, max_tokens: int, seed: int):
        from ..backends.base import SamplingParams

        return SamplingParams(**{"max_tokens": max_tokens, "temperature": 0.0, "seed": seed,
                                 "repetition_penalty": 1.1, **self.spec.params})

    def generate(self, items: list[RefItem], *, max_tokens: int, seed: int) -> list[Generated]:
        return generate_engine_batch([(i, self) for i in items], max_tokens=max_tokens, seed=seed)


def generate_engine_batch(jobs: list[tuple[RefItem, EngineSystem]], *, max_tokens: int,
                          seed: int) -> list[Generated]:
    """Replies for ``(item, system)`` jobs that share one engine and sampling parameters."""
    if not jobs:
        return []
    engine = jobs[0][1].engine
    params = jobs[0][1].params(max_tokens=max_tokens, seed=seed)
    t0 = time.perf_counter()
    replies = engine.reply_batch([s.request(i) for i, s in jobs], params)
    per = (time.perf_counter() - t0) / len(jobs)
    out = []
    for (item, system), rep in zip(jobs, replies):
        stories = list(getattr(rep.prompt, "stories", []) or [])
        sources = [str(getattr(s, "source", "")) for s in stories]
        leaked = {src for s in stories for src in [getattr(s, "source", ""), *getattr(s, "duplicates", [])]
                  if src in item.exclude}
        if leaked:
            raise RoleplayError(f"item {item.id}, system {system.name}: retrieval returned the held-out "
                                f"scene {sorted(leaked)[0]}; this engine does not honour "
                                "EngineOptions.exclude_sources, so canon figures would be contaminated")
        out.append(Generated(text=rep.text, story_ids=list(rep.story_ids), story_sources=sources, seconds=per))
    return out


def resolve_systems(specs: Sequence[str | dict | SystemSpec | System], settings: Settings, *,
                    batch_size: int = 8) -> list[System]:
    """Live systems from preset names (``engine``, ``plain@MODEL``), mappings, specs or `System`s."""
    pool = SystemPool(settings)
    out: list[System] = []
    for s in specs:
        if hasattr(s, "generate") and hasattr(s, "name"):
            out.append(s)  # type: ignore[arg-type]
        else:
            out.append(EngineSystem(resolve_system(s), pool, batch_size=batch_size))  # type: ignore[arg-type]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"system names must be unique, got {names}")
    if not out:
        raise ConfigError("give at least one system (e.g. --systems engine,plain)")
    return out


# ---------------------------------------------------------------- the run

@dataclass
class RefRun:
    """A reference run: items × systems into a folder."""

    name: str
    items: list[RefItem]
    systems: list[System]
    out_dir: Path
    max_tokens: int = 60
    seed: int = 0
    batch_size: int = 8
    #: ``(item, replies) -> [{"attributed": bool, "attribution_rank": int} | None]`` per reply.
    attribute: Callable[[list[RefItem], list[str]], list[dict | None]] | None = None
    embedder: Any = None
    progress: bool = False
    meta: dict = field(default_factory=dict)
    #: Writes benchmark-specific output files (e.g. CharacterEval's generation file) from the scored rows.
    export: Callable[["RefRun", list[dict]], None] | None = None

    def fingerprint(self) -> str:
        data = {"name": self.name, "systems": [_system_meta(s) for s in self.systems],
                "items": [i.id for i in self.items], "max_tokens": self.max_tokens, "seed": self.seed}
        return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def run(self) -> dict:
        """Generate what is missing, score everything, write the report; return the summary."""
        self._prepare()
        done = {r["key"] for r in read_records(self.out_dir)}
        # subtle: system-major order fills each batch with one system's replies, so a system's
        # seconds per item is its own batch time (a mixed batch would share one time out).
        todo = [(item, s) for s in self.systems for item in self.items if _key(item, s) not in done]
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"eval {self.name}", unit="reply", file=sys.stderr, dynamic_ncols=True)
        try:
            for chunk in _chunks(todo, self.batch_size):
                for (item, system), gen in zip(chunk, self._generate(chunk)):
                    append_record(self.out_dir / RESULTS, {"key": _key(item, system), "item": item.id,
                                                     "system": system.name, "character": item.card.id,
                                                     "text": gen.text, "story_ids": gen.story_ids,
                                                     "story_sources": gen.story_sources,
                                                     "seconds": round(gen.seconds, 4)})
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return self.report()

    def _generate(self, chunk: list[tuple[RefItem, System]]) -> list[Generated]:
        """Replies in ``chunk`` order: engine jobs batched per engine, stand-ins per system."""
        out: dict[int, Generated] = {}
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for n, (_item, s) in enumerate(chunk):
            key = ("engine", id(s.engine)) if isinstance(s, EngineSystem) else ("system", id(s))
            groups[key].append(n)
        for (kind, _), idx in groups.items():
            if kind == "engine":
                # systems with different sampling params cannot share a batch
                by_params: dict[str, list[int]] = defaultdict(list)
                for n in idx:
                    sysm = chunk[n][1]
                    by_params[json.dumps(sysm.spec.params, sort_keys=True)].append(n)  # type: ignore[union-attr]
                for sub in by_params.values():
                    gens = generate_engine_batch([chunk[n] for n in sub], max_tokens=self.max_tokens,  # type: ignore[misc]
                                                 seed=self.seed)
                    out.update(zip(sub, gens))
            else:
                system = chunk[idx[0]][1]
                t0 = time.perf_counter()
                gens = system.generate([chunk[n][0] for n in idx], max_tokens=self.max_tokens, seed=self.seed)
                if len(gens) != len(idx):
                    raise RoleplayError(f"system {system.name} returned {len(gens)} replies for {len(idx)} items")
                per = (time.perf_counter() - t0) / len(idx)
                for n, g in zip(idx, gens):
                    g.seconds = g.seconds or per
                    out[n] = g
        return [out[n] for n in range(len(chunk))]

    def _prepare(self) -> None:
        meta = {"runner": "reference", "suite": self.name, "max_tokens": self.max_tokens, "seed": self.seed,
                "systems": {s.name: _system_meta(s) for s in self.systems}, "items": len(self.items), **self.meta}
        prepare_run_folder(self.out_dir, self.fingerprint(), meta)

    # ------------------------------------------------------------ scoring
    def scored(self) -> list[dict]:
        """Every record of this run's items with its metrics (recomputed, not stored)."""
        by_key = {r["key"]: r for r in read_records(self.out_dir)}
        rows: list[dict] = []
        pairs: list[tuple[RefItem, dict]] = []
        for item in self.items:
            for s in self.systems:
                rec = by_key.get(_key(item, s))
                if rec is not None:
                    pairs.append((item, rec))
        if not pairs:
            return rows
        refs = [(n, it.reference) for n, (it, _r) in enumerate(pairs) if it.reference]
        sims: dict[int, float] = {}
        if refs:
            emb = self._embedder()
            texts = [pairs[n][1]["text"] or "." for n, _ in refs]
            a = emb.embed(texts)
            b = emb.embed([r for _, r in refs])
            sims = {n: float(x @ y) for (n, _), x, y in zip(refs, a, b)}
        attributions: list[dict | None] = [None] * len(pairs)
        if self.attribute is not None:
            attributions = self.attribute([it for it, _ in pairs], [r["text"] for _, r in pairs])
        for n, (item, rec) in enumerate(pairs):
            lang = item.card.language
            m: dict[str, Any] = {k: v for k, v in M.reply_metrics(rec["text"], item.card).items()
                                 if k in ("has_note", "style_ok", "language_ok", "ooc")}
            if item.reference:
                m["semantic"] = sims.get(n)
                m["rouge_l"] = rouge_l(rec["text"], item.reference, language=lang)
                m["chrf"] = chrf(rec["text"], item.reference)
            if attributions[n] is not None:
                m.update(attributions[n])  # type: ignore[arg-type]
            rows.append({**rec, "group": item.group, "language": lang, "reference": item.reference,
                         "metrics": m})
        return rows

    def _embedder(self):
        if self.embedder is None:
            from ..store.embeddings import get_embedder

            self.embedder = get_embedder()
        return self.embedder

    def report(self) -> dict:
        rows = self.scored()
        summary = summarize(rows, [s.name for s in self.systems], seed=self.seed)
        summary.update({"suite": self.name, "run": str(self.out_dir), "max_tokens": self.max_tokens,
                        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **self.meta})
        write_summary(self.out_dir, summary, rows)
        if self.export is not None:
            self.export(self, rows)
        return summary


def _system_meta(s: System) -> dict:
    if isinstance(s, EngineSystem):
        return s.spec.model_dump(mode="json")
    return {"name": s.name, "stand_in": type(s).__name__}


def _key(item: RefItem, system: System) -> str:
    return f"{item.id}::{system.name}"


def _chunks(xs: list, n: int) -> list[list]:
    return [xs[i:i + n] for i in range(0, len(xs), max(1, n))]


def read_records(run_dir: Path) -> list[dict]:
    """This run's reply records (``results.jsonl``; a torn last line is dropped)."""
    return [r for r in read_results(run_dir) if isinstance(r, dict) and "key" in r]


# ---------------------------------------------------------------- summary and report

def summarize(rows: list[dict], systems: list[str], *, seed: int = 0) -> dict:
    """Per-system means with cluster-bootstrap intervals, and each system vs the baseline.

    The baseline is the last system. Comparisons use only items both systems have a value for.
    """
    by_sys: dict[str, dict[str, dict]] = {s: {} for s in systems}  # system -> item -> row
    for r in rows:
        by_sys.setdefault(r["system"], {})[r["item"]] = r
    out: dict[str, Any] = {"systems": systems, "items": len({r["item"] for r in rows}),
                           "groups": len({r["group"] for r in rows}), "metrics": {}, "comparisons": [],
                           "seconds_per_item": {}, "distinct": {}, "by_character": {}}
    for s in systems:
        rs = list(by_sys.get(s, {}).values())
        out["metrics"][s] = {}
        for key in METRICS:
            vals = [(float(r["metrics"][key]), r["group"]) for r in rs if r["metrics"].get(key) is not None]
            if not vals:
                continue
            xs = [v for v, _ in vals]
            lo, hi = cluster_bootstrap_ci(xs, [g for _, g in vals], seed=seed)
            out["metrics"][s][key] = {"mean": sum(xs) / len(xs), "ci": [lo, hi], "n": len(xs)}
        out["seconds_per_item"][s] = (sum(float(r.get("seconds") or 0) for r in rs) / len(rs)) if rs else None
        langs = {r["language"] for r in rs}
        out["distinct"][s] = {lang: {"distinct_1": M.distinct_n([r["text"] for r in rs if r["language"] == lang], 1, lang),
                                     "distinct_2": M.distinct_n([r["text"] for r in rs if r["language"] == lang], 2, lang)}
                              for lang in sorted(langs)}
        chars: dict[str, list[dict]] = defaultdict(list)
        for r in rs:
            chars[r.get("character", "?")].append(r)
        out["by_character"][s] = {c: {k: _mean([x["metrics"].get(k) for x in cr]) for k in ("semantic", "chrf", "attributed")}
                                  | {"n": len(cr)} for c, cr in sorted(chars.items())}
    base = systems[-1] if systems else None
    for s in systems[:-1]:
        comp: dict[str, Any] = {"system": s, "baseline": base, "metrics": {}}
        for key, (_label, higher) in METRICS.items():
            a, b, g = [], [], []
            for item, r in by_sys.get(s, {}).items():
                rb = by_sys.get(base, {}).get(item)  # type: ignore[arg-type]
                if rb is None or r["metrics"].get(key) is None or rb["metrics"].get(key) is None:
                    continue
                a.append(float(r["metrics"][key]))
                b.append(float(rb["metrics"][key]))
                g.append(r["group"])
            if a:
                pc = paired_comparison(a, b, g, seed=seed)
                pc["better"] = None if not pc["significant"] else ((pc["diff"] > 0) == higher)
                comp["metrics"][key] = pc
        out["comparisons"].append(comp)
    return out


def _mean(xs: Sequence[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` for the report (the same rows feed Markdown and the web UI)."""
    from .report import fmt_value

    keys = [k for k in METRICS if any(k in m for m in summary["metrics"].values())]
    rows = []
    for s, ms in summary["metrics"].items():
        row = [s]
        for k in keys:
            v = ms.get(k)
            row.append("–" if v is None else f"{fmt_value(v['mean'])} [{fmt_value(v['ci'][0])}, {fmt_value(v['ci'][1])}]")
        sec = summary["seconds_per_item"].get(s)
        row.append(fmt_value(sec, 2))
        rows.append(row)
    out = [("Against the reference (mean [95% CI])", ["system"] + [METRICS[k][0] for k in keys] + ["s / item"], rows)]
    for c in summary["comparisons"]:
        crow = []
        for k, pc in c["metrics"].items():
            label, higher = METRICS[k]
            verdict = "–" if pc["better"] is None else ("better" if pc["better"] else "worse")
            crow.append([label + ("" if higher else " (lower is better)"), f"{pc['diff']:+.3f}",
                         f"[{pc['ci'][0]:+.3f}, {pc['ci'][1]:+.3f}]", f"{pc['wins']}-{pc['losses']}",
                         "<0.001" if pc["p_sign"] < 0.001 else f"{pc['p_sign']:.3f}", verdict])
        out.append((f"{c['system']} minus {c['baseline']} (paired, same items)",
                    ["metric", "difference", "95% CI", "wins-losses", "sign test p", "verdict"], crow))
    chars = sorted({c for v in summary["by_character"].values() for c in v})
    if chars:
        out.append(("Per character (semantic sim. / chrF / attributed right)", ["system"] + chars,
                    [[s] + ["/".join(fmt_value(v.get(c, {}).get(k), 2) for k in ("semantic", "chrf", "attributed"))
                            for c in chars] for s, v in summary["by_character"].items()]))
    return out


def render_markdown(summary: dict) -> str:
    from .report import _md_table

    lines = [f"# Reference evaluation: {summary.get('suite')}", "",
             f"- systems: {', '.join(summary['systems'])} (baseline: {summary['systems'][-1]})",
             f"- items: {summary['items']} in {summary['groups']} groups (scenes or dialogues); "
             f"{summary.get('max_tokens')} tokens per reply, greedy",
             f"- generated: {summary.get('generated')}", "",
             "> Closeness to the canonical line, not quality: a good reply that takes another turn "
             "scores low. Intervals resample whole scenes; differences are paired on the same items.", ""]
    for title, header, rows in tables(summary):
        lines += [f"## {title}", "", _md_table(header, rows), ""]
    return "\n".join(lines) + "\n"


def write_summary(run_dir: Path, summary: dict, rows: list[dict]) -> None:
    from .report import _json_safe

    atomic_write(run_dir / "summary.json", json.dumps(_json_safe(summary), ensure_ascii=False, indent=2))
    atomic_write(run_dir / "report.md", render_markdown(summary))
    atomic_write(run_dir / "scored.jsonl", "".join(json.dumps(_json_safe(r), ensure_ascii=False) + "\n" for r in rows))
