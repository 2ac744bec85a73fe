"""Statistics on known inputs: bootstrap intervals, cluster win rates, Bradley–Terry, Elo."""
from __future__ import annotations

import math
import random

import pytest

from roleplay.evaluation.stats import bootstrap_ci, bradley_terry, elo_from_strengths, win_rate_ci


def _independent_bootstrap(values, n_boot, seed):
    """A plain-Python percentile bootstrap (different RNG, same definition)."""
    rnd = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rnd.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]


def test_bootstrap_matches_independent_and_normal_approximation():
    values = [1.0] * 30 + [0.0] * 10  # p = 0.75, n = 40
    lo, hi = bootstrap_ci(values, n_boot=20000, seed=1)
    ilo, ihi = _independent_bootstrap(values, 20000, 7)
    assert lo == pytest.approx(ilo, abs=0.026) and hi == pytest.approx(ihi, abs=0.026)
    se = math.sqrt(0.75 * 0.25 / 40)  # hand: 0.0685 -> [0.616, 0.884]
    assert lo == pytest.approx(0.75 - 1.96 * se, abs=0.03)
    assert hi == pytest.approx(min(1.0, 0.75 + 1.96 * se), abs=0.03)
    assert lo < 0.75 < hi


def test_bootstrap_is_fixed_by_its_seed_and_degenerate_cases_are_exact():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_cluster_win_rate_pools_and_resamples_conversations():
    r = win_rate_ci([(1, 1)] * 10, seed=0)
    assert r["win_rate"] == 0.5 and r["ci"] == [0.5, 0.5] and (r["wins"], r["losses"]) == (10, 10)
    r = win_rate_ci([(3, 1)], seed=0)
    assert r["win_rate"] == 0.75 and r["ci"] == [0.75, 0.75]
    # pooled, not a mean of per-conversation rates: (3+0)/(3+0+0+1) = 0.75, while the mean would be 0.5
    r = win_rate_ci([(3, 0), (0, 1)], seed=0)
    assert r["win_rate"] == 0.75
    assert 0.0 <= r["ci"][0] <= 0.75 <= r["ci"][1] <= 1.0
    r = win_rate_ci([(0, 0)], seed=0)
    assert math.isnan(r["win_rate"])


def test_bradley_terry_on_a_hand_checked_table():
    # Strengths 4:2:1 give expected wins A-B 4:2 (6 games), B-C 2:1 (3), A-C 4:1 (5); when the
    # observed table equals the expected one, the MLE is exactly those strengths (4/7, 2/7, 1/7).
    games = [("A", "B")] * 4 + [("B", "A")] * 2 + [("B", "C")] * 2 + [("C", "B")] + \
            [("A", "C")] * 4 + [("C", "A")]
    s = bradley_terry(games)
    assert s["A"] == pytest.approx(4 / 7, abs=1e-6)
    assert s["B"] == pytest.approx(2 / 7, abs=1e-6)
    assert s["C"] == pytest.approx(1 / 7, abs=1e-6)
    elo = elo_from_strengths(s)
    assert elo["A"] - elo["B"] == pytest.approx(400 * math.log10(2), abs=1e-3)  # 120.4 points
    assert sum(elo.values()) / 3 == pytest.approx(1000.0)


def test_bradley_terry_two_players_and_cycles():
    s = bradley_terry([("a", "b")] * 3 + [("b", "a")])
    assert s["a"] / s["b"] == pytest.approx(3.0, rel=1e-6)
    cyc = bradley_terry([("a", "b"), ("b", "c"), ("c", "a")])
    assert all(v == pytest.approx(1 / 3, abs=1e-6) for v in cyc.values())
    # an unbeaten player stays finite with a pseudo-count and ranks first
    s = bradley_terry([("a", "b")] * 5, pseudo=0.5)
    assert 0.5 < s["a"] < 1 and s["a"] > s["b"] > 0
