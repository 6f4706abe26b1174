"""A fleet that spans replicas, live (``fleet.span``): one ``telemon run`` and three in one group, on
Apache Kafka, over the same seeded fleet whose every device's temperature steps up at one moment.
The fleet rule fires once, with one alert id, in both cases, and at the same window: each replica
publishes the partial aggregates of its partitions, every replica merges them, and only the owner
of readings partition 0 alerts.

The stream is published in slices of event time, each once the group consumed the one before, as a
live fleet's readings come (a backlog read at once would let one replica run ahead of another by
more than ``fleet.lateness_s``)."""

from __future__ import annotations

import itertools
import json
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from monitor.govern.alerts import Alert
from monitor.settings import KafkaSettings
from producers.scenario import Scenario, load_scenario
from tests.apache_kafka import ApacheKafka
from tests.chaos_harness import ROOT, Feed, Proc, Run, probe, reap, stream_settings
from tests.conftest import AlertmanagerProcess, Samples, scrape, total
from tests.unit.test_fleet_span import FLEET_RULE

pytestmark = pytest.mark.integration

DEVICES, SECONDS, DRIFT_S, SLICE_S = 12, 600, 360, 30
_names = itertools.count()


def fleet_scenario() -> Scenario:
    """12 devices for 10 minutes; at 6 minutes every device's temperature steps up by 3 degC."""
    events = [
        {"kind": "abrupt_shift", "device": d, "sensor": "temperature", "start_s": DRIFT_S, "magnitude": 3.0}
        for d in range(DEVICES)
    ]
    return load_scenario(
        ROOT / "configs/scenarios/demo.yaml",
        devices=DEVICES,
        duration_s=SECONDS,
        seed=5,
        events=events,
        malformed=0,
        rates_hz={"accelerometer": 1, "gyroscope": 1, "magnetometer": 1},
    )


@dataclass
class Outcome:
    alerts: list[Alert]
    samples: list[Samples]  # each replica's /metrics at the end
    start_ts: int
    seconds: float  # wall time from the first slice to the last merged partial
    active: set[str]  # the ids of the run's alerts Alertmanager holds as active at the end


def active(am: AlertmanagerProcess, ids: set[str]) -> set[str]:
    """Which of the alert ids ``ids`` Alertmanager holds as active (firing, not resolved)."""
    with urllib.request.urlopen(f"{am.url}/api/v2/alerts", timeout=5) as resp:
        listed: list[dict[str, Any]] = json.loads(resp.read())
    return {a["labels"]["alert_id"] for a in listed if a["labels"].get("alert_id") in ids}


def firing_at_the_end(records: list[Alert]) -> set[str]:
    """The alert ids whose last record is a firing one."""
    last = {a.alert_id: a.status for a in records}
    return {i for i, status in last.items() if status == "firing"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.3)


def leaders(ports: list[int]) -> int:
    """Replicas ready and saying they lead the merged view (-1 while any is not ready)."""
    if any(probe(p, "/readyz")[0] != 200 for p in ports):
        return -1
    return int(sum(total(scrape(p), "telemon_fleet_span_leader") for p in ports))


def published(samples: Samples) -> float:
    return total(samples, "telemon_fleet_span_records_total", outcome="published")


def fleet_records(kafka: KafkaSettings, topic: str) -> int:
    """The records of the one-partition fleet topic, read committed (transaction markers and
    aborted records take offsets, so its end offset is no count)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "fleet-span-probe"})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    n = 0
    try:
        while batch := c.consume(1000, 1.0):
            n += sum(m.error() is None for m in batch)
    finally:
        c.close()
    return n


def run_replicas(
    broker: ApacheKafka, am: AlertmanagerProcess, workdir: Path, replicas: int, kill_leader_at_s: int = 0
) -> Outcome:
    """``replicas`` replicas over the stream, alerting to ``am`` too; with ``kill_leader_at_s``,
    the leader is killed (-9) once the group has consumed that much of the stream's event time."""
    source = fleet_scenario()
    kafka = stream_settings(broker.bootstrap_servers, f"span{replicas}x{next(_names)}")
    (workdir / "rules.yaml").write_text(FLEET_RULE)
    env = {
        "TELEMON_RULES_FILE": str(workdir / "rules.yaml"),
        "TELEMON_FLEET__SPAN": "true",
        "TELEMON_FLEET__WINDOW_S": "30",
        "TELEMON_FLEET__LATENESS_S": "60",
        "TELEMON_DRIFT__FLEET_REFERENCE_SIZE": "1000",
        "TELEMON_DRIFT__FLEET_WINDOW_SIZE": "1000",
        "TELEMON_FEEDBACK__ENABLED": "false",
        "TELEMON_CONSUME__BATCH_SIZE": "500",
        "TELEMON_ALERTS__ALERTMANAGER_URL": am.url,
    }
    feed, run = Feed(kafka, source), Run(kafka, workdir, env=env)
    procs: list[Proc] = []
    ports: list[int] = []
    try:
        for i in range(replicas):  # one transactional id each (they share a state folder)
            run.env["TELEMON_PROCESSING__TRANSACTIONAL_ID"] = f"{run.name}-{i}"
            procs.append(run.start())
            ports.append(run.port)
        wait_for(lambda: leaders(ports) == 1, "every replica ready, one leading", 180)
        began = time.monotonic()
        for t in range(SLICE_S, SECONDS + SLICE_S, SLICE_S):
            ends = feed.send(until_ts=source.start_ts + t * 1000 - 1)
            run.wait_committed(ends, timeout=120)
            if t == kill_leader_at_s:
                leader = [total(scrape(p), "telemon_fleet_span_leader") for p in ports].index(1)
                procs.pop(leader).kill()
                ports.pop(leader)
                wait_for(lambda: leaders(ports) == 1, "a survivor leading", 60)

        def merged_everything() -> bool:
            """Every replica read the fleet topic to its end (partials and acknowledgements)."""
            end = fleet_records(kafka, run.kafka.fleet_topic)
            samples = [scrape(p) for p in ports]
            return all(total(s, "telemon_fleet_span_records_total") - published(s) == end for s in samples)

        wait_for(merged_everything, "every replica merged every partial", 60)
        seconds = time.monotonic() - began
        records = run.alerts()
        expected = firing_at_the_end(records)
        wait_for(lambda: active(am, {a.alert_id for a in records}) == expected, "Alertmanager's alerts", 30)
        samples = [scrape(p) for p in ports]
        for proc in procs:  # all at once: one stopping does not hand its partitions to another stopping
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(60) for proc in procs] == [0] * len(procs), f"a replica failed: see {run.log}"
        return Outcome(records, samples, source.start_ts, seconds, active(am, {a.alert_id for a in records}))
    finally:
        reap()


@pytest.fixture(scope="module")
def outcomes(
    broker: ApacheKafka, alertmanager: AlertmanagerProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Outcome]:
    return {n: run_replicas(broker, alertmanager, tmp_path_factory.mktemp(f"span{n}"), n) for n in (1, 3)}


def test_the_leader_killed_before_the_drift_its_successor_alerts_once(
    broker: ApacheKafka, alertmanager: AlertmanagerProcess, tmp_path: Path
) -> None:
    out = run_replicas(broker, alertmanager, tmp_path, 3, kill_leader_at_s=DRIFT_S - 2 * SLICE_S)
    firing = [a for a in out.alerts if a.status == "firing"]
    assert [(a.rule, a.device_id, a.sensor) for a in firing] == [("fleet_score_drift", "*", "temperature")]
    drift_ts = out.start_ts + DRIFT_S * 1000
    assert drift_ts < firing[0].ts <= drift_ts + 6 * 30_000
    assert {a.alert_id for a in out.alerts} == {firing[0].alert_id}


@pytest.mark.parametrize("replicas", [1, 3])
def test_the_fleet_wide_drift_fires_once(outcomes: dict[int, Outcome], replicas: int) -> None:
    out = outcomes[replicas]
    firing = [a for a in out.alerts if a.status == "firing"]
    assert [(a.rule, a.scope, a.device_id, a.sensor) for a in firing] == [
        ("fleet_score_drift", "fleet", "*", "temperature")
    ]
    drift_ts = out.start_ts + DRIFT_S * 1000
    assert drift_ts < firing[0].ts <= drift_ts + 6 * 30_000  # three windows of 30 s hold, then it fires
    assert {a.alert_id for a in out.alerts} == {firing[0].alert_id}
    assert sum(total(s, "telemon_fleet_span_leader") for s in out.samples) == 1
    assert all(total(s, "telemon_fleet_span_late_scores_total") == 0 for s in out.samples)
    assert sum(published(s) for s in out.samples) > 0
    # The leader counted and posted them: once in the counters, once in Alertmanager.
    counted = sum(total(s, "telemon_alerts_total", rule="fleet_score_drift") for s in out.samples)
    assert counted == len(out.alerts)
    assert out.active == firing_at_the_end(out.alerts)


def test_one_replica_and_three_alert_at_the_same_window(outcomes: dict[int, Outcome]) -> None:
    one, three = ([a for a in outcomes[n].alerts if a.status == "firing"] for n in (1, 3))
    # Each run has its own stream (the same scenario) and start time: compare event times.
    assert [(a.ts - outcomes[1].start_ts, a.signals["devices"]) for a in one] == [
        (a.ts - outcomes[3].start_ts, a.signals["devices"]) for a in three
    ]
    for n, out in outcomes.items():
        samples = out.samples
        records = sum(published(s) for s in samples)
        size = sum(total(s, "telemon_fleet_span_published_bytes_total") for s in samples)
        print(
            f"{n} replica(s): {records:.0f} partials, {size / records:.0f} bytes each, "
            f"{records / out.seconds:.1f} records/s over {out.seconds:.1f}s"
        )
