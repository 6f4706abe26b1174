"""Channels a deployment declares: settings, the wire format, every stage, metrics, rules, producers.

Two declared channels run through everything here: ``current`` (one value, amperes, a noise
floor far below the built-in scalars' 0.01) and ``flow`` (two axes, ``in`` and ``out``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor import schema
from monitor.errors import ConfigError, LabelledInputError, ReplayError, RulesError
from monitor.evaluation.replay import Series, replay_series
from monitor.govern.rules import RuleSet, load_rules, parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.schema import Reason, Rejection
from monitor.serve.metrics import Metrics
from monitor.settings import Settings, load_settings
from producers.publisher import Sample, Sequencer
from producers.replay import load_mapping
from tests.unit.test_kernel import _outputs
from tests.unit.test_pipeline import FakeMessage

ROOT = Path(__file__).resolve().parents[2]
TS = 1_700_000_000_000
CURRENT = {"name": "current", "unit": "A", "low": 0.0, "high": 50.0, "resolution": 1e-5}
FLOW = {"name": "flow", "unit": "l/min", "low": -500, "high": 500, "resolution": 0.01, "axes": ["in", "out"]}
CHANNELS = {"declare": [CURRENT, FLOW]}
RULES = """
rules:
  - name: current_anomalies
    scope: device
    sensors: [current, flow]
    when: {signal: anomaly_rate, op: ">", value: 0.05}
    actions: [alert]
"""


def _settings(**extra: object) -> Settings:
    return load_settings(None, channels=CHANNELS, **extra)  # type: ignore[arg-type]


def _catalog() -> schema.Catalog:
    return _settings().channels.catalog()


# --- settings ---------------------------------------------------------------------------------


def test_declared_channels_follow_the_built_in_kinds() -> None:
    c = _catalog()
    assert c.names == (*schema.SENSOR_NAMES, "current", "flow")
    assert c.by_name["flow"].keys == ("in", "out") and c.by_name["current"].resolution == 1e-5


def test_a_declared_channel_of_a_built_in_name_replaces_it_in_place() -> None:
    kelvin = {"name": "temperature", "unit": "K", "low": 0, "high": 500, "resolution": 0.001}
    c = load_settings(None, channels={"declare": [kelvin]}).channels.catalog()
    assert c.names == schema.SENSOR_NAMES and c.by_name["temperature"].unit == "K"


def test_only_declared_channels() -> None:
    c = load_settings(None, channels={"builtin": False, "declare": [CURRENT]}).channels.catalog()
    assert c.names == ("current",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Current"}, "channels.declare.0.name"),
        ({"low": 60.0}, "low < high"),
        ({"high": float("inf")}, "low < high"),
        ({"resolution": 0}, "greater than 0"),
        ({"resolution": 100.0}, "spans the whole range"),
        ({"axes": ["a", "b", "c", "d"]}, "at most 3"),
        ({"axes": ["a", "a"]}, "unique"),
        ({"axes": ["A"]}, "axis name 'A'"),
        ({"unit": 'A"'}, "channels.declare.0.unit"),
    ],
)
def test_a_bad_channel_is_a_config_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, channels={"declare": [CURRENT | change]})


def test_channels_declared_twice_or_nothing_to_monitor() -> None:
    with pytest.raises(ConfigError, match="current declared more than once"):
        load_settings(None, channels={"declare": [CURRENT, CURRENT]})
    with pytest.raises(ConfigError, match="nothing to monitor"):
        load_settings(None, channels={"builtin": False})


def test_channels_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMON_CHANNELS__DECLARE", '[{"name": "co2", "unit": "ppm", "low": 0, '
                       '"high": 10000, "resolution": 1}]')  # fmt: skip
    assert load_settings(None).channels.catalog().names[-1] == "co2"


def test_a_config_file_declares_channels(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        "channels:\n  declare:\n    - {name: current, unit: A, low: 0, high: 50, resolution: 0.00001}\n"
        "    - {name: flow, unit: l/min, low: -500, high: 500, resolution: 0.01, axes: [in, out]}\n"
    )
    assert load_settings(path).channels.catalog() == _catalog()


# --- the wire format --------------------------------------------------------------------------


def _encoded(device: str, sensor: str, seq: int, values: dict[str, float], unit: str | None = None) -> bytes:
    return schema.encode_reading(device, sensor, TS + seq * 1000, seq, values, unit, _catalog())


def test_readings_of_declared_channels_decode_one_by_one_and_in_a_batch() -> None:
    c = _catalog()
    raw = [
        _encoded("d1", "current", 1, {"value": 2.5}),
        _encoded("d1", "flow", 2, {"in": 10.0, "out": -3.0}),
        _encoded("d1", "temperature", 3, {"value": 21.0}),
    ]
    one = [schema.decode(v, b"d1", catalog=c) for v in raw]
    batch = schema.decode_batch(raw, [b"d1"] * 3, catalog=c)
    assert [r.features() for r in one] == [r.features() for r in batch] == [(2.5,), (10.0, -3.0), (21.0,)]  # type: ignore[union-attr]
    assert [r.sensor for r in batch] == ["current", "flow", "temperature"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("sensor", "values", "unit", "reason"),
    [
        ("voltage", {"value": 1.0}, "V", Reason.UNKNOWN_SENSOR),
        ("current", {"value": 1.0}, "mA", Reason.WRONG_UNIT),
        ("current", {"value": 51.0}, None, Reason.OUT_OF_RANGE),
        ("current", {"x": 1.0}, None, Reason.BAD_VALUES),
        ("flow", {"in": 1.0}, None, Reason.BAD_VALUES),
        ("flow", {"in": 1.0, "out": 2.0, "value": 3.0}, None, Reason.BAD_VALUES),
    ],
)
def test_bad_readings_of_declared_channels_are_rejected_with_their_reason(
    sensor: str, values: dict[str, float], unit: str | None, reason: Reason
) -> None:
    c = _catalog()
    raw = _encoded("d1", sensor, 1, values, unit or c.by_name.get(sensor, c.specs[0]).unit)
    one = schema.decode(raw, b"d1", catalog=c)
    assert isinstance(one, Rejection) and one.reason is reason
    assert schema.decode_batch([raw, raw], [b"d1", b"d1"], catalog=c) == [one, one]


def test_an_unknown_sensor_names_the_known_ones() -> None:
    raw = _encoded("d1", "current", 1, {"value": 1.0})
    r = schema.decode(raw, b"d1")  # the built-in catalog does not know the channel
    assert isinstance(r, Rejection) and r.reason is Reason.UNKNOWN_SENSOR
    assert r.detail == f"sensor 'current' is not monitored here (known: {', '.join(schema.SENSOR_NAMES)})"


def test_values_sent_in_another_key_order_are_put_in_the_declared_one() -> None:
    c = _catalog()
    raw = b'{"device_id":"d1","sensor":"flow","ts":1700000000000,"seq":1,"values":{"out":-3.0,"in":10.0},'
    raw += b'"unit":"l/min","schema_version":1}'
    one, batch = schema.decode(raw, b"d1", catalog=c), schema.decode_batch([raw], [b"d1"], catalog=c)[0]
    assert one.features() == batch.features() == (10.0, -3.0)  # type: ignore[union-attr]
    assert list(one.values) == ["in", "out"]  # type: ignore[union-attr]


def test_a_catalog_of_one_channel_still_requires_the_sensor_field() -> None:
    c = load_settings(None, channels={"builtin": False, "declare": [CURRENT]}).channels.catalog()
    raw = (
        b'{"device_id":"d1","ts":1700000000000,"seq":1,"values":{"value":1.0},"unit":"A","schema_version":1}'
    )
    assert schema.decode_batch([raw], [b"d1"], catalog=c) == [schema.decode(raw, b"d1", catalog=c)]
    assert schema.decode(raw, b"d1", catalog=c).reason is Reason.MISSING_FIELD  # type: ignore[union-attr]


# --- the pipeline -----------------------------------------------------------------------------


def _stream(devices: int = 4, n: int = 400, spike_at: int = 300) -> list[FakeMessage]:
    """Readings of both channels (and a built-in temperature) from each device, 1 s apart; the
    current carries a 5 mA spike (about 17 noise standard deviations) at ``spike_at``."""
    rng = np.random.default_rng(7)
    out: list[FakeMessage] = []
    seq = 0
    for i in range(n):
        for d in range(devices):
            dev = f"dev-{d}"
            current = 2.0 + rng.normal(0, 3e-4) + (0.005 if i == spike_at and d == 0 else 0.0)
            flow = {"in": 100 + rng.normal(0, 0.5), "out": 99 + rng.normal(0, 0.5)}
            for sensor, values in (
                ("current", {"value": current}),
                ("flow", flow),
                ("temperature", {"value": 20 + rng.normal(0, 0.1)}),
            ):
                seq += 1
                raw = _encoded(dev, sensor, seq, values)
                out.append(FakeMessage(raw, dev.encode(), d % 2, seq, TS + seq * 1000))
    return out


def _run(p: Pipeline, msgs: list[FakeMessage], batch: int = 500) -> list[BatchResult]:
    return [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def test_declared_channels_are_scored_and_their_noise_floor_is_their_resolution() -> None:
    p = Pipeline(_settings(), parse_rules(RULES, sensors=_catalog().names), trace=True)
    results = _run(p, _stream())
    assert not [d for r in results for d in r.dead_letters]
    index = p.catalog.index
    valid = sum(r.valid for r in results)
    assert valid[index["current"]] == valid[index["flow"]] == valid[index["temperature"]] == 1600
    flagged = {(s.device_id, s.sensor, s.ts) for r in results for s in r.trace if s.anomalous}
    spike = ("dev-0", "current", TS + (300 * 12 + 1) * 1000)
    assert spike in flagged
    model = p.detect_state.model_of(p.store.slots["dev-0"], index["current"])
    assert model is not None and model.resolution == 1e-5
    # With the built-in scalars' floor (0.01 units) the same spike is (0.005 / 0.01)^2 = 0.25.
    assert model.distance((2.005,)) > 100 and pytest.approx(0.25) == 0.005**2 / 0.01**2
    flow = p.detect_state.model_of(p.store.slots["dev-1"], index["flow"])
    assert flow is not None and flow.n_features == 2


def test_declared_channels_take_the_same_path_compiled_and_in_python() -> None:
    rules = parse_rules(RULES, sensors=_catalog().names)
    msgs = _stream(devices=3, n=250, spike_at=200)
    runs = [Pipeline(_settings(), rules, trace=True, compiled=c) for c in (True, False)]
    (kr, pr) = [_run(p, msgs, batch=97) for p in runs]
    assert _outputs(kr) == _outputs(pr)
    k, q = (p.store.export(sorted(p.store.slots.values())) for p in runs)
    for name, arr in k.arrays.items():
        np.testing.assert_array_equal(arr, q.arrays[name], err_msg=name)


def test_state_of_other_channels_is_not_imported() -> None:
    p = Pipeline(_settings(), parse_rules(RULES, sensors=_catalog().names))
    _run(p, _stream(devices=2, n=60))
    state = p.export_partition(0)
    assert state.sensors == p.catalog.names
    assert p.mismatch(state) is None
    builtin = Pipeline(load_settings(None), load_rules(ROOT / "configs/rules.yaml"))
    assert builtin.mismatch(state) == (
        f"its sensors are {', '.join(p.catalog.names)}, this configuration's {', '.join(schema.SENSOR_NAMES)}"
    )


def test_rules_may_name_declared_channels_only_where_they_are_declared(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    assert isinstance(load_rules(path, _catalog().names), RuleSet)
    with pytest.raises(RulesError, match=r"rules.yaml:5:\d+: rules.0.sensors.0: unknown sensor 'current'"):
        load_rules(path)
    with pytest.raises(RulesError, match=r"rules.0 \(current_anomalies\): sensor 'current' is not monitored"):
        Pipeline(load_settings(None), parse_rules(RULES, sensors=_catalog().names))


def test_metrics_carry_the_declared_channels() -> None:
    registry = CollectorRegistry()
    p = Pipeline(_settings(), parse_rules(RULES, sensors=_catalog().names))
    metrics = Metrics(registry, {}, p.catalog.names)
    for r in _run(p, _stream(devices=1, n=80)):
        metrics.record_batch(r, p.integrity.take_events(), 0.01)
    assert registry.get_sample_value("telemon_readings_total", {"sensor": "flow"}) == 80
    text = generate_latest(registry).decode()
    assert 'telemon_anomaly_score_bucket{le="+Inf",sensor="current"}' in text


# --- producers and evaluation -----------------------------------------------------------------


def test_producers_encode_declared_channels_for_the_catalog_they_are_given() -> None:
    sample = Sample("d1", "current", TS, {"value": 1.5})
    rejected = Sequencer().encode(sample)
    assert isinstance(rejected, Rejection) and rejected.reason is Reason.UNKNOWN_SENSOR
    raw = Sequencer(catalog=_catalog()).encode(sample)
    assert isinstance(raw, bytes) and b'"unit":"A"' in raw


def test_a_replay_mapping_maps_columns_to_declared_channels(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "timestamp: {column: t, format: epoch_s}\ndevice: {id: pump-1}\n"
        "sensors:\n  flow: {columns: {in: a, out: b}}\n  current: {columns: {value: c}}\n"
    )
    assert set(load_mapping(path, _catalog()).sensors) == {"flow", "current"}
    with pytest.raises(ReplayError, match=r"sensors\.flow: not a sensor the monitor knows"):
        load_mapping(path)


def test_evaluate_scores_a_series_as_a_declared_channel_and_refuses_a_vector_one() -> None:
    rules = parse_rules(RULES, sensors=_catalog().names)
    rng = np.random.default_rng(1)
    values = (2.0 + rng.normal(0, 3e-4, 300)).tolist()
    series = [Series("pump", [TS + i * 1000 for i in range(300)], values)]
    replay = replay_series(_settings(), rules, series, "current")
    assert len(replay.trace) == 300 and {s.sensor for s in replay.trace} == {"current"}
    with pytest.raises(LabelledInputError, match="'flow' has the axes in, out"):
        replay_series(_settings(), rules, series, "flow")
    with pytest.raises(LabelledInputError, match="'voltage' is not monitored"):
        replay_series(_settings(), rules, series, "voltage")
