"""Self-evaluation: judged suites (RPBench-style), judge-free canon continuation, benchmark files.

>>> from roleplay.evaluation import load_suite, run_eval, RunConfig   # doctest: +SKIP
>>> run_eval(load_suite("bundled"), RunConfig(turns=2), "runs/quick")  # doctest: +SKIP
>>> canon_run(["sherlock"], n=10).run()["comparisons"]                 # doctest: +SKIP
"""
from .benchmarks import benchmark_run
from .canon import canon_run
from .reference import RefItem, RefRun
from .report import write_report
from .runner import JudgeSpec, RunConfig, Runner, load_run_config, read_results, run_eval
from .suite import Suite, SuiteItem, item_character, load_suite
from .systems import PRESETS, SystemSpec

__all__ = ["RefItem", "RefRun", "benchmark_run", "canon_run", "JudgeSpec", "PRESETS", "RunConfig", "Runner", "Suite", "SuiteItem", "SystemSpec",
           "item_character", "load_run_config", "load_suite", "read_results", "run_eval", "write_report"]
