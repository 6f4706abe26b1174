"""River tiers: River anomaly detectors scoring the stream beside the pair models.

Each tier of ``river.tiers`` (:class:`monitor.settings.RiverTierSettings`) is a River anomaly
detector (:class:`monitor.detect.online.OnlineModel`) over the readings of some sensors, of every
device or of a cohort's (the pairs of a label of ``cohorts_file`` or of a declared channel), shared
(``share: fleet``: one model per sensor, and per cohort value with ``cohort: label``) or one per
device and sensor (``share: device``).

- **Routing.** A (device, sensor) pair is scored by the first tier in the list that covers it (so a
  cohort's tier before a fleet-wide one overrides it for that cohort), and by no other: its signals
  are one model's.
- **Order.** Every applied reading (past the re-delivery guard and the sequence checks) goes to its
  pair's tier in stream order, score then learn; the compiled loop's readings are applied before
  the pair evaluation the loop stops for, so the counts are complete at every evaluation whatever
  the batch size. A quarantined device's readings are scored, not learned.
- **Signals** of a pair's evaluation interval (:meth:`RiverTiers.signals`): ``river_readings``
  (readings the tier scored), ``river_anomalies`` and ``river_anomaly_rate`` (those its filter
  flagged, and their share), ``river_score`` (the interval's largest score). A pair no tier covers
  has none of them.
- **Memory** (:meth:`RiverTiers.footprint`): one model's bytes are measured from a model that
  learned 1,000 readings (:func:`monitor.detect.online.measured_bytes`); shared models count once,
  per-device models in every device's share of ``state.memory_budget_mb``.
- **State.** Per-device models live in the :class:`RiverState` slab's objects, so they move with
  their partition's snapshot; shared models are this replica's (not snapshotted: after a restart
  they learn again, ``warmup`` readings before their scores count).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.common import safepickle
from monitor.detect.cohorts import CohortLabels
from monitor.detect.online import OnlineModel, measured_bytes
from monitor.errors import ConfigError, RefusedClassError
from monitor.schema import MAX_AXES, Catalog
from monitor.settings import RiverSettings, RiverTierSettings
from monitor.state.store import PAIRS, Columns, DeviceStates, Slab

#: The rules' signals of a pair a tier covers.
SIGNALS = ("river_readings", "river_anomalies", "river_anomaly_rate", "river_score")
#: A per-device model: ``(tier name, model)``.
Entry = tuple[str, OnlineModel]


class RiverState(Slab):
    """Per pair: the interval's counts (the rules' signals). Per slot and sensor: the pair's own
    model, for the tiers with ``share: device``."""

    river_readings: NDArray[np.int32]
    river_anomalies: NDArray[np.int32]
    river_max: NDArray[np.float64]

    def __init__(self, n_sensors: int, specs: dict[str, dict[str, Any]]) -> None:
        self.specs = specs  # name -> model spec of each per-device tier: what a restored model must be
        self.models: list[list[Entry | None]] = []
        super().__init__(n_sensors)

    def columns(self) -> Columns:
        p = (PAIRS,)
        return {
            "river_readings": (p, np.int32, 0),
            "river_anomalies": (p, np.int32, 0),
            "river_max": (p, np.float64, -math.inf),
        }

    def grow(self, capacity: int) -> None:
        super().grow(capacity)
        while len(self.models) < capacity:
            self.models.append([None] * self.n_sensors)

    def clear_objects(self, slot: int) -> None:
        self.models[slot] = [None] * self.n_sensors

    def export_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        states.river = [list(self.models[i]) for i in slots]

    def load_objects(self, slots: Sequence[int], states: DeviceStates) -> None:
        """Take the devices' models, those of a tier still configured with the same spec (a model of
        a tier since changed or removed is dropped: the pair's tier starts a new one)."""
        for j, slot in enumerate(slots):
            row = states.river[j] if j < len(states.river) else [None] * self.n_sensors
            self.models[slot] = [
                e if e is not None and self.specs.get(e[0]) == e[1].spec() else None for e in row
            ]

    def reset_interval(self, slot: int, s: int) -> None:
        self.river_readings[slot, s] = 0
        self.river_anomalies[slot, s] = 0
        self.river_max[slot, s] = -math.inf


@dataclass(frozen=True)
class Footprint:
    """What the tiers' models take: bytes of shared models, bytes per device, and the parts."""

    shared: int
    per_device: int
    parts: tuple[tuple[str, str, int, int], ...]  # (tier, "shared" or "per device", models, bytes each)

    def describe(self) -> str:
        return "; ".join(f"{t}: {n} {kind} model(s) of {_mb(b)}" for t, kind, n, b in self.parts)


class RiverTiers:
    """The configured tiers: routing, models, the per-reading step and the pairs' signals."""

    def __init__(
        self, settings: RiverSettings, catalog: Catalog, labels: CohortLabels, state: RiverState
    ) -> None:
        self.tiers = settings.tiers
        self.labels = labels
        self.state = state
        self.protos = [OnlineModel.from_settings(t) for t in self.tiers]
        self.shared: dict[tuple[int, int, str], OnlineModel] = {}  # (tier, sensor, cohort value)
        self._routes: dict[str, tuple[tuple[int, str], ...]] = {}  # device -> (tier, group) per sensor
        self._flagged = np.zeros(catalog.capacity, np.int64)  # per sensor, since the last take_flagged
        self.adopt(catalog)

    def adopt(self, catalog: Catalog) -> None:
        """Route the sensors of ``catalog`` (channels registered since are covered by the tiers
        that name no sensors)."""
        self.catalog = catalog
        self.keys = [spec.keys for spec in catalog.specs]
        self.cover = [frozenset(catalog.index[s] for s in (t.sensors or catalog.names)) for t in self.tiers]
        self._routes.clear()  # a device's routes of the sensors it had are the same again

    @staticmethod
    def specs(settings: RiverSettings) -> dict[str, dict[str, Any]]:
        """The model spec of each per-device tier, by name (what :class:`RiverState` keeps)."""
        return {t.name: OnlineModel.from_settings(t).spec() for t in settings.tiers if t.share == "device"}

    def route(self, device_id: str) -> tuple[tuple[int, str], ...]:
        """Per sensor: the tier scoring the device's readings (-1: none) and its cohort value
        (of the pair's labels: its device's and its channel's)."""
        routes = self._routes.get(device_id)
        if routes is None:
            routes = self._routes[device_id] = tuple(
                self._first(self.labels.pair(device_id, s), s) for s in range(len(self.catalog))
            )
        return routes

    def _first(self, labels: dict[str, str], s: int) -> tuple[int, str]:
        for t, tier in enumerate(self.tiers):
            if s not in self.cover[t]:
                continue
            selector = tier.cohort_label
            if selector is None:
                return t, ""
            label, value = selector
            if label in labels and value in (None, labels[label]):
                return t, labels[label]
        return -1, ""

    def forget(self, devices: Sequence[str]) -> None:
        for d in devices:
            self._routes.pop(d, None)

    def _model(self, t: int, group: str, slot: int, s: int) -> OnlineModel:
        tier = self.tiers[t]
        if tier.share == "fleet":
            key = (t, s, group)
            m = self.shared.get(key)
            if m is None:
                m = self.shared[key] = self.protos[t].clone()
            return m
        entry = self.state.models[slot][s]
        if entry is None or entry[0] != tier.name:
            entry = self.state.models[slot][s] = (tier.name, self.protos[t].clone())
        return entry[1]

    def apply(self, slot: int, s: int, device_id: str, values: Sequence[float], learn: bool) -> None:
        """One applied reading of pair ``(slot, s)`` through its tier (if any): score, flag, learn."""
        t, group = self.route(device_id)[s]
        if t < 0:
            return
        out = self._model(t, group, slot, s).step(dict(zip(self.keys[s], values, strict=True)), learn)
        if out is None:
            return
        score, flagged = out
        st = self.state
        st.river_readings[slot, s] += 1
        st.river_anomalies[slot, s] += flagged
        self._flagged[s] += flagged
        if score > st.river_max[slot, s]:
            st.river_max[slot, s] = score

    def apply_many(
        self,
        applied: NDArray[np.intp],
        dev: NDArray[np.int64],
        slot_of: NDArray[np.int64],
        readings: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]],
        devices: Sequence[str],
        quarantined: NDArray[Any],
    ) -> None:
        """:meth:`apply` for readings the compiled loop applied, in stream order: ``applied`` are
        their indices, ``dev`` their devices' (into ``devices`` and ``slot_of``), ``readings``
        their sensors, numbers of features and zero-padded features."""
        sensors, k, vals = readings
        for i in applied.tolist():
            d = int(dev[i])
            slot, s = int(slot_of[d]), int(sensors[i])
            self.apply(slot, s, devices[d], vals[i, : k[i]].tolist(), not quarantined[slot])

    def take_flagged(self) -> NDArray[np.int64]:
        """The readings flagged per sensor since the last call (the batch's, for the metrics)."""
        out, self._flagged = self._flagged, np.zeros_like(self._flagged)
        return out

    def signals(self, slot: int, s: int, device_id: str) -> dict[str, float]:
        """The pair's signals of the interval (none if no tier covers it; no score if none scored)."""
        if self.route(device_id)[s][0] < 0:
            return {}
        st = self.state
        n, flagged = int(st.river_readings[slot, s]), int(st.river_anomalies[slot, s])
        sig = {
            "river_readings": float(n),
            "river_anomalies": float(flagged),
            "river_anomaly_rate": flagged / n if n else 0.0,
        }
        if n:
            sig["river_score"] = float(st.river_max[slot, s])
        return sig

    def footprint(self) -> Footprint:
        """The tiers' memory: each model measured once per tier and number of axes; a tier that
        names no sensors also covers the channels the catalog's spare indices may register, counted
        as of :data:`monitor.schema.MAX_AXES` axes."""
        shared = per_device = 0
        parts: list[tuple[str, str, int, int]] = []
        spare = tuple(f"a{j}" for j in range(MAX_AXES))
        for t, tier in enumerate(self.tiers):
            sizes = [measured_bytes(tier, self.keys[s]) for s in sorted(self.cover[t])]
            if not tier.sensors:
                sizes += [measured_bytes(tier, spare)] * self.catalog.spare
            each = max(sizes)
            if tier.share == "fleet":
                n = len(sizes) * self._groups(tier)
                shared += sum(sizes) * self._groups(tier)
                parts.append((tier.name, "shared", n, each))
            else:
                per_device += sum(sizes)
                parts.append((tier.name, "per-device", len(sizes), each))
        return Footprint(shared, per_device, tuple(parts))

    def _groups(self, tier: RiverTierSettings) -> int:
        """Shared models per sensor: one, or one per value of the tier's cohort label."""
        selector = tier.cohort_label
        if selector is None or selector[1] is not None:
            return 1
        return max(1, len(self.labels.values(selector[0])))

    def check_snapshots(self) -> None:
        """Refuse a per-device tier whose models the snapshots could not restore (a River class off
        the restricted unpickler's allowlist)."""
        for t, tier in enumerate(self.tiers):
            if tier.share != "device":
                continue
            probe = self.protos[t].clone()
            keys = self.keys[min(self.cover[t])] if self.cover[t] else ("value",)
            for _ in range(3):
                probe.learn_one(dict.fromkeys(keys, 0.5))
            try:
                safepickle.loads(pickle.dumps(probe, protocol=pickle.HIGHEST_PROTOCOL))
            except RefusedClassError as exc:
                raise ConfigError(
                    f"river tier {tier.name}: share: device keeps a {tier.model} per device in the partition "
                    f"snapshots, and they may hold only allow-listed classes ({exc}); use share: fleet, or a "
                    "model of monitor/common/safepickle.py's RIVER_CLASSES"
                ) from None


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def check_budget(settings_budget_mb: float, min_devices: int, device_bytes: int, fp: Footprint) -> int:
    """The devices the budget leaves room for beside the tiers' models; ConfigError when the shared
    models alone pass ``state.memory_budget_mb`` or the room is for fewer than ``min_devices``."""
    budget = int(settings_budget_mb * 2**20)
    if fp.shared >= budget:
        raise ConfigError(
            f"river tiers: the shared models take {_mb(fp.shared)} ({fp.describe()}), not less than "
            f"state.memory_budget_mb ({settings_budget_mb:g} MB)"
        )
    per = device_bytes + fp.per_device
    room = (budget - fp.shared) // per
    if room < min_devices:
        raise ConfigError(
            f"river tiers: state.memory_budget_mb ({settings_budget_mb:g} MB) leaves room for {room} "
            "devices, "
            f"fewer than river.min_devices ({min_devices}): {_mb(fp.shared)} of shared models, then "
            f"{_mb(per)} per device ({_mb(fp.per_device)} of River models, {_mb(device_bytes)} of other "
            f"state) ({fp.describe()})"
        )
    return int(room)
