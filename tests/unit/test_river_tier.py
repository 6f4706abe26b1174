"""River tiers in the pipeline: settings, routing by sensor and cohort, signals, the compiled loop
equal to the Python path, batch-size independence, quarantine, memory accounting and refusal, and
per-device models through snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.errors import ConfigError
from monitor.evaluation.replay import ReplayMessage
from monitor.govern.rules import load_rules, parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.serve.metrics import Metrics
from monitor.settings import Settings, load_settings
from monitor.state import snapshot
from producers.scenario import load_scenario
from producers.simulate import iter_messages
from tests.unit.test_pipeline import DRIFT, MODEL, _gaussian_stream, _run
from tests.unit.test_snapshot import KEY, _snapshots, restored_against_oracle

ROOT = Path(__file__).resolve().parents[2]
HST = {"model": "river.anomaly.HalfSpaceTrees", "params": {"window_size": 50}, "preprocessing": "minmax"}
GAUSS = {"model": "river.anomaly.GaussianScorer", "params": {"grace_period": 20}}
SVM = {"model": "river.anomaly.OneClassSVM", "params": {"nu": 0.1}, "preprocessing": "standard"}
#: Fleet trees on two scalar kinds, a Gaussian per device on humidity, an SVM per device on the
#: accelerometer (three axes).
TIERS = [
    {"name": "trees", **HST, "sensors": ["temperature", "pressure"], "quantile": 0.99, "warmup": 100},
    {"name": "gauss", **GAUSS, "sensors": ["humidity"], "share": "device", "quantile": 0.99, "warmup": 50},
    {"name": "svm", **SVM, "sensors": ["accelerometer"], "share": "device", "quantile": 0.995, "warmup": 50},
]
RIVER_RULE = """
  - name: river_flags
    scope: device
    when: {signal: river_anomaly_rate, op: ">", value: 0.05}
    actions: [alert]
"""


def _settings(tiers: list[dict[str, Any]] = TIERS, **extra: Any) -> Settings:
    return load_settings(ROOT / "configs/monitor.yaml", river={"tiers": tiers}, **extra)


def _rules_text() -> str:
    return (ROOT / "configs/rules.yaml").read_text() + RIVER_RULE


def _messages(devices: int = 8, seconds: int = 400) -> list[ReplayMessage]:
    scenario = load_scenario(
        ROOT / "configs/scenarios/demo.yaml", seed=3, devices=devices, duration_s=seconds
    )
    return [ReplayMessage(k, v, ts, i) for i, (k, v, ts) in enumerate(iter_messages(scenario))]


def _outputs(p: Pipeline, results: list[BatchResult]) -> tuple[object, ...]:
    assert p.river is not None
    probe = {"value": 21.0}
    return (
        [(a.alert_id, a.status, a.rule, sorted(a.signals.items())) for r in results for a in r.alerts],
        [(e.kind, e.device_id, e.sensor, e.action) for r in results for e in r.audit],
        [t for r in results for t in r.trace],
        {name: arr.tolist() for name, arr in p.river.state.arrays.items()},
        {key: (m.n, m.score_one(probe)) for key, m in sorted(p.river.shared.items())},
        [[None if e is None else (e[0], e[1].n) for e in row] for row in p.river.state.models],
        np.sum([r.river_anomalies for r in results], axis=0).tolist(),
    )


def _process(compiled: bool, batch: int, msgs: list[ReplayMessage]) -> tuple[Pipeline, list[BatchResult]]:
    settings = _settings()
    p = Pipeline(settings, parse_rules(_rules_text()), trace=True, compiled=compiled)
    return p, [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


# --- the stream -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [97, 5000])
def test_the_kernel_and_the_python_path_agree_with_river_tiers(batch: int) -> None:
    msgs = _messages()[:25000]
    (kp, kernel), (pp, python) = _process(True, batch, msgs), _process(False, batch, msgs)
    assert _outputs(kp, kernel) == _outputs(pp, python)
    assert any(a.rule == "river_flags" for r in kernel for a in r.alerts)


def test_results_do_not_depend_on_the_batch_size() -> None:
    msgs = _messages()[:6000]
    runs = [_outputs(*_process(True, batch, msgs)) for batch in (1, 97, 5000)]
    assert runs[0] == runs[1] == runs[2]


def test_signals_appear_for_the_pairs_a_tier_scores_and_only_there() -> None:
    _, results = _process(True, 5000, _messages()[:40000])
    alerts = [a for r in results for a in r.alerts]
    covered = {"temperature", "pressure", "humidity", "accelerometer"}
    seen = {a.sensor for a in alerts if "river_readings" in a.signals}
    assert seen and seen <= covered
    assert all("river_readings" not in a.signals for a in alerts if a.sensor not in covered)
    flagged = [a.signals for a in alerts if a.rule == "river_flags" and a.status == "firing"]
    assert flagged and all(s["river_anomalies"] > 0 and "river_score" in s for s in flagged)
    for sig in flagged:  # alerts carry their signals rounded
        rate = sig["river_anomalies"] / sig["river_readings"]
        assert sig["river_anomaly_rate"] == pytest.approx(rate, abs=1e-3)


def test_flagged_readings_are_counted_per_sensor_in_the_metrics() -> None:
    p, results = _process(True, 5000, _messages()[:25000])
    registry = CollectorRegistry()
    metrics = Metrics(registry, sensors=p.catalog.names)
    for r in results:
        metrics.record_batch(r, np.zeros((len(p.catalog), 5), np.int64), 0.01)
    total = np.sum([r.river_anomalies for r in results], axis=0)
    index = p.catalog.index
    assert total[index["temperature"]] > 0 and total[index["gyroscope"]] == 0  # no tier on it
    for name in p.catalog.names:
        value = registry.get_sample_value("telemon_river_anomalies_total", {"sensor": name})
        assert value == total[index[name]]


def test_a_quarantined_device_is_scored_not_learned() -> None:
    own = {"sensors": ["temperature"], "share": "device", "quantile": 0.99, "protect": False, "warmup": 5}
    tiers = [{"name": "gauss", **GAUSS, **own}]
    stream = _gaussian_stream(100, devices=1)
    for compiled in (True, False):
        p = Pipeline(_settings(tiers, drift=DRIFT, model=MODEL), parse_rules("rules:" + RIVER_RULE))
        p.compiled = compiled
        p.process(stream[:50])
        assert p.river is not None
        slot, s = p.store.slots["dev-0"], p.catalog.index["temperature"]
        entry = p.river.state.models[slot][s]
        assert entry is not None and entry[0] == "gauss" and entry[1].n == 50
        p.govern_state.quarantined[slot] = 1
        p.process(stream[50:])
        assert entry[1].n == 50  # not learned ...
        since = int(p.detect_state.since_eval[slot, s])
        assert since > 0 and int(p.river.state.river_readings[slot, s]) == since  # ... but scored


# --- routing --------------------------------------------------------------------------------------


def test_tiers_route_by_sensor_and_cohort_first_match_wins(tmp_path: Path) -> None:
    cohorts = tmp_path / "cohorts.yaml"
    cohorts.write_text(
        "dev-0000: {firmware: '2.0'}\ndev-0001: {firmware: '1.0'}\ndev-0002: {firmware: '1.0'}\n"
    )
    tiers = [
        {
            "name": "new_firmware",
            **GAUSS,
            "sensors": ["temperature"],
            "cohort": "firmware=2.0",
            "quantile": 0.99,
        },
        {
            "name": "by_firmware",
            **GAUSS,
            "sensors": ["temperature", "pressure"],
            "cohort": "firmware",
            "quantile": 0.99,
        },
        {"name": "everyone", **GAUSS, "sensors": ["humidity"], "share": "device", "quantile": 0.99},
    ]
    p = Pipeline(_settings(tiers, cohorts_file=str(cohorts)), load_rules(ROOT / "configs/rules.yaml"))
    p.process(_messages()[:20000])
    assert p.river is not None
    names, index = p.catalog.names, p.catalog.index
    t, pr, h = index["temperature"], index["pressure"], index["humidity"]
    routes = {d: {names[s]: r for s, r in enumerate(p.river.route(d)) if r[0] >= 0} for d in p.store.slots}
    assert routes == {
        "dev-0000": {"temperature": (0, "2.0"), "pressure": (1, "2.0"), "humidity": (2, "")},
        "dev-0001": {"temperature": (1, "1.0"), "pressure": (1, "1.0"), "humidity": (2, "")},
        "dev-0002": {"temperature": (1, "1.0"), "pressure": (1, "1.0"), "humidity": (2, "")},
        **{f"dev-{i:04d}": {"humidity": (2, "")} for i in range(3, 8)},  # no label: the tier of all
    }
    assert set(p.river.shared) == {(0, t, "2.0"), (1, t, "1.0"), (1, pr, "1.0"), (1, pr, "2.0")}
    for slot in p.store.slots.values():
        kept = [(s, e[0]) for s, e in enumerate(p.river.state.models[slot]) if e is not None]
        assert kept == [(h, "everyone")]
        assert p.river.signals(slot, index["gyroscope"], p.store.device_ids[slot]) == {}


# --- memory ---------------------------------------------------------------------------------------


def test_per_device_models_shrink_the_device_cap() -> None:
    plain = Pipeline(load_settings(ROOT / "configs/monitor.yaml"), load_rules(ROOT / "configs/rules.yaml"))
    tiers = [{"name": "svm", **SVM, "share": "device", "quantile": 0.99}]
    p = Pipeline(_settings(tiers), load_rules(ROOT / "configs/rules.yaml"))
    assert p.river is not None
    fp = p.river.footprint()
    assert fp.shared == 0 and 6 * 2_000 < fp.per_device < 6 * 100_000  # six SVMs of a few KB each
    per_device = p.store.bytes_per_device() + fp.per_device
    assert p.max_devices == 1024 * 2**20 // per_device < plain.max_devices


def test_shared_models_come_off_the_budget_once() -> None:
    p = Pipeline(
        _settings([{"name": "trees", **HST, "quantile": 0.99}]), load_rules(ROOT / "configs/rules.yaml")
    )
    assert p.river is not None
    fp = p.river.footprint()
    assert 6 * 0.5e6 < fp.shared < 6 * 3e6 and fp.per_device == 0  # six HalfSpaceTrees, ~1.2 MB each
    assert p.max_devices == (1024 * 2**20 - fp.shared) // p.store.bytes_per_device()


def test_shared_models_over_the_budget_are_refused() -> None:
    tiers = [{"name": "trees", **HST, "quantile": 0.99}]
    with pytest.raises(
        ConfigError,
        match=r"shared models take .* MB \(trees: 6 shared model\(s\) of .* MB\), .*budget_mb \(4 MB\)",
    ):
        Pipeline(_settings(tiers, state={"memory_budget_mb": 4}), load_rules(ROOT / "configs/rules.yaml"))


def test_per_device_models_leaving_room_for_too_few_devices_are_refused() -> None:
    tiers = [{"name": "own_trees", **HST, "share": "device", "quantile": 0.99}]
    with pytest.raises(
        ConfigError,
        match=r"leaves room for \d+ devices, fewer than river.min_devices \(1000\).*own_trees: 6 per-device",
    ):
        Pipeline(_settings(tiers), load_rules(ROOT / "configs/rules.yaml"))
    ok = load_settings(ROOT / "configs/monitor.yaml", river={"tiers": tiers, "min_devices": 50})
    assert 50 <= Pipeline(ok, load_rules(ROOT / "configs/rules.yaml")).max_devices < 1000


def test_a_per_device_model_the_snapshots_cannot_restore_is_refused() -> None:
    tiers = [{"name": "loda", "model": "river.anomaly.LODA", "share": "device", "quantile": 0.99}]
    with pytest.raises(ConfigError, match=r"river tier loda: share: device .* allow-listed"):
        Pipeline(_settings(tiers), load_rules(ROOT / "configs/rules.yaml"))


# --- snapshots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [60, 230])
def test_per_device_models_survive_a_snapshot_round_trip(cut: int) -> None:
    """Stop, snapshot, restore elsewhere, go on: the same state and alerts as an uninterrupted run."""
    own = {"sensors": ["temperature"], "share": "device", "quantile": 0.98, "warmup": 30}
    tiers = [{"name": "own", **GAUSS, **own}]
    settings = _settings(tiers, drift=DRIFT, model=MODEL)
    rules = parse_rules("rules:" + RIVER_RULE)
    stream = _gaussian_stream(300, devices=4, shift_device=1)
    oracle_results, _, _ = restored_against_oracle(lambda: Pipeline(settings, rules), stream, cut * 4)
    assert any(a.rule == "river_flags" for r in oracle_results for a in r.alerts)


def test_a_restored_model_of_a_changed_tier_is_dropped() -> None:
    tiers = [{"name": "own", **GAUSS, "sensors": ["temperature"], "share": "device", "quantile": 0.98}]
    first = Pipeline(_settings(tiers, drift=DRIFT, model=MODEL), parse_rules("rules: []"))
    first.process(_gaussian_stream(60, devices=2))
    (snap,) = [s for s in _snapshots(first, {0: 60}) if s.partition == 0]
    changed = [{**tiers[0], "quantile": 0.9}]
    second = Pipeline(_settings(changed, drift=DRIFT, model=MODEL), parse_rules("rules: []"))
    second.import_partition(snapshot.decode(snapshot.encode(snap, KEY), KEY).state)
    assert second.river is not None
    assert all(e is None for row in second.river.state.models for e in row)


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "message"),
    [
        ({"model": "os.system"}, "'os.system' is not a River class"),
        ({"model": "river.anomaly.Nope"}, "River's river.anomaly has no Nope"),
        ({"model": "river.linear_model.LinearRegression"}, "not a River anomaly detector"),
        ({"model": "river.anomaly.QuantileFilter"}, "a filter: use the tier's quantile or threshold"),
        ({**HST, "params": {"trees": 3}}, r"river.anomaly.HalfSpaceTrees\(trees=3\): .*unexpected keyword"),
        ({**GAUSS, "threshold": 0.9}, "give one of quantile and threshold"),
        ({**GAUSS, "quantile": None}, "give one of quantile and threshold"),
        (
            {**GAUSS, "preprocessing": "minmax"},
            "scores the reading's value itself: preprocessing must be none",
        ),
        ({**GAUSS, "sensors": ["temprature"]}, "river.tiers.0.sensors: temprature not monitored"),
        ({**GAUSS, "sensors": ["gyroscope"]}, "gyroscope have several axes: name scalar sensors only"),
        ({**GAUSS, "share": "replica"}, "share"),
        ({**GAUSS, "cohort": "firmware=1=2"}, "cohort"),
    ],
)
def test_bad_tiers_are_clear_settings_errors(tier: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings([{"name": "t", "quantile": 0.99, **tier}])


def test_tier_names_are_unique() -> None:
    tier = {"name": "t", **GAUSS, "sensors": ["humidity"], "quantile": 0.99}
    with pytest.raises(ConfigError, match="the name t is used more than once"):
        _settings([tier, tier])


def test_the_shipped_config_has_one_shared_tier_and_its_rule() -> None:
    settings = load_settings(ROOT / "configs/river.yaml")
    (tier,) = settings.river.tiers
    assert tier.share == "fleet" and tier.model == "river.anomaly.HalfSpaceTrees"
    rules = load_rules(settings.rules_file, settings.channels.catalog().names)
    assert "river_outlier" in {r.name for r in rules.rules}
    defaults = load_rules(ROOT / "configs/rules.yaml")
    assert {r.name for r in defaults.rules} < {r.name for r in rules.rules}
    p = Pipeline(settings, rules)
    assert p.river is not None and p.max_devices > settings.river.min_devices


def test_without_tiers_nothing_is_added() -> None:
    p = Pipeline(load_settings(ROOT / "configs/monitor.yaml"), load_rules(ROOT / "configs/rules.yaml"))
    assert p.river is None
    assert not any(name.startswith("river") for slab in p.store.slabs for name in slab.arrays)
    results = _run(p, _gaussian_stream(100, devices=2), batch=50)
    assert all(not k.startswith("river") for r in results for a in r.alerts for k in a.signals)
