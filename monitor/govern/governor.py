"""Governance actions on the live stream: retrain (search, held-out test, shadow, promote or
reject), quarantine, and the audit records of all of them.

The pipeline calls :class:`Governor` at three points of a pair's readings, always in stream
order, so a replay takes the same decisions as the live service:

1. a rule with ``retrain`` fires: a :class:`~monitor.govern.training.TrainingJob` is built from the
   pair's ring buffer (recording its Kafka offsets) and handed to the trainer (a background
   thread live, inline offline);
2. ``drift.check_every`` readings of the pair later (its next evaluation) the result is *due*:
   a held-out loss rejects the candidate at once, else the candidate starts its shadow (the loop
   waits for a result only if it is not ready at its due reading: milliseconds of training
   against seconds of readings at sensor rates, so in practice only when replaying a backlog);
3. each reading during the shadow: the candidate is scored beside the serving model; once it has
   seen ``retrain.shadow_readings`` readings, :func:`~monitor.govern.training.decide` promotes it (it
   serves from the next reading, as a new version) or rejects it with the reason.

Every candidate becomes a registered version (its artifact is kept either way); the first one of
a pair also registers the online model it challenges as version 1, so there is always a version
to roll back to. Quarantine stops a device's models learning (they still score) while its rule
fires.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from monitor.detect import model
from monitor.detect.state import DetectState
from monitor.govern import training
from monitor.govern.lineage import Provenance
from monitor.govern.registry import AuditEvent, ModelVersion, TrainingData
from monitor.govern.state import GovernState
from monitor.ingest.features import Features
from monitor.settings import Settings
from monitor.state.store import StateStore

Key = tuple[str, str]  # (device id, sensor)
MIN_RETRAIN_ROWS = 16


class Output(Protocol):
    """Where governance puts what it produced during a batch (the pipeline's batch result):
    versions to register (with their models) and audit events, in stream order."""

    versions: list[ModelVersion]
    models: list[model.AdaptiveGaussian]
    audit: list[AuditEvent]


@dataclass
class _Shadowing:
    result: training.TrainingResult
    shadow: training.Shadow
    candidate: model.AdaptiveGaussian  # steps through the shadow readings like a serving model
    # The readings it stepped through (first, last offset and event time) for the lineage, and
    # those stepped under quarantine (it did not learn them).
    span: list[int] = dataclasses.field(default_factory=lambda: [-1, -1, 0, 0])
    quarantined: list[int] = dataclasses.field(default_factory=list)

    def seen(self, offset: int, ts: int, quarantined: bool) -> None:
        if self.span[0] < 0:
            self.span[0], self.span[2] = offset, ts
        self.span[1], self.span[3] = offset, ts
        if quarantined:
            self.quarantined.append(offset)

    def data(self, topic: str, partition: int) -> TrainingData:
        first, last, first_ts, last_ts = self.span
        return TrainingData(topic, partition, first, last, self.shadow.n, first_ts, last_ts)


class Governor:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        detect: DetectState,
        state: GovernState,
        trainer: training.Trainer,
        firing: Callable[[str, str, str], bool],
        provenance: Provenance,
    ) -> None:
        self.settings = settings
        self.store = store
        self.detect = detect  # the serving models (read; replaced by a promotion)
        self.state = state
        self.trainer = trainer
        self.provenance = provenance  # code, settings, rules, libraries: in every version's lineage
        self.due: dict[Key, tuple[int, training.TrainingJob]] = {}  # reading count when due, job
        self.ready: dict[Key, training.TrainingResult] = {}
        self.shadows: dict[Key, _Shadowing] = {}
        self.retry: dict[Key, tuple[int, str, str]] = {}  # after a rejection: when, rule, alert id
        self.attempts: dict[Key, int] = {}  # retrains in the pair's current episode
        self.firing = firing  # (rule, device id, sensor) -> is its episode firing
        self.thresholds = model.distance_thresholds(settings.model.anomaly_threshold)
        self.catalog = settings.channels.catalog()

    def busy(self, key: Key) -> bool:
        return key in self.due or key in self.shadows

    def retraining(self, key: Key) -> bool:
        """A retrain of the pair is under way: its job is due, its candidate in shadow, or a retry
        after a rejection is scheduled (the rules' ``retraining`` signal)."""
        return key in self.due or key in self.shadows or key in self.retry

    def busy_pairs(self) -> frozenset[Key]:
        """The pairs with a retrain due, a retry, or a shadow under way."""
        return frozenset((*self.due, *self.retry, *self.shadows))

    @property
    def waiting(self) -> bool:
        """Some pair has a job whose result is due, or a retry, at one of its next readings."""
        return bool(self.due or self.retry)

    # --- 1. a rule asks for a retrain -----------------------------------------------------------

    def retrain(
        self, slot: int, s: int, rule: str, alert_id: str, ts: int, out: Output, attempt: int = 1
    ) -> str | None:
        """Submit a retrain of the pair; returns why not, or None once submitted."""
        st, spec = self.store, self.catalog.specs[s]
        sensor = spec.name
        key = (st.device_ids[slot], sensor)
        if self.busy(key):
            return "a retrain of this pair is already running"
        self.retry.pop(key, None)
        self.attempts[key] = attempt
        rows, offsets, timestamps = self.state.window(slot, s, len(spec.keys))
        count = len(rows)
        if count < MIN_RETRAIN_ROWS:
            return f"only {count} recent readings (at least {MIN_RETRAIN_ROWS} needed)"
        incumbent = self.detect.model_of(slot, s)
        assert incumbent is not None  # a pair that fired has scored, so it has a model
        version = self.state.version(slot, s)
        m = self.settings.model
        job = training.TrainingJob(
            device_id=key[0],
            sensor=sensor,
            rows=rows,
            offsets=offsets,
            timestamps=timestamps,
            topic=self.settings.kafka.readings_topic,
            partition=int(st.partition[slot]),
            incumbent=incumbent,
            incumbent_version=version,
            base_params=self.base_params(s),
            anomaly_threshold=m.anomaly_threshold,
            flagged=m.flagged,
            seed=training.job_seed(
                self.settings.retrain.seed, key[0], sensor, int(self.state.latest_version[slot, s])
            ),
            trigger_rule=rule,
            trigger_alert_id=alert_id,
        )
        self.trainer.submit(job)
        self.due[key] = (int(self.state.raw_n[slot, s]) + self.settings.drift.check_every, job)
        out.audit.append(
            AuditEvent(
                kind="action",
                action="retrain",
                device_id=key[0],
                sensor=sensor,
                version=version,
                rule=rule,
                alert_id=alert_id,
                actor=f"rule:{rule}",
                reason=f"attempt {attempt}: {self._window_text(job)}",
                event_ts=ts,
            )
        )
        return None

    def _window_text(self, job: training.TrainingJob) -> str:
        """What a job trains on, for its audit record (the version records what it did)."""
        first, last, n = int(job.offsets.min()), int(job.offsets.max()), len(job.rows)
        ring = f"offsets {first}-{last} of partition {job.partition} ({n} readings)"
        if not self.trainer.history:
            return f"training on {ring}"
        return (
            f"training on the pair's last {self.trainer.history} readings up to offset {last} of partition "
            f"{job.partition}, re-read from the topic (the ring buffer's, if it cannot: {ring})"
        )

    def base_params(self, s: int) -> dict[str, float]:
        """The configured model parameters of sensor ``s`` (what a new online model starts with)."""
        m, spec = self.settings.model, self.catalog.specs[s]
        return {
            "fading": m.fading,
            "var_fading": m.var_fading,
            "resolution": spec.resolution,
            "trend": spec.trend if m.trend is None else m.trend,
        }

    # --- 2. the result is due -------------------------------------------------------------------

    def on_reading(self, slot: int, s: int, ts: int, out: Output) -> None:
        """After each applied reading of a pair: take a due result, or retry after a rejection."""
        key = (self.store.device_ids[slot], self.catalog.names[s])
        retry = self.retry.get(key)
        if retry is not None and self.state.raw_n[slot, s] >= retry[0]:
            del self.retry[key]
            if self.firing(retry[1], *key):
                self.retrain(slot, s, retry[1], retry[2], ts, out, self.attempts.get(key, 1) + 1)
            return
        pending = self.due.get(key)
        if pending is None or self.state.raw_n[slot, s] < pending[0]:
            return
        del self.due[key]
        result = self._collect(pending[1])
        first = training.decide(result, None, self.settings.retrain.promotion_margin)
        if not first.promote or self.settings.retrain.shadow_readings == 0 or result.candidate is None:
            self._decided(slot, s, result, result.candidate, first, ts, out)
            return
        r = self.settings.retrain
        shadow = training.Shadow(r.shadow_readings, self.settings.model.anomaly_threshold)
        self.shadows[key] = _Shadowing(result, shadow, copy.deepcopy(result.candidate))

    def _collect(self, job: training.TrainingJob) -> training.TrainingResult:
        """The result of ``job``, waiting for it if the worker has not finished it yet."""
        key = (job.device_id, job.sensor)
        while True:
            for r in self.trainer.poll():
                self.ready[(r.job.device_id, r.job.sensor)] = r
            done = self.ready.get(key)
            if done is not None and done.job is job:
                return self.ready.pop(key)
            self.trainer.wait(0.01)

    # --- 3. the shadow --------------------------------------------------------------------------

    def on_score(self, slot: int, s: int, f: Features, score: float, ts: int, out: Output) -> None:
        """Score the reading with the pair's candidate under shadow, if any; decide when done."""
        key = (self.store.device_ids[slot], self.catalog.names[s])
        sh = self.shadows.get(key)
        if sh is None:
            return
        quarantined = bool(self.state.quarantined[slot])
        flagged = "skip" if quarantined else self.settings.model.flagged
        d2 = training.step(sh.candidate, f, self.thresholds[len(f)], flagged)
        sh.shadow.push(score, model.score(d2, len(f)))
        sh.seen(int(self.state.raw_last_off[slot, s]), ts, quarantined)  # the reading's, kept just before
        if sh.shadow.done:
            del self.shadows[key]
            r = self.settings.retrain
            decision = training.decide(sh.result, sh.shadow, r.promotion_margin, r.calibration_alpha)
            self._decided(slot, s, sh.result, sh.candidate, decision, ts, out, sh)

    def _decided(
        self,
        slot: int,
        s: int,
        result: training.TrainingResult,
        candidate: model.AdaptiveGaussian | None,
        decision: training.Decision,
        ts: int,
        out: Output,
        shadowed: _Shadowing | None = None,
    ) -> None:
        job = result.job
        serving = self.state.version(slot, s)
        if job.incumbent_version != serving:
            decision = training.Decision(
                False, f"stale: v{serving} replaced v{job.incumbent_version} meanwhile", {}
            )
        if candidate is None or result.window is None:  # the job failed: nothing to register
            out.audit.append(self._event("rejected", job, serving, serving, decision.reason, ts))
            self._maybe_retry(slot, s, job, promoted=False)
            return
        if self.state.latest_version[slot, s] == 1:  # the online model becomes a version one can roll back to
            self._register(job, 1, 0, job.incumbent, None, {}, ts, out)
        number = int(self.state.latest_version[slot, s]) + 1
        self.state.latest_version[slot, s] = number
        metrics = decision.metrics | {"duration_s": result.duration_s}
        if result.window.source == "topic":
            metrics["read_s"] = result.window.read_s
        self._register(job, number, serving, candidate, result, metrics, ts, out, shadowed)
        kind = "promoted" if decision.promote else "rejected"
        stands = not decision.promote and _incumbent_stands(result, decision)
        reason = decision.reason + (STANDS if stands else "")
        out.audit.append(self._event(kind, job, number, serving, reason, ts))
        if decision.promote:
            self.detect.set_model(slot, s, candidate)
            self.state.versions[(slot, s)] = number
        if decision.promote or stands:
            self.detect.reset_detectors(slot, s)
        self._maybe_retry(slot, s, job, decision.promote or stands)

    def _maybe_retry(self, slot: int, s: int, job: training.TrainingJob, promoted: bool) -> None:
        """A rejected candidate is tried again (on newer readings) while its rule still fires:
        a drift caught mid-ramp is retrained once the level settles."""
        key = (job.device_id, job.sensor)
        attempts = self.attempts.pop(key, 1)
        if promoted or attempts >= self.settings.retrain.max_attempts:
            return
        if self.firing(job.trigger_rule, *key):
            self.attempts[key] = attempts
            due = int(self.state.raw_n[slot, s]) + 1  # on the pair's newest readings
            self.retry[key] = (due, job.trigger_rule, job.trigger_alert_id)

    def _register(
        self,
        job: training.TrainingJob,
        number: int,
        parent: int,
        m: model.AdaptiveGaussian,
        result: training.TrainingResult | None,
        metrics: dict[str, float],
        ts: int,
        out: Output,
        shadowed: _Shadowing | None = None,
    ) -> None:
        if result is not None and result.window is not None:
            trained_on = result.window.training_data()
            h = result.window.holdout
            test = TrainingData(
                job.topic, job.partition, h.first_offset, h.last_offset, h.rows, h.first_ts, h.last_ts
            )
            params = {**job.base_params, **result.params}
        else:  # the online model: it learned every reading of the pair up to the job's window
            last = int(job.offsets.max())
            trained_on = TrainingData(job.topic, job.partition, -1, last, m.n, 0, int(job.timestamps.max()))
            test, params = None, dict(job.base_params)
        p = self.provenance
        out.versions.append(
            ModelVersion(
                device_id=job.device_id,
                sensor=job.sensor,
                version=number,
                parent=parent,
                trained_on=trained_on,
                params=params,
                baseline=m.params(),
                trigger_rule=job.trigger_rule if result is not None else "",
                trigger_alert_id=job.trigger_alert_id if result is not None else "",
                code_version=p.code_version,
                config_hash=p.config_hash,
                created_at=ts,
                test_data=test,
                metrics=metrics,
                settings_sha256=p.settings_sha256,
                rules_sha256=p.rules_sha256,
                dependencies=p.dependencies,
                **(self._reproduction(job, result, shadowed) if result is not None else {}),
            )
        )
        out.models.append(copy.deepcopy(m))

    def _reproduction(
        self, job: training.TrainingJob, result: training.TrainingResult, shadowed: _Shadowing | None
    ) -> dict[str, Any]:
        """The lineage fields a candidate needs to be rebuilt: where its rows came from, the seed,
        the search, and the live readings it learned in its shadow."""
        w, r = result.window, self.settings.retrain
        assert w is not None
        search = {"strategy": r.strategy, "budget": r.budget, "space": r.model_dump(mode="json")["space"]}
        return {
            "source": w.source,
            "source_note": w.note,
            "records_skipped": w.skipped,
            "seed": job.seed,
            "search": search,
            "shadow_data": None if shadowed is None else shadowed.data(job.topic, job.partition),
            "shadow_quarantined": [] if shadowed is None else list(shadowed.quarantined),
        }

    @staticmethod
    def _event(
        kind: str, job: training.TrainingJob, version: int, previous: int, reason: str, ts: int
    ) -> AuditEvent:
        return AuditEvent(
            kind=kind,  # type: ignore[arg-type]
            device_id=job.device_id,
            sensor=job.sensor,
            version=version,
            previous=previous,
            actor=f"rule:{job.trigger_rule}",
            reason=reason,
            rule=job.trigger_rule,
            alert_id=job.trigger_alert_id,
            event_ts=ts,
        )

    # --- snapshots -------------------------------------------------------------------------------

    def export(self, device_ids: Collection[str]) -> list[dict[str, Any]]:
        """The pending work of these devices as plain JSON values: jobs (whose results are
        recomputed on restore: training is deterministic), shadows, retries."""
        wanted = set(device_ids)
        out: list[dict[str, Any]] = []
        for (device, sensor), (due, job) in self.due.items():
            if device in wanted:
                out.append({"kind": "due", "due": due, "job": _dump_job(job)} | self._pair(device, sensor))
        for (device, sensor), sh in self.shadows.items():
            if device in wanted:
                item = {"kind": "shadow", "result": _dump_result(sh.result), "candidate": sh.candidate.dump()}
                shadow = {"n": sh.shadow.n, "incumbent": sh.shadow.incumbent.tolist()}
                shadow["candidate"] = sh.shadow.candidate.tolist()
                shadow |= {"span": list(sh.span), "quarantined": list(sh.quarantined)}
                out.append(item | {"shadow": shadow} | self._pair(device, sensor))
        for (device, sensor), (due, rule, alert_id) in self.retry.items():
            if device in wanted:
                retry = {"kind": "retry", "due": due, "rule": rule, "alert_id": alert_id}
                out.append(retry | self._pair(device, sensor))
        return out

    def _pair(self, device: str, sensor: str) -> dict[str, Any]:
        return {"device": device, "sensor": sensor, "attempts": self.attempts.get((device, sensor), 1)}

    def restore(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Take over exported pending work (the devices' state is restored already)."""
        for item in items:
            if item["kind"] == "due":
                job = _load_job(item["job"])
                key = (job.device_id, job.sensor)
                self.trainer.submit(job)
                self.due[key] = (int(item["due"]), job)
            elif item["kind"] == "shadow":
                result = _load_result(item["result"])
                key = (result.job.device_id, result.job.sensor)
                sh = item["shadow"]
                shadow = training.Shadow(len(sh["incumbent"]), self.settings.model.anomaly_threshold)
                shadow.incumbent[:] = sh["incumbent"]
                shadow.candidate[:] = sh["candidate"]
                shadow.n = int(sh["n"])
                candidate = model.AdaptiveGaussian.load(item["candidate"])
                span = [int(v) for v in sh.get("span", [-1, -1, 0, 0])]  # absent from older snapshots
                quarantined = [int(v) for v in sh.get("quarantined", [])]
                self.shadows[key] = _Shadowing(result, shadow, candidate, span, quarantined)
            else:
                key = (str(item["device"]), str(item["sensor"]))
                self.retry[key] = (int(item["due"]), str(item["rule"]), str(item["alert_id"]))
            self.attempts[key] = int(item["attempts"])

    def forget(self, device_ids: set[str]) -> None:
        """Drop pending work of devices whose state is gone (evicted, partition revoked)."""
        for table in (self.due, self.ready, self.shadows, self.retry, self.attempts):
            for key in [k for k in table if k[0] in device_ids]:
                del table[key]


STANDS = "; the serving model stands: the pair's reference restarts"


def _incumbent_stands(result: training.TrainingResult, decision: training.Decision) -> bool:
    """A candidate rejected on the held-out slice, where the serving model flags none of the real
    readings: nothing trained on the recent readings does better, and the serving model explains
    them, so the change of its scores that asked for the retrain is accepted, and the drift
    detectors start a new reference rather than fire again for the same change."""
    held = result.incumbent_metrics
    live = "shadow_readings" in decision.metrics  # it got as far as the shadow run
    return held is not None and not live and held.alarm_rate == 0.0


def _dump_job(job: training.TrainingJob) -> dict[str, Any]:
    out = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}
    out["rows"] = job.rows.tolist()
    out["offsets"] = job.offsets.tolist()
    out["timestamps"] = job.timestamps.tolist()
    out["incumbent"] = job.incumbent.dump()
    out["base_params"] = dict(job.base_params)
    return out


def _load_job(data: Mapping[str, Any]) -> training.TrainingJob:
    fields = dict(data)
    fields["rows"] = np.asarray(fields["rows"], np.float64)
    fields["offsets"] = np.asarray(fields["offsets"], np.int64)
    fields["timestamps"] = np.asarray(fields["timestamps"], np.int64)
    fields["incumbent"] = model.AdaptiveGaussian.load(fields["incumbent"])
    return training.TrainingJob(**fields)


def _dump_result(r: training.TrainingResult) -> dict[str, Any]:
    """What deciding after the shadow needs (the trials' details are in the audit trail)."""
    assert r.window is not None and r.candidate_metrics is not None and r.incumbent_metrics is not None
    return {
        "job": _dump_job(r.job),
        "window": dataclasses.asdict(r.window),
        "params": r.params,
        "candidate_metrics": dataclasses.asdict(r.candidate_metrics),
        "incumbent_metrics": dataclasses.asdict(r.incumbent_metrics),
        "metric": r.metric,
        "duration_s": r.duration_s,
    }


def _load_result(data: Mapping[str, Any]) -> training.TrainingResult:
    w = data["window"]
    window = training.TrainingWindow(
        w["source"],
        w["topic"],
        int(w["partition"]),
        training.Span(**w["train"]),
        training.Span(**w["holdout"]),
        str(w.get("note", "")),  # absent from older snapshots
        int(w.get("skipped", 0)),
        float(w.get("read_s", 0.0)),
    )
    return training.TrainingResult(
        job=_load_job(data["job"]),
        window=window,
        params={k: float(v) for k, v in data["params"].items()},
        candidate_metrics=training.Metrics(**data["candidate_metrics"]),
        incumbent_metrics=training.Metrics(**data["incumbent_metrics"]),
        metric=data["metric"],
        duration_s=float(data["duration_s"]),
    )
