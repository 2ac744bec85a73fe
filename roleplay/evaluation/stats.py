"""Statistics for evaluation runs: win rates with bootstrap intervals, Bradley–Terry, Elo.

Trade-offs:
- The bootstrap resamples *conversations* (clusters of turn verdicts), not single turns:
  turns of one conversation share a history and are not independent, so a per-turn
  bootstrap would give intervals that are too narrow. With one verdict per cluster the two
  are the same thing.
- Percentile intervals (not BCa): simple and honest for the few hundred verdicts a local
  run produces; a fixed seed makes every report reproducible.
- Bradley–Terry is fitted with Hunter's MM algorithm (monotone, no step size to tune); a
  small pseudo-count keeps strengths finite when a system never lost or never won. Elo
  here is the BT fit on the Elo scale (400·log10 strength, anchored at 1000), which does
  not depend on the order games were played, unlike sequential Elo updates.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    >>> bootstrap_ci([1, 1, 1])
    (1.0, 1.0)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def win_rate_ci(clusters: Sequence[tuple[int, int]], *, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> dict:
    """Win rate ``wins / (wins + losses)`` pooled over clusters, with a cluster bootstrap.

    ``clusters`` holds one ``(wins, losses)`` pair per conversation; ties and judge
    failures are counted elsewhere and do not enter the rate.
    """
    arr = np.asarray([c for c in clusters], dtype=float).reshape(-1, 2)
    wins, losses = arr[:, 0].sum(), arr[:, 1].sum()
    decided = wins + losses
    rate = float(wins / decided) if decided else math.nan
    if not decided:
        return {"win_rate": rate, "ci": [math.nan, math.nan], "wins": 0, "losses": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(n_boot, len(arr)))
    w = arr[idx, 0].sum(axis=1)
    d = arr[idx, 0].sum(axis=1) + arr[idx, 1].sum(axis=1)
    # subtle: a resample may contain only undecided clusters; drop it rather than call it 0.
    ok = d > 0
    rates = w[ok] / d[ok]
    lo, hi = np.quantile(rates, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"win_rate": rate, "ci": [float(lo), float(hi)], "wins": int(wins), "losses": int(losses)}


def bradley_terry(games: Sequence[tuple[str, str]], *, players: Sequence[str] | None = None,
                  pseudo: float = 0.0, iters: int = 10000, tol: float = 1e-12) -> dict[str, float]:
    """Bradley–Terry strengths from ``(winner, loser)`` games (MM algorithm), summing to 1.

    ``pseudo`` adds that many virtual wins each way to every pair that met, so a player who
    never lost (or never won) keeps a finite strength.

    >>> s = bradley_terry([("a", "b")] * 3 + [("b", "a")])
    >>> round(s["a"] / s["b"], 6)
    3.0
    """
    names = list(players) if players is not None else sorted({p for g in games for p in g})
    pos = {n: i for i, n in enumerate(names)}
    k = len(names)
    if k == 0:
        return {}
    wins = np.zeros((k, k))  # wins[i, j]: times i beat j
    for w, l in games:
        wins[pos[w], pos[l]] += 1
    met = (wins + wins.T) > 0
    wins = wins + pseudo * met
    n = wins + wins.T
    total_wins = wins.sum(axis=1)
    p = np.full(k, 1.0 / k)
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total_wins / np.where(denom > 0, denom, 1), p)
        new = np.maximum(new, 1e-300)
        new /= new.sum()
        if np.abs(new - p).max() < tol:
            p = new
            break
        p = new
    return {name: float(p[i]) for i, name in enumerate(names)}


def elo_from_strengths(strengths: dict[str, float], *, anchor: float = 1000.0) -> dict[str, float]:
    """Bradley–Terry strengths on the Elo scale; their geometric mean maps to ``anchor``."""
    if not strengths:
        return {}
    logs = {n: math.log10(max(s, 1e-300)) for n, s in strengths.items()}
    mean = sum(logs.values()) / len(logs)
    return {n: anchor + 400.0 * (v - mean) for n, v in logs.items()}


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence[str] | None = None, *,
                         n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling whole clusters.

    Cut points taken from one scene share its context, so they are resampled together
    (the same reasoning as conversations in `win_rate_ci`). Without ``clusters`` every
    value is its own cluster (`bootstrap_ci`).

    >>> cluster_bootstrap_ci([1.0, 1.0, 1.0], ["a", "a", "b"])
    (1.0, 1.0)
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    if clusters is None:
        return bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level)
    keys = sorted(set(clusters))
    pos = {k: i for i, k in enumerate(keys)}
    idx = np.fromiter((pos[c] for c in clusters), dtype=np.int64, count=len(clusters))
    sums = np.bincount(idx, weights=x, minlength=len(keys))
    counts = np.bincount(idx, minlength=len(keys)).astype(float)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(keys), size=(n_boot, len(keys)))
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def sign_test(diffs: Sequence[float]) -> float:
    """Two-sided exact sign test p-value for paired differences (zeros dropped).

    >>> round(sign_test([1.0] * 10), 4)
    0.002
    >>> sign_test([0.0, 0.0])
    1.0
    """
    pos = sum(1 for d in diffs if d > 0)
    neg = sum(1 for d in diffs if d < 0)
    n = pos + neg
    if n == 0:
        return 1.0
    k = min(pos, neg)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired_comparison(a: Sequence[float], b: Sequence[float], clusters: Sequence[str] | None = None, *,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """``a - b`` on the same items: mean difference, cluster-bootstrap interval, sign test.

    ``a`` and ``b`` are aligned (item i of each was scored on the same cut point).
    """
    if len(a) != len(b):
        raise ValueError("paired values must have the same length")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    lo, hi = cluster_bootstrap_ci(d, clusters, n_boot=n_boot, seed=seed, level=level)
    return {"diff": float(np.mean(d)) if d else math.nan, "ci": [lo, hi], "n": len(d),
            "wins": sum(1 for x in d if x > 0), "losses": sum(1 for x in d if x < 0),
            "p_sign": sign_test(d),
            "significant": bool(d) and (lo > 0 or hi < 0)}
