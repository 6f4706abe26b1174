"""Channels registered on their first reading (``channels.auto_register``): settings, the wire
format, registration in stream order, every stage, snapshots across catalogs, rules, metrics.

The streams here carry two channels nobody declares: ``co2`` (one value, ppm) and ``flow`` (two
axes, ``in`` and ``out``, sent in either key order), beside a built-in temperature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor import schema
from monitor.cli.main import main
from monitor.errors import ConfigError, RulesError
from monitor.govern.rules import RuleSet, parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import AUTO_HIGH, AUTO_LOW, Reason, Rejection, SensorSpec
from monitor.serve.metrics import Metrics
from monitor.settings import MAX_AUTO_CHANNELS, load_settings
from monitor.state import layout, snapshot
from monitor.state.store import AXES, PAIRS, TRIANGLE, DeviceStates, packing
from tests.unit.test_kernel import _outputs
from tests.unit.test_pipeline import FakeMessage
from tests.unit.test_snapshot import KEY, _former_layouts, _next_offsets, _snapshots, restored_against_oracle

TS = 1_700_000_000_000
RULES = """
rules:
  - name: co2_anomalies
    scope: device
    sensors: [co2, flow]
    when: {signal: anomaly_rate, op: ">", value: 0.05}
    actions: [alert]
"""
DRIFT = {"reference_size": 64, "window_size": 64, "check_every": 16}


def _settings(room: int = 2, **extra: Any) -> Any:
    return load_settings(None, channels={"auto_register": room}, drift=DRIFT, **extra)


def _rules() -> RuleSet:
    return parse_rules(RULES, registrable=True)


def _pipeline(room: int = 2, **kw: Any) -> Pipeline:
    return Pipeline(_settings(room), _rules(), **kw)


def _raw(device: str, sensor: str, seq: int, values: dict[str, float], unit: str, ts: int = 0) -> bytes:
    return schema.encode_reading(device, sensor, ts or TS + seq * 1000, seq, values, unit)


def _msg(raw: bytes, device: str = "dev-0", seq: int = 1, partition: int = 0) -> FakeMessage:
    return FakeMessage(raw, device.encode(), partition, seq, TS + seq * 1000)


def _stream(
    devices: int = 2, n: int = 300, spike_at: int = 250, partition: int | None = None
) -> list[FakeMessage]:
    """Per device and step: a co2, a flow (its keys in either order) and a temperature reading;
    dev-0's co2 jumps by 40 ppm (40 noise standard deviations) for 20 steps from ``spike_at``.
    Device ``d`` is on partition ``d % 2`` (or ``partition``)."""
    rng = np.random.default_rng(3)
    out, seq = [], 0
    for i in range(n):
        for d in range(devices):
            dev = f"dev-{d}"
            co2 = 410.0 + rng.normal(0, 1.0) + (40.0 if d == 0 and spike_at <= i < spike_at + 20 else 0.0)
            f_in, f_out = 100 + rng.normal(0, 0.5), 99 + rng.normal(0, 0.5)
            flow = {"in": f_in, "out": f_out} if i % 2 else {"out": f_out, "in": f_in}
            for sensor, values, unit in (
                ("co2", {"value": co2}, "ppm"),
                ("flow", flow, "l/min"),
                ("temperature", {"value": 20 + rng.normal(0, 0.1)}, "degC"),
            ):
                seq += 1
                part = d % 2 if partition is None else partition
                out.append(
                    FakeMessage(
                        _raw(dev, sensor, seq, values, unit), dev.encode(), part, seq, TS + seq * 1000
                    )
                )
    return out


def _run(p: Pipeline, msgs: list[FakeMessage], batch: int = 200) -> list[BatchResult]:
    return [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def _joint(results: list[BatchResult], at: set[int] | None = None) -> list[float]:
    """The joint model's distance of each traced reading (NaN: its frame was not scored); ``at``:
    the readings of these timestamps only."""
    return [
        np.nan if s.joint_distance is None else s.joint_distance
        for r in results
        for s in r.trace
        if at is None or s.ts in at
    ]


def _rejections(results: list[BatchResult]) -> list[tuple[Reason, str]]:
    return [(d.rejection.reason, d.rejection.detail) for r in results for d in r.dead_letters]


# --- settings and the catalog --------------------------------------------------------------------


def test_auto_registration_is_off_by_default_and_bounded() -> None:
    channels = load_settings(None).channels
    assert channels.auto_register == 0 and channels.catalog().spare == 0
    assert channels.auto_defaults.resolution == 0.01 and channels.auto_defaults.rate_hz == 1.0
    with pytest.raises(ConfigError, match=r"channels\.auto_register"):
        load_settings(None, channels={"auto_register": MAX_AUTO_CHANNELS + 1})
    with pytest.raises(ConfigError, match=r"channels\.auto_defaults\.resolution"):
        load_settings(None, channels={"auto_register": 1, "auto_defaults": {"resolution": 0}})


def test_a_deployment_may_monitor_registered_channels_only() -> None:
    c = load_settings(None, channels={"builtin": False, "auto_register": 3}).channels.catalog()
    assert (len(c), c.capacity, c.dims) == (0, 3, 9)
    raw = _raw("d1", "co2", 1, {"value": 400.0}, "ppm")
    r = schema.decode_batch([raw], [b"d1"], catalog=c)[0]
    assert isinstance(r, Rejection) and r.reason is Reason.UNKNOWN_SENSOR
    p = Pipeline(
        load_settings(None, channels={"builtin": False, "auto_register": 3}), parse_rules("rules: []")
    )
    msgs = [_msg(_raw("d1", "co2", i, {"value": 400.0 + i % 3}, "ppm"), "d1", i) for i in range(1, 60)]
    assert sum(p.process(msgs[i : i + 7]).valid[0] for i in range(0, 59, 7)) == 59
    assert p.catalog.names == ("co2",) and p.detect_state.has_model(p.store.slots["d1"], 0)


def test_the_catalog_keeps_room_for_three_axes_per_spare_index() -> None:
    c = _settings(2).channels.catalog()
    assert (len(c), c.capacity, c.dims, c.offsets[-2:]) == (6, 8, 18, (12, 15))
    co2 = SensorSpec("co2", ("value",), "ppm", AUTO_LOW, AUTO_HIGH, 1.0, 0.01, auto=True)
    grown = c.register(co2)
    assert (grown.names[-1], grown.spare, grown.capacity, grown.dims, grown.offsets) == (
        "co2", 1, 8, 18, c.offsets,
    )  # fmt: skip
    assert grown.axes().tolist() == [3, 3, 3, 1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="cannot register"):
        grown.register(co2)


def test_a_supervised_river_tier_must_name_scalar_sensors_when_channels_may_be_registered() -> None:
    tier = {"name": "gauss", "model": "river.anomaly.GaussianScorer", "params": {}, "quantile": 0.99}
    with pytest.raises(ConfigError, match="channels registered automatically may have several axes"):
        load_settings(None, channels={"auto_register": 1}, river={"tiers": [tier]})
    ok = load_settings(
        None, channels={"auto_register": 1}, river={"tiers": [tier | {"sensors": ["humidity"]}]}
    )
    assert ok.river.tiers[0].sensors == ("humidity",)


# --- the wire format -------------------------------------------------------------------------------


def test_a_channel_from_its_first_reading_sorts_its_axes_and_has_no_range() -> None:
    r = schema.parse(_raw("d1", "flow", 1, {"out": 1.0, "in": 2.0}, "l/min"), b"d1")
    assert isinstance(r, schema.Reading)
    spec = schema.auto_spec(r, 0.5, 2.0)
    assert spec == SensorSpec("flow", ("in", "out"), "l/min", AUTO_LOW, AUTO_HIGH, 2.0, 0.5, auto=True)
    checked = schema.check(r, spec)
    assert isinstance(checked, schema.Reading) and checked.features() == (2.0, 1.0)


@pytest.mark.parametrize(
    ("sensor", "values", "unit", "reason"),
    [
        ("CO2", {"value": 1.0}, "ppm", Reason.UNKNOWN_SENSOR),
        ("co2", {}, "ppm", Reason.BAD_VALUES),
        ("co2", {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, "ppm", Reason.BAD_VALUES),
        ("co2", {"Value": 1.0}, "ppm", Reason.BAD_VALUES),
        ("co2", {"value": 1.0}, "", Reason.WRONG_UNIT),
        ("co2", {"value": 1.0}, "p" * 33, Reason.WRONG_UNIT),
    ],
)
def test_a_reading_that_cannot_define_a_channel_says_why(
    sensor: str, values: dict[str, float], unit: str, reason: Reason
) -> None:
    r = schema.Reading("d1", sensor, TS, 1, values, unit, 1)
    spec = schema.auto_spec(r, 0.01, 1.0)
    assert isinstance(spec, Rejection) and spec.reason is reason


def test_readings_of_a_registered_channel_decode_alike_one_by_one_and_in_a_batch() -> None:
    spec = SensorSpec("flow", ("in", "out"), "l/min", AUTO_LOW, AUTO_HIGH, 1.0, 0.01, auto=True)
    c = schema.Catalog(schema.BUILTIN, spare=1).register(spec)
    raw = [
        _raw("d1", "flow", 1, {"out": 1e300, "in": -1e300}, "l/min"),  # no range: every finite value
        _raw("d1", "flow", 2, {"in": 1.0}, "l/min"),
        _raw("d1", "flow", 3, {"in": 1.0, "out": 2.0}, "m3/h"),
        b'{"device_id":"d1","sensor":"flow","ts":1700000004000,"seq":4,"values":{"in":1e999,"out":1.0},'
        b'"unit":"l/min","schema_version":1}',
    ]
    one = [schema.decode(v, b"d1", catalog=c) for v in raw]
    batch = schema.decode_batch(raw, [b"d1"] * 4, catalog=c)
    assert batch[1:] == one[1:] and batch[0].features() == one[0].features()  # type: ignore[union-attr]
    assert one[0].features() == (-1e300, 1e300)  # type: ignore[union-attr]
    assert [r.reason for r in one[1:]] == [Reason.CHANNEL_MISMATCH] * 2 + [Reason.NON_FINITE]  # type: ignore[union-attr]
    assert one[1].detail.startswith(  # type: ignore[union-attr]
        "flow was registered automatically with axes [in, out] and unit 'l/min'; this reading has axes [in] "
        "and unit 'l/min'"
    )


# --- registration in the pipeline ------------------------------------------------------------------


def test_the_first_valid_reading_of_an_unknown_sensor_registers_its_channel() -> None:
    p = _pipeline()
    bad_ts = _msg(_raw("dev-0", "co2", 1, {"value": 400.0}, "ppm", ts=TS // 1000), seq=1)
    first = _msg(_raw("dev-0", "co2", 2, {"value": 400.0}, "ppm"), seq=2)
    second = _msg(_raw("dev-1", "co2", 3, {"value": 401.0}, "ppm"), "dev-1", seq=3)
    r = p.process([bad_ts, first, second])
    assert [d.rejection.reason for d in r.dead_letters] == [Reason.BAD_TIMESTAMP]  # registers nothing
    assert [(g.spec.name, g.device_id, g.offset) for g in r.registered] == [("co2", "dev-0", 2)]
    assert r.registered[0].spec == SensorSpec(
        "co2", ("value",), "ppm", AUTO_LOW, AUTO_HIGH, 1.0, 0.01, auto=True
    )
    assert p.catalog.index["co2"] == 6 and p.catalog.spare == 1
    assert r.valid[6] == 2
    assert p.process([_msg(_raw("dev-0", "co2", 4, {"value": 400.5}, "ppm"), seq=4)]).registered == []


def test_readings_of_a_registered_channel_with_other_axes_or_unit_are_dead_lettered() -> None:
    p = _pipeline()
    msgs = [
        _msg(_raw("dev-0", "flow", 1, {"in": 1.0, "out": 2.0}, "l/min"), seq=1),
        _msg(_raw("dev-0", "flow", 2, {"in": 1.0, "out": 2.0, "spill": 0.0}, "l/min"), seq=2),
        _msg(_raw("dev-0", "flow", 3, {"in": 1.0, "out": 2.0}, "m3/h"), seq=3),
        _msg(_raw("dev-0", "flow", 4, {"out": 2.5, "in": 1.5}, "l/min"), seq=4),  # any key order
    ]
    r = p.process(msgs)
    assert [d.rejection.reason for d in r.dead_letters] == [Reason.CHANNEL_MISMATCH] * 2
    assert (
        "registered automatically with axes [in, out] and unit 'l/min'" in r.dead_letters[1].rejection.detail
    )
    assert "this reading has axes [in, out] and unit 'm3/h'" in r.dead_letters[1].rejection.detail
    assert r.valid[p.catalog.index["flow"]] == 2


def test_once_the_room_is_used_up_further_unknown_sensors_are_dead_lettered() -> None:
    p = _pipeline(room=1)
    r = p.process(
        [
            _msg(_raw("dev-0", "co2", 1, {"value": 400.0}, "ppm"), seq=1),
            _msg(_raw("dev-0", "voltage", 2, {"value": 3.3}, "V"), seq=2),
        ]
    )
    ((reason, detail),) = _rejections([r])
    assert reason is Reason.UNKNOWN_SENSOR
    assert detail == (
        "sensor 'voltage' is not monitored here, and auto-registration is full (1 channels registered: "
        "co2; channels.auto_register)"
    )
    assert p.catalog.names[-1] == "co2" and p.catalog.spare == 0


def test_an_auto_channel_is_monitored_exactly_as_the_same_channel_declared() -> None:
    """The same stream with co2 and flow registered on their first readings, and declared with the
    specs they get (and a range wider than the stream): the same readings scored alike, the same
    alerts, anomalies, drift and integrity counts."""
    declared = [
        {"name": "co2", "unit": "ppm", "low": -1e9, "high": 1e9, "resolution": 0.01},
        {
            "name": "flow",
            "unit": "l/min",
            "low": -1e9,
            "high": 1e9,
            "resolution": 0.01,
            "axes": ["in", "out"],
        },
    ]
    msgs = _stream(devices=3, n=300)
    auto = _pipeline(trace=True)
    plain = Pipeline(load_settings(None, channels={"declare": declared}, drift=DRIFT), _rules(), trace=True)
    a, d = _run(auto, msgs), _run(plain, msgs)
    assert auto.catalog.names[:8] == plain.catalog.names
    assert [x.alert_id + x.status for r in a for x in r.alerts] == [
        x.alert_id + x.status for r in d for x in r.alerts
    ]
    assert any(x.sensor == "co2" and x.device_id == "dev-0" for r in a for x in r.alerts)
    for field in ("valid", "anomalies"):
        assert (sum(getattr(r, field) for r in a)[:8] == sum(getattr(r, field) for r in d)).all()
    assert sum((r.drift for r in a), start=type(a[0].drift)()) == sum(
        (r.drift for r in d), start=type(d[0].drift)()
    )
    trace = [
        (s.device_id, s.sensor, s.ts, s.score, s.anomalous, s.joint_anomalous) for r in a for s in r.trace
    ]
    assert trace == [
        (s.device_id, s.sensor, s.ts, s.score, s.anomalous, s.joint_anomalous) for r in d for s in r.trace
    ]
    assert _joint(a) == pytest.approx(_joint(d), rel=1e-9, nan_ok=True)
    model = auto.detect_state.model_of(auto.store.slots["dev-1"], auto.catalog.index["flow"])
    assert model is not None and model.n_features == 2 and model.resolution == 0.01


@pytest.mark.parametrize("batch", [1, 7, 97, 5000])
def test_registration_and_results_do_not_depend_on_the_batch_size(batch: int) -> None:
    """Registrations, mismatches and a full catalog in the middle of a stream: whatever the batch
    size (and on the Python path), the same channels at the same indices, the same dead letters,
    scores, alerts and state."""
    msgs = _stream(devices=2, n=120, spike_at=100)
    extra = [
        _msg(_raw("dev-0", "flow", 90_001, {"in": 1.0}, "l/min"), seq=90_001),
        _msg(_raw("dev-1", "voltage", 90_002, {"value": 3.3}, "V"), "dev-1", seq=90_002),
        _msg(_raw("dev-1", "co2", 90_003, {"value": 1.0}, "%"), "dev-1", seq=90_003),
    ]
    msgs = msgs[:5] + extra[:1] + msgs[5:300] + extra[1:] + msgs[300:]
    reference = _pipeline(trace=True, compiled=False)
    expected = _run(reference, msgs, batch=1)
    p = _pipeline(trace=True)
    results = _run(p, msgs, batch=batch)
    assert p.catalog == reference.catalog and p.catalog.names[6:] == ("co2", "flow")
    assert [(g.spec.name, g.offset) for r in results for g in r.registered] == [("co2", 1), ("flow", 2)]
    assert _rejections(results) == _rejections(expected)
    assert [x for x, _ in _rejections(results)] == [
        Reason.CHANNEL_MISMATCH,
        Reason.UNKNOWN_SENSOR,
        Reason.CHANNEL_MISMATCH,
    ]
    assert _outputs(results) == _outputs(expected)
    mine, theirs = (q.store.export(sorted(q.store.slots.values())) for q in (p, reference))
    for name, arr in mine.arrays.items():
        np.testing.assert_array_equal(arr, theirs.arrays[name], err_msg=name)


# --- snapshots ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 900, 1500])
def test_a_snapshot_with_auto_channels_restores_into_a_fresh_pipeline(cut: int) -> None:
    """Stopped anywhere (before the channels are registered, before and after the spike), its
    partitions snapshotted and restored into a new pipeline, which registers the snapshot's
    channels first: the same state and alerts as a run that never stopped."""
    stream = _stream(devices=4, n=150, spike_at=100)
    restored_against_oracle(_pipeline, stream, cut)


def test_a_snapshot_records_its_channels() -> None:
    p = _pipeline()
    results = _run(p, _stream(devices=2, n=20))
    (snap,) = [s for s in _snapshots(p, _next_offsets(results)) if s.partition == 0]
    loaded = snapshot.decode(snapshot.encode(snap, KEY), KEY).state
    assert loaded.sensors == p.catalog.names and loaded.channels == p.catalog.specs and loaded.spare == 0
    fresh = _pipeline()
    assert fresh.mismatch(loaded) is None
    assert [s.name for s in fresh.import_partition(loaded)] == ["co2", "flow"]
    assert fresh.catalog == p.catalog


def _by_name(p: Pipeline, device: str, sensor: str) -> dict[str, Any]:
    """What is kept about a pair per pair and per axis (of the joint covariance, its own block)."""
    assert any(t[:1] == (TRIANGLE,) for t, _, _ in p.store.columns().values())
    slot, s = p.store.slots[device], p.catalog.index[sensor]
    k, off = len(p.catalog.by_name[sensor].keys), p.catalog.offsets[s]
    exported = p.store.export([slot]).arrays
    out: dict[str, Any] = {}
    for name, (template, _, _) in p.store.columns().items():
        arr = exported.get(name)
        if arr is None or not template:
            continue
        if template[0] == PAIRS:
            out[name] = arr[0, s]
        elif template[:2] == (AXES, AXES):
            out[name] = arr[0, off : off + k, off : off + k]
        elif template[0] == TRIANGLE:  # an upper triangle: the full matrix's block
            out[name] = arr[0, packing(p.catalog.dims)][off : off + k, off : off + k]
        elif template[0] == AXES:
            out[name] = arr[0, off : off + k]
    return out


@pytest.mark.parametrize("former", [False, True])
def test_a_snapshot_of_another_registration_order_is_laid_out_by_name(
    former: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A registered co2 then flow; replica B, from another partition, flow then co2, and a
    third channel: A's partition moves to B, its state lands at B's indices for each name, and its
    devices' pair models go on exactly as on A. ``former``: A's snapshot is of the slabs' former
    layouts (format 1: converted by A's catalog, then laid out by name)."""
    a_stream = _stream(devices=2, n=200, spike_at=160, partition=0)
    cut = 3 * 2 * 120
    a = _pipeline(room=3, trace=True)
    a_results = _run(a, a_stream)
    a_first = _pipeline(room=3)
    _run(a_first, a_stream[:cut])
    b = _pipeline(room=3, trace=True)
    b_msgs = [
        _msg(_raw("other", "flow", 1, {"in": 1.0, "out": 2.0}, "l/min"), "other", 1, partition=1),
        _msg(_raw("other", "humidity_2", 2, {"value": 50.0}, "%RH"), "other", 2, partition=1),
        _msg(_raw("other", "co2", 3, {"value": 400.0}, "ppm"), "other", 3, partition=1),
    ]
    b.process(b_msgs)
    assert b.catalog.names[6:] == ("flow", "humidity_2", "co2")
    state = a_first.export_partition(0)
    if former:
        monkeypatch.setattr(snapshot, "FORMAT", 1)
        _former_layouts(a_first, state.devices.arrays)
        snap = snapshot.PartitionSnapshot("readings", 0, 0, state)
        state = snapshot.decode(snapshot.encode(snap, KEY), KEY).state
        assert state.devices.arrays["raw"].ndim == 4
    assert not layout.same_layout(a_first.catalog, b.catalog)
    assert b.mismatch(state) is None
    assert b.import_partition(state) == []
    for device in ("dev-0", "dev-1"):
        for sensor in ("co2", "flow", "temperature"):
            np.testing.assert_equal(_by_name(b, device, sensor), _by_name(a_first, device, sensor))
    after = _run(b, a_stream[cut:])
    tail = {s.ts for r in after for s in r.trace}
    pair = [(s.device_id, s.sensor, s.ts, s.score, s.anomalous) for r in after for s in r.trace]
    oracle = [
        (s.device_id, s.sensor, s.ts, s.score, s.anomalous)
        for r in a_results
        for s in r.trace
        if s.ts in tail
    ]
    assert pair == oracle and any(anomalous for *_, anomalous in pair)
    assert _joint(after) == pytest.approx(_joint(a_results, tail), rel=1e-9, nan_ok=True)
    assert {x.alert_id for r in after for x in r.alerts} <= {x.alert_id for r in a_results for x in r.alerts}


def test_upper_triangles_move_by_name_as_their_full_matrices() -> None:
    a, b = (SensorSpec(n, ("value",), "u", -1.0, 1.0, 1.0, 0.1) for n in "ab")
    c = SensorSpec("c", ("x", "y"), "u", -1.0, 1.0, 1.0, 0.1)
    source, target = schema.Catalog([a, c, b]), schema.Catalog([b, a, c], spare=1)
    full = np.arange(16.0).reshape(4, 4)
    full = full + full.T  # symmetric, over a, c.x, c.y, b
    rows, cols = np.triu_indices(4)
    states = DeviceStates(["d"], {"m": full[rows, cols][None]})
    moved = layout.remap(states, {"m": ((TRIANGLE,), np.float64, 0)}, source, target)
    order = [3, 0, 1, 2]  # b, a, c.x, c.y; then the spare index's three axes, zero
    expected = np.zeros((target.dims, target.dims))
    expected[:4, :4] = full[np.ix_(order, order)]
    rows, cols = np.triu_indices(target.dims)
    np.testing.assert_array_equal(moved.arrays["m"], expected[rows, cols][None])


def test_a_snapshot_is_refused_when_its_channels_do_not_fit() -> None:
    p = _pipeline(room=2)
    _run(p, _stream(devices=1, n=10))
    state = p.export_partition(0)
    small = _pipeline(room=1)
    assert small.mismatch(state) == (
        f"its sensors are {', '.join(p.catalog.names)}, this configuration's "
        f"{', '.join(small.catalog.names)} (auto-registration has room for 1 more)"
    )
    other = _pipeline(room=2)
    other.process([_msg(_raw("x", "flow", 1, {"in": 1.0, "out": 2.0, "spill": 0.0}, "l/min"), "x")])
    assert other.mismatch(state) == (
        "its channel flow has axes [in, out] and unit 'l/min', this configuration's [in, out, spill] "
        "and 'l/min'"
    )
    declared = {
        "name": "flow",
        "unit": "l/min",
        "low": 0,
        "high": 1000,
        "resolution": 0.01,
        "axes": ["in", "out"],
    }
    now_declared = Pipeline(
        load_settings(None, channels={"declare": [declared], "auto_register": 1}, drift=DRIFT), _rules()
    )
    assert now_declared.mismatch(state) is None  # declared since, with its axes and unit: laid out by name
    assert [s.name for s in now_declared.import_partition(state)] == ["co2"]


# --- rules and metrics -------------------------------------------------------------------------------


def test_rules_may_name_channels_to_be_registered_only_when_registration_is_on() -> None:
    with pytest.raises(RulesError, match="unknown sensor 'co2'"):
        parse_rules(RULES)
    with pytest.raises(RulesError, match="unknown sensor 'CO2'"):
        parse_rules(RULES.replace("co2, flow", "CO2"), registrable=True)
    assert _pipeline().engine.rules.rules[0].sensors == ["co2", "flow"]
    with pytest.raises(RulesError, match="sensor 'co2' is not monitored"):
        Pipeline(load_settings(None), _rules())


def test_metrics_count_registrations_and_label_the_new_channels() -> None:
    registry = CollectorRegistry()
    p = _pipeline(room=3)
    metrics = Metrics(registry, {}, p.catalog.names)
    metrics.record_channels(p.catalog.names, p.catalog.spare)
    assert registry.get_sample_value("telemon_channels_auto_free") == 3
    for r in _run(p, _stream(devices=1, n=60)):
        metrics.record_channels(p.catalog.names, p.catalog.spare)
        metrics.record_batch(r, p.integrity.take_events(), 0.01)
    assert registry.get_sample_value("telemon_channels_registered_total") == 2
    assert registry.get_sample_value("telemon_channels_auto_free") == 1
    assert registry.get_sample_value("telemon_readings_total", {"sensor": "flow"}) == 60
    assert registry.get_sample_value("telemon_anomaly_score_count", {"sensor": "co2"}) is not None
    assert (
        registry.get_sample_value(
            "telemon_drift_detections_total", {"detector": "ks", "scope": "fleet", "sensor": "co2"}
        )
        == 0
    )


SVM_TIER = {
    "name": "svm",
    "model": "river.anomaly.OneClassSVM",
    "params": {"nu": 0.1},
    "preprocessing": "standard",
    "share": "device",
    "quantile": 0.99,
    "warmup": 50,
}
RIVER_RULE = """
  - name: river_flags
    scope: device
    when: {signal: river_anomaly_rate, op: ">", value: 0.05}
    actions: [alert]
"""


def test_a_river_tier_without_sensors_covers_registered_channels_and_their_snapshots() -> None:
    """A per-device River tier naming no sensors scores an auto channel as the same channel
    declared, and its per-device models of it go through a snapshot into a fresh pipeline."""
    rules = parse_rules(RULES.replace("co2, flow", "co2") + RIVER_RULE, registrable=True)
    declared = {"name": "co2", "unit": "ppm", "low": -1e9, "high": 1e9, "resolution": 0.01}
    msgs = [m for m in _stream(devices=2, n=200, spike_at=150) if b'"flow"' not in m.payload]  # type: ignore[operator]

    def auto() -> Pipeline:
        return Pipeline(_settings(1, river={"tiers": [SVM_TIER]}), rules)

    plain = Pipeline(
        load_settings(None, channels={"declare": [declared]}, drift=DRIFT, river={"tiers": [SVM_TIER]}), rules
    )
    a, d = _run(auto(), msgs), _run(plain, msgs)
    co2 = plain.catalog.index["co2"]
    assert sum(r.river_anomalies for r in a)[co2] == sum(r.river_anomalies for r in d)[co2] > 0
    assert [x.alert_id + x.status for r in a for x in r.alerts] == [
        x.alert_id + x.status for r in d for x in r.alerts
    ]
    restored_against_oracle(auto, msgs, 700)


def test_rules_check_notes_the_channels_a_rules_file_waits_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, rules = tmp_path / "monitor.yaml", tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config.write_text("channels:\n  auto_register: 2\n")
    assert main(["rules", "check", "--config", str(config), str(rules)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{rules}: 1 rules OK"
    assert out[1].startswith(f"{rules}: note: rules.0 (co2_anomalies): sensor 'co2' is not monitored")
    assert out[2].endswith("(it applies once a channel of that name is registered)")
    config.write_text("channels:\n  auto_register: 0\n")
    assert main(["rules", "check", "--config", str(config), str(rules)]) == 1
