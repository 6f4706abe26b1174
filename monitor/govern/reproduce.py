"""Rebuild a registered version from its lineage and compare it with the registered artifact.

A candidate is a deterministic function of its rows, its settings and its seed: the rows re-read
from the readings topic at the recorded offsets (through the service's checks), the settings the
version recorded (``blobs/<settings_sha256>``), the recorded seed. :func:`reproduce` re-runs the
job (:func:`~monitor.govern.training.run_job`), steps the candidate through the recorded shadow
readings as the governor did (it learns there like a serving model), turns it into artifact bytes
the way the registry does (:func:`~monitor.govern.registry.artifact_bytes`) and compares them with
the registered artifact, byte for byte.

Only versions trained from the topic can be rebuilt: a version trained from the ring buffer
names the offsets of its rows, but the values it learned (float32 copies held in the service's
memory) were never kept anywhere else.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from monitor.detect.model import AdaptiveGaussian, distance_threshold
from monitor.errors import HistoryUnavailable, RegistryError
from monitor.govern import training
from monitor.govern.registry import (
    Change,
    ModelRegistry,
    ModelVersion,
    TrainingData,
    VersionRef,
    artifact_bytes,
)
from monitor.ingest.history import HistoryReader, PairFilter, PairReadings, Reader
from monitor.settings import ChannelsSettings, ConsumeSettings, KafkaSettings, ModelSettings, RetrainSettings


@dataclass
class Reproduction:
    """The outcome: the rebuilt artifact's bytes and digest beside the registered one's, and every
    field that differs (empty when the artifacts are identical)."""

    ref: VersionRef
    registered: bytes
    rebuilt: bytes
    differences: list[Change] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.registered == self.rebuilt


@dataclass(frozen=True)
class Recorded:
    """The settings sections a version recorded that rebuilding it needs."""

    retrain: RetrainSettings
    model: ModelSettings
    consume: ConsumeSettings
    channels: ChannelsSettings

    @classmethod
    def of(cls, registry: ModelRegistry, v: ModelVersion) -> Recorded:
        doc = json.loads(registry.blob(v.settings_sha256))
        try:
            return cls(
                RetrainSettings.model_validate(doc["retrain"]),
                ModelSettings.model_validate(doc["model"]),
                ConsumeSettings.model_validate(doc["consume"]),
                ChannelsSettings.model_validate(doc["channels"]),
            )
        except (KeyError, ValueError) as exc:
            raise RegistryError(
                f"the recorded settings do not load in this version of telemon: {exc}"
            ) from None


def check_reproducible(ref: VersionRef, v: ModelVersion) -> None:
    """Raise :class:`RegistryError` saying why ``v`` cannot be rebuilt from Kafka, if it cannot."""
    if v.source == "buffer":
        why = f" ({v.source_note})" if v.source_note else ""
        raise RegistryError(
            f"{ref} was trained from the ring buffer{why}: its rows were the service's in-memory copies, "
            "kept nowhere else, so it cannot be reproduced from Kafka"
        )
    if v.source != "topic":
        what = "the online model, learning since the pair's first reading" if not v.trigger_rule else ""
        raise RegistryError(
            f"{ref} records no reproducible training data ({what or 'registered before lineage was kept'})"
        )
    if not v.settings_sha256 or v.seed is None:
        raise RegistryError(f"{ref} does not record its settings and seed")


def reproduce(
    registry: ModelRegistry,
    ref: VersionRef,
    kafka: KafkaSettings,
    timeout_s: float = 60.0,
    reader: Reader | None = None,
) -> Reproduction:
    """Rebuild ``ref`` from the readings topic (reached with ``kafka``, or through ``reader``) and
    compare it; raises :class:`RegistryError` if it cannot be rebuilt: trained from the ring
    buffer, data gone from the topic, settings missing."""
    manifest, stored = registry.verified_files(ref)
    v = manifest.model
    check_reproducible(ref, v)
    rec = Recorded.of(registry, v)
    reader = HistoryReader(kafka, rec.consume) if reader is None else reader
    try:
        pair = PairFilter(rec.consume, rec.channels.catalog(), v.device_id, v.sensor)
        deadline = time.monotonic() + timeout_s
        rows = _read(reader, pair, ref, v.trained_on, deadline)
        shadow = None if v.shadow_data is None else _read(reader, pair, ref, v.shadow_data, deadline)
    except HistoryUnavailable as exc:
        raise RegistryError(f"{ref} cannot be reproduced: {exc}") from None
    finally:
        reader.close()
    differences = _counts(v, rows, shadow)
    candidate, params = _rebuild(v, rec, rows, shadow)
    out = Reproduction(ref, stored[manifest.artifact.file], artifact_bytes(candidate))
    if not out.identical:
        out.differences = differences + _compare(v, registry.load(*ref), candidate, params)
    return out


def _read(
    reader: Reader, pair: PairFilter, ref: VersionRef, d: TrainingData, deadline: float
) -> PairReadings:
    part = reader.partition(d.topic, d.partition)
    low, high = part.watermarks(deadline)
    where = f"offsets {d.first_offset}-{d.last_offset} of {d.topic}[{d.partition}]"
    if d.first_offset < low:
        raise RegistryError(
            f"{ref} cannot be reproduced: its readings ({where}) are gone from the topic, which now "
            f"starts at offset {low} (retention)"
        )
    if d.last_offset >= high:
        raise RegistryError(
            f"{ref} cannot be reproduced: {where} are not in the topic (it ends at {high - 1})"
        )
    return pair.select(part.fetch(d.first_offset, d.last_offset + 1, deadline, pair.mine), low)


def _counts(v: ModelVersion, rows: PairReadings, shadow: PairReadings | None) -> list[Change]:
    out = []
    if len(rows) != v.trained_on.readings:
        out.append(Change("trained_on.readings", v.trained_on.readings, len(rows)))
    if shadow is not None and v.shadow_data is not None and len(shadow) != v.shadow_data.readings:
        out.append(Change("shadow_data.readings", v.shadow_data.readings, len(shadow)))
    return out


def _rebuild(
    v: ModelVersion, rec: Recorded, rows: PairReadings, shadow: PairReadings | None
) -> tuple[AdaptiveGaussian, dict[str, float]]:
    """The candidate as the governor registered it, and the parameters the search chose."""
    if len(rows) < training.MIN_TRAIN_ROWS + training.MIN_HOLDOUT_ROWS:
        raise RegistryError(
            f"only {len(rows)} of the pair's readings found where {v.trained_on.readings} were"
        )
    m = rec.model
    base = {"fading": m.fading, "var_fading": m.var_fading}
    base |= {"resolution": v.params["resolution"], "trend": v.params.get("trend", 0.0)}
    stand_in = AdaptiveGaussian.fit([tuple(r) for r in rows.rows.tolist()], **base)  # only scored
    job = training.TrainingJob(
        device_id=v.device_id, sensor=v.sensor, rows=rows.rows, offsets=rows.offsets,
        timestamps=rows.timestamps, topic=v.trained_on.topic, partition=v.trained_on.partition,
        incumbent=stand_in, incumbent_version=v.parent, base_params=base,
        anomaly_threshold=m.anomaly_threshold, flagged=m.flagged, seed=int(v.seed or 0),
        trigger_rule=v.trigger_rule, trigger_alert_id=v.trigger_alert_id, source="topic",
    )  # fmt: skip
    result = training.run_job(job, rec.retrain)
    assert result.candidate is not None
    candidate = result.candidate
    if shadow is not None:
        threshold = distance_threshold(m.anomaly_threshold, candidate.n_features)
        quarantined = set(v.shadow_quarantined)
        for f, offset in zip(shadow.rows.tolist(), shadow.offsets.tolist(), strict=True):
            training.step(candidate, f, threshold, "skip" if offset in quarantined else m.flagged)
    return candidate, {**base, **result.params}


def _compare(
    v: ModelVersion, registered: AdaptiveGaussian, rebuilt: AdaptiveGaussian, params: dict[str, float]
) -> list[Change]:
    """The parameters and model state that differ (state: every value, exactly)."""
    out = [
        Change(f"params.{k}", v.params.get(k), p) for k, p in sorted(params.items()) if v.params.get(k) != p
    ]
    a, b = registered.dump(), rebuilt.dump()
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key), b.get(key)
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            pairs = enumerate(zip(x, y, strict=True))
            out += [Change(f"model.{key}[{i}]", p, q) for i, (p, q) in pairs if p != q]
        elif x != y:
            out.append(Change(f"model.{key}", x, y))
    return out


def max_state_difference(changes: list[Change]) -> float:
    """The largest absolute difference of the numbers that differ (0: none)."""
    gaps = [abs(c.a - c.b) for c in changes if isinstance(c.a, float) and isinstance(c.b, float)]
    return max((g for g in gaps if math.isfinite(g)), default=0.0)


def summary(r: Reproduction, v: ModelVersion) -> dict[str, Any]:
    """The outcome as JSON values."""
    return {
        "version": r.ref._asdict(),
        "reproduced": r.identical,
        "registered": {"bytes": len(r.registered), "sha256": hashlib.sha256(r.registered).hexdigest()},
        "rebuilt": {"bytes": len(r.rebuilt), "sha256": hashlib.sha256(r.rebuilt).hexdigest()},
        "trained_on": {"first_offset": v.trained_on.first_offset, "last_offset": v.trained_on.last_offset},
        "differences": [c._asdict() for c in r.differences],
        "max_difference": max_state_difference(r.differences),
    }
