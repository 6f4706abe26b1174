"""The novelty stage: how unusual a reading is given its own pair's history, as one level in [0, 1].

The per-pair model (:mod:`monitor.detect.model`) answers "is this reading far from the recent level?",
which suits stationary sensor noise. Metrics such as CPU load, request counts or prices need more
context: a daily rhythm, noise that comes in bursts, and level shifts that are normal once and
anomalous when they break new ground. The novelty stage adds that context with six steps, all
online and in a fixed-size state vector per pair (:func:`state_size` floats):

1. **New ground**: a reading outside the range of every earlier reading of the pair, by more than
   ``range_tolerance`` of the range, scores ``0.5 + excess / range`` (at most 1): the top band.
2. **Daily profile**: an exponentially weighted mean per UTC hour of day predicts the reading; the
   residual over its own weighted standard deviation is ``z``, and ``raw = min(1, |z| / z_scale)``.
   Series without a daily rhythm get a flat profile: the residual is then the distance to the level.
   A residual outside the range of every earlier residual (by more than ``residual_tolerance`` of
   it, from ``residual_warmup`` readings on) is *residual new ground*: it scores
   ``residual_weight * (0.5 + excess / range)``, a reading in range at an unusual place.
3. **Likelihood** (after Numenta's anomaly likelihood): the mean of ``raw`` over the last
   ``average`` readings is compared with the weighted mean and variance of that mean over a long
   memory. Its two-sided Gaussian tail probability ``p`` says how unusual the *recent* readings are
   for this pair; only the first reading of a run with ``p < 1e-5`` keeps its ``p`` (the rest of the
   run counts as ``1e-3``), so one episode gives one sharp peak. When neither kind of new ground
   applies, the level is ``LIKELIHOOD_BAND * -log10(p) / 10`` (below 0.5: new ground ranks higher).
4. **Regime change**: a one-sided CUSUM of the residuals' size, ``|z|`` against their slow mean
   and variance (memory ``1/regime_fading``), accumulates ``|z| - 0.8 - regime_slack``; past
   ``regime_threshold`` it alarms at ``regime_level`` and learns the new regime afresh for
   ``regime_relearn`` readings, so a slow change of level or noise, which the fast noise level of
   step 3 absorbs, alarms once. The level is the larger of this, step 5 and steps 1-3.
5. **Record flatline**: a run of exactly repeated readings that reaches ``flat_min`` readings and
   is longer than every earlier run of the pair (a stuck or dead source) scores ``flat_level``
   once per run.
6. **Refractory**: a level not above the highest level of the previous ``refractory`` readings is
   reported as 0, so an episode is reported once, when it is first seen, and again only if it gets
   worse.

>>> from monitor.settings import NoveltySettings
>>> n = Novelty(NoveltySettings(learning=20, average=5))
>>> state = n.new_state()
>>> hour = 3_600_000
>>> levels = [n.update(state, i * hour, (10.0 + i % 2,)) for i in range(60)]
>>> max(levels[2:]) < 0.5  # the two values alternate: nothing new once both are seen
True
>>> n.update(state, 60 * hour, (12.0,))  # 1 above the range [10, 11]: new ground
1.0
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from monitor.ingest.features import Features
from monitor.settings import NoveltySettings

#: Levels of the likelihood step are scaled into [0, LIKELIHOOD_BAND]; new ground is [0.5, 1].
LIKELIHOOD_BAND: Final = 0.49
#: A tail probability below RED starts an episode; later readings of the episode count as YELLOW.
RED: Final = 1e-5
YELLOW: Final = 1e-3
#: The likelihood's mean and variance floors (a near-constant raw score would make any blip red).
MEAN_FLOOR: Final = 0.03
VAR_FLOOR: Final = 0.0003
#: The mean |z| of a standard normal variable (0.8) and the clip of one residual's |z| in the CUSUM.
MEAN_ABS_Z: Final = 0.8
REGIME_CLIP: Final = 5.0
HOURS: Final = 24
_HOUR_MS: Final = 3_600_000
_K: Final = 3  # feature slots: every sensor has 1 or 3 features

# State layout: scalars, then per-feature blocks, then the profile and the ring of raw scores.
(_N, _NL, _RING_SUM, _LIK_MEAN, _LIK_VAR, _WAS_RED, _PEAK, _PEAK_AGE) = range(8)
(_CUSUM, _SINCE, _QUIET, _RUN, _LONGEST, _FLAGGED) = range(8, 14)
_PREV = 14  # the previous reading's features (flatlines)
_LO = _PREV + _K  # lows, then highs: the range of the readings
_RLO = _LO + 2 * _K  # lows, then highs: the range of the profile residuals
_RMEAN = _RLO + 2 * _K  # the residuals' slow mean, then their slow variance (regime change)
_LEVEL = _RMEAN + 2 * _K
_VAR = _LEVEL + _K
_PROFILE = _VAR + _K  # HOURS x _K means
_COUNT = _PROFILE + HOURS * _K  # HOURS counts
_RING = _COUNT + HOURS


def state_size(settings: NoveltySettings) -> int:
    """Floats of state per (device, sensor) pair (0 when the stage is off)."""
    return Novelty(settings).size if settings.enabled else 0


class Novelty:
    """The stage's parameters and its update rule; the state lives in the caller's arrays."""

    def __init__(self, settings: NoveltySettings) -> None:
        self.settings = settings
        self.size = _RING + settings.average

    def new_state(self) -> NDArray[np.float64]:
        """An empty pair state (what the state store's slab holds for a new pair)."""
        return np.zeros(self.size)

    def update(self, state: NDArray[np.float64], ts: int, f: Features, learn: bool = True) -> float:
        """The level of reading ``f`` at ``ts`` (ms); learns it into ``state`` unless ``learn`` is
        False (a quarantined device: its profile and noise level stay; the ranges and the likelihood
        go on)."""
        cfg = self.settings
        v = state.tolist()
        n = int(v[_N])
        level = _new_ground(v, _LO, f, n == 0, cfg.range_tolerance, n >= cfg.warmup)
        raw, residuals = self._profile(v, f, (ts // _HOUR_MS) % HOURS, n, learn)
        if n >= cfg.warmup:
            report = n >= cfg.residual_warmup
            ground = _new_ground(v, _RLO, residuals, n == cfg.warmup, cfg.residual_tolerance, report)
            level = level or cfg.residual_weight * ground
        lik = LIKELIHOOD_BAND * self._likelihood(v, raw, n)
        regime = self._regime(v, residuals)
        flat = self._flatline(v, f, n)
        out = self._refractory(v, max(level if level > 0.0 else lik, regime, flat))
        v[_N] = n + 1
        state[:] = v
        return out

    def _profile(self, v: list[float], f: Features, hour: int, n: int, learn: bool) -> tuple[float, Features]:
        """The daily-profile residuals and their raw score in [0, 1]; learns the profile and the
        noise level."""
        cfg = self.settings
        z2 = 0.0
        b = max(cfg.var_fading, 1.0 / (n + 1))
        count = v[_COUNT + hour]
        residuals = []
        for i, x in enumerate(f):
            p = _PROFILE + hour * _K + i
            residual = x - (v[p] if count > 0 else v[_LEVEL + i])
            residuals.append(residual)
            var = v[_VAR + i]
            if n >= cfg.warmup and var > 0.0:
                z2 += residual * residual / var
            if learn:
                v[_VAR + i] = (1.0 - b) * (var + b * residual * residual)
                v[_LEVEL + i] += max(cfg.fading, 1.0 / (n + 1)) * (x - v[_LEVEL + i])
                v[p] += max(cfg.fading, 1.0 / (count + 1)) * (x - v[p])
        if learn:
            v[_COUNT + hour] = count + 1
        return min(1.0, math.sqrt(z2 / len(f)) / cfg.z_scale), tuple(residuals)

    def _likelihood(self, v: list[float], raw: float, n: int) -> float:
        """``-log10`` of the tail probability of the recent mean raw score, / 10, in [0, 1]."""
        cfg = self.settings
        j = _RING + n % cfg.average
        v[_RING_SUM] += raw - v[j]
        v[j] = raw
        recent = v[_RING_SUM] / min(n + 1, cfg.average)
        if n < cfg.learning:
            return 0.0
        nl = v[_NL] + 1.0
        v[_NL] = nl
        a = max(1.0 / cfg.likelihood_memory, 1.0 / nl)
        d = recent - v[_LIK_MEAN]
        v[_LIK_MEAN] += a * d
        v[_LIK_VAR] = (1.0 - a) * (v[_LIK_VAR] + a * d * d)
        if n < 2 * cfg.learning:
            return 0.0
        tail = tail_probability(recent, v[_LIK_MEAN], v[_LIK_VAR])
        reported = YELLOW if tail <= RED and v[_WAS_RED] else tail
        v[_WAS_RED] = float(tail <= RED)
        return min(1.0, -math.log10(max(reported, 1e-10)) / 10.0)

    def _regime(self, v: list[float], residuals: Features) -> float:
        """``regime_level`` when the CUSUM of the residuals' size (standardised by their slow mean
        and variance) passes ``regime_threshold``, else 0; after an alarm the slow statistics are
        learned anew from the current residual for ``regime_relearn`` readings."""
        cfg = self.settings
        since = v[_SINCE] + 1.0
        quiet = v[_QUIET] or cfg.regime_warmup
        out = 0.0
        k = len(residuals)
        if since > quiet and all(v[_RMEAN + _K + i] > 0.0 for i in range(k)):
            size = 0.0
            for i, r in enumerate(residuals):
                z = (r - v[_RMEAN + i]) / math.sqrt(v[_RMEAN + _K + i])
                size += min(abs(z), REGIME_CLIP)
            v[_CUSUM] = max(0.0, v[_CUSUM] + size / k - MEAN_ABS_Z - cfg.regime_slack)
            if v[_CUSUM] > cfg.regime_threshold:
                out, v[_CUSUM], since, v[_QUIET] = cfg.regime_level, 0.0, 1.0, cfg.regime_relearn
                for i, r in enumerate(residuals):
                    v[_RMEAN + i] = r
        v[_SINCE] = since
        a = max(cfg.regime_fading, 1.0 / since)
        for i, r in enumerate(residuals):
            d = r - v[_RMEAN + i]
            v[_RMEAN + i] += a * d
            v[_RMEAN + _K + i] = (1.0 - a) * (v[_RMEAN + _K + i] + a * d * d)
        return out

    def _flatline(self, v: list[float], f: Features, n: int) -> float:
        """``flat_level`` once per run of exactly repeated readings, when the run reaches
        ``flat_min`` readings and is longer than every earlier run of the pair, else 0."""
        cfg = self.settings
        out = 0.0
        if n and all(x == v[_PREV + i] for i, x in enumerate(f)):
            v[_RUN] += 1.0
            if not v[_FLAGGED] and n >= cfg.flat_warmup and v[_RUN] >= cfg.flat_min and v[_RUN] > v[_LONGEST]:
                out, v[_FLAGGED] = cfg.flat_level, 1.0
        else:
            v[_LONGEST] = max(v[_LONGEST], v[_RUN])
            v[_RUN] = v[_FLAGGED] = 0.0
        for i, x in enumerate(f):
            v[_PREV + i] = x
        return out

    def _refractory(self, v: list[float], level: float) -> float:
        """0 for a level not above the highest of the last ``refractory`` readings."""
        peak, age = v[_PEAK], v[_PEAK_AGE] + 1.0
        if age > self.settings.refractory:
            peak = -1.0
        out = level if level > peak else 0.0
        if level >= peak:
            peak, age = level, 0.0
        v[_PEAK], v[_PEAK_AGE] = peak, age
        return out


def tail_probability(x: float, mean: float, var: float) -> float:
    """Two-sided Gaussian tail probability of ``x`` (mean and variance floored)."""
    sd = math.sqrt(max(var, VAR_FLOOR))
    return 0.5 * math.erfc(abs(x - max(mean, MEAN_FLOOR)) / (sd * math.sqrt(2.0)))


def _new_ground(v: list[float], lo: int, x: Features, first: bool, tolerance: float, report: bool) -> float:
    """``0.5 + excess / range`` (at most 1) for values ``x`` outside the range kept at
    ``v[lo:lo + 3]`` (lows) and ``v[lo + 3:lo + 6]`` (highs) by more than ``tolerance * range``,
    else 0 (also while not ``report``); then widen the range to include them (``first``: start it)."""
    excess = 0.0
    for i, xi in enumerate(x):
        low, high = (xi, xi) if first else (v[lo + i], v[lo + _K + i])
        width = high - low
        if width > 0.0:
            excess = max(excess, (xi - high) / width, (low - xi) / width)
        v[lo + i], v[lo + _K + i] = min(low, xi), max(high, xi)
    return min(1.0, 0.5 + excess) if report and excess > tolerance else 0.0
