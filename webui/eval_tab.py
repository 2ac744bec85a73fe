"""The Eval tab: run an RPBench-style evaluation, read its report, browse transcripts.

Everything is `roleplay.evaluation`: `load_suite`, `RunConfig`, `Runner` (its tqdm bar
feeds Gradio's progress bar) and the report helpers (`write_report`, `render_markdown`,
`plots`, `read_results`). Runs go to ``ROLEPLAY_HOME/runs/<name>`` and resume like the CLI:
re-running the same settings into the same folder skips finished matches. A run blocks one
worker for its whole length, which is fine for a local tool; long runs belong on the CLI.
Transcript text is escaped before display. The report's headline carries the judge
reliability gate; canon-continuation runs (`roleplay.evaluation.canon`, judge-free) run
from the same tab and show their own report (reference metrics with intervals).
"""
from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING

from . import html

if TYPE_CHECKING:
    from roleplay.engine import Engine


def run_name(suite: str, candidate: str, baseline: str, mode: str, method: str) -> str:
    """A folder name for these settings (safe characters only)."""
    raw = f"{suite}-{candidate}-vs-{baseline}-{mode}-{method}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", raw)[:120]


def transcript_markdown(record: dict) -> str:
    """One match as Markdown: opening, then per turn the user line and each system's reply."""
    lines = [f"### {html.text(record.get('item'))} — {html.text(record.get('character_name'))}"]
    if record.get("opening"):
        lines.append(f"_opening:_ {html.text(record['opening'])}")
    for turn in record.get("turns", []):
        lines.append(f"\n**{html.text(record.get('user_name', 'User'))}:** {html.text(turn.get('user'))}")
        for system, reply in (turn.get("replies") or {}).items():
            text = reply.get("text", "") if isinstance(reply, dict) else reply
            lines.append(f"- **{html.text(system)}:** {html.text(text)}")
        verdict = {k: v for k, v in turn.items() if k in ("winner", "verdict", "reason", "scores")}
        if verdict:
            lines.append(f"  _judge:_ {html.inline(verdict, limit=400)}")
    for probe in record.get("probes", []):
        lines.append(f"\n_probe:_ {html.inline(probe, limit=400)}")
    return "\n".join(lines)


def build(engine: "Engine") -> None:
    """Lay out the Eval tab inside the current Blocks context and wire its events."""
    import gradio as gr

    from roleplay.errors import RoleplayError
    from roleplay.evaluation.suite import BUNDLED_SUITES
    from roleplay.evaluation.systems import PRESETS

    runs_dir = engine.settings.home / "runs"
    systems = list(PRESETS)
    with gr.Row():
        suite = gr.Dropdown(choices=list(BUNDLED_SUITES), value=BUNDLED_SUITES[0], label="Suite",
                            allow_custom_value=True, info="a bundled suite, or a path to a .yaml/.jsonl suite")
        candidate = gr.Dropdown(choices=systems, value="engine", label="Candidate", allow_custom_value=True)
        baseline = gr.Dropdown(choices=systems, value="plain", label="Baseline", allow_custom_value=True)
    with gr.Row():
        mode = gr.Radio(["pairwise", "score"], value="pairwise", label="Mode")
        method = gr.Radio(["logprob", "json"], value="logprob", label="Judge method")
        judge_model = gr.Textbox(label="Judge model (blank: the loaded model)", value="")
    with gr.Row():
        limit = gr.Number(value=2, precision=0, minimum=1, label="Items (limit)")
        turns = gr.Number(value=1, precision=0, minimum=1, maximum=20, label="Turns per item")
        max_tokens = gr.Number(value=48, precision=0, minimum=8, maximum=1024, label="Max tokens per reply")
        run_btn = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
    with gr.Row():
        canon_ids = gr.Textbox(label="Canon continuation: character ids (judge-free)", value="sherlock", scale=3,
                               info="the candidate and baseline continue these characters' own scenes")
        canon_n = gr.Number(value=2, precision=0, minimum=1, maximum=200, label="Cut points per character")
        canon_btn = gr.Button("Run canon", elem_id="eval-canon")
    status = gr.Markdown("", elem_id="eval-status")
    report = gr.Markdown("", elem_id="eval-report")
    charts = gr.Gallery(label="Plots", columns=2, height=320, allow_preview=True, interactive=False)
    with gr.Row():
        run_dd = gr.Dropdown(choices=[], label="Run folder", allow_custom_value=True, scale=2)
        match_dd = gr.Dropdown(choices=[], label="Transcript", scale=3)
    transcript = gr.Markdown("", elem_id="eval-transcript")

    def existing_runs() -> list[str]:
        if not runs_dir.is_dir():
            return []
        return sorted(p.name for p in runs_dir.glob("*") if (p / "results.jsonl").is_file())

    def show_report(name: str | None):
        import json

        from PIL import Image

        from roleplay.evaluation.report import plots, render_markdown, write_report
        from roleplay.evaluation.runner import read_results

        if not name:
            return "", [], gr.update(choices=[]), ""
        summary_file = runs_dir / name / "summary.json"
        try:
            kind = json.loads((runs_dir / name / "run.json").read_text(encoding="utf-8")).get("runner")
        except (OSError, ValueError):
            kind = None
        if kind == "reference":  # canon or a benchmark file: its own report, no transcripts
            from roleplay.evaluation import reference

            if not summary_file.is_file():
                return "⚠ this run has no summary yet; run it again to finish it", [], gr.update(choices=[]), ""
            return reference.render_markdown(json.loads(summary_file.read_text(encoding="utf-8"))), [], \
                gr.update(choices=[], value=None), ""
        try:
            summary = write_report(runs_dir / name)
        except RoleplayError as exc:
            return f"⚠ {html.text(exc)}", [], gr.update(choices=[]), ""
        images = [(Image.open(io.BytesIO(png)), title) for title, png in plots(summary).items()]
        records = read_results(runs_dir / name)
        choices = [(f"{r.get('item')} ({', '.join(r.get('systems', []))})", str(i)) for i, r in enumerate(records)]
        # subtle: the report is our own Markdown of numbers and names from our suite/config
        return render_markdown(summary), images, gr.update(choices=choices, value=None), ""

    def show_transcript(name: str | None, index: str | None) -> str:
        from roleplay.evaluation.runner import read_results

        if not name or index in (None, ""):
            return ""
        records = read_results(runs_dir / name)
        i = int(index)
        return transcript_markdown(records[i]) if 0 <= i < len(records) else ""

    def run(suite_spec: str, cand: str, base: str, mode_v: str, method_v: str, judge: str,
            lim: float, nturns: float, mx: float, progress=gr.Progress(track_tqdm=True)):
        from roleplay.evaluation.runner import JudgeSpec, RunConfig, Runner
        from roleplay.evaluation.suite import load_suite

        name = run_name(suite_spec, cand, base, mode_v, method_v)
        try:
            systems_v = [cand] if mode_v == "score" and cand == base else [cand, base]
            config = RunConfig(systems=systems_v, baseline=base if mode_v == "pairwise" else None, mode=mode_v,
                               judge=JudgeSpec(method=method_v, model=judge.strip() or None),
                               limit=int(lim or 1), turns=int(nturns or 1), max_tokens=int(mx or 48))
            Runner(load_suite(suite_spec), config, runs_dir / name, settings=engine.settings,
                   progress=True).run()
        except RoleplayError as exc:
            return f"<span class='error-text'>⚠ {html.text(exc)}</span>", "", [], gr.update(), gr.update()
        except Exception as exc:  # pydantic errors from RunConfig: one line, not a traceback
            return (f"<span class='error-text'>⚠ {html.inline(exc, limit=300)}</span>", "", [], gr.update(),
                    gr.update())
        md, images, matches, _ = show_report(name)
        return (f"Finished: `{html.text(runs_dir / name)}`", md, images,
                gr.update(choices=existing_runs(), value=name), matches)

    def run_canon(ids: str, n: float, cand: str, base: str, mx: float, progress=gr.Progress(track_tqdm=True)):
        from roleplay.evaluation.canon import canon_run

        cards = [c for c in re.split(r"[\s,]+", ids or "") if c]
        name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", f"canon-{'-'.join(cards)}-{cand}-vs-{base}-n{int(n or 1)}")[:120]
        try:
            canon_run(cards, systems=[cand, base], n=int(n or 1), settings=engine.settings, out_dir=runs_dir / name,
                      max_tokens=int(mx or 48), progress=True).run()
        except RoleplayError as exc:
            return f"<span class='error-text'>⚠ {html.text(exc)}</span>", "", [], gr.update(), gr.update()
        md, images, matches, _ = show_report(name)
        return (f"Finished: `{html.text(runs_dir / name)}`", md, images,
                gr.update(choices=existing_runs(), value=name), matches)

    canon_btn.click(run_canon, [canon_ids, canon_n, candidate, baseline, max_tokens],
                    [status, report, charts, run_dd, match_dd], api_name="eval_canon")
    run_btn.click(run, [suite, candidate, baseline, mode, method, judge_model, limit, turns, max_tokens],
                  [status, report, charts, run_dd, match_dd], api_name="eval_run")
    run_dd.focus(lambda: gr.update(choices=existing_runs()), None, run_dd, api_name="eval_runs")
    run_dd.input(show_report, [run_dd], [report, charts, match_dd, transcript], api_name="eval_report")
    match_dd.input(show_transcript, [run_dd, match_dd], [transcript], api_name="eval_transcript")
