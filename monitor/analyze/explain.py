"""Why an alert fired: the record every alert carries in its ``explanation`` field.

An explanation is built once per alert record (rules transition rarely, so none of this runs per
reading) from what the detect stage kept of the evaluation interval that made the rule transition:

- **reading** (device scope): the interval's most distant reading of the pair, as the pair model
  scored it. The model's distance is a sum of per-axis terms, ``d2 = sum_i ((x_i - f_i) / s_i)^2``
  with ``f_i`` the forecast (level plus trend) and ``s_i`` the spread (the square root of the
  variance, floored at the channel's resolution), so each axis' ``term`` and ``share`` of the
  score are exact: the terms add up to ``score``. Also the pair's latest readings (``recent``, from
  the retraining ring: the values as kept there, float32).
- **frame** (device scope, rules that read ``device_*`` signals): the device's latest frame the
  joint model flagged, its Hotelling ``T^2 = d' S^-1 d`` split per channel ``c`` as
  ``sum_{j in c} d_j (S^-1 d)_j``: exact (the parts add up to ``T^2``), and a part can be
  negative when channels move against their usual correlation. The joint model is a full
  covariance model, with no principal subspace: there is no Q (residual) statistic to split.
- **inputs** (device scope, when input drift is on and its windows are full): per axis, the KS
  statistic, its p-value and the PSI of the latest inputs against the pair's reference
  (``against: reference``) and against the fleet's latest inputs (``against: fleet``), with
  :data:`QUANTILES` of both sides. The reference and the fleet's window are kept as counts in
  bins, so their quantiles are interpolated within bins (the outer bins are open: a quantile
  there is the bin's edge); the current side's are exact, of the pair's latest readings in the
  retraining ring (``model.retrain_window`` of them, the comparison's window may hold more).
- **scores** (device, fleet and cohort scope, once the score windows are full): the KS statistic,
  p-value and PSI of the current score window against the reference window, with the quantiles of
  both (exact: the windows keep every score, quantised to 1/65535).

A River tier's score (``river_*`` signals) has no exact decomposition into features (a tree
ensemble's or an SVM's score is not a sum over inputs): the ``notes`` say so, and the reading's
contributions shown are those of the pair's Gaussian model, which scores the same reading.

Every list is bounded (:data:`MAX_RECENT`, :data:`MAX_INPUTS`; a frame has one part per channel
of the device, at most the catalog's size), numbers are rounded to 6 significant digits, and the
``text`` says the same in words: the top contributors first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np
from numpy.typing import NDArray

from monitor.detect.drift import Comparison, dequantise
from monitor.detect.inputs import Binned, Shift
from monitor.schema import SensorSpec
from monitor.state.store import CHECKS

#: The quantiles of a window an explanation shows.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Readings of the pair in ``reading.recent``.
MAX_RECENT = 5
#: Axes in ``inputs`` (the worst first): both comparisons of a three-axis sensor.
MAX_INPUTS = 6
#: Channels of a frame named in ``text``.
TOP_WORDS = 3
#: The rules' signals that make an alert an anomaly (readings off their model), then those that
#: make it a drift (distributions moved), then integrity (the stream itself); else "other".
ANOMALY_SIGNALS = frozenset(
    {"anomalies", "anomaly_rate", "anomaly_streak", "rate", "device_anomalies", "device_anomaly_rate",
     "device_score", "river_anomalies", "river_anomaly_rate", "river_score"}
)  # fmt: skip
DRIFT_PREFIXES = ("ks_", "psi", "adwin_", "score_mean", "input_", "peer_", "cohort_input_")
INTEGRITY_SIGNALS = frozenset(CHECKS)


class Term(msgspec.Struct, frozen=True):
    """One addend of a score: an axis of a reading (with the reading, its forecast and spread) or
    a channel of a frame (those three null)."""

    name: str
    term: float
    share: float  # term / score
    value: float | None = None
    expected: float | None = None
    spread: float | None = None


class Recent(msgspec.Struct, frozen=True, array_like=True):
    """A reading of the pair, as ``[ts, [values]]``."""

    ts: int
    values: list[float]


class ReadingWhy(msgspec.Struct, frozen=True):
    ts: int  # event time of the reading
    score: float  # the model's squared distance d2 (the sum of the axes' terms)
    threshold: float  # the d2 over which a reading is anomalous
    axes: list[Term]
    recent: list[Recent]


class FrameWhy(msgspec.Struct, frozen=True):
    ts: int  # event time of the reading that closed the frame
    score: float  # T^2 (the sum of the channels' parts)
    channels: list[Term]


class Quantiles(msgspec.Struct, frozen=True):
    """The :data:`QUANTILES` of a reference and of a current window."""

    reference: list[float]
    current: list[float]


class InputShift(msgspec.Struct, frozen=True):
    axis: str
    against: str  # "reference" (the pair's first inputs) | "fleet" (the fleet's latest inputs)
    ks_stat: float
    ks_pvalue: float
    psi: float
    drifted: bool
    quantiles: Quantiles | None = None


class ScoreShift(msgspec.Struct, frozen=True):
    ks_stat: float
    ks_pvalue: float
    psi: float
    quantiles: Quantiles


class Explanation(msgspec.Struct, frozen=True):
    kind: str  # "anomaly" | "drift" | "integrity" | "storm" | "other"
    text: str  # the top contributors in words
    since: int = 0  # event time (epoch ms) the rule's condition first held: the episode's start
    reading: ReadingWhy | None = None
    frame: FrameWhy | None = None
    inputs: list[InputShift] = msgspec.field(default_factory=list)
    scores: ScoreShift | None = None
    notes: list[str] = msgspec.field(default_factory=list)


def r6(x: float) -> float:
    """``x`` to 6 significant digits (what an explanation keeps).

    >>> r6(3.14159265), r6(123456789.0), r6(0.0)
    (3.14159, 123457000.0, 0.0)
    """
    return float(f"{x:.6g}")


def kind_of(signal_names: set[str]) -> str:
    """What a rule watches, by the signals it reads.

    >>> kind_of({"anomaly_rate", "retraining"}), kind_of({"ks_drift", "score_mean"}), kind_of({"gap"})
    ('anomaly', 'drift', 'integrity')
    """
    if signal_names & ANOMALY_SIGNALS:
        return "anomaly"
    if any(n.startswith(DRIFT_PREFIXES) for n in signal_names):
        return "drift"
    if signal_names & INTEGRITY_SIGNALS:
        return "integrity"
    return "other"


def reading(
    keys: Sequence[str],
    worst: NDArray[np.float64],
    score: float,
    ts: int,
    threshold: float,
    values: NDArray[np.float64],
    stamps: NDArray[np.int64],
) -> ReadingWhy:
    """A reading's terms from ``worst`` = ``[x x 3, forecast x 3, spread x 3]`` as the detect
    stage kept it (:func:`monitor.detect.kernels.keep_worst`), ``score`` its distance; with the
    pair's latest readings (``values``, one row per reading, and their event times ``stamps``)."""
    axes = []
    for i, key in enumerate(keys):
        x, f, s = float(worst[i]), float(worst[3 + i]), float(worst[6 + i])
        term = ((x - f) / s) ** 2
        axes.append(Term(key, r6(term), r6(term / score) if score > 0 else 0.0, r6(x), r6(f), r6(s)))
    axes.sort(key=lambda t: -t.term)
    recent = [
        Recent(int(at), [r6(v) for v in row])
        for row, at in zip(values[-MAX_RECENT:].tolist(), stamps[-MAX_RECENT:].tolist(), strict=True)
    ]
    return ReadingWhy(ts, r6(score), r6(threshold), axes, recent)


def frame(names: Sequence[str], parts: Sequence[float], score: float, ts: int) -> FrameWhy:
    """A frame's ``T^2`` per channel (``parts``, one per name, summing to ``score``)."""
    channels = [
        Term(n, r6(p), r6(p / score) if score > 0 else 0.0) for n, p in zip(names, parts, strict=True)
    ]
    channels.sort(key=lambda t: -t.term)
    return FrameWhy(ts, r6(score), channels)


def quantiles(values: NDArray[np.float64]) -> list[float]:
    """:data:`QUANTILES` of a window of values (numpy's linear interpolation)."""
    return [r6(q) for q in np.quantile(values, QUANTILES).tolist()]


def binned_quantiles(counts: NDArray[np.int64], edges: NDArray[np.float32]) -> list[float]:
    """:data:`QUANTILES` of values kept as ``counts`` in bins between ``edges`` (``len(edges) + 1``
    bins, the outer ones open), linear within a bin; in an outer bin, its edge.

    >>> binned_quantiles(np.array([0, 10, 10, 0]), np.array([0.0, 1.0, 2.0], np.float32))
    [0.1, 0.5, 1.0, 1.5, 1.9]
    """
    total = int(counts.sum())
    if total == 0:
        return []
    cum = np.concatenate(([0], np.cumsum(counts))) / total  # fraction at or below each bin's start
    e = edges.astype(np.float64)
    out = []
    for q in QUANTILES:
        b = int(np.searchsorted(cum, q, side="left")) - 1  # the bin the quantile falls in
        b = min(max(b, 0), len(counts) - 1)
        if b == 0:
            out.append(float(e[0]))
        elif b == len(counts) - 1:
            out.append(float(e[-1]))
        else:
            within = (q - cum[b]) / (cum[b + 1] - cum[b]) if cum[b + 1] > cum[b] else 0.0
            out.append(float(e[b - 1] + within * (e[b] - e[b - 1])))
    return [r6(v) for v in out]


def input_shifts(
    shift: Shift | None,
    peer: Shift | None,
    sides: Sequence[tuple[Binned | None, Binned | None]],
    latest: NDArray[np.float64],
) -> list[InputShift]:
    """A pair's inputs per axis against its reference (``shift``) and against the fleet
    (``peer``), the axes that drifted, then moved most, first. The quantiles: of the reference
    and of the fleet's window from their bin counts (``sides``, per axis:
    :func:`monitor.detect.inputs.references`), of the current inputs from the pair's ``latest``
    readings (one row each), exact."""
    out = []
    for against, which, cmp in (("reference", 0, shift), ("fleet", 1, peer)):
        for j, a in enumerate(cmp.axes if cmp is not None else ()):
            binned, q = sides[j][which], None
            if binned is not None and len(latest):
                q = Quantiles(binned_quantiles(*binned), quantiles(latest[:, j]))
            out.append(InputShift(a.axis, against, r6(a.ks_stat), r6(a.ks_pvalue), r6(a.psi), a.drifted, q))
    out.sort(key=lambda i: (not i.drifted, -i.ks_stat, -i.psi))
    return out[:MAX_INPUTS]


def score_shift(cmp: Comparison, ref: NDArray[np.uint16], cur: NDArray[np.uint16]) -> ScoreShift:
    """The score windows' comparison ``cmp`` with the quantiles of both (quantised) windows."""
    q = Quantiles(quantiles(dequantise(ref)), quantiles(dequantise(cur)))
    return ScoreShift(r6(float(cmp.ks_stat[0])), r6(float(cmp.ks_pvalue[0])), r6(float(cmp.psi[0])), q)


def explanation(
    rule: str,
    names: set[str],
    spec: SensorSpec,
    signals: Mapping[str, float],
    reading: ReadingWhy | None,
    frame: FrameWhy | None,
    shifts: list[InputShift],
    scores: ScoreShift | None,
    novelty: bool,
    since: int,
) -> Explanation:
    """The explanation of a transition of ``rule`` (which reads the signals ``names``) on a pair
    of sensor ``spec``, from its parts; ``novelty``: the novelty stage decides anomalies."""
    kind, notes = kind_of(names), []
    if novelty and reading is not None:
        notes.append("anomalies are the novelty stage's; the reading's terms are the pair model's distance")
    if any(n.startswith("river_") for n in names):
        notes.append(
            "a River tier's score has no exact split into features: the reading's terms shown are "
            "those of the pair's Gaussian model, which scored the same reading"
        )
    why = Explanation(kind, "", since, reading, frame, shifts, scores, notes)
    return msgspec.structs.replace(why, text=describe(kind, rule, spec, signals, why))


def describe(kind: str, rule: str, spec: SensorSpec, signals: Mapping[str, float], why: Explanation) -> str:
    """The explanation in words: what fired, then the largest contributors first."""
    parts: list[str] = []
    sensor, unit = spec.name, spec.unit
    if "rate" in signals and kind == "anomaly":
        parts.append(f"level moving at {signals['rate']:.3g}x the channel's max_rate")
    if why.reading is not None and why.reading.axes and (kind == "anomaly" or why.frame is None):
        top = why.reading.axes[0]
        x, f, s = top.value or 0.0, top.expected or 0.0, top.spread or math.inf
        axis = sensor if len(spec.keys) == 1 else f"{sensor}.{top.name}"
        share = f", {100 * top.share:.0f}% of the distance" if len(spec.keys) > 1 else ""
        rest = [f"{t.name} {100 * t.share:.0f}%" for t in why.reading.axes[1:] if t.share >= 0.005]
        text = f"{axis} {x:.6g} {unit} against {f:.6g} expected, {abs(x - f) / s:.3g} spreads off{share}"
        parts.append(text + (f" ({', '.join(rest)})" if rest else ""))
    if why.frame is not None and why.frame.channels:
        top3 = [f"{t.name} {100 * t.share:.0f}%" for t in why.frame.channels[:TOP_WORDS]]
        parts.append(f"device frame T^2 {why.frame.score:.3g}: {', '.join(top3)}")
    moved = [i for i in why.inputs if i.drifted] or (why.inputs[:1] if kind == "drift" else [])
    for i in moved[: 2 if kind == "drift" else 1]:
        q = i.quantiles
        median = f", median {q.reference[2]:.4g} -> {q.current[2]:.4g} {unit}" if q and q.current else ""
        test = f"KS {i.ks_stat:.3g} (p {i.ks_pvalue:.2g}), PSI {i.psi:.3g}"
        parts.append(f"{sensor} {i.axis} inputs vs {i.against}: {test}{median}")
    if why.scores is not None and kind == "drift":
        sc, q = why.scores, why.scores.quantiles
        test = f"KS {sc.ks_stat:.3g} (p {sc.ks_pvalue:.2g}), PSI {sc.psi:.3g}"
        parts.append(f"scores {test}, median {q.reference[2]:.3g} -> {q.current[2]:.3g}")
    if kind == "drift" and why.since:
        parts.append(f"since {datetime.fromtimestamp(why.since / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC")
    if kind == "integrity":
        found = [f"{n} {signals[n]:g}" for n in sorted(INTEGRITY_SIGNALS) if signals.get(n, 0) > 0]
        parts.append("integrity events in the interval: " + (", ".join(found) or "none"))
    return f"{rule}: " + ("; ".join(parts) if parts else "no reading scored in the interval")
