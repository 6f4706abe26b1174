"""Promotion: a :class:`Shadow` collects both models' scores on a pair's next live readings, and
:func:`decide` promotes a candidate, or rejects it, with a reason carrying its numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from monitor.govern.training.job import TOLERANCE, TrainingResult

#: Beyond the calibrated limit a candidate must at least halve the incumbent's excess over it:
#: clearly better than a broken incumbent, not merely different from it.
LIVE_IMPROVEMENT = 0.5
#: An incumbent that flags more than this share of the held-out slice's real readings is broken:
#: a candidate that flags at most half as many passes the held-out test whatever its ranking metric.
BROKEN_ALARM_RATE = 0.5


class Shadow:
    """Both models' scores on the pair's next ``readings`` live readings.

    Per reading of the pair, the incumbent serves as usual and the candidate is stepped beside it::

        d2 = step(candidate, f, threshold_d2, flagged)
        shadow.push(incumbent_score, model.score(d2, len(f)))
    """

    def __init__(self, readings: int, anomaly_threshold: float) -> None:
        if readings < 1:
            raise ValueError(f"a shadow needs at least one reading, got {readings}")
        self.readings = readings
        self.anomaly_threshold = anomaly_threshold
        self.incumbent = np.zeros(readings)
        self.candidate = np.zeros(readings)
        self.n = 0

    @property
    def done(self) -> bool:
        return self.n >= self.readings

    def push(self, incumbent_score: float, candidate_score: float) -> None:
        if self.done:
            raise ValueError(f"the shadow already holds its {self.readings} readings: decide() now")
        self.incumbent[self.n] = incumbent_score
        self.candidate[self.n] = candidate_score
        self.n += 1


@dataclass(frozen=True, slots=True)
class Decision:
    """Promote or keep the incumbent, why (a sentence with the numbers), and those numbers."""

    promote: bool
    reason: str
    metrics: dict[str, float]


_LABELS = {"auc": "AUC", "detection_rate": "detection rate"}


def decide(
    result: TrainingResult, shadow: Shadow | None, margin: float, calibration_alpha: float = 0.01
) -> Decision:
    """Whether the candidate replaces the incumbent.

    Held out: the candidate's metric must exceed the incumbent's by more than ``margin``. Without a
    shadow (``None``: before one starts, or shadowing is off) that decides alone. Live, both models'
    scores are chi-square CDFs, uniform on normal data, and two checks must pass:

    - calibration: the one-sided KS distance of the candidate's scores above Uniform(0, 1) (how
      far they sit higher than a calibrated model's: the direction that raises false alarms) is
      within the ``calibration_alpha`` critical value. Scores that sit lower come from a noise
      level estimated high (a training window that straddles a change) or from a sensor whose
      noise is below its resolution: such a candidate raises fewer alarms, not more;
    - alarms: the candidate's alarms (scores over the anomaly threshold) are within the binomial
      ``1 - calibration_alpha`` quantile of a calibrated model's;

    or, for either, the candidate's excess over that limit is at most half the incumbent's. A
    calibrated candidate passes. After a drift the incumbent is far off (every reading an alarm),
    and a candidate that is still catching up with a ramp, or whose scores are autocorrelated so
    that the KS test is strict, passes when it is clearly better; a candidate about as broken as
    the incumbent, or one that raises alarms a calibrated incumbent does not, is rejected.
    """
    if not result.ok:
        return Decision(False, f"training failed: {result.error}", {})
    held_ok, held_reason, numbers = _held_out(result, margin)
    if not held_ok or shadow is None:
        suffix = "" if not held_ok else "; no shadow evaluation"
        return Decision(held_ok, held_reason + suffix, numbers)
    if not shadow.done:
        raise ValueError(f"the shadow has {shadow.n} of {shadow.readings} readings: decide once it is done")
    live_ok, live_reason, live = _calibration(shadow, calibration_alpha)
    return Decision(live_ok, f"{held_reason}; {live_reason}", numbers | live)


def _held_out(result: TrainingResult, margin: float) -> tuple[bool, str, dict[str, float]]:
    if result.candidate_metrics is None or result.incumbent_metrics is None:
        raise ValueError("a successful result carries both models' held-out metrics")
    name = result.metric
    c, i = result.candidate_metrics.get(name), result.incumbent_metrics.get(name)
    beats = c - i > margin + TOLERANCE
    sign = ">" if beats else ("<=" if abs(c - i - margin) <= TOLERANCE else "<")
    reason = f"candidate {_LABELS[name]} {c:.3f} {sign} incumbent {i:.3f} + margin {margin:.3f}"
    numbers = {"candidate_metric": c, "incumbent_metric": i, "margin": margin}
    ca, ia = result.candidate_metrics.alarm_rate, result.incumbent_metrics.alarm_rate
    if not beats and ia > BROKEN_ALARM_RATE and ca <= LIVE_IMPROVEMENT * ia:
        # A ranking metric ties when the incumbent is merely offset from a new level: it still
        # ranks the spikes first, while flagging every real reading.
        beats = True
        reason += (
            f", but the incumbent flags {100 * ia:.0f} % of the held-out readings at the serving"
            f" threshold and the candidate {100 * ca:.0f} %"
        )
        numbers |= {"candidate_alarm_rate": ca, "incumbent_alarm_rate": ia}
    return beats, reason, numbers


def _passes(candidate: float, incumbent: float, limit: float) -> bool:
    """Within the limit, or at least ``LIVE_IMPROVEMENT`` of the incumbent's excess removed."""
    return candidate <= limit or candidate - limit <= LIVE_IMPROVEMENT * (incumbent - limit)


def _calibration(shadow: Shadow, alpha: float) -> tuple[bool, str, dict[str, float]]:
    n = shadow.readings
    ks_c = float(stats.kstest(shadow.candidate, "uniform", alternative="less").statistic)
    ks_i = float(stats.kstest(shadow.incumbent, "uniform", alternative="less").statistic)
    ks_max = float(stats.ksone.ppf(1.0 - alpha, n))
    alarms_c = int(np.sum(shadow.candidate > shadow.anomaly_threshold))
    alarms_i = int(np.sum(shadow.incumbent > shadow.anomaly_threshold))
    alarms_max = int(stats.binom.ppf(1.0 - alpha, n, 1.0 - shadow.anomaly_threshold))
    ks_ok, alarms_ok = _passes(ks_c, ks_i, ks_max), _passes(alarms_c, alarms_i, alarms_max)
    reason = (
        f"on {n} live readings the candidate's scores sit {ks_c:.3f} above uniform (one-sided KS;"
        f" incumbent {ks_i:.3f},"
        f" acceptable up to {ks_max:.3f}) and it raised {alarms_c} alarms (incumbent {alarms_i},"
        f" a calibrated model up to {alarms_max})"
    )
    if not ks_ok:
        reason += ": its live scores are not calibrated and do not halve the incumbent's excess"
    elif not alarms_ok:
        reason += ": too many alarms, not half the incumbent's excess"
    numbers = {
        "shadow_readings": float(n),
        "candidate_ks": ks_c,
        "incumbent_ks": ks_i,
        "ks_critical": ks_max,
        "candidate_alarms": float(alarms_c),
        "incumbent_alarms": float(alarms_i),
        "alarms_allowed": float(alarms_max),
    }
    return ks_ok and alarms_ok, reason, numbers
