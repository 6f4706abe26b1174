"""The compiled kernels compute exactly what the River-API model computes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.detect import kernels, stats
from monitor.detect.drift import QUANTUM, compare, dequantise
from monitor.detect.model import AdaptiveGaussian, distance_threshold, score
from monitor.settings import Flagged


@pytest.mark.parametrize(("k", "flagged"), [(1, "skip"), (3, "skip"), (1, "clip"), (3, "clip"), (3, "learn")])
def test_a_model_row_learns_and_scores_like_the_model_to_the_last_bit(k: int, flagged: Flagged) -> None:
    """A ramp with noise and far outliers, trend on: learned, skipped and clipped alike."""
    rng, threshold = np.random.default_rng(k), distance_threshold(0.9999, k)
    m, row = AdaptiveGaussian(k, 0.05, 0.005, 1e-3, 0.3), np.zeros(10)
    for i in range(5000):
        noise = rng.normal(10 + 0.01 * i, 1 + i % 7, k) * (1000 if i % 499 == 0 else 1)
        f = tuple(float(x) for x in noise)
        d2 = kernels.distance(row, k, 1e-3, f)
        assert d2 == m.step(f, threshold, flagged)
        assert kernels.score(d2, k) == score(d2, k)
        if d2 <= threshold or flagged == "learn":
            kernels.learn(row, k, 0.05, 0.005, 0.3, f)
        elif flagged == "clip":
            kernels.nudge(row, k, 0.05, f, math.sqrt(threshold / d2))
    assert [row[0], *row[1 : 1 + k], *row[4 : 4 + k], *row[7 : 7 + k]] == m.state()


def test_the_score_matches_far_into_the_tail() -> None:
    for d2 in np.geomspace(1e-9, 800, 2000).tolist():
        assert (kernels.score(d2, 1), kernels.score(d2, 3)) == (score(d2, 1), score(d2, 3))


@pytest.mark.parametrize(("n", "m", "bins"), [(96, 96, 10), (2000, 2000, 10), (50, 70, 7), (128, 128, 20)])
def test_ks_and_psi_of_quantised_windows_equal_the_vectorised_reference(n: int, m: int, bins: int) -> None:
    rng = np.random.default_rng(n + bins)
    for trial in range(40):
        ref = np.round(rng.beta(2, 5, n) * QUANTUM).astype(np.uint16)
        cur = np.round(rng.beta(2, 5 + trial % 3, m) * QUANTUM).astype(np.uint16)
        if trial % 4 == 0:
            cur[: m // 2] = ref[: m // 2]  # ties across the windows
        r64, c64 = dequantise(ref[None]), dequantise(cur[None])
        edges = stats.psi_edges(r64, bins)
        frac = stats.bin_fractions(edges, r64).astype(np.float32)
        d, p = stats.ks_2samp_batch(r64, c64)
        value = stats.psi(frac.astype(np.float64), stats.bin_fractions(edges, c64))
        got = compare(ref, cur, edges[0], frac[0])
        assert (got.ks_stat[0], got.ks_pvalue[0], got.psi[0]) == (d[0], p[0], value[0])
