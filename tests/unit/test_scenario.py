"""Scenario files: loading, validation errors that name the file and key, ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import ValidationError

from monitor.schema import SENSOR_NAMES
from producers.scenario import (
    DEFAULT_START_TS,
    Scenario,
    ScenarioError,
    SensorName,
    load_scenario,
    truth_records,
)
from producers.simulate import starting_now

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"
EVENT_KINDS = {
    "gradual_drift",
    "abrupt_shift",
    "spike_burst",
    "stuck_at",
    "variance_increase",
    "dropout",
    "sampling_rate_change",
    "saturation",
    "calibration_offset",
    "clock_skew",
    "duplicate_messages",
    "out_of_order",
    "unit_change",
    "reboot",
}


def _write(tmp_path: Path, data: Any, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _base(**extra: Any) -> dict[str, Any]:
    return {"seed": 1, "devices": 4, "duration_s": 60} | extra


def _event(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "abrupt_shift",
        "device": 1,
        "sensor": "pressure",
        "start_s": 10,
        "magnitude": 2.0,
    } | extra


def test_sensor_name_literal_matches_the_wire_format() -> None:
    assert set(get_args(SensorName)) == set(SENSOR_NAMES)


def test_demo_scenario_is_the_documented_one() -> None:
    s = load_scenario(SCENARIOS / "demo.yaml")
    assert (s.name, s.seed, s.devices, s.duration_s, s.malformed) == ("demo", 7, 20, 720, 12)
    [drift] = truth_records(s)
    assert drift["kind"] == "abrupt_shift"
    assert (drift["device_id"], drift["sensor"]) == ("dev-0007", "temperature")
    assert drift["start_ts"] == s.start_ts + 300_000
    assert drift["params"]["magnitude"] == 8.0


def test_library_has_every_kind_on_distinct_devices() -> None:
    s = load_scenario(SCENARIOS / "library.yaml")
    records = truth_records(s)
    assert {r["kind"] for r in records} == EVENT_KINDS
    assert len({r["device_id"] for r in records}) == len(records)


def test_defaults_and_device_ids() -> None:
    s = Scenario(seed=0, devices=3, duration_s=1.5)
    assert s.start_ts == DEFAULT_START_TS
    assert s.device_ids() == ["dev-0000", "dev-0001", "dev-0002"]
    assert s.end_ts == DEFAULT_START_TS + 1500
    assert s.rate_hz("accelerometer") == 10.0
    assert (
        Scenario(seed=0, devices=1, duration_s=1, rates_hz={"accelerometer": 50}).rate_hz("accelerometer")
        == 50
    )


def test_scenario_is_frozen() -> None:
    s = Scenario(seed=0, devices=3, duration_s=1.5)
    with pytest.raises(ValidationError):
        s.devices = 4  # type: ignore[misc]


def test_device_by_id_equals_device_by_index() -> None:
    by_index = Scenario.model_validate(_base(events=[_event(device=2)]))
    by_id = Scenario.model_validate(_base(events=[_event(device="dev-0002")]))
    assert truth_records(by_index) == truth_records(by_id)


def test_truth_record_spans() -> None:
    s = Scenario.model_validate(
        _base(
            name="spans",
            events=[
                _event(),  # permanent shift
                _event(duration_s=5.0),
                {"kind": "dropout", "device": 0, "sensor": "humidity", "start_s": 50, "duration_s": 30},
                {
                    "kind": "gradual_drift",
                    "device": 3,
                    "sensor": "temperature",
                    "start_s": 1,
                    "duration_s": 5,
                    "magnitude": 1.0,
                },
            ],
        )
    )
    drift, permanent, transient, clipped = truth_records(s)  # ordered by start
    assert (drift["start_ts"], drift["end_ts"]) == (s.start_ts + 1000, s.end_ts)  # drift stays
    assert (permanent["start_ts"], permanent["end_ts"]) == (s.start_ts + 10_000, s.end_ts)
    assert (transient["start_ts"], transient["end_ts"]) == (s.start_ts + 10_000, s.start_ts + 15_000)
    assert clipped["end_ts"] == s.end_ts
    assert permanent == {
        "kind": "abrupt_shift",
        "device_id": "dev-0001",
        "sensor": "pressure",
        "start_ts": s.start_ts + 10_000,
        "end_ts": s.end_ts,
        "params": {"magnitude": 2.0},
        "scenario": "spans",
    }


def test_every_new_kind_has_one_truth_record_with_its_params() -> None:
    def ev(kind: str, device: int, sensor: str, **params: Any) -> dict[str, Any]:
        return {"kind": kind, "device": device, "sensor": sensor, "start_s": 10 + device} | params

    s = Scenario.model_validate(
        _base(
            devices=8,
            events=[
                ev("sampling_rate_change", 0, "accelerometer", factor=0.1, duration_s=20),
                ev("saturation", 1, "humidity", limit=60.0),
                ev("calibration_offset", 2, "pressure", magnitude=2.5),
                ev("clock_skew", 3, "temperature", skew_s=600),
                ev("duplicate_messages", 4, "magnetometer", probability=0.2, duration_s=5),
                ev("out_of_order", 5, "gyroscope", probability=0.1),
                ev("unit_change", 6, "temperature", factor=1.8, offset=32),
                ev("reboot", 7, "humidity"),
            ],
        )
    )
    records = {r["kind"]: r for r in truth_records(s)}
    assert len(records) == 8
    assert records["sampling_rate_change"]["params"] == {"factor": 0.1, "duration_s": 20}
    assert records["sampling_rate_change"]["end_ts"] == s.start_ts + 30_000
    assert records["saturation"]["params"] == {"limit": 60.0, "side": "upper"}
    assert records["calibration_offset"]["params"] == {"magnitude": 2.5}
    assert records["clock_skew"]["params"] == {"skew_s": 600}
    assert records["duplicate_messages"]["end_ts"] == s.start_ts + 19_000
    assert records["out_of_order"]["params"] == {"probability": 0.1}
    assert records["unit_change"]["params"] == {"factor": 1.8, "offset": 32}
    reboot = records["reboot"]
    assert (reboot["device_id"], reboot["sensor"], reboot["params"]) == ("dev-0007", "humidity", {})
    assert (reboot["start_ts"], reboot["end_ts"]) == (s.start_ts + 17_000, s.end_ts)
    for kind in ("calibration_offset", "clock_skew", "out_of_order", "unit_change", "saturation"):
        assert records[kind]["end_ts"] == s.end_ts  # permanent


def test_name_defaults_to_file_stem_and_overrides_apply(tmp_path: Path) -> None:
    path = _write(tmp_path, _base(), "night_shift.yaml")
    s = load_scenario(path, devices=9, start_ts=1_800_000_000_000)
    assert (s.name, s.devices, s.start_ts) == ("night_shift", 9, 1_800_000_000_000)


_BAD_NEW_EVENTS: list[tuple[dict[str, Any], list[str]]] = [
    (
        {"kind": "sampling_rate_change", "sensor": "gyroscope", "factor": 2},
        ["events.0.sampling_rate_change", "factor", "only slower sampling"],
    ),
    (
        {"kind": "sampling_rate_change", "sensor": "gyroscope", "factor": 0},
        ["events.0.sampling_rate_change", "factor: 0"],
    ),
    (
        {"kind": "sampling_rate_change", "sensor": "gyroscope", "factor": 0.5, "axis": "x"},
        ["events.0.sampling_rate_change", "axis", "whole readings"],
    ),
    ({"kind": "sampling_rate_change", "sensor": "gyroscope"}, ["sampling_rate_change.factor", "required"]),
    (
        {"kind": "saturation", "sensor": "humidity", "limit": 120},
        ["events.0.saturation", "limit", "outside"],
    ),
    (
        {"kind": "saturation", "sensor": "humidity", "limit": 50, "side": "top"},
        ["events.0.saturation.side", "upper", "lower"],
    ),
    (
        {"kind": "calibration_offset", "sensor": "pressure", "magnitude": 0},
        ["events.0.calibration_offset", "magnitude", "changes nothing"],
    ),
    (
        {"kind": "calibration_offset", "sensor": "pressure", "magnitude": 1, "duration_s": 5},
        ["events.0.calibration_offset.duration_s", "Extra inputs"],
    ),
    (
        {"kind": "calibration_offset", "sensor": "pressure", "magnitude": float("inf")},
        ["events.0.calibration_offset.magnitude", "finite"],
    ),
    (
        {"kind": "clock_skew", "sensor": "temperature", "skew_s": 0},
        ["clock_skew", "skew_s", "changes nothing"],
    ),
    ({"kind": "clock_skew", "sensor": "temperature", "skew_s": 1e6}, ["events.0.clock_skew.skew_s"]),
    (
        {"kind": "duplicate_messages", "sensor": "temperature", "probability": 0},
        ["events.0.duplicate_messages.probability", "greater than 0"],
    ),
    (
        {"kind": "out_of_order", "sensor": "temperature", "probability": 1.5},
        ["events.0.out_of_order.probability", "less than or equal to 1"],
    ),
    (
        {"kind": "unit_change", "sensor": "temperature", "factor": 1},
        ["events.0.unit_change", "factor", "changes nothing"],
    ),
    ({"kind": "unit_change", "sensor": "temperature", "factor": 0}, ["unit_change", "factor: 0"]),
    (
        {"kind": "reboot", "sensor": "humidity", "duration_s": 3},
        ["events.0.reboot.duration_s", "Extra inputs"],
    ),
]


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (_base(devcies=3), ["devcies", "Extra inputs"]),
        ({"devices": 3, "duration_s": 5}, ["seed", "Field required"]),
        (_base(devices=0), ["devices"]),
        (_base(rates_hz={"thermometer": 1}), ["rates_hz.thermometer"]),
        (_base(rates_hz={"humidity": 5000}), ["rates_hz.humidity"]),
        (_base(events=[_event(kind="melt")]), ["events.0", "melt"]),
        (_base(events=[_event(magnitude=None)]), ["events.0.abrupt_shift.magnitude"]),
        (_base(events=[_event(severity=3)]), ["events.0.abrupt_shift.severity", "Extra inputs"]),
        (_base(events=[_event(device=4)]), ["events.0.device", "not in the fleet"]),
        (_base(events=[_event(device="dev-12")]), ["events.0.device", "dev-0012"]),
        (_base(events=[_event(device="node-1")]), ["events.0.device", "prefix"]),
        (_base(events=[_event(start_s=60)]), ["events.0.start_s"]),
        (_base(events=[_event(axis="x")]), ["events.0.abrupt_shift", "axis", "scalar"]),
        (
            _base(
                events=[{"kind": "stuck_at", "device": 0, "sensor": "humidity", "start_s": 1, "value": 140}]
            ),
            ["events.0.stuck_at", "value", "outside"],
        ),
        (
            _base(
                events=[
                    {
                        "kind": "dropout",
                        "device": 0,
                        "sensor": "gyroscope",
                        "start_s": 1,
                        "duration_s": 2,
                        "axis": "x",
                    }
                ]
            ),
            ["events.0.dropout", "axis"],
        ),
        *[
            (_base(events=[{"device": 0, "start_s": 1} | event]), needles)
            for event, needles in _BAD_NEW_EVENTS
        ],
        (_base(device_prefix="dev 1"), ["device_prefix"]),
        (_base(start_ts=5), ["start_ts"]),
    ],
)
def test_bad_scenario_names_file_and_key(tmp_path: Path, data: dict[str, Any], needles: list[str]) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid scenario:")
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [("seed: [1\n", "invalid YAML"), ("- 1\n- 2\n", "top level must be a mapping"), ("", "top level")],
)
def test_unreadable_scenario_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=needle) as info:
        load_scenario(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.getcwd []\ndevices: 1\nduration_s: 1\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        load_scenario(path)


def test_a_paced_stream_starts_now_unless_the_file_sets_its_start() -> None:
    now = 1_796_400_000_000
    paced = starting_now(load_scenario(SCENARIOS / "demo.yaml"), now)  # its start_ts unset
    assert (paced.start_ts, paced.end_ts) == (now, now + round(paced.duration_s * 1000))
    assert truth_records(paced)[0]["start_ts"] == now + 300_000  # the drift from minute 5
    pinned = Scenario(seed=0, devices=1, duration_s=60, start_ts=DEFAULT_START_TS + 1000)
    assert starting_now(pinned, now).start_ts == DEFAULT_START_TS + 1000
