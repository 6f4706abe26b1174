"""The batch pipeline: decode/validate -> integrity -> features -> score -> drift -> rules -> actions.

:class:`Pipeline` holds all monitoring state and turns a batch of Kafka messages into a
:class:`BatchResult` (dead letters, alerts, model versions, counts). It does no I/O: the live
service (:mod:`monitor.serve.service`) delivers the results and commits offsets, and an offline replay
feeds the very same code with recorded messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor import kernel, schema
from monitor.analyze import explain
from monitor.analyze.bias import CohortBias
from monitor.detect import adwin, cohortinputs, drift, inputs, joint, kernels, model, novelty, rivertier, span
from monitor.detect.cohorts import CohortLabels
from monitor.detect.drift import Comparison, GroupDrift, PairDrift
from monitor.detect.joint import JointState
from monitor.detect.rivertier import RiverState, RiverTiers
from monitor.detect.state import DetectState
from monitor.errors import RulesError
from monitor.govern import alerts, training
from monitor.govern.governor import Governor
from monitor.govern.lineage import Provenance
from monitor.govern.registry import AuditEvent, EventKind, ModelVersion, code_version
from monitor.govern.rules import Evaluation, RuleEngine, RuleSet, Scope, Transition
from monitor.govern.rules.model import COHORT_INPUT_SIGNALS
from monitor.govern.state import GovernState, axis_widths
from monitor.ingest import channels
from monitor.ingest.features import Features
from monitor.ingest.integrity import GAP, IntegrityChecker
from monitor.ingest.state import IngestState
from monitor.records import DeadLetter, Eviction, Message, Registration, Rollback, Scored, Stray
from monitor.schema import MAX_AXES, SENSOR_NAMES, ReadingLike, Reason, Rejection
from monitor.settings import Settings
from monitor.state import layout
from monitor.state.store import CHECKS, PartitionState, StateStore

#: A pooled detector a device's scores feed: scope, key, detector, and the sensors it takes of the
#: device (None: every sensor; a channel label's cohort: its channels).
Group = tuple[Scope, str, GroupDrift, frozenset[int] | None]
#: A device's pooled detectors, with the code of their cohort keys (:meth:`CohortInputs.code`).
GroupSet = tuple[int, list[Group]]
#: Zeros that pad a reading's features to ``MAX_AXES`` columns, by the number of features.
_PAD = tuple((0.0,) * (MAX_AXES - k) for k in range(MAX_AXES + 1))


@dataclass
class BatchResult:
    """Everything one batch produced; the service delivers it before committing offsets."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    alerts: list[alerts.Alert] = field(default_factory=list)
    versions: list[ModelVersion] = field(default_factory=list)
    models: list[model.AdaptiveGaussian] = field(default_factory=list)  # of each version, as trained
    audit: list[AuditEvent] = field(default_factory=list)  # rule firings, actions, promotions
    rollbacks: list[Rollback] = field(default_factory=list)
    # Per sensor of the catalog (by default the built-in kinds: Pipeline.new_result sizes them).
    valid: NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(SENSOR_NAMES), np.int64))
    anomalies: NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(SENSOR_NAMES), np.int64))
    river_anomalies: NDArray[np.int64] = field(  # readings River tiers flagged, per sensor
        default_factory=lambda: np.zeros(len(SENSOR_NAMES), np.int64)
    )
    scores: dict[int, NDArray[np.float64]] = field(default_factory=dict)  # sensor -> scores
    drift: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # detector, scope, sensor
    fleet_stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # sensor -> (ks, psi)
    span: list[span.Partial] = field(default_factory=list)  # fleet.span: this batch's partials
    # (cohort key, sensor) -> (ks, psi) of the cohort's inputs against the rest of the fleet's
    cohort_inputs: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # (cohort key, sensor) -> the bias_* signals of a window that closed (monitor.analyze.bias)
    bias: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    event_ts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # valid readings
    retrains_skipped: Counter[str] = field(default_factory=Counter)  # sensor -> too few readings
    replayed: int = 0  # readings at or before their device's last applied offset: not applied again
    evicted: Counter[str] = field(default_factory=Counter)  # reason ("idle", "capacity") -> devices
    evictions: list[Eviction] = field(default_factory=list)  # the waves behind `evicted`
    strays: int = 0  # readings of a device on another partition than the one holding its state
    new_strays: list[Stray] = field(default_factory=list)  # devices seen astray for the first time
    kafka_ts_ignored: int = 0  # Kafka timestamps missing or further ahead than consume.max_future_ms
    trace: list[Scored] = field(default_factory=list)  # every applied reading, if tracing
    registered: list[Registration] = field(default_factory=list)  # channels registered on first sight

    @property
    def rejected(self) -> Counter[str]:
        return Counter(d.rejection.reason.value for d in self.dead_letters)


@dataclass
class Columns:
    """A batch's readings as arrays, in stream order, and the kernel's per-reading outputs."""

    dev: NDArray[np.int64]  # index into ``devices``
    sensor: NDArray[np.int64]
    k: NDArray[np.int64]  # features
    ts: NDArray[np.int64]
    seq: NDArray[np.int64]
    offset: NDArray[np.int64]
    has_offset: NDArray[np.bool_]
    partition: NDArray[np.int64]
    kafka_ts: NDArray[np.int64]
    plausible: NDArray[np.bool_]  # the Kafka timestamp dates the device
    vals: NDArray[np.float64]  # features, zero-padded to 3
    watermark: NDArray[np.int64]  # its partition's clock
    devices: list[str]  # the batch's device ids, in order of first reading
    # The kernel's outputs per reading: kernel.SKIPPED, WARMING, SCORED or COMPLETED, and the score.
    status: NDArray[np.int8] = field(init=False)
    score: NDArray[np.float64] = field(init=False)
    d2: NDArray[np.float64] = field(init=False)
    anomalous: NDArray[np.bool_] = field(init=False)
    # ... and of the device's joint model: a frame's outcome (joint.NO_FRAME, WARMING, SCORED),
    # T^2, dimensions, flag.
    frame: NDArray[np.int8] = field(init=False)
    frame_d2: NDArray[np.float64] = field(init=False)
    frame_p: NDArray[np.int64] = field(init=False)
    frame_anomalous: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.ts)
        self.status, self.score, self.d2 = np.zeros(n, np.int8), np.zeros(n), np.zeros(n)
        self.anomalous = np.zeros(n, np.bool_)
        self.frame, self.frame_d2 = np.zeros(n, np.int8), np.zeros(n)
        self.frame_p, self.frame_anomalous = np.zeros(n, np.int64), np.zeros(n, np.bool_)

    def readings(self) -> tuple[NDArray[Any], ...]:
        return (
            self.dev, self.sensor, self.k, self.ts, self.seq, self.offset, self.has_offset,
            self.partition, self.kafka_ts, self.plausible, self.vals, self.watermark,
        )  # fmt: skip

    def outputs(self) -> tuple[NDArray[Any], ...]:
        return (
            self.status, self.score, self.d2, self.anomalous, self.frame, self.frame_d2, self.frame_p,
            self.frame_anomalous,
        )  # fmt: skip


class Pipeline:
    """All monitoring state and stages. ``trace=True`` also returns every applied reading's score
    (offline evaluation; the live service leaves it off). Retrains go to ``trainer``: inline by
    default (offline evaluation, the same results), a background worker in the service. Readings
    go through the compiled loop (:mod:`monitor.kernel`) unless ``compiled`` is False or the
    novelty stage is on."""

    def __init__(
        self,
        settings: Settings,
        rules: RuleSet,
        trace: bool = False,
        trainer: training.Trainer | None = None,
        compiled: bool = True,
    ) -> None:
        self.settings = settings
        self.trace = trace
        self.compiled = compiled  # False: every reading in Python (the reference the kernel is held to)
        d, m = settings.drift, settings.model
        # The catalog grows as channels are registered (channels.auto_register): into spare indices.
        self.catalog = catalog = settings.channels.catalog()
        unknown = [] if catalog.spare else rules.unknown_sensors(catalog.names)
        if unknown:
            raise RulesError(f"{settings.rules_file}: " + "; ".join(unknown))
        n = catalog.capacity
        # Each stage's state is a slab of the store; a stage writes its own, reads earlier ones.
        self.store = StateStore()
        self.ingest_state = self.store.add(IngestState(n))
        input_columns = inputs.columns(settings.inputs)
        self.detect_state = self.store.add(
            DetectState(n, d, novelty.state_size(settings.novelty), input_columns, catalog.dims)
        )
        self.govern_state = self.store.add(GovernState(axis_widths(catalog), m.retrain_window))
        self.joint_state = self.store.add(JointState(catalog))
        self._joint = joint.config(settings.joint, catalog, m.anomaly_threshold, m.learn_anomalies)
        self.fleet_inputs = inputs.FleetInputs(settings.inputs, catalog)
        self._inputs = inputs.config(settings.inputs, catalog, m.retrain_window)
        self._input_out = inputs.new_out()  # the inputs' comparison of the pair being evaluated
        self.integrity = IntegrityChecker(self.ingest_state, settings.integrity)
        self.pairs = PairDrift(self.detect_state, d)
        self.fleet = GroupDrift(n, d, self._group_axes())
        self.labels = CohortLabels.load(settings.cohorts_file, settings.channels.labels(), catalog)
        self.river = self._river_tiers(settings, catalog)  # None: no River tier (nothing changes)
        self.bias = CohortBias(settings.bias) if settings.bias.enabled else None
        self.cohort_labels = sorted({r.cohort for r in rules.rules if r.cohort is not None})
        self.cohort_groups: dict[str, GroupDrift] = {}
        # Each cohort's inputs against the rest of the fleet's, for the labels of the cohort rules
        # that read them (None: no such rule, or input drift off).
        self._cohort_input_labels = frozenset(
            r.cohort
            for r in rules.rules
            if r.cohort is not None and r.signal_names() & COHORT_INPUT_SIGNALS and settings.inputs.enabled
        )
        self.cohort_inputs = (
            cohortinputs.CohortInputs(settings.inputs, catalog, self.fleet_inputs)
            if self._cohort_input_labels
            else None
        )
        self._device_groups: dict[str, GroupSet] = {}
        self._group_sizes: Counter[str] = Counter()  # devices feeding each pooled group, by key
        self._group_lists: dict[tuple[str, ...], GroupSet] = {}
        self.lag = 0  # the consumer's lag (messages), set by the service: the fleet "lag" signal
        # fleet.span: the pooled scores also go to partial aggregates every replica merges, and the
        # fleet and cohort rules are evaluated on the merged view (monitor.serve.fleetspan), not here.
        self.span = _span_collector(settings)
        self._device_hashes: dict[str, int] = {}
        self.engine = RuleEngine(rules)
        a = settings.alerts
        self.storm = alerts.StormControl(a.storm_max_alerts, a.storm_window_s)
        self.thresholds = model.distance_thresholds(m.anomaly_threshold)  # by number of features
        self._thresholds = np.array(self.thresholds)
        self.novelty = novelty.Novelty(settings.novelty) if settings.novelty.enabled else None
        self.max_devices = device_cap(settings, self.store, self.river)
        self.store.limit = self.max_devices
        self.clocks: dict[int, PartitionClock] = {}  # the idle-eviction clock of each partition
        self._latest_ts: int | None = None  # the latest plausible Kafka timestamp of this batch
        self._foreign: dict[tuple[int, int], int] = {}  # (slot, partition) -> last offset, astray
        self._astray: set[str] = set()  # devices reported astray once already
        self._tick = 0  # readings applied: orders the devices for capacity eviction
        self._released = 0  # waves of forgotten devices (slots that changed hands)
        # The busy pairs and their flags by slot; None once slots change hands (forgotten, imported).
        self._busy: tuple[frozenset[tuple[str, str]], NDArray[np.int8]] | None = None
        self.trainer = training.InlineTrainer(settings.retrain) if trainer is None else trainer
        self.governor = Governor(
            settings,
            self.store,
            self.detect_state,
            self.govern_state,
            self.trainer,
            self.engine.is_firing,
            Provenance.of(settings, code_version()),
        )
        self._base_params = self._new_pair_params()
        self._warm_up()

    def _group_axes(self) -> tuple[int, ...]:
        """The axes of each sensor index (0: spare), for the pooled detectors' ADWIN on input means
        (none: input drift off)."""
        return tuple(self.catalog.axes().tolist()) if self.settings.inputs.enabled else ()

    def _new_pair_params(self) -> NDArray[np.float64]:
        """A new pair model's (fading, var_fading, resolution, trend), per sensor index (a spare
        one's: the defaults, until a channel is registered there)."""
        m, spare = self.settings.model, self.settings.channels.auto_defaults
        trend = m.trend or 0.0
        out = np.array([[m.fading, m.var_fading, spare.resolution, trend]] * self.catalog.capacity)
        for s in range(len(self.catalog)):
            base = self.governor.base_params(s)
            out[s, 2:] = base["resolution"], base["trend"]
        return out

    def _adopt(self, catalog: schema.Catalog) -> None:
        """Monitor the channels of ``catalog`` (this catalog and channels registered at its spare
        indices): every stage's view of the catalog follows."""
        self.catalog = self.governor.catalog = catalog
        m = self.settings.model
        self._joint = joint.config(self.settings.joint, catalog, m.anomaly_threshold, m.learn_anomalies)
        self._inputs = inputs.config(self.settings.inputs, catalog, m.retrain_window)
        self._base_params = self._new_pair_params()
        axes = self._group_axes()
        for group in (self.fleet, *self.cohort_groups.values()):
            group.watch_axes(axes)
        if self.river is not None:
            self.river.adopt(catalog)
        if self.cohort_inputs is not None:
            self.cohort_inputs.adopt(catalog)

    def _river_tiers(self, settings: Settings, catalog: schema.Catalog) -> RiverTiers | None:
        """The River tiers and their slab, if any is configured; a per-device tier whose models
        the snapshots could not restore is refused."""
        if not settings.river.tiers:
            return None
        state = self.store.add(RiverState(catalog.capacity, RiverTiers.specs(settings.river)))
        tiers = RiverTiers(settings.river, catalog, self.labels, state)
        tiers.check_snapshots()
        return tiers

    def _warm_up(self) -> None:
        """Load the compiled kernels (compiled and cached on disk the first time) before the first
        batch, which would otherwise wait for them."""
        result = self.new_result()
        empty = self._columns([], result)
        out = (result.valid, result.anomalies, np.zeros(1, np.int64))
        kernel.run(
            0,
            empty.readings(),
            np.zeros(0, np.int64),
            self._kernel_config(0),
            self._kernel_state(),
            (*out, *empty.outputs()),
            self._joint,
            self.joint_state.arrays_for_step(),
            self._inputs,
            self._input_arrays(),
            self._input_out,
        )
        self._joint_step(0, 0, 0)  # slot 0 holds no device yet: cleared below
        self.joint_state.clear(0)
        det, row = self.detect_state, np.zeros(10)
        drift.compare(det.ref[0, 0], det.cur[0, 0], det.edges[0, 0], det.ref_frac[0, 0])
        for f in ((0.0,), (0.0, 0.0), (0.0, 0.0, 0.0)):
            kernels.learn(row, len(f), 0.5, 0.5, 0.5, f)
            kernels.distance(row, len(f), 1.0, f)
        adwin.update(
            np.zeros(adwin.SUMS), np.zeros(adwin.COUNTS, np.uint8), 0.0, self.settings.drift.adwin_delta
        )
        inputs.measure(0, 0, self._inputs, self._input_arrays(), self._input_out)
        if self.cohort_inputs is not None:
            self.cohort_inputs.warm_up()

    def _input_arrays(self) -> tuple[Any, ...]:
        return inputs.arrays_for_step(self.detect_state, self.fleet_inputs)

    def process(self, messages: Sequence[Message]) -> BatchResult:
        """Run every message through every stage, in order. Each (device, sensor) pair is evaluated
        right after every ``check_every``-th reading, so results do not depend on the batch size."""
        c = self.settings.consume
        max_bytes, require_key = c.max_message_bytes, c.require_key
        latest = int(time.time() * 1000) + c.max_future_ms if c.max_future_ms else None
        self._latest_ts = latest
        result = self.new_result()
        decoded = schema.decode_batch(
            [m.value() for m in messages],
            [m.key() for m in messages],
            max_bytes,
            latest,
            require_key,
            self.catalog,
        )
        if self.settings.channels.auto_register:
            decoded = self._register(messages, decoded, result)
        batch: list[tuple[ReadingLike, Message]] = []
        for msg, r in zip(messages, decoded, strict=True):
            if isinstance(r, Rejection):
                result.dead_letters.append(DeadLetter(msg, r))
            else:
                batch.append((r, msg))
        # Offsets per partition: the last message of each (a partition's messages come in order).
        last = {(m.topic(), m.partition()): m.offset() for m in messages}
        result.offsets = {
            (t, p): o + 1 for (t, p), o in last.items() if t is not None and p is not None and o is not None
        }
        self.process_readings(batch, result)
        self._evict(result)
        return result

    def _register(
        self, messages: Sequence[Message], decoded: channels.Decoded, result: BatchResult
    ) -> channels.Decoded:
        """Register the channels of unknown sensors the batch brings, in stream order
        (:func:`monitor.ingest.channels.register`)."""
        if not any(isinstance(r, Rejection) and r.reason is Reason.UNKNOWN_SENSOR for r in decoded):
            return decoded
        a = self.settings.channels.auto_defaults
        values, keys = [m.value() for m in messages], [m.key() for m in messages]
        decoded, catalog, new = channels.register(
            decoded, values, keys, self.catalog, (a.resolution, a.rate_hz), self._latest_ts
        )
        if new:
            self._adopt(catalog)
        for i in new:
            r, m = decoded[i], messages[i]
            assert not isinstance(r, Rejection)
            spec = catalog.by_name[r.sensor]
            result.registered.append(Registration(spec, r.device_id, m.topic(), m.partition(), m.offset()))
        return decoded

    def process_readings(
        self, readings: Iterable[tuple[ReadingLike, Message]], result: BatchResult | None = None
    ) -> BatchResult:
        """The stages after decoding, for readings that are already validated (or replayed)."""
        result = self.new_result() if result is None else result
        batch = list(readings)
        scores: list[list[float]] = [[] for _ in range(self.catalog.capacity)]
        cols = self._columns(batch, result)
        if self.span is not None and len(batch):
            self.span.mark(cols.partition, np.where(cols.has_offset, cols.offset, 0), cols.ts)
        if self.compiled and self.novelty is None:
            self._run_kernel(batch, cols, scores, result)
        else:  # the novelty stage runs in Python, reading by reading
            for (r, msg), plausible in zip(batch, cols.plausible.tolist(), strict=True):
                self._apply(r, msg, plausible, scores, result)
        for clock in self.clocks.values():
            clock.advance()
        if self.river is not None:
            result.river_anomalies += self.river.take_flagged()
        result.scores = {s: np.asarray(v) for s, v in enumerate(scores) if v}
        result.event_ts = cols.ts
        now = int(cols.ts.max()) if len(batch) else None
        result.alerts = self.storm.admit(result.alerts, now)
        if self.span is not None:
            result.span = self.span.take()
        return result

    def new_result(self) -> BatchResult:
        """An empty result with a count per sensor index of the catalog (spare ones included)."""
        n = self.catalog.capacity
        return BatchResult(
            valid=np.zeros(n, np.int64),
            anomalies=np.zeros(n, np.int64),
            river_anomalies=np.zeros(n, np.int64),
        )

    def _columns(self, batch: Sequence[tuple[ReadingLike, Message]], result: BatchResult) -> Columns:
        """The batch as arrays, in stream order; every plausible Kafka timestamp goes to its
        partition's clock (one that is missing, or further ahead than any real clock, dates
        nothing)."""
        n = len(batch)
        readings, msgs = [r for r, _ in batch], [m for _, m in batch]
        devices: dict[str, int] = {}
        dev = [devices.setdefault(r.device_id, len(devices)) for r in readings]
        feats = [r.features() for r in readings]
        offsets = [m.offset() for m in msgs]
        partition = np.array([m.partition() or 0 for m in msgs], np.int64)
        kafka_ts = np.array([m.timestamp()[1] for m in msgs], np.int64)
        plausible = kafka_ts > 0
        if self._latest_ts is not None:
            plausible &= kafka_ts <= self._latest_ts
        watermark = np.zeros(n, np.int64)
        for p in np.unique(partition).tolist():
            clock = self.clocks.get(p) or self.clocks.setdefault(p, PartitionClock())
            here = partition == p
            clock.recent.extend(kafka_ts[here & plausible].tolist())
            watermark[here] = clock.watermark
        result.kafka_ts_ignored += n - int(plausible.sum())

        def ints(values: list[int]) -> NDArray[np.int64]:
            return np.array(values, np.int64)

        index, pad = self.catalog.index, _PAD

        return Columns(
            dev=ints(dev), sensor=ints([index[r.sensor] for r in readings]),
            k=ints([len(f) for f in feats]), ts=ints([r.ts for r in readings]),
            seq=ints([r.seq for r in readings]), offset=ints([-1 if o is None else o for o in offsets]),
            has_offset=np.array([o is not None for o in offsets], np.bool_), partition=partition,
            kafka_ts=kafka_ts, plausible=plausible, watermark=watermark, devices=list(devices),
            vals=np.array([f + pad[len(f)] for f in feats], np.float64).reshape(n, MAX_AXES),
        )  # fmt: skip

    def _run_kernel(
        self,
        batch: Sequence[tuple[ReadingLike, Message]],
        cols: Columns,
        scores: list[list[float]],
        result: BatchResult,
    ) -> None:
        """Apply the batch with the compiled loop (:mod:`monitor.kernel`), stopping for each pair
        evaluation and for each reading only the Python path applies."""
        n, i, pending = len(batch), 0, 0
        replayed = np.zeros(1, np.int64)
        out = (result.valid, result.anomalies, replayed, *cols.outputs())
        slot_of = self._slots_of(cols.devices)
        # The pooled detectors take the kernel's scores once, before a reading the Python path
        # applies and at the end; their outputs go in stream order among the pair evaluations'.
        marks = Marks(result)
        while i < n:
            stop, why = kernel.run(
                i,
                cols.readings(),
                slot_of,
                self._kernel_config(i),
                self._kernel_state(),
                out,
                self._joint,
                self.joint_state.arrays_for_step(),
                self._inputs,
                self._input_arrays(),
                self._input_out,
            )
            self._tick += stop - i
            self._freeze_completed(cols, i, stop)
            if self.river is not None:  # the readings the loop applied, before the evaluation
                self._river_many(cols, i, stop, slot_of)
            if why == kernel.EVALUATE:
                marks.add(stop - 1)
                self._evaluate_pair(int(slot_of[cols.dev[stop - 1]]), int(cols.sensor[stop - 1]), result)
                i = stop
            elif why == kernel.PYTHON:
                self._after_kernel(batch, cols, pending, stop, scores, result, marks)
                released = self._released
                r, msg = batch[stop]
                self._apply(r, msg, bool(cols.plausible[stop]), scores, result)
                if self._released != released:  # devices were forgotten: their slots changed hands
                    slot_of = self._slots_of(cols.devices)
                else:
                    slot_of[cols.dev[stop]] = self.store.slots.get(r.device_id, -1)
                i = pending = stop + 1
                marks = Marks(result)
            else:
                break
        self._after_kernel(batch, cols, pending, n, scores, result, marks)
        result.replayed += int(replayed[0])

    def _river_many(self, cols: Columns, start: int, stop: int, slot_of: NDArray[np.int64]) -> None:
        """The River tiers' step for the readings the compiled loop applied from ``start`` to
        ``stop``, in stream order (its devices' quarantine flags cannot change in between)."""
        assert self.river is not None
        applied = np.flatnonzero(cols.status[start:stop]) + start
        readings = (cols.sensor, cols.k, cols.vals)
        self.river.apply_many(
            applied, cols.dev, slot_of, readings, cols.devices, self.govern_state.quarantined
        )

    def _freeze_completed(self, cols: Columns, start: int, stop: int) -> None:
        """Freeze the references the kernel completed (before the pairs' next evaluation)."""
        for i in (np.flatnonzero(cols.status[start:stop] == kernel.COMPLETED) + start).tolist():
            self.pairs.freeze(int(self.store.slots[cols.devices[cols.dev[i]]]), int(cols.sensor[i]))

    def _slots_of(self, devices: list[str]) -> NDArray[np.int64]:
        return np.array([self.store.slots.get(d, -1) for d in devices], np.int64)

    def _kernel_config(self, start: int) -> tuple[Any, ...]:
        i, m, d = self.settings.integrity, self.settings.model, self.settings.drift
        return (
            i.gap_factor, i.stuck_run, i.max_clock_skew_ms, m.warmup, self._thresholds,
            kernel.FLAGGED[m.flagged], d.check_every, self._tick - start, d.urgent_streak, d.urgent_gap,
            self.govern_state.first_axis,
        )  # fmt: skip

    def _kernel_state(self) -> tuple[Any, ...]:
        """The slabs' arrays the kernel reads and writes (taken anew: a slab may have grown)."""
        ing, det, gov = self.ingest_state, self.detect_state, self.govern_state
        return (
            self.store.partition, self.store.touched, ing.last_seq, ing.last_offset, ing.last_seen,
            ing.last_ts, ing.interval, ing.stuck_run, ing.integrity, ing.last_vals,
            self.integrity.events, gov.quarantined, gov.raw_n, gov.raw, gov.raw_off, gov.raw_ts,
            gov.raw_last_off, gov.raw_last_ts, det.model, det.model_params, self._base_params,
            det.n_scored, det.since_eval, det.anomalies, det.streak, det.score_sum, det.score_count,
            det.why, det.why_at, det.ref, det.cur, self._python_pairs(),
        )  # fmt: skip

    def _python_pairs(self) -> NDArray[np.int8]:
        """1 for the pairs whose readings the Python path applies: a retrain or shadow under way."""
        busy = self.governor.busy_pairs()
        cached = self._busy
        if cached is None or cached[0] != busy or len(cached[1]) != self.store.capacity:
            flags = np.zeros((self.store.capacity, self.catalog.capacity), np.int8)
            for device, sensor in busy:
                slot = self.store.slots.get(device)
                if slot is not None:
                    flags[slot, self.catalog.index[sensor]] = 1
            cached = self._busy = (busy, flags)
        return cached[1]

    def _after_kernel(
        self,
        batch: Sequence[tuple[ReadingLike, Message]],
        cols: Columns,
        start: int,
        stop: int,
        scores: list[list[float]],
        result: BatchResult,
        marks: Marks,
    ) -> None:
        """What the kernel leaves to Python for the readings it applied from ``start`` to
        ``stop``: trace records, the scores, and the pooled (fleet, cohort) detectors."""
        at = np.flatnonzero(cols.status[start:stop]) + start
        if not len(at):
            return
        status = cols.status[at]
        if self.trace:
            for i, state in zip(at.tolist(), status.tolist(), strict=True):
                r = batch[i][0]
                frame = (
                    int(cols.frame[i]),
                    float(cols.frame_d2[i]),
                    int(cols.frame_p[i]),
                    bool(cols.frame_anomalous[i]),
                )
                if state == kernel.WARMING:
                    result.trace.append(_scored(r, None, None, False, None, frame))
                else:
                    score, d2 = float(cols.score[i]), float(cols.d2[i])
                    result.trace.append(_scored(r, score, d2, bool(cols.anomalous[i]), None, frame))
        scored = at[status != kernel.WARMING]
        sensor, score, anomalous = cols.sensor[scored], cols.score[scored], cols.anomalous[scored]
        for s in np.unique(sensor).tolist():
            scores[s].extend(score[sensor == s].tolist())
        self._push_groups(cols, scored, (sensor, score, anomalous, cols.vals[scored]), result, marks)

    def _push_groups(
        self,
        cols: Columns,
        scored: NDArray[np.intp],
        outputs: tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]],
        result: BatchResult,
        marks: Marks,
    ) -> None:
        """Push the scores to the pooled detectors their devices feed, each (group, sensor) in
        stream order, and evaluate every (group, sensor) where it is due, all of them in stream
        order (a reading due in several groups: the fleet first, then its cohorts by label); their
        outputs go among those of the pair evaluations ``marks`` holds, in stream order.
        ``outputs``: the scored readings' sensors, scores, flags and values."""
        sensor, score, anomalous, vals = outputs
        feed = self._cohort_feed(cols, scored, sensor, vals)
        runs = self._group_runs(cols, scored, sensor)
        if self.span is not None:
            self._span_runs(cols, scored, score, anomalous, runs)
        # Due points: (stream position, rank) of every evaluation, with what it needs pushed first.
        events: list[tuple[int, int, int, int]] = []  # (position, rank, run, scores up to it)
        every = self.settings.drift.fleet_check_every
        for r, (rank, _, _, group, s, pick) in enumerate(runs):
            for j in range(group.due_in(s) - 1, len(pick), every):
                events.append((int(scored[pick[j]]), rank, r, j + 1))
        pushed = [0] * len(runs)
        for position, _, r, upto in sorted(events):
            _, scope, key, group, s, pick = runs[r]
            chunk = pick[pushed[r] : upto]
            group.push_many(s, score[chunk], anomalous[chunk], vals[chunk])
            pushed[r] = upto
            if feed is not None and scope == "cohort":
                feed.upto(s, position)
            with marks.group(position):
                self._evaluate_group(scope, key, group, s, int(cols.ts[position]), result)
        marks.interleave()
        for r, (_, _, _, group, s, pick) in enumerate(runs):
            chunk = pick[pushed[r] :]
            group.push_many(s, score[chunk], anomalous[chunk], vals[chunk])
        if feed is not None:
            feed.finish()

    def _span_runs(
        self,
        cols: Columns,
        scored: NDArray[np.intp],
        score: NDArray[np.float64],
        anomalous: NDArray[np.bool_],
        runs: list[tuple[int, Scope, str, GroupDrift, int, NDArray[np.intp]]],
    ) -> None:
        """The scored readings of each (pooled group, sensor) into the partial aggregates."""
        assert self.span is not None
        hashes = span.device_hashes(cols.devices)
        for _, _, key, _, s, pick in runs:
            at = scored[pick]
            name = self.catalog.names[s]
            self.span.add(
                key, name, cols.partition[at], cols.ts[at], score[pick], anomalous[pick], hashes[cols.dev[at]]
            )

    def _group_runs(
        self, cols: Columns, scored: NDArray[np.intp], sensor: NDArray[np.int64]
    ) -> list[tuple[int, Scope, str, GroupDrift, int, NDArray[np.intp]]]:
        """Per (pooled detector, sensor): its rank in its first device's groups, its scope and key,
        and the indices into ``scored`` of the readings it takes, in stream order."""
        members: dict[int, tuple[int, Group, list[int]]] = {}
        for d, device_id in enumerate(cols.devices):
            for rank, entry in enumerate(self._groups(device_id)):
                members.setdefault(id(entry[2]), (rank, entry, []))[2].append(d)
        runs: list[tuple[int, Scope, str, GroupDrift, int, NDArray[np.intp]]] = []
        for rank, (scope, key, group, sensors), devs in members.values():
            mine = np.flatnonzero(np.isin(cols.dev[scored], devs)) if len(devs) < len(cols.devices) else None
            for s in range(len(self.catalog)) if sensors is None else sorted(sensors):
                pick = np.flatnonzero(sensor == s) if mine is None else mine[sensor[mine] == s]
                if len(pick):
                    runs.append((rank, scope, key, group, s, pick))
        return runs

    def _cohort_feed(
        self, cols: Columns, scored: NDArray[np.intp], sensor: NDArray[np.int64], vals: NDArray[np.float64]
    ) -> cohortinputs.Feed | None:
        """The scored readings for the cohorts' input comparison, with their devices' slots and
        cohort codes (None: no comparison, or no reading)."""
        if self.cohort_inputs is None or not len(scored):
            return None
        slots = np.array([self.store.slots.get(d, -1) for d in cols.devices], np.int64)
        codes = np.array([self._group_set(d)[0] for d in cols.devices], np.int64)
        dev = cols.dev[scored]
        return cohortinputs.Feed(self.cohort_inputs, scored, sensor, vals, (slots[dev], codes[dev]))

    def _apply(
        self, r: ReadingLike, msg: Message, plausible: bool, scores: list[list[float]], result: BatchResult
    ) -> None:
        """One reading through every stage, in Python."""
        st = self.store
        partition = msg.partition() or 0
        slot = st.slots.get(r.device_id)
        if slot is None:
            slot = self._admit(r.device_id, partition, result)
        s = self.catalog.index[r.sensor]
        result.valid[s] += 1
        offset, kafka_ts = msg.offset(), msg.timestamp()[1]
        self._tick += 1
        st.touched[slot] = self._tick
        fresh = self._fresh(slot, partition, offset, kafka_ts if plausible else 0, result)
        if not fresh or not self.integrity.check_seq(slot, s, r):
            return
        f = r.features()
        gaps = int(self.ingest_state.integrity[slot, s, GAP])
        self.integrity.check_values(slot, s, r.ts, f, kafka_ts)
        urgent = self.settings.drift.urgent_gap and self.ingest_state.integrity[slot, s, GAP] != gaps
        self.govern_state.remember(slot, s, r.ts, f, offset or 0)
        if self.governor.waiting:
            self.governor.on_reading(slot, s, r.ts, result)
        self.detect_state.since_eval[slot, s] += 1
        frame = self._joint_step(slot, s, r.ts)
        urgent |= self._score(slot, s, r, f, scores, result, frame)
        if self.river is not None:
            self.river.apply(slot, s, r.device_id, f, not self.govern_state.quarantined[slot])
        if urgent or self.detect_state.since_eval[slot, s] >= self.settings.drift.check_every:
            inputs.measure(slot, s, self._inputs, self._input_arrays(), self._input_out)
            self._evaluate_pair(slot, s, result)

    def _fresh(
        self, slot: int, partition: int, offset: int | None, kafka_ts: int, result: BatchResult
    ) -> bool:
        """Note the device's Kafka time (``kafka_ts`` 0: none plausible, its partition's clock
        then) and offset; False for a reading it applied already (re-delivered after a crash or a
        rebalance). Offsets are compared within a partition only: a reading of the device on
        another partition is applied, and counted."""
        st, ing = self.store, self.ingest_state
        seen = kafka_ts or self.clocks[partition].watermark
        ing.last_seen[slot] = max(int(ing.last_seen[slot]), seen)
        if offset is None:
            return True
        if partition != st.partition[slot]:
            return self._fresh_astray(slot, partition, offset, result)
        if offset <= self.ingest_state.last_offset[slot]:
            result.replayed += 1
            return False
        self.ingest_state.last_offset[slot] = offset
        return True

    def _fresh_astray(self, slot: int, partition: int, offset: int, result: BatchResult) -> bool:
        st, key = self.store, (slot, partition)
        result.strays += 1
        device = st.device_ids[slot]
        if device not in self._astray:
            self._astray.add(device)
            result.new_strays.append(Stray(device, int(st.partition[slot]), partition))
        if offset <= self._foreign.get(key, -1):
            result.replayed += 1
            return False
        self._foreign[key] = offset
        return True

    def _admit(self, device_id: str, partition: int, result: BatchResult) -> int:
        """A slot for a device seen for the first time; at the device cap, the devices whose
        readings this process applied least recently (a hundredth of the cap, at least one) are
        forgotten first."""
        st = self.store
        if len(st) >= self.max_devices:
            self._forget_least_recent(len(st) - self.max_devices + max(1, self.max_devices // 100), result)
        return st.slot(device_id, partition)

    def _forget_least_recent(self, n: int, result: BatchResult) -> None:
        st = self.store
        live = st.live()
        oldest = live[np.argsort(st.touched[live], kind="stable")[:n]].tolist()
        self._forget(oldest, result, Eviction("capacity", len(oldest), None, 0))

    def _joint_step(self, slot: int, s: int, ts: int) -> tuple[int, float, int, bool]:
        """The reading (its values in the ingest state) through its device's joint model."""
        ing = self.ingest_state
        return joint.step(
            slot,
            s,
            ts,
            ing.last_vals,
            self.govern_state.quarantined,
            self._joint,
            self.joint_state.arrays_for_step(),
        )

    def _score(
        self,
        slot: int,
        s: int,
        r: ReadingLike,
        f: Features,
        scores: list[list[float]],
        result: BatchResult,
        frame: tuple[int, float, int, bool],
    ) -> bool:
        """Score the reading (learning from it), then feed the score to every detector; True if
        it completes a run of ``drift.urgent_streak`` anomalous readings."""
        det = self.detect_state
        d2 = self._distance(slot, s, f, r.ts)
        score = None if d2 is None else model.score(d2, len(f))
        level = None
        if self.novelty is None:
            anomalous = d2 is not None and d2 > self.thresholds[len(f)]
        else:
            learn = not self.govern_state.quarantined[slot]
            level = self.novelty.update(det.novelty[slot, s], r.ts, f, learn)
            anomalous = level >= self.settings.novelty.threshold
        if anomalous:
            det.anomalies[slot, s] += 1
            result.anomalies[s] += 1
            det.streak[slot, s] += 1
        else:
            det.streak[slot, s] = 0
        urgent = bool(anomalous and det.streak[slot, s] == self.settings.drift.urgent_streak)
        if self.trace:
            result.trace.append(_scored(r, score, d2, anomalous, level, frame))
        if score is None:
            return urgent
        scores[s].append(score)
        self.pairs.push(slot, s, score)
        gov = self.govern_state
        inputs.step(slot, s, np.array(f, np.float64), gov.raw, gov.raw_n, self._inputs, self._input_arrays())
        if self.cohort_inputs is not None:
            code = self._group_set(r.device_id)[0]
            row = np.array([f + _PAD[len(f)]], np.float64)
            self.cohort_inputs.push(s, row, np.array([slot], np.int64), np.array([code], np.int64))
        if self.governor.shadows:
            self.governor.on_score(slot, s, f, score, r.ts, result)
        for scope, key, group, sensors in self._groups(r.device_id):
            if self.span is not None and (sensors is None or s in sensors):
                self._span_one(slot, key, s, r, score, anomalous)
            if (sensors is None or s in sensors) and group.push(s, score, anomalous, f):
                self._evaluate_group(scope, key, group, s, r.ts, result)
        return urgent

    def _span_one(self, slot: int, key: str, s: int, r: ReadingLike, score: float, anomalous: bool) -> None:
        """One score of the Python path into the partial aggregates (its device's partition)."""
        assert self.span is not None
        h = self._device_hashes.get(r.device_id)
        if h is None:
            h = self._device_hashes[r.device_id] = int(span.device_hashes([r.device_id])[0])
        one = np.ones(1, np.int64)
        self.span.add(
            key,
            self.catalog.names[s],
            one * int(self.store.partition[slot]),
            one * r.ts,
            np.array([score]),
            np.array([anomalous]),
            one * h,
        )

    def _groups(self, device_id: str) -> list[Group]:
        """The pooled detectors a device's scores feed: the fleet's, and one per cohort its pairs
        are in (for each label a cohort rule groups by, e.g. ``firmware=1.2.0``): a device label's
        cohort takes every sensor of the device, a channel label's the sensors of its channels."""
        return self._group_set(device_id)[1]

    def _group_set(self, device_id: str) -> GroupSet:
        """:meth:`_groups`, with the code of its set of cohorts in the cohorts' input comparison."""
        found = self._device_groups.get(device_id)
        if found is None:
            groups: list[Group] = [("fleet", "*", self.fleet, None)]
            labels = self.labels.devices.get(device_id, {})
            for label in self.cohort_labels:
                if label in labels:
                    key = f"{label}={labels[label]}"
                    groups.append(("cohort", key, self._cohort_group(key), None))
                for key, sensors in self.labels.channel_cohorts(label):
                    groups.append(("cohort", key, self._cohort_group(key), sensors))
            # Devices in the same groups share one list (without cohorts: every device).
            keys = tuple(g[1] for g in groups)
            found = self._group_lists.get(keys)
            if found is None:
                code = 0 if self.cohort_inputs is None else self.cohort_inputs.code(keys)
                found = self._group_lists[keys] = (code, groups)
            self._device_groups[device_id] = found
            self._group_sizes.update(keys)
        return found

    def _cohort_group(self, key: str) -> GroupDrift:
        group = self.cohort_groups.get(key)
        if group is None:
            group = GroupDrift(self.catalog.capacity, self.settings.drift, self._group_axes())
            self.cohort_groups[key] = group
        return group

    def _evict(self, result: BatchResult) -> None:
        """Forget the devices of a partition whose clock has passed their last message by
        ``state.evict_idle_s`` (a sweep every tenth of that time), and the devices read least
        recently over the cap (restored snapshots may bring more)."""
        st, idle_ms = self.store, int(self.settings.state.evict_idle_s * 1000)
        if len(st) > self.max_devices:
            self._forget_least_recent(len(st) - self.max_devices, result)
        for p, clock in self.clocks.items():
            if not idle_ms or not clock.watermark or clock.watermark < clock.next_sweep:
                continue
            clock.next_sweep = clock.watermark + max(idle_ms // 10, 1000)
            live = st.live()
            mine = live[st.partition[live] == p]
            idle = mine[self.ingest_state.last_seen[mine] < clock.watermark - idle_ms].tolist()
            self._forget(idle, result, Eviction("idle", len(idle), p, clock.watermark))

    def _forget(self, slots: list[int], result: BatchResult, wave: Eviction) -> None:
        if slots:
            self._release(slots)
            result.evicted[wave.reason] += len(slots)
            result.evictions.append(wave)

    def _release(self, slots: list[int]) -> None:
        """Forget everything about the devices in ``slots``."""
        self._released += 1
        self._busy = None
        devices = [self.store.device_ids[i] for i in slots]
        self.engine.forget(devices)
        self.governor.forget(set(devices))
        if self.river is not None:
            self.river.forget(devices)
        for d in devices:
            self._group_sizes.subtract(g[1] for g in self._device_groups.pop(d, (0, []))[1])
            self._astray.discard(d)
        gone = set(slots)
        for key in [k for k in self._foreign if k[0] in gone]:
            del self._foreign[key]
        self.store.release(slots)

    def export_partition(self, partition: int | None) -> PartitionState:
        """A copy of everything kept about the devices read from ``partition`` (None: of no
        device): their state, rule episodes and pending governance work, and the catalog their
        state is laid out by."""
        states = self.store.export([] if partition is None else self.store.in_partition(partition))
        ids, c = states.device_ids, self.catalog
        episodes, governance = self.engine.export(ids), self.governor.export(ids)
        return PartitionState(states, episodes, governance, c.names, c.specs, c.spare)

    def mismatch(self, state: PartitionState) -> str | None:
        """Why ``state`` cannot be imported here (it holds state of channels this process does not
        monitor and cannot register, or of a channel with other axes or another unit, or arrays of
        another shape), or None. Arrays of a layout an older version kept are converted first, in
        place (:meth:`monitor.state.store.StateStore.upgrade`)."""
        source, why = self._source(state)
        if source is None:
            return why
        self.store.upgrade(state.devices, source)  # arrays of an older layout, converted in place
        return self.store.mismatch(state.devices, source.capacity, source.dims)

    def _source(self, state: PartitionState) -> tuple[schema.Catalog | None, str]:
        """The catalog ``state`` was kept under, if it can be imported here (else why not): its
        channels are this process' (with the same axes and unit), or fit in its spare indices."""
        here = self.catalog
        specs = state.channels
        if not specs and set(state.sensors) <= here.by_name.keys():  # before specs were recorded
            specs = tuple(dataclasses.replace(here.by_name[n], auto=False) for n in state.sensors)
        why = layout.unfit(specs, here) if specs else "its sensors are not monitored here"
        if why and not layout.clashes(specs, here):
            sensors, mine = ", ".join(state.sensors), ", ".join(here.names)
            why = f"its sensors are {sensors}, this configuration's {mine}"
            if self.settings.channels.auto_register:
                why += f" (auto-registration has room for {here.spare} more)"
        try:
            return (None, why) if why else (schema.Catalog(specs, state.spare), "")
        except ValueError as exc:
            return None, f"its channels are no catalog ({exc})"

    def import_partition(self, state: PartitionState) -> list[schema.SensorSpec]:
        """Install a partition's devices (from a snapshot), replacing what is kept about them; a
        channel whose state it holds and this process does not monitor is registered first, with
        the same spec (:meth:`mismatch` said it fits), and the state is laid out for this process'
        catalog by channel name if its indices differ. Returns the channels registered."""
        source, _ = self._source(state)
        assert source is not None, "import_partition of a state mismatch() refuses"
        catalog, registered = self.catalog, []
        for spec in source.specs:
            if spec.name not in catalog.by_name:
                registered.append(auto := schema.as_auto(spec))
                catalog = catalog.register(auto)
        if registered:
            self._adopt(catalog)
        devices = state.devices
        self.store.upgrade(devices, source)
        if not layout.same_layout(source, catalog):
            devices = layout.remap(devices, self.store.columns(), source, catalog)
        ids = devices.device_ids
        self.engine.forget(ids)
        self.governor.forget(set(ids))
        slots = self.store.load(devices)
        self._busy = None  # the imported devices' slots
        self.store.touched[slots] = self._tick  # restored now: as recent as the last reading
        self.engine.restore(state.episodes)
        self.governor.restore(state.governance)
        return registered

    def firing_alerts(self, state: PartitionState) -> list[alerts.Alert]:
        """The alerts still firing among a restored partition's rule episodes."""
        return alerts.restored(state.episodes, self.engine.rule)

    def drop_partition(self, partition: int) -> int:
        """Forget the devices of a partition this process no longer owns; returns how many."""
        slots = self.store.in_partition(partition)
        self._release(slots)
        return len(slots)

    def serving(self, device_id: str, sensor: str) -> int | None:
        """The version serving a pair this process owns (None: the device has no state here)."""
        slot, s = self.store.slots.get(device_id), self.catalog.index.get(sensor)
        return None if slot is None or s is None else self.govern_state.version(slot, s)

    def serving_pairs(self, partition: int) -> list[tuple[str, str, int, int]]:
        """``(device, sensor, version, ts of its last reading)`` of every pair with a model among
        the devices of ``partition``."""
        st, ing, gov = self.store, self.ingest_state, self.govern_state
        return [
            (st.device_ids[slot], self.catalog.names[s], gov.version(slot, s), int(ing.last_ts[slot, s]))
            for slot in st.in_partition(partition)
            for s in range(len(self.catalog))
            if self.detect_state.has_model(slot, s)
        ]

    def install(self, device_id: str, sensor: str, m: model.AdaptiveGaussian, version: int) -> bool:
        """Serve ``m`` as ``version`` of a pair this process owns (a rollback, a manual
        promotion); False if the device has no state here, or the sensor is not monitored."""
        slot, s = self.store.slots.get(device_id), self.catalog.index.get(sensor)
        if slot is None or s is None:
            return False
        det, gov = self.detect_state, self.govern_state
        det.set_model(slot, s, m)
        gov.versions[(slot, s)] = version
        gov.latest_version[slot, s] = max(int(gov.latest_version[slot, s]), version)
        det.reset_detectors(slot, s)
        return True

    def restart_offsets(self, partition: int) -> None:
        """The partition's log restarted below the devices' last applied offsets (a recreated
        topic): accept its offsets again."""
        for slot in self.store.in_partition(partition):
            self.ingest_state.last_offset[slot] = -1
        for key in [k for k in self._foreign if k[1] == partition]:
            del self._foreign[key]

    def _distance(self, slot: int, s: int, f: Features, ts: int) -> float | None:
        """The pair model's distance (None while it warms up); learn unless over the threshold."""
        det, k = self.detect_state, len(f)
        row, par = det.model[slot, s], det.model_params[slot, s]
        if not par[0]:
            base = self.governor.base_params(s)
            par[:] = (k, base["fading"], base["var_fading"], base["resolution"], base["trend"])
        if row[0] < self.settings.model.warmup:
            kernels.learn(row, k, par[1], par[2], par[4], f)
            return None
        d2: float = kernels.distance(row, k, par[3], f)
        kernels.keep_worst(row, k, par[3], f, d2, ts, det.why[slot, s], det.why_at[slot, s])
        flagged, threshold = self.settings.model.flagged, self.thresholds[k]
        if self.govern_state.quarantined[slot]:
            pass
        elif d2 <= threshold or flagged == "learn":
            kernels.learn(row, k, par[1], par[2], par[4], f)
        elif flagged == "clip":
            kernels.nudge(row, k, par[1], f, math.sqrt(threshold / d2))
        return d2

    def _evaluate_pair(self, slot: int, s: int, result: BatchResult) -> None:
        device, name = self.store.device_ids[slot], self.catalog.names[s]
        det, ts = self.detect_state, int(self.ingest_state.last_ts[slot, s])
        scored, total = int(det.score_count[slot, s]), float(det.score_sum[slot, s])
        mean = total / scored if scored else None
        if self.bias is not None:  # before the interval's sums close
            n = int(det.since_eval[slot, s])
            self.bias.on_interval(device, self.labels.pair(device, s), s, n, total, scored, ts)
            for key, b, sig in self.bias.take_closed():
                result.bias[(key, self.catalog.names[b])] = sig
        self.pairs.close_interval(slot, s)
        sig = self._pair_signals(slot, s)
        if mean is not None:
            sig["score_mean"] = mean
        result.drift[("adwin", "device", name)] += int(det.adwin_hits[slot, s])
        cmp = self.pairs.compare(slot, s)
        if cmp is not None:
            sig.update(self._drift_signals(cmp, "device", name, result))
        if self.settings.inputs.enabled:
            sig.update(self._input_signals(name, result))
        if max_rate := self.catalog.specs[s].max_rate:
            m = self.settings.model
            rate = det.level_rate(slot, s, ts, m.warmup, int(m.rate_window_s * 1000))
            if rate is not None:
                sig["rate"] = rate / max_rate
        ev = Evaluation("device", device, name, sig, ts)
        self._act(self.engine.evaluate([ev]), result, cmp)
        det.reset_interval(slot, s)  # after the alerts: their explanations read it
        self.ingest_state.reset_interval(slot, s)
        self.joint_state.reset_interval(slot, s)
        if self.river is not None:
            self.river.state.reset_interval(slot, s)

    def _pair_signals(self, slot: int, s: int) -> dict[str, float]:
        det = self.detect_state
        n = int(det.since_eval[slot, s])
        hits = int(det.adwin_hits[slot, s])
        sig = {
            "readings": float(n),
            "anomalies": float(det.anomalies[slot, s]),
            "anomaly_rate": float(det.anomalies[slot, s]) / n if n else 0.0,
            "adwin_detections": float(hits),
            "adwin_drift": float(hits > 0),
        }
        for c, name in enumerate(CHECKS):
            sig[name] = float(self.ingest_state.integrity[slot, s, c])
        js = self.joint_state
        frames, flagged = int(js.joint_frames[slot, s]), int(js.joint_anomalies[slot, s])
        sig["device_frames"] = float(frames)
        sig["device_anomalies"] = float(flagged)
        sig["device_anomaly_rate"] = flagged / frames if frames else 0.0
        sig["device_score"] = float(js.joint_max[slot, s])
        key = (self.store.device_ids[slot], self.catalog.names[s])
        sig["retraining"] = float(self.governor.retraining(key))
        sig["anomaly_streak"] = float(det.streak[slot, s])
        if self.river is not None:
            sig.update(self.river.signals(slot, s, self.store.device_ids[slot]))
        return sig

    def _input_signals(self, name: str, result: BatchResult) -> dict[str, float]:
        """The pair's inputs against their reference (``input_*``) and against the fleet's
        (``peer_*``), once their windows are full (measured as the pair's evaluation began)."""
        sig = inputs.signals(self._input_out, self.settings.inputs)
        for prefix in ("input", "peer"):
            if f"{prefix}_drift" in sig:
                result.drift[(prefix, "device", name)] += int(sig[f"{prefix}_drift"])
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

    def _evaluate_group(
        self, scope: Scope, key: str, group: GroupDrift, s: int, ts: int, result: BatchResult
    ) -> None:
        """Evaluate a sensor over a group of devices (the fleet, or a cohort)."""
        name = self.catalog.names[s]
        hits, n, anomalies = group.adwin_hits[s], group.since_eval[s], group.anomalies[s]
        result.drift[("adwin", scope, name)] += hits
        sig = {
            "readings": float(n),
            "anomalies": float(anomalies),
            "anomaly_rate": anomalies / n if n else 0.0,
            "adwin_detections": float(hits),
            "adwin_drift": float(hits > 0),
            "devices": float(self._group_sizes[key]),
        }
        if n:
            sig["score_mean"] = group.score_sum[s] / n
        if scope == "fleet":
            sig["lag"] = float(self.lag)
        cmp = group.compare(s)
        if cmp is not None:
            sig.update(self._drift_signals(cmp, scope, name, result))
            if scope == "fleet":
                result.fleet_stats[name] = (sig["ks_stat"], sig["psi"])
        if group.axes:
            moved = group.close_inputs(s)
            result.drift[("input_adwin", scope, name)] += moved
            sig["input_adwin_detections"], sig["input_adwin_drift"] = float(moved), float(moved > 0)
        if scope == "cohort" and key.partition("=")[0] in self._cohort_input_labels:
            sig.update(self._cohort_input_signals(key, s, result))
        if scope == "cohort" and self.bias is not None:
            sig.update(self.bias.signals(key, s))
        group.since_eval[s] = group.adwin_hits[s] = group.anomalies[s] = 0
        group.score_sum[s] = 0.0
        if self.span is None:  # fleet.span: the merged view's rules evaluate the groups
            self._act(self.engine.evaluate([Evaluation(scope, key, name, sig, ts)]), result, cmp, group)

    def _cohort_input_signals(self, key: str, s: int, result: BatchResult) -> dict[str, float]:
        """The cohort's inputs against the rest of the fleet's (``cohort_input_*``), once both
        sides hold enough of the fleet's window."""
        assert self.cohort_inputs is not None
        spec = self.catalog.specs[s]
        shift = self.cohort_inputs.compare(s, key, spec.keys)
        if shift is None:
            return {}
        sig = shift.signals("cohort_input")
        result.drift[("cohort_input", "cohort", spec.name)] += int(sig["cohort_input_drift"])
        result.cohort_inputs[(key, spec.name)] = (sig["cohort_input_ks_stat"], sig["cohort_input_psi"])
        return sig

    def _act(
        self,
        transitions: list[Transition],
        result: BatchResult,
        cmp: Comparison | None = None,
        group: GroupDrift | None = None,
    ) -> None:
        """Alerts, audit records and the rules' actions for the transitions of one evaluation
        (``cmp``: its score windows' comparison; ``group``: the pooled detector of a fleet or
        cohort evaluation)."""
        for t in transitions:
            ev = t.evaluation
            slot = self.store.slots.get(ev.device_id, -1) if ev.scope == "device" else -1
            s = self.catalog.index[ev.sensor]
            version = self.govern_state.version(slot, s) if slot >= 0 else 0
            if ev.scope == "device":
                cohorts = self.labels.pair(ev.device_id, s)
            else:
                label, _, value = ev.device_id.partition("=")
                cohorts = {label: value} if ev.scope == "cohort" else {}
            why = self._explain(t, slot, s, cmp, group)
            alert = alerts.from_transition(t, version, cohorts, why)
            alerting = ev.scope == "device" and t.status == "firing" and "alert" in t.rule.actions
            if alerting and self.bias is not None:
                self.bias.on_alert(ev.device_id, cohorts, s, ev.ts)
            if "alert" in t.rule.actions:
                result.alerts.append(alert)
            if t.status == "pending":
                continue
            kind: EventKind = "rule_fired" if t.status == "firing" else "rule_resolved"
            result.audit.append(self._audit(kind, t, alert, version))
            if slot >= 0:
                self._device_actions(t, slot, s, alert, version, result)

    def _explain(
        self, t: Transition, slot: int, s: int, cmp: Comparison | None, group: GroupDrift | None
    ) -> explain.Explanation:
        """Why ``t`` happened, from what its evaluation's interval kept (:mod:`monitor.analyze.explain`)."""
        spec, names = self.catalog.specs[s], t.rule.signal_names()
        reading = frame = None
        shifts: list[explain.InputShift] = []
        windows = (group.ref[s], group.cur[s]) if group is not None else None
        if slot >= 0:
            det, js, k = self.detect_state, self.joint_state, len(spec.keys)
            windows = det.ref[slot, s], det.cur[slot, s]
            values, _, stamps = self.govern_state.window(slot, s, k)
            d2, ts = det.why_at[slot, s].tolist()
            if ts:
                threshold = float(self.thresholds[k])
                reading = explain.reading(spec.keys, det.why[slot, s], d2, int(ts), threshold, values, stamps)
            t2, ts = js.joint_why_at[slot].tolist()
            if ts and any(n.startswith("device_") for n in names):
                members = [c for c in range(len(self.catalog.names)) if js.joint_in[slot, c]]
                parts = [float(js.joint_why[slot, c]) for c in members]
                frame = explain.frame([self.catalog.names[c] for c in members], parts, t2, int(ts))
            if self.settings.inputs.enabled:
                cfg = self.settings.inputs
                offset = int(self.catalog.offsets[s])
                sides = inputs.references(self.detect_state, self.fleet_inputs, slot, s, k, offset, cfg)
                shifts = explain.input_shifts(*inputs.compare(self._input_out, spec.keys, cfg), sides, values)
        scores = explain.score_shift(cmp, *windows) if cmp is not None and windows is not None else None
        novelty, signals = self.novelty is not None, t.evaluation.signals
        found = reading, frame, shifts, scores
        return explain.explanation(t.rule.name, names, spec, signals, *found, novelty, t.started_at)

    def _device_actions(
        self, t: Transition, slot: int, s: int, alert: alerts.Alert, version: int, result: BatchResult
    ) -> None:
        firing, ts, actions = t.status == "firing", t.evaluation.ts, t.rule.actions
        if firing and "retrain" in actions:
            why = self.governor.retrain(slot, s, t.rule.name, alert.alert_id, ts, result)
            if why is not None:
                result.retrains_skipped[t.evaluation.sensor] += 1
                result.audit.append(self._audit("action", t, alert, version, "retrain", f"skipped: {why}"))
        if "quarantine" in actions:
            self.govern_state.quarantined[slot] = int(firing)
            what = "quarantine" if firing else "release"
            why = "its models stop learning, scoring goes on" if firing else "the rule resolved"
            result.audit.append(self._audit("action", t, alert, version, what, why))
        if firing and "rollback" in actions:
            ev = t.evaluation
            result.rollbacks.append(Rollback(ev.device_id, ev.sensor, t.rule.name, alert.alert_id, version))
            result.audit.append(self._audit("action", t, alert, version, "rollback", "to the parent version"))

    @staticmethod
    def _audit(
        kind: EventKind, t: Transition, alert: alerts.Alert, version: int, action: str = "", reason: str = ""
    ) -> AuditEvent:
        ev = t.evaluation
        return AuditEvent(
            kind=kind,
            device_id=ev.device_id,
            sensor=ev.sensor,
            version=version,
            actor=f"rule:{t.rule.name}",
            reason=reason,
            rule=t.rule.name,
            alert_id=alert.alert_id,
            action=action,
            signals=alert.signals,
            explanation=alert.explanation,
            event_ts=ev.ts,
        )


#: Kafka timestamps per partition whose median moves the partition's clock.
CLOCK_WINDOW = 15


def _scored(
    r: ReadingLike,
    score: float | None,
    d2: float | None,
    anomalous: bool,
    level: float | None,
    frame: tuple[int, float, int, bool],
) -> Scored:
    """The trace record of an applied reading (``frame``: what :func:`joint.step` returned)."""
    outcome, t2, dims, flagged = frame
    if outcome != joint.SCORED:
        return Scored(r.device_id, r.sensor, r.ts, score, d2, anomalous, level)
    return Scored(r.device_id, r.sensor, r.ts, score, d2, anomalous, level, t2, dims, flagged)


class Marks:
    """Where the outputs (alerts, audit records) of the evaluations since a point of a batch
    start: the pairs' in stream order as they happen, then the pooled detectors' evaluated later
    for the same readings; :meth:`interleave` puts the latter in stream order among the former (a
    pooled evaluation before the pair evaluation of the same reading)."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        self.base = self._lengths()
        self.pairs: list[tuple[int, tuple[int, int]]] = []  # (reading, where its outputs start)
        self.groups: list[tuple[int, tuple[int, int], tuple[int, int]]] = []  # (reading, start, end)

    def _lengths(self) -> tuple[int, int]:
        return len(self.result.alerts), len(self.result.audit)

    def add(self, reading: int) -> None:
        """A pair evaluation at ``reading`` is about to write its outputs."""
        self.pairs.append((reading, self._lengths()))

    @contextlib.contextmanager
    def group(self, reading: int) -> Iterator[None]:
        """A pooled evaluation at ``reading`` writes its outputs within."""
        start = self._lengths()
        yield
        self.groups.append((reading, start, self._lengths()))

    def interleave(self) -> None:
        if self.groups and self.pairs:
            self._weave(self.result.alerts, 0)
            self._weave(self.result.audit, 1)
        self.pairs, self.groups = [], []
        self.base = self._lengths()

    def _weave(self, items: list[Any], which: int) -> None:
        first = self.groups[0][1][which]  # the pooled outputs start after every pair's
        bounds = [p[1][which] for p in self.pairs] + [first]
        out, g = items[: self.base[which]], 0
        for k, (reading, _) in enumerate(self.pairs):
            while g < len(self.groups) and self.groups[g][0] <= reading:
                out += items[self.groups[g][1][which] : self.groups[g][2][which]]
                g += 1
            out += items[bounds[k] : bounds[k + 1]]
        for _, start, end in self.groups[g:]:
            out += items[start[which] : end[which]]
        items[:] = out


@dataclass
class PartitionClock:
    """A partition's idle-eviction clock: the median of its latest :data:`CLOCK_WINDOW` plausible
    Kafka timestamps, never moving back. One record (or seven) cannot move it, however far ahead
    its timestamp: eight of the fifteen would have to agree."""

    watermark: int = 0
    next_sweep: int = 0
    recent: list[int] = field(default_factory=list)  # since the last advance, in arrival order

    def advance(self) -> None:
        """Take in the recent timestamps (the clock starts once it has a full window)."""
        if len(self.recent) >= CLOCK_WINDOW:
            del self.recent[:-CLOCK_WINDOW]
            self.watermark = max(self.watermark, int(np.median(self.recent)))


def _span_collector(settings: Settings) -> span.Collector | None:
    f = settings.fleet
    if not f.span:
        return None
    return span.Collector(int(f.window_s * 1000), f.bins, int((f.window_s + f.lateness_s) * 1000))


def device_cap(settings: Settings, store: StateStore, river: RiverTiers | None = None) -> int:
    """The most devices kept: ``state.memory_budget_mb`` over the size of one device's state
    (:meth:`StateStore.bytes_per_device`), or ``state.max_devices`` if that is lower. With River
    tiers, their shared models come off the budget first and their per-device models count in a
    device's size; a budget that leaves room for fewer than ``river.min_devices`` devices is
    refused (:class:`~monitor.errors.ConfigError`, naming the tiers and the numbers)."""
    cfg = settings.state
    if river is None:
        budget = int(cfg.memory_budget_mb * 2**20) // store.bytes_per_device()
    else:
        fp = river.footprint()
        budget = rivertier.check_budget(
            cfg.memory_budget_mb, settings.river.min_devices, store.bytes_per_device(), fp
        )
    return max(1, min(budget, cfg.max_devices or budget))
