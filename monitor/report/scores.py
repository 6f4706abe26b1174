"""Per-reading scores of the selected devices, recovered by a replay through the live pipeline.

The service does not publish a score per reading. Pair models are per device, so replaying the
devices' readings of the range through a fresh :class:`~monitor.pipeline.Pipeline` with the
deployment's settings and rules gives the scores the service computed, exactly when the range
starts where the devices' readings start (their models then start where the service's did);
otherwise the models warm up from the range's start, and the report says so.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitor.evaluation.replay import replay_messages
from monitor.govern.rules import RuleSet
from monitor.records import Scored
from monitor.report.records import Channel
from monitor.schema import Catalog, Reading, decode
from monitor.settings import Settings


@dataclass(frozen=True)
class Raw:
    """One readings-topic message as read: where it was, its Kafka timestamp and bytes."""

    partition: int
    offset: int
    kafka_ts: int
    key: bytes | None
    value: bytes | None


def stream_order(messages: Iterable[Raw]) -> list[Raw]:
    """Each partition in offset order, the partitions merged by Kafka timestamp (as a consumer
    of them all would see them, near enough)."""
    by_partition: defaultdict[int, list[Raw]] = defaultdict(list)
    for m in messages:
        by_partition[m.partition].append(m)
    runs = [sorted(ms, key=lambda m: m.offset) for _, ms in sorted(by_partition.items())]
    return list(heapq.merge(*runs, key=lambda m: m.kafka_ts))


def surprise(distance: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """``-log10(1 - score)`` of pair models' squared distances (a score is the chi-square CDF with
    ``k`` degrees of freedom); NaN stays NaN (a model warming up).

    >>> surprise(np.array([0.0, 15.137, np.nan]), 1).round(1)
    array([ 0.,  4., nan])
    """
    from scipy.stats import chi2

    out: NDArray[np.float64] = -chi2.logsf(distance, k) / math.log(10) + 0.0  # no negative zeros
    return out


@dataclass(frozen=True)
class Replayed:
    """The channels of a replay, and the earliest reading of its devices before the range
    (``None``: the range starts at their first reading: the scores are the service's)."""

    channels: dict[tuple[str, str], Channel]
    earlier: int | None


def replay(settings: Settings, rules: RuleSet, messages: Sequence[Raw], since: int, until: int) -> Replayed:
    """Every channel of the messages' devices with readings in ``[since, until]``: values and scores."""
    catalog = settings.channels.catalog()
    readings: list[tuple[Raw, Reading]] = []
    earlier: int | None = None
    for m in messages:
        r = decode(m.value, m.key, catalog=catalog)
        if not isinstance(r, Reading):
            continue
        if since <= r.ts <= until:
            readings.append((m, r))
        elif r.ts < since:
            earlier = r.ts if earlier is None else min(earlier, r.ts)
    out = replay_messages(settings, rules, ((m.key, m.value, m.kafka_ts) for m, _ in readings))
    return Replayed(_channels(settings, catalog, [r for _, r in readings], out.trace), earlier)


def _channels(
    settings: Settings, catalog: Catalog, readings: Sequence[Reading], trace: Sequence[Scored]
) -> dict[tuple[str, str], Channel]:
    values: defaultdict[tuple[str, str], list[Reading]] = defaultdict(list)
    for r in readings:
        values[(r.device_id, r.sensor)].append(r)
    scored: defaultdict[tuple[str, str], list[Scored]] = defaultdict(list)
    for s in trace:
        scored[(s.device_id, s.sensor)].append(s)
    novelty = settings.novelty.enabled
    threshold = settings.novelty.threshold if novelty else -math.log10(1.0 - settings.model.anomaly_threshold)
    out = {}
    for key, rs in values.items():
        spec = catalog.by_name[key[1]]
        k = len(spec.keys)
        ss = scored.get(key, [])
        raw = [s.level if novelty else s.distance for s in ss]
        score = np.array([math.nan if v is None else v for v in raw], np.float64)
        out[key] = Channel(
            device_id=key[0],
            sensor=key[1],
            axes=spec.keys,
            unit=spec.unit,
            ts=np.fromiter((r.ts for r in rs), np.int64, len(rs)),
            values=np.array([r.features() for r in rs], np.float64).reshape(len(rs), k),
            score_ts=np.fromiter((s.ts for s in ss), np.int64, len(ss)),
            score=score if novelty else surprise(score, k),
            threshold=threshold,
            score_label="novelty level" if novelty else "surprise -log10(1 - score)",
        )
    return out
