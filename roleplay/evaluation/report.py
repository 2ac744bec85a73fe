"""Summaries and reports of a run folder: ``summary.json``, ``report.md``, ``report.html``.

Everything here is recomputed from ``results.jsonl`` and ``run.json`` alone, so
``roleplay eval report RUN`` rebuilds a report without a model, and a partial run (some
matches finished) reports what it has.

Trade-offs:
- One summary dict feeds all three outputs; the Markdown and HTML tables are rendered
  from the same rows, so they cannot disagree.
- Plots are matplotlib (Agg backend, no display) PNGs embedded as base64 in the HTML: one
  self-contained file to mail or attach to a pull request; ``report.md`` links nothing
  and stays readable in a terminal or on GitHub.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..cards.yaml_io import atomic_write
from ..errors import ConfigError
from . import metrics as M
from .stats import bootstrap_ci, bradley_terry, elo_from_strengths, win_rate_ci

METRIC_LABELS = {
    "action_note_rate": "action notes",
    "style_conformity": "bracket style ok",
    "language_consistency": "language ok",
    "ooc_leak_rate": "OOC leaks",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "repetition": "repetition",
    "style_similarity": "style sim.",
    "probe_pass_rate": "probe pass",
    "retrieval_hit_rate": "retrieval hits",
    "mean_chars": "mean chars",
}


def fmt_value(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _replies_of(records: list[dict]) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        for t in rec.get("turns", []):
            for s, r in t.get("replies", {}).items():
                by[s].append(r)
        for p in rec.get("probes", []):
            for s, r in p.get("replies", {}).items():
                by[s].append(r)
    return by


def _retrieval_on(spec: dict) -> bool:
    opts = spec.get("options", {}) or {}
    return bool(opts.get("retrieval", True)) and not opts.get("plain", False)


def summarize(records: list[dict], meta: dict | None = None, *, seed: int = 0) -> dict:
    """The run's numbers: win rates with intervals, position bias, scores, metrics, per character."""
    meta = meta or {}
    systems_meta = meta.get("systems", {})
    mode = records[0]["mode"] if records else meta.get("config", {}).get("mode", "pairwise")
    systems: list[str] = list(systems_meta) or sorted({s for r in records for s in r.get("systems", [])})
    out: dict[str, Any] = {"suite": meta.get("suite"), "mode": mode, "systems": systems,
                           "matches": len(records),
                           "items": len({r["item"] for r in records}),
                           "turns": sum(len(r.get("turns", [])) for r in records),
                           "finished_early": sum(bool(r.get("finished_early")) for r in records),
                           "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    language_of = {r["item"]: r.get("language", "en") for r in records}

    # automatic metrics per system
    by_sys = _replies_of(records)
    metrics = {}
    for s in systems:
        agg = M.aggregate(by_sys.get(s, []), language_of=language_of)
        if systems_meta and not _retrieval_on(systems_meta.get(s, {})):
            agg["retrieval_hit_rate"] = None
        metrics[s] = agg
    out["metrics"] = metrics
    out["user_messages"] = _count([t.get("user_source", "") for r in records for t in r.get("turns", [])])

    if mode == "pairwise":
        out.update(_pairwise_summary(records, systems, seed=seed))
        out["gate"] = judge_gate(out["position_bias"])
        out["winner"], out["headline"] = headline(out["comparisons"], out["gate"])
    else:
        out.update(_score_summary(records, systems, seed=seed))
    return out


#: The judge reliability gate: above this first-position rate, or below this order
#: agreement, verdicts follow the A/B position rather than the replies.
FIRST_POSITION_MAX = 0.8
AGREEMENT_MIN = 0.5


def judge_gate(position_bias: dict) -> dict:
    """``{"reliable": True|False|None, "reasons": [...]}`` from the position-bias check.

    None means unchecked (no turn was judged in both orders).

    >>> judge_gate({"first_position_rate": 1.0, "agreement": 0.0})["reliable"]
    False
    >>> judge_gate({"first_position_rate": 0.55, "agreement": 0.8})["reliable"]
    True
    """
    fp, ag = position_bias.get("first_position_rate"), position_bias.get("agreement")
    reasons = []
    if fp is not None and fp > FIRST_POSITION_MAX:
        reasons.append(f"reply A wins {fp:.0%} of verdicts (more than {FIRST_POSITION_MAX:.0%})")
    if ag is not None and ag < AGREEMENT_MIN:
        reasons.append(f"swapping A and B keeps the verdict only {ag:.0%} of the time "
                       f"(less than {AGREEMENT_MIN:.0%})")
    checked = fp is not None or ag is not None
    return {"reliable": (not reasons) if checked else None, "reasons": reasons,
            "first_position_max": FIRST_POSITION_MAX, "agreement_min": AGREEMENT_MIN}


def headline(comparisons: list[dict], gate: dict) -> tuple[str | None, str]:
    """``(winner system or None, one-line headline)``; no winner when the judge is unreliable."""
    if gate.get("reliable") is False:
        return None, ("Judge unreliable: " + "; ".join(gate["reasons"]) + ". No winner is shown — these "
                      "win rates follow the A/B position, not the replies. Compare with the judge-free "
                      "canon metrics instead: `roleplay eval canon ID… --systems A,B`.")
    wins = [c for c in comparisons if c["ci"][0] == c["ci"][0] and c["ci"][0] > 0.5]
    losses = [c for c in comparisons if c["ci"][1] == c["ci"][1] and c["ci"][1] < 0.5]
    check = "" if gate.get("reliable") else " (position bias unchecked: set both_orders above 0)"
    if len(wins) == 1 and not losses:
        c = wins[0]
        return c["system"], (f"{c['system']} beats {c['opponent']}: win rate {c['win_rate']:.2f} "
                             f"[{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]{check}")
    if not wins and len(losses) == 1:
        c = losses[0]
        return c["opponent"], (f"{c['opponent']} beats {c['system']}: {c['system']}'s win rate {c['win_rate']:.2f} "
                               f"[{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]{check}")
    if not wins and not losses:
        return None, f"No significant difference: every win-rate interval includes 0.5{check}"
    return None, "Mixed results: see the win-rate table" + check


def _count(xs: list[str]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for x in xs:
        c[x or "none"] += 1
    return dict(c)


def _pairwise_summary(records: list[dict], systems: list[str], *, seed: int) -> dict:
    pairs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        pairs[tuple(r["systems"])].append(r)
    comparisons = []
    games: list[tuple[str, str]] = []
    per_char: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    judge_failures = judge_attempts = judged = 0
    swap_total = swap_agree = 0
    first_pos = first_n = 0
    for (x, y), recs in pairs.items():
        clusters = []
        ties = fails = 0
        for r in recs:
            w = l = 0
            for t in r.get("turns", []):
                v = t.get("verdict") or {}
                judged += 1
                judge_attempts += int(v.get("attempts") or 0)
                if v.get("failed"):
                    fails += 1
                    continue
                ws = v.get("winner_system")
                if v.get("winner") == "tie" or ws is None:
                    ties += 1
                    continue
                if v.get("winner") in ("A", "B"):
                    first_n += 1
                    first_pos += v["winner"] == "A"
                if ws == x:
                    w += 1
                    games.append((x, y))
                else:
                    l += 1
                    games.append((y, x))
                sw = t.get("swap")
                if sw and not sw.get("failed") and sw.get("winner") in ("A", "B"):
                    swap_total += 1
                    swap_agree += sw.get("winner_system") == ws
                    first_n += 1
                    first_pos += sw["winner"] == "A"
            clusters.append((w, l))
            per_char[(x, y)][r.get("character", "?")].append((w, l))
        judge_failures += fails
        ci = win_rate_ci(clusters, seed=seed)
        comparisons.append({"system": x, "opponent": y, "matches": len(recs), "wins": ci["wins"],
                            "losses": ci["losses"], "ties": ties, "failures": fails,
                            "win_rate": ci["win_rate"], "ci": ci["ci"],
                            "by_character": {c: win_rate_ci(cl, seed=seed) for c, cl in
                                             sorted(per_char[(x, y)].items())}})
    out: dict[str, Any] = {"comparisons": comparisons, "judges": judge_agreement(records),
                           "judge": {"verdicts": judged, "failures": judge_failures,
                                     "failure_rate": judge_failures / judged if judged else None,
                                     "mean_attempts": judge_attempts / judged if judged else None},
                           "position_bias": {"both_orders": swap_total,
                                             "agreement": swap_agree / swap_total if swap_total else None,
                                             "first_position_rate": first_pos / first_n if first_n else None}}
    if len(systems) > 2 and games:
        strengths = bradley_terry(games, players=systems, pseudo=0.5)
        out["bradley_terry"] = strengths
        out["elo"] = elo_from_strengths(strengths)
    return out


def judge_agreement(records: list[dict]) -> dict | None:
    """With several voting judges: unanimity and agreement of each pair (decided votes only)."""
    votes = [t["verdict"]["votes"] for r in records for t in r.get("turns", [])
             if isinstance((t.get("verdict") or {}).get("votes"), list)]
    if not votes:
        return None
    k = max(len(v) for v in votes)
    decided = [v for v in votes if all(x in ("A", "B", "tie") for x in v)]
    pairs = {}
    for i in range(k):
        for j in range(i + 1, k):
            both = [v for v in votes if len(v) > j and v[i] is not None and v[j] is not None]
            pairs[f"{i + 1}-{j + 1}"] = (sum(v[i] == v[j] for v in both) / len(both)) if both else None
    return {"judges": k, "verdicts": len(votes),
            "unanimous": (sum(len(set(v)) == 1 for v in decided) / len(decided)) if decided else None,
            "pairwise_agreement": pairs}


def _score_summary(records: list[dict], systems: list[str], *, seed: int) -> dict:
    vals: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in systems}
    per_char: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in systems}
    fails = total = 0
    for r in records:
        for t in r.get("turns", []):
            for s, sc in (t.get("scores") or {}).items():
                total += 1
                fails += bool(sc.get("failed"))
                got = [v for v in sc.get("scores", {}).values() if v is not None]
                for d, v in sc.get("scores", {}).items():
                    if v is not None:
                        vals.setdefault(s, defaultdict(list))[d].append(float(v))
                if got:
                    per_char.setdefault(s, defaultdict(list))[r.get("character", "?")].append(sum(got) / len(got))
    scores = {s: {d: {"mean": sum(v) / len(v), "ci": list(bootstrap_ci(v, seed=seed)), "n": len(v)}
                  for d, v in sorted(dims.items())} for s, dims in vals.items()}
    return {"scores": scores,
            "scores_by_character": {s: {c: sum(v) / len(v) for c, v in sorted(ch.items())}
                                    for s, ch in per_char.items()},
            "judge": {"verdicts": total, "failures": fails, "failure_rate": fails / total if total else None}}


# ---------------------------------------------------------------- tables

def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` for every table of the report (shared by md and html)."""
    out = []
    if summary["mode"] == "pairwise":
        hide = (summary.get("gate") or {}).get("reliable") is False
        rows = [[c["system"], c["opponent"], str(c["matches"]), str(c["wins"]), str(c["losses"]), str(c["ties"]),
                 str(c["failures"])] + (["not shown", "judge unreliable"] if hide else
                                        [fmt_value(c["win_rate"]), f"[{fmt_value(c['ci'][0])}, {fmt_value(c['ci'][1])}]"])
                for c in summary.get("comparisons", [])]
        out.append(("Win rates (pairwise; ties and judge failures counted apart)",
                    ["system", "vs", "matches", "wins", "losses", "ties", "failures", "win rate", "95% CI"], rows))
        ja = summary.get("judges")
        if ja:
            out.append((f"Judge agreement ({ja['judges']} judges voting)", ["verdicts", "unanimous"] +
                        [f"judges {p}" for p in ja["pairwise_agreement"]],
                        [[str(ja["verdicts"]), fmt_value(ja["unanimous"])] +
                         [fmt_value(v) for v in ja["pairwise_agreement"].values()]]))
        pb = summary.get("position_bias", {})
        j = summary.get("judge", {})
        out.append(("Judge reliability", ["verdicts", "failures", "failure rate", "mean attempts",
                                           "judged both orders", "order agreement", "first-position rate"],
                    [[str(j.get("verdicts")), str(j.get("failures")), fmt_value(j.get("failure_rate")),
                      fmt_value(j.get("mean_attempts"), 2), str(pb.get("both_orders")), fmt_value(pb.get("agreement")),
                      fmt_value(pb.get("first_position_rate"))]]))
        if summary.get("bradley_terry"):
            out.append(("Bradley–Terry strengths and Elo", ["system", "strength", "Elo"],
                        [[s, fmt_value(v), fmt_value(summary["elo"][s], 0)] for s, v in
                         sorted(summary["bradley_terry"].items(), key=lambda kv: -kv[1])]))
        chars = sorted({ch for c in summary.get("comparisons", []) for ch in c["by_character"]})
        if chars:
            rows = []
            for c in summary["comparisons"]:
                rows.append([f"{c['system']} vs {c['opponent']}"] +
                            [fmt_value(c["by_character"].get(ch, {}).get("win_rate"), 2) for ch in chars])
            out.append(("Win rate per character", ["pair"] + chars, rows))
    else:
        dims = sorted({d for s in summary.get("scores", {}).values() for d in s})
        rows = [[s] + [f"{fmt_value(summary['scores'][s][d]['mean'], 2)}" if d in summary["scores"][s] else "–"
                       for d in dims] for s in summary.get("scores", {})]
        out.append(("Mean judge scores (1–5)", ["system"] + dims, rows))
        chars = sorted({c for s in summary.get("scores_by_character", {}).values() for c in s})
        out.append(("Mean score per character", ["system"] + chars,
                    [[s] + [fmt_value(v.get(c), 2) for c in chars] for s, v in summary.get("scores_by_character", {}).items()]))
        j = summary.get("judge", {})
        out.append(("Judge reliability", ["ratings", "failures", "failure rate"],
                    [[str(j.get("verdicts")), str(j.get("failures")), fmt_value(j.get("failure_rate"))]]))
    keys = list(METRIC_LABELS)
    out.append(("Automatic metrics (no judge)", ["system"] + [METRIC_LABELS[k] for k in keys],
                [[s] + [fmt_value(m.get(k), 1 if k == "mean_chars" else 3) for k in keys]
                 for s, m in summary.get("metrics", {}).items()]))
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


CAVEAT = ("A judge model is only as good as its size: with a small local judge (such as the "
          "135M CPU model) verdicts are close to chance and strongly position-biased — read "
          "the position-bias row before the win rates, and use a strong judge for decisions.")


def render_markdown(summary: dict) -> str:
    judge = summary.get("judge_spec") or {}
    lines = [f"# Evaluation report: {summary.get('suite') or 'suite'}", "",
             f"- mode: **{summary['mode']}**, systems: {', '.join(summary['systems'])}",
             f"- judge: {json.dumps(judge, ensure_ascii=False)}" if judge else None,
             f"- matches: {summary['matches']} over {summary['items']} items, {summary['turns']} judged turns, "
             f"{summary['finished_early']} scenes finished early",
             f"- user messages by source: {json.dumps(summary.get('user_messages', {}))}",
             f"- generated: {summary['generated']}", "",
             f"**{summary['headline']}**" if summary.get("headline") else None, "", f"> {CAVEAT}", ""]
    for title, header, rows in tables(summary):
        lines += [f"## {title}", "", _md_table(header, rows), ""]
    return "\n".join(x for x in lines if x is not None) + "\n"


# ---------------------------------------------------------------- plots

def plots(summary: dict) -> dict[str, bytes]:
    """PNG images by title: win rates with intervals, per-dimension bars, per character."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    def save(fig, title: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[title] = buf.getvalue()

    if summary["mode"] == "pairwise" and summary.get("comparisons"):
        comps = summary["comparisons"]
        fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(comps)))
        labels = [f"{c['system']} vs {c['opponent']}" for c in comps]
        rates = [c["win_rate"] if c["win_rate"] == c["win_rate"] else 0.0 for c in comps]
        lo = [max(0.0, r - (c["ci"][0] if c["ci"][0] == c["ci"][0] else r)) for r, c in zip(rates, comps)]
        hi = [max(0.0, (c["ci"][1] if c["ci"][1] == c["ci"][1] else r) - r) for r, c in zip(rates, comps)]
        ax.barh(labels, rates, xerr=[lo, hi], color="#4c72b0", capsize=4)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("win rate (95% bootstrap CI)")
        save(fig, "Win rates")
        chars = sorted({ch for c in comps for ch in c["by_character"]})
        if chars:
            fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(chars)), 3))
            width = 0.8 / len(comps)
            for i, c in enumerate(comps):
                vals = [c["by_character"].get(ch, {}).get("win_rate", float("nan")) for ch in chars]
                ax.bar([j + i * width for j in range(len(chars))], [0 if v != v else v for v in vals], width,
                       label=f"{c['system']} vs {c['opponent']}")
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(chars))], chars)
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
            ax.set_ylim(0, 1)
            ax.set_ylabel("win rate")
            ax.legend(fontsize=7)
            save(fig, "Win rate per character")
    if summary["mode"] == "score" and summary.get("scores"):
        dims = sorted({d for s in summary["scores"].values() for d in s})
        systems = list(summary["scores"])
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(dims)), 3.2))
        width = 0.8 / max(1, len(systems))
        for i, s in enumerate(systems):
            means = [summary["scores"][s].get(d, {}).get("mean", 0) for d in dims]
            err = [[m - summary["scores"][s].get(d, {}).get("ci", [m, m])[0] for m, d in zip(means, dims)],
                   [summary["scores"][s].get(d, {}).get("ci", [m, m])[1] - m for m, d in zip(means, dims)]]
            ax.bar([j + i * width for j in range(len(dims))], means, width, yerr=err, capsize=3, label=s)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(dims))], dims, rotation=30, ha="right")
        ax.set_ylim(1, 5)
        ax.set_ylabel("mean score")
        ax.legend(fontsize=7)
        save(fig, "Scores per dimension")
        chars = sorted({c for v in summary["scores_by_character"].values() for c in v})
        if chars:
            fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(chars)), 3))
            for i, s in enumerate(systems):
                vals = [summary["scores_by_character"].get(s, {}).get(c, 0) for c in chars]
                ax.bar([j + i * width for j in range(len(chars))], vals, width, label=s)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(chars))], chars)
            ax.set_ylim(1, 5)
            ax.legend(fontsize=7)
            save(fig, "Mean score per character")
    # automatic metrics as per-dimension bars (rates in 0..1)
    keys = [k for k in METRIC_LABELS if k != "mean_chars"]
    systems = list(summary.get("metrics", {}))
    if systems:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        width = 0.8 / len(systems)
        for i, s in enumerate(systems):
            vals = [summary["metrics"][s].get(k) for k in keys]
            ax.bar([j + i * width for j in range(len(keys))], [0 if v is None else v for v in vals], width, label=s)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], [METRIC_LABELS[k] for k in keys],
                      rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        save(fig, "Automatic metrics")
    return out


def render_html(summary: dict, images: dict[str, bytes]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>Evaluation report: {html.escape(str(summary.get('suite')))}</title>",
             "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
             ".caveat{background:#fff6dd;padding:.6em 1em;border-left:4px solid #e0b000}</style></head><body>",
             f"<h1>Evaluation report: {html.escape(str(summary.get('suite')))}</h1>",
             f"<p>mode <b>{html.escape(summary['mode'])}</b>; systems {html.escape(', '.join(summary['systems']))}; "
             f"{summary['matches']} matches over {summary['items']} items, {summary['turns']} judged turns.</p>",
             (f"<p><b>{html.escape(summary['headline'])}</b></p>" if summary.get("headline") else ""),
             f"<p class='caveat'>{html.escape(CAVEAT)}</p>"]
    for title, header, rows in tables(summary):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    for title, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path) -> dict:
    """(Re)build ``summary.json``, ``report.md`` and ``report.html`` in ``run_dir``; return the summary."""
    from .runner import RESULTS, RUN_FILE, read_results

    run_dir = Path(run_dir)
    if not (run_dir / RESULTS).is_file() and not (run_dir / RUN_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no {RESULTS}); run `roleplay eval SUITE -o {run_dir}` first")
    meta: dict = {}
    if (run_dir / RUN_FILE).is_file():
        try:
            meta = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise ConfigError(f"{run_dir / RUN_FILE}: not valid JSON; delete it and re-run the suite") from None
    records = read_results(run_dir)
    seed = int(meta.get("config", {}).get("seed", 0) or 0)
    summary = summarize(records, meta, seed=seed)
    summary["judge_spec"] = meta.get("config", {}).get("judge")
    summary["run"] = str(run_dir)
    atomic_write(run_dir / "report.md", render_markdown(summary))
    atomic_write(run_dir / "report.html", render_html(summary, plots(summary)))
    safe = _json_safe(summary)
    atomic_write(run_dir / "summary.json", json.dumps(safe, ensure_ascii=False, indent=2, default=str))
    return safe


def _json_safe(node: Any) -> Any:
    """NaN (an undefined rate) becomes null, so summary.json is strict JSON."""
    if isinstance(node, float) and math.isnan(node):
        return None
    if isinstance(node, dict):
        return {k: _json_safe(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_json_safe(v) for v in node]
    return node
