"""Paired statistics of a method against stock nnU-Net that can tell a gain from noise.

A pair is one held-out case scored by both methods after training on the same labelled choice.
Pairs are not independent: every case of one labelled choice shares that choice's luck, and every
choice of one fold shares its held-out cases and its pretraining run. So the 95% interval of the
mean paired difference comes from a hierarchical bootstrap, not from resampling pairs (or pixels):
each replicate draws, within every fold, the labelled choices and the held-out cases with
replacement and averages the differences over the drawn choice x case grid. The Wilcoxon
signed-rank p over all pairs is reported beside it, as before; "beats stock" is claimed only when
the interval excludes 0.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
from scipy.stats import wilcoxon

BOOTSTRAP_REPLICATES = 10_000
BOOTSTRAP_SEED = 0

Pair = tuple[str, str, str, float]  # (fold: the pretraining run, labelled choice, held-out case, value)


def _grids(pairs: Iterable[Pair]) -> list[np.ndarray]:
    """Per fold, the choice x case matrix of values (NaN where a pair is missing)."""
    by_fold: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for fold, choice, case, value in pairs:
        by_fold[fold][(choice, case)] = value
    grids = []
    for cells in by_fold.values():
        choices = sorted({c for c, _ in cells})
        cases = sorted({k for _, k in cells})
        grid = np.full((len(choices), len(cases)), np.nan)
        for (choice, case), value in cells.items():
            grid[choices.index(choice), cases.index(case)] = value
        grids.append(grid)
    return grids


def hierarchical_bootstrap_ci(pairs: list[Pair], replicates: int = BOOTSTRAP_REPLICATES,
                              seed: int = BOOTSTRAP_SEED) -> list[float]:
    """95% percentile interval of the mean value, resampling labelled choices and held-out cases
    within each fold."""
    grids = _grids(pairs)
    rng = np.random.default_rng(seed)
    means = np.empty(replicates)
    for r in range(replicates):
        total, count = 0.0, 0
        for grid in grids:
            rows = rng.integers(0, grid.shape[0], grid.shape[0])
            cols = rng.integers(0, grid.shape[1], grid.shape[1])
            drawn = grid[np.ix_(rows, cols)]
            total += np.nansum(drawn)
            count += int(np.count_nonzero(~np.isnan(drawn)))
        means[r] = total / count if count else np.nan
    low, high = np.nanpercentile(means, [2.5, 97.5])
    return [float(low), float(high)]


def paired_comparison(method: dict[tuple[str, str, str], float], reference: dict[tuple[str, str, str], float],
                      replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> dict:
    """``method`` against ``reference``, both keyed by (fold, labelled choice, held-out case), on
    the keys both have: ``n_pairs``, ``mean_diff``, ``wins``, ``losses``, ``ci95``, ``wilcoxon_p``,
    and the ``variance`` shares of the differences: there what a fold does to both methods alike
    (its held-out cases, its labelled pool) cancels, so the share between folds is what the folds'
    pretraining runs do to the gain."""
    keys = sorted(set(method) & set(reference))
    if not keys:
        return {}
    diffs = np.array([method[k] - reference[k] for k in keys])
    pairs = [(*k, float(d)) for k, d in zip(keys, diffs)]
    p = float(wilcoxon(diffs).pvalue) if len(diffs) > 1 and np.any(diffs) else 1.0
    return {"n_pairs": len(keys), "mean_diff": float(diffs.mean()), "wins": int((diffs > 0).sum()),
            "losses": int((diffs < 0).sum()), "ci95": hierarchical_bootstrap_ci(pairs, replicates, seed),
            "wilcoxon_p": p, "bootstrap": {"replicates": replicates, "seed": seed,
                                           "resampled": "labelled choices and held-out cases, within each fold"},
            "variance": variance_components(dict(zip(keys, diffs.tolist())))}


def verdict(paired: dict) -> str:
    """What the interval allows one to say."""
    low, high = paired["ci95"]
    if low > 0:
        return "beats stock"
    if high < 0:
        return "worse than stock"
    return "no difference shown"


def variance_components(scores: dict[tuple[str, str, str], float]) -> dict:
    """Shares of the scores' total sum of squares: between folds (``pretraining_run``: each fold's
    pretraining run together with its held-out group), between labelled choices and between
    held-out cases within a fold, and the rest (choice x case interaction). ``pretraining_run`` is
    None with a single fold."""
    grids = [g for g in _grids((*k, v) for k, v in scores.items())]
    values = np.concatenate([g[~np.isnan(g)] for g in grids])
    grand = values.mean()
    total = float(((values - grand) ** 2).sum())
    ss = {"pretraining_run": 0.0, "labelled_choice": 0.0, "held_out_case": 0.0, "residual": 0.0}
    for g in grids:
        n = np.count_nonzero(~np.isnan(g))
        fold_mean = np.nanmean(g)
        ss["pretraining_run"] += n * (fold_mean - grand) ** 2
        rows = np.nanmean(g, axis=1) - fold_mean
        cols = np.nanmean(g, axis=0) - fold_mean
        ss["labelled_choice"] += float((np.count_nonzero(~np.isnan(g), axis=1) * rows ** 2).sum())
        ss["held_out_case"] += float((np.count_nonzero(~np.isnan(g), axis=0) * cols ** 2).sum())
        fitted = fold_mean + rows[:, None] + cols[None, :]
        ss["residual"] += float(np.nansum((g - fitted) ** 2))
    shares = {k: (v / total if total > 0 else 0.0) for k, v in ss.items()}
    if len(grids) == 1:
        shares["pretraining_run"] = None
    return {"shares_of_sum_of_squares": shares, "n": int(len(values)), "folds": len(grids)}
