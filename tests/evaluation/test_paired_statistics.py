"""Paired statistics against stock nnU-Net: the interval, the verdict and the variance shares."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_diffusion_pretrain.evaluation.paired_statistics import (paired_comparison, variance_components,
                                                                    verdict)


def scores(effect, folds=1, choices=3, cases=4) -> dict:
    return {(f"f{f}", f"c{c}", f"k{k}"): effect(f, c, k)
            for f in range(folds) for c in range(choices) for k in range(cases)}


def test_a_constant_gain_has_a_point_interval_and_beats_stock():
    stock = scores(lambda f, c, k: 0.5 + 0.1 * c - 0.05 * k)
    method = {key: v + 0.03 for key, v in stock.items()}
    result = paired_comparison(method, stock, replicates=500)
    assert result["n_pairs"] == 12 and result["wins"] == 12
    assert result["mean_diff"] == pytest.approx(0.03) and result["ci95"] == pytest.approx([0.03, 0.03])
    assert verdict(result) == "beats stock"
    assert verdict(paired_comparison(stock, method, replicates=500)) == "worse than stock"


def test_the_interval_resamples_labelled_choices_not_just_pairs():
    """Three labelled choices, one of which made the method much better: pairs look many and
    consistent, but the evidence is three choices, so the interval must be far wider than a
    bootstrap over the 24 pairs, and include 0."""
    rng = np.random.default_rng(1)
    stock = scores(lambda f, c, k: 0.5, choices=3, cases=8)
    gain = {0: 0.12, 1: -0.02, 2: -0.03}
    method = {key: v + gain[int(key[1][1:])] + rng.normal(0, 0.005) for key, v in stock.items()}
    result = paired_comparison(method, stock, replicates=4000)
    diffs = np.array([method[k] - stock[k] for k in sorted(stock)])
    naive = np.percentile([rng.choice(diffs, len(diffs)).mean() for _ in range(4000)], [2.5, 97.5])
    width = result["ci95"][1] - result["ci95"][0]
    assert width > 2 * (naive[1] - naive[0])
    assert result["ci95"][0] < 0 < result["ci95"][1] and verdict(result) == "no difference shown"


def test_variance_shares_name_the_source_of_the_spread():
    by_choice = variance_components(scores(lambda f, c, k: 0.4 + 0.1 * c))
    assert by_choice["shares_of_sum_of_squares"]["labelled_choice"] == pytest.approx(1.0)
    assert by_choice["shares_of_sum_of_squares"]["pretraining_run"] is None  # one fold
    by_fold = variance_components(scores(lambda f, c, k: 0.3 + 0.2 * f + 0.01 * k, folds=3))
    shares = by_fold["shares_of_sum_of_squares"]
    assert shares["pretraining_run"] > 0.9 and shares["held_out_case"] > 0 and shares["labelled_choice"] == 0
    assert sum(shares.values()) == pytest.approx(1.0)


def test_the_paired_difference_separates_the_pretraining_run_from_the_held_out_group():
    """Stock's folds differ by their held-out cases; the method adds a gain that differs by fold
    (its pretraining run). Stock's scores have a fold share without any pretraining; in the
    differences that part cancels and the fold share is the pretraining run's alone."""
    stock = scores(lambda f, c, k: 0.3 + 0.2 * f + 0.05 * c + 0.01 * k, folds=3)
    run_gain = {0: 0.0, 1: 0.1, 2: 0.05}
    method = {key: v + run_gain[int(key[0][1:])] + 0.01 * int(key[2][1:]) for key, v in stock.items()}
    stock_shares = variance_components(stock)["shares_of_sum_of_squares"]
    diff_shares = paired_comparison(method, stock, replicates=200)["variance"]["shares_of_sum_of_squares"]
    assert stock_shares["pretraining_run"] > 0.5
    assert diff_shares["labelled_choice"] == pytest.approx(0.0, abs=1e-12)
    assert diff_shares["pretraining_run"] > 0.8 and diff_shares["held_out_case"] > 0
    assert sum(diff_shares.values()) == pytest.approx(1.0)
