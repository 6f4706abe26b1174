"""The batch pipeline: decode/validate -> integrity -> features -> score -> drift -> rules -> actions.

:class:`Pipeline` holds all monitoring state and turns a batch of Kafka messages into a
:class:`BatchResult` (dead letters, alerts, model versions, counts). It does no I/O: the live
service (:mod:`monitor.service`) delivers the results and commits offsets, and an offline replay
feeds the very same code with recorded messages.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from monitor import alerts, model, schema
from monitor.drift import Comparison, FleetDrift, PairDrift
from monitor.features import Features, features, n_features
from monitor.integrity import IntegrityChecker
from monitor.registry import ModelVersion, TrainingData, code_version
from monitor.rules import Evaluation, RuleEngine, RuleSet, Transition
from monitor.schema import SENSOR_INDEX, SENSOR_NAMES, SENSORS, Reading, Rejection
from monitor.settings import Settings
from monitor.state import CHECKS, N_SENSORS, DeviceStates, Shapes, StateStore

MIN_RETRAIN_ROWS = 16


class Message(Protocol):
    """What the pipeline needs of a Kafka message (``confluent_kafka.Message`` fits)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: Message
    rejection: Rejection


@dataclass(frozen=True, slots=True)
class Scored:
    """One applied reading, its score and squared distance (``None`` while the model warms up)."""

    device_id: str
    sensor: str
    ts: int
    score: float | None
    distance: float | None
    anomalous: bool


@dataclass
class BatchResult:
    """Everything one batch produced; the service delivers it before committing offsets."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    alerts: list[alerts.Alert] = field(default_factory=list)
    versions: list[ModelVersion] = field(default_factory=list)
    models: list[model.AdaptiveGaussian] = field(default_factory=list)  # of each version, as trained
    valid: NDArray[np.int64] = field(default_factory=lambda: np.zeros(N_SENSORS, np.int64))
    anomalies: NDArray[np.int64] = field(default_factory=lambda: np.zeros(N_SENSORS, np.int64))
    scores: dict[int, NDArray[np.float64]] = field(default_factory=dict)  # sensor -> scores
    drift: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # detector, scope, sensor
    fleet_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # sensor -> (ks, psi)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    event_ts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # valid readings
    retrains_skipped: Counter[str] = field(default_factory=Counter)  # sensor -> too few readings
    replayed: int = 0  # readings at or before their device's last applied offset: not applied again
    evicted: Counter[str] = field(default_factory=Counter)  # reason ("idle", "capacity") -> devices
    trace: list[Scored] = field(default_factory=list)  # every applied reading, if tracing

    @property
    def rejected(self) -> Counter[str]:
        return Counter(d.rejection.reason.value for d in self.dead_letters)


class Pipeline:
    """All monitoring state and stages. ``trace=True`` also returns every applied reading's score
    (offline evaluation; the live service leaves it off)."""

    def __init__(self, settings: Settings, rules: RuleSet, trace: bool = False) -> None:
        self.settings = settings
        self.trace = trace
        d, m = settings.drift, settings.model
        shapes = Shapes(d.reference_size, d.window_size, d.psi_bins, m.retrain_window)
        self.store = StateStore(shapes, d.adwin_delta)
        self.integrity = IntegrityChecker(self.store, settings.integrity)
        self.pairs = PairDrift(self.store, d)
        self.fleet = FleetDrift(d)
        self.engine = RuleEngine(rules)
        a = settings.alerts
        self.storm = alerts.StormControl(a.storm_max_alerts, a.storm_window_s)
        self.thresholds = {k: model.distance_threshold(m.anomaly_threshold, k) for k in (1, 3)}
        self.clock_ms = 0  # the latest Kafka message timestamp seen: the eviction clock
        self._next_sweep = 0
        self.code_version = code_version()
        self.config_hash = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]

    def process(self, messages: Sequence[Message]) -> BatchResult:
        """Run every message through every stage, in order. Each (device, sensor) pair is evaluated
        right after every ``check_every``-th reading, so results do not depend on the batch size."""
        c = self.settings.consume
        max_bytes = c.max_message_bytes
        latest = int(time.time() * 1000) + c.max_future_ms if c.max_future_ms else None
        result = BatchResult()

        def decoded() -> Iterator[tuple[Reading, Message]]:
            for msg in messages:
                self._track_offset(result, msg)
                r = schema.decode(msg.value(), msg.key(), max_bytes, latest)
                if isinstance(r, Rejection):
                    result.dead_letters.append(DeadLetter(msg, r))
                else:
                    yield r, msg

        self.process_readings(decoded(), result)
        self._evict(result)
        return result

    def process_readings(
        self, readings: Iterable[tuple[Reading, Message]], result: BatchResult | None = None
    ) -> BatchResult:
        """The stages after decoding, for readings that are already validated (or replayed)."""
        result = BatchResult() if result is None else result
        scores: list[list[float]] = [[] for _ in SENSOR_NAMES]
        event_ts: list[int] = []
        for r, msg in readings:
            event_ts.append(r.ts)
            self._apply(r, msg, scores, result)
        result.scores = {s: np.asarray(v) for s, v in enumerate(scores) if v}
        result.event_ts = np.asarray(event_ts, np.int64)
        now = max(event_ts) if event_ts else None
        result.alerts = self.storm.admit(result.alerts, now)
        return result

    @staticmethod
    def _track_offset(result: BatchResult, msg: Message) -> None:
        topic, part, off = msg.topic(), msg.partition(), msg.offset()
        if topic is not None and part is not None and off is not None:
            result.offsets[(topic, part)] = off + 1

    def _apply(self, r: Reading, msg: Message, scores: list[list[float]], result: BatchResult) -> None:
        st = self.store
        slot = st.slot(r.device_id, msg.partition() or 0)
        s = SENSOR_INDEX[r.sensor]
        result.valid[s] += 1
        offset, kafka_ts = msg.offset(), msg.timestamp()[1]
        if kafka_ts > 0:
            st.last_seen[slot] = kafka_ts
            self.clock_ms = max(self.clock_ms, kafka_ts)
        if offset is not None:
            if offset <= st.last_offset[slot]:
                result.replayed += 1  # re-delivered after a crash or rebalance: already applied
                return
            st.last_offset[slot] = offset
        if not self.integrity.check_seq(slot, s, r):
            return
        f = features(r)
        self.integrity.check_values(slot, s, r.ts, f, kafka_ts)
        self._remember(slot, s, r.ts, f, offset or 0)
        st.since_eval[slot, s] += 1
        anomalies = int(st.anomalies[slot, s])
        d2 = self._distance(slot, s, f, result)
        score = None if d2 is None else model.score(d2, len(f))
        if self.trace:
            anomalous = bool(st.anomalies[slot, s] > anomalies)
            result.trace.append(Scored(r.device_id, r.sensor, r.ts, score, d2, anomalous))
        if score is not None:
            scores[s].append(score)
            self.pairs.push(slot, s, score)
            if self.fleet.push(s, score):
                self._evaluate_fleet(s, r.ts, result)
        if st.since_eval[slot, s] >= self.settings.drift.check_every:
            self._evaluate_pair(slot, s, result)

    def _evict(self, result: BatchResult) -> None:
        """Forget devices silent for ``state.evict_idle_s`` (Kafka time), then the longest-silent
        ones while more than ``state.max_devices`` have state."""
        st, cfg = self.store, self.settings.state
        idle_ms = int(cfg.evict_idle_s * 1000)
        if idle_ms and self.clock_ms >= self._next_sweep:  # a sweep every tenth of the idle time
            self._next_sweep = self.clock_ms + max(idle_ms // 10, 1000)
            live = st.live()
            self._forget(live[st.last_seen[live] < self.clock_ms - idle_ms].tolist(), "idle", result)
        excess = len(st) - cfg.max_devices
        if excess > 0:
            live = st.live()
            oldest = live[np.argsort(st.last_seen[live], kind="stable")[:excess]]
            self._forget(oldest.tolist(), "capacity", result)

    def _forget(self, slots: list[int], reason: str, result: BatchResult) -> None:
        if slots:
            self.engine.forget([self.store.device_ids[i] for i in slots])
            self.store.release(slots)
            result.evicted[reason] += len(slots)

    def export_partition(self, partition: int) -> tuple[DeviceStates, list[dict[str, Any]]]:
        """A copy of the state of every device read from ``partition`` and their rule episodes."""
        states = self.store.export(self.store.in_partition(partition))
        return states, self.engine.export(states.device_ids)

    def import_partition(self, states: DeviceStates, episodes: list[dict[str, Any]]) -> None:
        """Install a partition's devices (from a snapshot), replacing what is kept about them."""
        self.engine.forget(states.device_ids)
        self.store.load(states)
        self.engine.restore(episodes)

    def drop_partition(self, partition: int) -> int:
        """Forget the devices of a partition this process no longer owns; returns how many."""
        slots = self.store.in_partition(partition)
        self.engine.forget([self.store.device_ids[i] for i in slots])
        self.store.release(slots)
        return len(slots)

    def restart_offsets(self, partition: int) -> None:
        """The partition's log restarted below the devices' last applied offsets (a recreated
        topic): accept its offsets again."""
        for slot in self.store.in_partition(partition):
            self.store.last_offset[slot] = -1

    def _distance(self, slot: int, s: int, f: Features, result: BatchResult) -> float | None:
        """The pair model's distance (None while it warms up); learn unless anomalous."""
        st = self.store
        m = st.models[slot][s]
        if m is None:
            m = st.models[slot][s] = model.AdaptiveGaussian(len(f), **self._model_params(s))
        if m.n < self.settings.model.warmup:
            m.learn(f)
            return None
        d2 = m.distance(f)
        anomalous = d2 > self.thresholds[len(f)]
        if anomalous:
            st.anomalies[slot, s] += 1
            result.anomalies[s] += 1
        if not anomalous or self.settings.model.learn_anomalies:
            m.learn(f)
        return d2

    def _model_params(self, s: int) -> dict[str, float]:
        m = self.settings.model
        return {
            "fading": m.fading,
            "var_fading": m.var_fading,
            "resolution": SENSORS[SENSOR_NAMES[s]].resolution,
        }

    def _remember(self, slot: int, s: int, ts: int, f: Features, offset: int) -> None:
        """Keep the reading in the pair's retraining ring, with its Kafka offset."""
        st = self.store
        i = int(st.raw_n[slot, s]) % st.shapes.retrain_window
        st.raw[slot, s, i, : len(f)] = f
        st.raw_off[slot, s, i] = offset
        st.raw_ts[slot, s, i] = ts
        st.raw_n[slot, s] += 1

    def _evaluate_pair(self, slot: int, s: int, result: BatchResult) -> None:
        st, name = self.store, SENSOR_NAMES[s]
        self.pairs.close_interval(slot, s)
        sig = self._pair_signals(slot, s)
        result.drift[("adwin", "device", name)] += int(st.adwin_hits[slot, s])
        cmp = self.pairs.compare(slot, s)
        if cmp is not None:
            sig.update(self._drift_signals(cmp, "device", name, result))
        self._reset_interval(slot, s)
        ev = Evaluation("device", st.device_ids[slot], name, sig, int(st.last_ts[slot, s]))
        self._act(self.engine.evaluate([ev]), result)

    def _pair_signals(self, slot: int, s: int) -> dict[str, float]:
        st = self.store
        n = int(st.since_eval[slot, s])
        hits = int(st.adwin_hits[slot, s])
        sig = {
            "readings": float(n),
            "anomalies": float(st.anomalies[slot, s]),
            "anomaly_rate": float(st.anomalies[slot, s]) / n if n else 0.0,
            "adwin_detections": float(hits),
            "adwin_drift": float(hits > 0),
        }
        for c, name in enumerate(CHECKS):
            sig[name] = float(st.integrity[slot, s, c])
        return sig

    def _drift_signals(
        self, cmp: Comparison, scope: str, sensor: str, result: BatchResult
    ) -> dict[str, float]:
        d = self.settings.drift
        p, psi = float(cmp.ks_pvalue[0]), float(cmp.psi[0])
        result.drift[("ks", scope, sensor)] += p < d.ks_alpha
        result.drift[("psi", scope, sensor)] += psi > d.psi_threshold
        return {
            "ks_stat": float(cmp.ks_stat[0]),
            "ks_pvalue": p,
            "ks_drift": float(p < d.ks_alpha),
            "psi": psi,
            "psi_drift": float(psi > d.psi_threshold),
        }

    def _reset_interval(self, slot: int, s: int) -> None:
        st = self.store
        st.since_eval[slot, s] = 0
        st.anomalies[slot, s] = 0
        st.adwin_hits[slot, s] = 0
        st.integrity[slot, s] = 0

    def _evaluate_fleet(self, s: int, ts: int, result: BatchResult) -> None:
        fl, name = self.fleet, SENSOR_NAMES[s]
        hits = fl.adwin_hits[s]
        result.drift[("adwin", "fleet", name)] += hits
        sig = {
            "readings": float(fl.since_eval[s]),
            "adwin_detections": float(hits),
            "adwin_drift": float(hits > 0),
        }
        cmp = fl.compare(s)
        if cmp is not None:
            sig.update(self._drift_signals(cmp, "fleet", name, result))
            result.fleet_stats[name] = (sig["ks_stat"], sig["psi"])
        fl.since_eval[s] = 0
        fl.adwin_hits[s] = 0
        self._act(self.engine.evaluate([Evaluation("fleet", "*", name, sig, ts)]), result)

    def _act(self, transitions: list[Transition], result: BatchResult) -> None:
        for t in transitions:
            ev = t.evaluation
            slot = self.store.slots.get(ev.device_id, -1)
            s = SENSOR_INDEX[ev.sensor]
            version = self.store.version(slot, s) if slot >= 0 else 0
            alert = alerts.from_transition(t, version)
            if "alert" in t.rule.actions:
                result.alerts.append(alert)
            if t.status == "firing" and "retrain" in t.rule.actions and slot >= 0:
                v = self.retrain(slot, s, t.rule.name, alert.alert_id)
                if v is not None:
                    result.versions.append(v)
                    result.models.append(copy.deepcopy(self.store.models[slot][s]))  # type: ignore[arg-type]
                else:
                    result.retrains_skipped[ev.sensor] += 1

    def retrain(self, slot: int, s: int, rule: str, alert_id: str) -> ModelVersion | None:
        """Train a fresh model on the pair's recent readings and swap it in."""
        st = self.store
        w = st.shapes.retrain_window
        count = int(min(st.raw_n[slot, s], w))
        if count < MIN_RETRAIN_ROWS:
            return None
        idx = (int(st.raw_n[slot, s]) - count + np.arange(count)) % w
        sensor = SENSOR_NAMES[s]
        k = n_features(sensor)
        rows = model.window_rows(st.raw[slot, s, idx], k)
        fresh = model.AdaptiveGaussian.fit(rows, **self._model_params(s))
        parent = st.version(slot, s)
        st.models[slot][s] = fresh
        st.versions[(slot, s)] = parent + 1
        st.reset_detectors(slot, s)
        offs, tss = st.raw_off[slot, s, idx], st.raw_ts[slot, s, idx]
        return ModelVersion(
            device_id=st.device_ids[slot],
            sensor=sensor,
            version=parent + 1,
            parent=parent,
            trained_on=TrainingData(
                topic=self.settings.kafka.readings_topic,
                partition=int(st.partition[slot]),
                first_offset=int(offs.min()),
                last_offset=int(offs.max()),
                readings=count,
                first_ts=int(tss.min()),
                last_ts=int(tss.max()),
            ),
            params={
                "warmup": self.settings.model.warmup,
                "fading": self.settings.model.fading,
                "var_fading": self.settings.model.var_fading,
                "anomaly_threshold": self.settings.model.anomaly_threshold,
                "learn_anomalies": float(self.settings.model.learn_anomalies),
                "retrain_window": w,
            },
            baseline=fresh.params(),
            trigger_rule=rule,
            trigger_alert_id=alert_id,
            code_version=self.code_version,
            config_hash=self.config_hash,
            created_at=int(st.last_ts[slot, s]),
        )
