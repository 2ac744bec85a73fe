"""``roleplay eval SUITE …`` (run a suite), ``roleplay eval canon ID…`` (canon continuation),
``roleplay eval charactereval:DIR`` (and ``rolebench:``/``coser:``/``characterbench:`` files)
and ``roleplay eval report RUN`` (rebuild a report).

Thin: options become a `RunConfig` (a YAML run config first, then command-line options on
top), the library does the rest.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the `roleplay` parser."""
    p = sub.add_parser(
        "eval", help="RPBench-style self-evaluation of engine settings or models",
        description="Run an evaluation suite (`bundled`, a .yaml suite, or RPBench-Auto "
                    "rpbench_character.jsonl / rpbench_scene.jsonl), or rebuild a report: "
                    "`roleplay eval report RUN_DIR`. With no options: the full engine against the "
                    "same model with a plain persona prompt, judged by the default model. "
                    "Judge-free: `roleplay eval canon ID…` continues the characters' own scenes and "
                    "compares with the real lines; `charactereval:DIR`, `rolebench:FILE`, `coser:FILE`, "
                    "`characterbench:FILE` run those benchmarks' published files.")
    p.add_argument("target", nargs="+", metavar="SUITE",
                   help="suite name or file; `canon ID…`; `charactereval:DIR` (or rolebench:, coser:, "
                        "characterbench: FILE); or `report RUN_DIR`")
    p.add_argument("--systems", help="canon and benchmark runs: comma-separated systems, baseline last "
                                     "(default engine,plain; presets engine, plain, no-retrieval, no-stage, instruct)")
    p.add_argument("--n", type=int, default=20, help="canon: cut points per character (default 20)")
    p.add_argument("-o", "--output", help="run folder (default runs/<suite>-<mode>-<method>); re-running resumes it")
    p.add_argument("--config", help="YAML run config (systems, judge, mode, dimensions…); options below override it")
    p.add_argument("--turns", type=int, help="turns per conversation (default: the suite's)")
    p.add_argument("--candidate", help="candidate system: preset (engine, plain, no-retrieval, no-stage, "
                                       "instruct), optionally PRESET@MODEL (default engine)")
    p.add_argument("--baseline", help="baseline system, same syntax (default plain)")
    p.add_argument("--judge-model", help="judge model (default: the default model)")
    p.add_argument("--judge-backend", help="judge backend (default: the default backend)")
    p.add_argument("--method", choices=["json", "logprob"], help="judge method (default logprob)")
    p.add_argument("--mode", choices=["pairwise", "score"], help="pairwise verdicts or 1-5 scores (default pairwise)")
    p.add_argument("--dimensions", help="comma-separated score dimensions (score mode)")
    p.add_argument("--batch-size", type=int, help="conversations played together (default 8)")
    p.add_argument("--max-tokens", type=int, help="tokens per reply (default 120)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--no-probes", action="store_true", help="skip knowledge-boundary probes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The `RunConfig` from ``--config`` plus the command-line options."""
    from ..errors import ConfigError
    from ..evaluation.runner import RunConfig, load_run_config

    cfg = load_run_config(args.config) if args.config else RunConfig()
    data = cfg.model_dump(mode="json")
    if args.candidate or args.baseline:
        if args.config and len(data["systems"]) > 2:
            raise ConfigError("--candidate/--baseline replace a two-system comparison; "
                              "the run config lists more systems, edit it instead")
        cand = args.candidate or (data["systems"][0] if len(data["systems"]) == 2 else "engine")
        base = args.baseline or (data["systems"][-1] if len(data["systems"]) == 2 else "plain")
        data["systems"], data["baseline"] = [cand, base], None
    judge = data["judge"]
    for key, val in [("model", args.judge_model), ("backend", args.judge_backend), ("method", args.method)]:
        if val is not None:
            judge[key] = val
    for key, val in [("turns", args.turns), ("mode", args.mode), ("batch_size", args.batch_size),
                     ("max_tokens", args.max_tokens), ("seed", args.seed), ("limit", args.limit)]:
        if val is not None:
            data[key] = val
    if args.dimensions:
        data["dimensions"] = [d.strip() for d in args.dimensions.split(",") if d.strip()]
    if args.no_probes:
        data["probes"] = False
    try:
        cfg = RunConfig.model_validate(data)
    except Exception as exc:  # pydantic ValidationError: one line naming the option
        errs = getattr(exc, "errors", None)
        if not errs:
            raise
        err = errs()[0]
        raise ConfigError(f"option {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
    cfg.resolved()  # validate systems, baseline and dimensions now, before any model loads
    return cfg


def run(args: argparse.Namespace) -> int:
    from .. import cli
    from ..errors import ConfigError
    from ..evaluation.report import write_report

    if args.target[0] == "report" and len(args.target) == 2 and not Path("report").exists():
        reference = _reference_summary(Path(args.target[1]))
        if reference is not None:  # a canon/benchmark run: its summary is complete when it finishes
            cli.emit(args, reference, lambda: _reference_text(reference))
            return 0
        summary = write_report(Path(args.target[1]))
        cli.emit(args, summary, lambda: _text(summary, Path(args.target[1])))
        return 0
    if args.target[0] == "canon" or args.target[0].split(":", 1)[0] in _BENCHMARKS:
        summary = _reference(args)
        cli.emit(args, summary, lambda: _reference_text(summary))
        return 0
    if len(args.target) != 1:
        raise ConfigError("give one SUITE (or `report RUN_DIR`)")
    from ..evaluation.runner import run_eval
    from ..evaluation.suite import load_suite

    suite = load_suite(args.target[0])
    cfg = build_config(args)
    out = run_eval(suite, cfg, args.output, settings=args.settings, progress=not args.no_progress)
    summary = write_report(out)
    cli.emit(args, summary, lambda: _text(summary, out))
    return 0


_BENCHMARKS = ("charactereval", "rolebench", "coser", "characterbench")


def _reference(args: argparse.Namespace) -> dict:
    """Canon continuation or a benchmark file: reference-based, judge-free."""
    from ..errors import ConfigError

    systems = [s.strip() for s in (args.systems or "engine,plain").split(",") if s.strip()]
    common = dict(systems=systems, settings=args.settings, max_tokens=args.max_tokens or 60,
                  batch_size=args.batch_size or 8, seed=args.seed or 0, progress=not args.no_progress)
    if args.target[0] == "canon":
        from ..evaluation.canon import canon_run

        if len(args.target) < 2:
            raise ConfigError("name the characters: roleplay eval canon ID [ID…]")
        run = canon_run(args.target[1:], n=args.n, out_dir=args.output, **common)
    else:
        from ..evaluation.benchmarks import benchmark_run

        if len(args.target) != 1:
            raise ConfigError("give one benchmark, e.g. `roleplay eval rolebench:test.jsonl`")
        run = benchmark_run(args.target[0], out_dir=args.output, limit=args.limit, turns=args.turns, **common)
    return run.run()


def _reference_summary(run_dir: Path) -> dict | None:
    """The summary of a reference (canon or benchmark) run folder, None for a pairwise/score run."""
    import json

    from ..errors import ConfigError

    try:
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("runner") != "reference":
        return None
    try:
        return json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{run_dir}: the run has no summary yet; run the same command again to finish it") from None


def _reference_text(summary: dict) -> str:
    from ..evaluation.reference import tables

    lines = [f"run folder: {summary['run']}"]
    for title, header, rows in tables(summary)[:2]:
        lines.append(title)
        lines += ["  " + " | ".join(f"{h}: {c}" for h, c in zip(header, row)) for row in rows]
    lines.append(f"report: {summary['run']}/report.md")
    return "\n".join(lines)


def _text(summary: dict, out: Path) -> str:
    lines = [f"run folder: {out}"]
    from ..evaluation.report import fmt_value

    if summary.get("headline"):
        lines.append(summary["headline"])
    if summary.get("gate", {}).get("reliable") is False:
        lines.append(f"report: {out / 'report.html'}")
        return "\n".join(lines)

    for c in summary.get("comparisons", []):
        lo, hi = c["ci"]
        lines.append(f"{c['system']} vs {c['opponent']}: win rate {fmt_value(c['win_rate'])} "
                     f"[{fmt_value(lo)}, {fmt_value(hi)}] ({c['wins']}-{c['losses']}, ties {c['ties']}, "
                     f"failures {c['failures']})")
    for s, dims in summary.get("scores", {}).items():
        lines.append(f"{s}: " + ", ".join(f"{d} {v['mean']:.2f}" for d, v in dims.items()))
    lines.append(f"report: {out / 'report.html'}")
    return "\n".join(lines)
