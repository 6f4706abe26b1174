"""Cohort labels of devices (``cohorts_file``) and of declared channels (``labels``): validation,
the labels of a (device, channel) pair, a label of both refused, and cohort rules, cohort groups
and River tiers grouping pairs by a channel label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor import schema
from monitor.detect.cohorts import CohortLabels
from monitor.errors import CohortsError, ConfigError
from monitor.govern.rules import parse_rules
from monitor.pipeline import BatchResult, Pipeline
from monitor.settings import Settings, load_settings
from tests.unit.test_kernel import _outputs
from tests.unit.test_pipeline import FakeMessage

TS = 1_700_000_000_000
CURRENT = {"name": "current", "unit": "A", "low": 0.0, "high": 50.0, "resolution": 1e-4}
FLOW = {"name": "flow", "unit": "l/min", "low": -500, "high": 500, "resolution": 0.01, "axes": ["in", "out"]}
#: Two channels of two vendors; the built-in kinds carry no label.
LABELLED = {
    "declare": [
        CURRENT | {"labels": {"vendor": "acme"}},
        FLOW | {"labels": {"vendor": "bosch", "mount": "pipe"}},
    ]
}
COHORT_RULES = """
rules:
  - {name: by_vendor, scope: cohort, cohort: vendor, for: 1, when: {signal: readings, op: ">", value: 0}}
  - {name: by_firmware, scope: cohort, cohort: firmware, for: 1, when: {signal: readings, op: ">", value: 0}}
"""


def _settings(
    tmp_path: Path, cohorts: str = "", channels: dict[str, Any] = LABELLED, **extra: Any
) -> Settings:
    path = tmp_path / "cohorts.yaml"
    path.write_text(cohorts or "dev-0: {firmware: '1.0'}\ndev-1: {firmware: '2.0'}\n")
    drift = {"fleet_reference_size": 100, "fleet_window_size": 100, "fleet_check_every": 20}
    return load_settings(None, channels=channels, cohorts_file=str(path), drift=drift, **extra)


# --- settings -------------------------------------------------------------------------------------


def test_channel_labels_load_as_pairs_and_keep_the_settings_hashable() -> None:
    s = load_settings(None, channels=LABELLED)
    assert s.channels.declare[1].labels == (("mount", "pipe"), ("vendor", "bosch"))
    assert s.channels.labels() == {
        "current": {"vendor": "acme"},
        "flow": {"mount": "pipe", "vendor": "bosch"},
    }
    assert s.channels.catalog().names[-2:] == ("current", "flow")  # the catalog is cached by hash
    assert load_settings(None, channels={"declare": [CURRENT]}).channels.labels() == {}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"firmware": 2}, r"label firmware: the value 2 is not a string \(quote it: \"2\"\)"),
        ({"Vendor": "acme"}, r"label 'Vendor' must match \[a-z\]"),
        ({"vendor": ""}, "label vendor: the value must be 1 to 64 characters"),
        ({"vendor": "a\nb"}, "label vendor: .* none a control character"),
        (["vendor"], "a mapping of label to value"),
        ([["vendor", "a"], ["vendor", "b"]], "a label is given twice"),
    ],
)
def test_a_bad_channel_label_is_a_config_error_at_its_key(labels: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"channels\.declare\.0\.labels: " + message):
        load_settings(None, channels={"declare": [CURRENT | {"labels": labels}]})


def test_channel_labels_from_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "monitor.yaml"
    path.write_text(
        "channels:\n  declare:\n    - {name: current, unit: A, low: 0, high: 50, resolution: 0.0001,\n"
        "       labels: {vendor: acme, rev: '2'}}\n"
    )
    assert load_settings(path).channels.labels() == {"current": {"rev": "2", "vendor": "acme"}}
    path.write_text(path.read_text().replace("'2'", "2"))
    with pytest.raises(ConfigError, match=r"monitor.yaml:\d+:\d+: channels.declare.0.labels: label rev"):
        load_settings(path)


# --- a pair's labels ------------------------------------------------------------------------------


def test_a_pair_carries_its_device_s_labels_and_its_channel_s(tmp_path: Path) -> None:
    s = _settings(tmp_path, "dev-0: {firmware: '1.0', site: a}\n")
    catalog = s.channels.catalog()
    labels = CohortLabels.load(s.cohorts_file, s.channels.labels(), catalog)
    flow, temperature = catalog.index["flow"], catalog.index["temperature"]
    assert labels.pair("dev-0", flow) == {"firmware": "1.0", "site": "a", "mount": "pipe", "vendor": "bosch"}
    assert labels.pair("dev-0", temperature) == {"firmware": "1.0", "site": "a"}
    assert labels.pair("dev-9", flow) == {"mount": "pipe", "vendor": "bosch"}  # not in the file
    assert labels.channel_cohorts("vendor") == (
        ("vendor=acme", frozenset({catalog.index["current"]})),
        ("vendor=bosch", frozenset({flow})),
    )
    assert labels.channel_cohorts("firmware") == ()
    assert labels.values("vendor") == {"acme", "bosch"} and labels.values("firmware") == {"1.0"}


def test_a_label_of_devices_and_channels_both_is_refused_at_start_up(tmp_path: Path) -> None:
    s = _settings(tmp_path, "dev-0: {firmware: '1.0'}\ndev-1: {vendor: other}\n")
    with pytest.raises(CohortsError, match=r"cohorts.yaml: dev-1: label 'vendor' is also a label of channel"):
        Pipeline(s, parse_rules(COHORT_RULES, sensors=s.channels.catalog().names))


# --- the pipeline ---------------------------------------------------------------------------------


def _stream(devices: int = 3, n: int = 120, co2: bool = False) -> list[FakeMessage]:
    """Each device's current, flow and temperature, one a second each, Gaussian noise; with
    ``co2`` also a reading of ``co2``, a channel nobody declares (ppm)."""
    catalog = load_settings(None, channels=LABELLED).channels.catalog()
    rng, out, seq = np.random.default_rng(5), [], 0
    for _ in range(n):
        for d in range(devices):
            for sensor, values in (
                ("current", {"value": 2.0 + rng.normal(0, 0.01)}),
                ("flow", {"in": 100 + rng.normal(0, 0.5), "out": 99 + rng.normal(0, 0.5)}),
                ("temperature", {"value": 20 + rng.normal(0, 0.1)}),
                *((("co2", {"value": 410 + rng.normal(0, 1.0)}),) if co2 else ()),
            ):
                seq += 1
                dev = f"dev-{d}"
                unit = "ppm" if sensor == "co2" else None
                raw = schema.encode_reading(dev, sensor, TS + seq * 1000, seq, values, unit, catalog)
                out.append(FakeMessage(raw, dev.encode(), d % 2, seq, TS + seq * 1000))
    return out


def _run(p: Pipeline, msgs: list[FakeMessage], batch: int = 100) -> list[BatchResult]:
    return [p.process(msgs[i : i + batch]) for i in range(0, len(msgs), batch)]


def test_a_cohort_rule_on_a_channel_label_groups_that_label_s_channels(tmp_path: Path) -> None:
    """``cohort: vendor`` keys its evaluations ``vendor=acme`` for the current and ``vendor=bosch``
    for the flow, over every device; the device label's cohorts take every sensor as before."""
    s = _settings(tmp_path)
    p = Pipeline(s, parse_rules(COHORT_RULES, sensors=s.channels.catalog().names))
    firing = {
        (a.rule, a.device_id, a.sensor) for r in _run(p, _stream()) for a in r.alerts if a.status == "firing"
    }
    assert {f for f in firing if f[0] == "by_vendor"} == {
        ("by_vendor", "vendor=acme", "current"),
        ("by_vendor", "vendor=bosch", "flow"),
    }
    assert {f for f in firing if f[0] == "by_firmware"} == {
        ("by_firmware", f"firmware={v}", sensor)
        for v in ("1.0", "2.0")
        for sensor in ("current", "flow", "temperature")
    }
    index = p.catalog.index
    acme, bosch = p.cohort_groups["vendor=acme"], p.cohort_groups["vendor=bosch"]
    assert acme.n[index["current"]] == p.fleet.n[index["current"]] == 3 * (120 - 50)  # after warm-up
    assert acme.n[index["flow"]] == acme.n[index["temperature"]] == 0
    assert bosch.n[index["flow"]] == p.fleet.n[index["flow"]] and bosch.n[index["current"]] == 0
    assert p.cohort_groups["firmware=1.0"].n[index["temperature"]] == 120 - 50  # dev-0 only


def test_channel_label_cohorts_agree_between_the_paths_and_batch_sizes(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    rules, msgs, runs = parse_rules(COHORT_RULES, sensors=s.channels.catalog().names), _stream(), []
    for compiled, batch in ((True, 1), (False, 1), (True, 97), (False, 500)):
        p = Pipeline(s, rules, trace=True, compiled=compiled)
        runs.append(_outputs(_run(p, msgs, batch)))
    assert runs[0] == runs[1] == runs[2] == runs[3]
    assert runs[0][0]  # alerts


def test_a_river_tier_selects_pairs_by_a_channel_label(tmp_path: Path) -> None:
    trees = {"model": "river.anomaly.HalfSpaceTrees", "preprocessing": "minmax", "quantile": 0.99}
    tiers = [
        {"name": "bosch", **trees, "cohort": "vendor=bosch"},
        {"name": "by_firmware", **trees, "cohort": "firmware"},
    ]
    s = _settings(tmp_path, river={"tiers": tiers})
    p = Pipeline(s, parse_rules(COHORT_RULES, sensors=s.channels.catalog().names))
    assert p.river is not None
    names = p.catalog.names
    routes = {names[s]: r for s, r in enumerate(p.river.route("dev-1")) if r[0] >= 0}
    assert routes == {**{n: (1, "2.0") for n in names if n != "flow"}, "flow": (0, "bosch")}
    assert not [r for r in p.river.route("dev-7") if r[0] >= 0 and r[1] != "bosch"]  # no firmware


# --- channels registered on their first reading ---------------------------------------------------


def test_a_registered_channel_is_in_its_devices_cohorts_and_in_no_channel_label_s(tmp_path: Path) -> None:
    """With ``auto_register`` on, the declared channels keep their labels and ``co2``, registered
    on its first reading, has none: its pairs are in their devices' firmware cohorts only, both
    paths and any batch size agreeing."""
    s = _settings(tmp_path, channels=LABELLED | {"auto_register": 2})
    rules, msgs, runs = parse_rules(COHORT_RULES, sensors=s.channels.catalog().names), _stream(co2=True), []
    for compiled, batch in ((True, 1), (False, 1), (True, 97), (False, 500)):
        p = Pipeline(s, rules, trace=True, compiled=compiled)
        results = _run(p, msgs, batch)
        runs.append(_outputs(results))
    assert runs[0] == runs[1] == runs[2] == runs[3]
    index = p.catalog.index
    co2 = index["co2"]
    assert (p.catalog.names[-1], p.catalog.spare) == ("co2", 1)
    assert p.labels.pair("dev-0", co2) == {"firmware": "1.0"} and p.labels.pair("dev-9", co2) == {}
    assert p.labels.channel_cohorts("vendor") == (
        ("vendor=acme", frozenset({index["current"]})),
        ("vendor=bosch", frozenset({index["flow"]})),
    )
    firing = {(a.rule, a.device_id, a.sensor) for r in results for a in r.alerts if a.status == "firing"}
    assert {f for f in firing if f[2] == "co2"} == {
        ("by_firmware", "firmware=1.0", "co2"),
        ("by_firmware", "firmware=2.0", "co2"),
    }
    assert p.cohort_groups["firmware=1.0"].n[co2] == 120 - 50  # dev-0's, after warm-up
    assert p.cohort_groups["vendor=acme"].n[co2] == p.cohort_groups["vendor=bosch"].n[co2] == 0
    assert p.fleet.n[co2] == 3 * (120 - 50)


def test_a_river_tier_routes_a_registered_channel_by_its_device_s_labels(tmp_path: Path) -> None:
    trees = {"model": "river.anomaly.HalfSpaceTrees", "preprocessing": "minmax", "quantile": 0.99}
    tiers = [
        {"name": "bosch", **trees, "cohort": "vendor=bosch"},
        {"name": "by_firmware", **trees, "cohort": "firmware"},
    ]
    s = _settings(tmp_path, channels=LABELLED | {"auto_register": 2}, river={"tiers": tiers})
    p = Pipeline(s, parse_rules(COHORT_RULES, sensors=s.channels.catalog().names))
    assert p.river is not None
    _run(p, _stream(n=5, co2=True))
    co2 = p.catalog.index["co2"]
    assert p.river.route("dev-1")[co2] == (1, "2.0") and p.river.route("dev-7")[co2] == (-1, "")
    assert p.river.route("dev-1")[p.catalog.index["flow"]] == (0, "bosch")
