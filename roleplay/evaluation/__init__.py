"""RPBench-style self-evaluation: suites, systems, judges, metrics, statistics, reports.

>>> from roleplay.evaluation import load_suite, run_eval, RunConfig   # doctest: +SKIP
>>> run_eval(load_suite("bundled"), RunConfig(turns=2), "runs/quick")  # doctest: +SKIP
"""
from .report import write_report
from .runner import JudgeSpec, RunConfig, Runner, load_run_config, read_results, run_eval
from .suite import Suite, SuiteItem, item_character, load_suite
from .systems import PRESETS, SystemSpec

__all__ = ["JudgeSpec", "PRESETS", "RunConfig", "Runner", "Suite", "SuiteItem", "SystemSpec",
           "item_character", "load_run_config", "load_suite", "read_results", "run_eval", "write_report"]
