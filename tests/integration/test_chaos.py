"""Chaos, short variants (``scripts/chaos`` runs the long ones): the monitor killed, churned, cut
off from its broker and from Alertmanager, the broker crashed and restarted, always compared with
a fault-free run of the same seeded stream (the oracle, one per stream, shared through module
fixtures).

Each test asserts the invariants one by one; a failure message carries the experiment's figures.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.settings import KafkaSettings
from producers.scenario import Scenario
from tests import brokers
from tests import chaos_harness as chaos
from tests.apache_kafka import ApacheKafka

pytestmark = pytest.mark.integration


@dataclass
class Stream:
    kafka: KafkaSettings
    source: Scenario
    expected: chaos.Offsets
    oracle: chaos.Run
    workdir: Path


@pytest.fixture(scope="module")
def stream(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """6 devices, 4 simulated minutes (40k readings, a planted drift), and their oracle."""
    workdir = tmp_path_factory.mktemp("chaos")
    kafka = chaos.stream_settings(broker.bootstrap_servers, "ci-chaos")
    source = chaos.scenario(devices=6, duration_s=240)
    expected = chaos.publish(kafka, source)
    return Stream(kafka, source, expected, chaos.run_oracle(kafka, workdir, expected), workdir)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chaos.OutageBench]:
    """An Apache Kafka of its own behind a relay (the outages and crashes must not touch the
    session's), two streams, their oracle."""
    workdir = tmp_path_factory.mktemp("outage")
    with chaos.RelayedBroker(workdir / "kafka") as broker:
        brokers.started.append(broker.describe())
        yield chaos.outage_bench(broker, workdir, devices=4, duration_s=120)


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """A failed experiment leaves no monitor process behind."""
    yield
    chaos.reap()


def assert_like_oracle(c: chaos.Comparison, report: str) -> None:
    assert c.lost == 0, f"{c.lost} readings lost\n{report}"
    assert not c.devices_differing, f"device states differ from the oracle's\n{report}"
    assert not c.alerts_missing, f"alert records missing\n{report}"
    assert not c.alerts_extra, f"alert records the oracle does not have\n{report}"


def test_kill_9_three_times_loses_nothing(stream: Stream) -> None:
    c = chaos.kill_experiment(
        stream.kafka, stream.workdir, stream.oracle, stream.expected, kills=3, rng=random.Random(1)
    )
    assert_like_oracle(c, "\n".join(c.lines()))


def test_kill_9_under_exactly_once_delivers_every_alert_once(stream: Stream) -> None:
    c = chaos.kill_experiment(
        stream.kafka,
        stream.workdir,
        stream.oracle,
        stream.expected,
        kills=3,
        rng=random.Random(1),
        env=chaos.EXACTLY_ONCE,
    )
    report = "\n".join(c.lines())
    assert_like_oracle(c, report)
    assert c.alert_records == c.alert_ids, f"alert records delivered twice (read committed)\n{report}"


def test_replicas_joining_leaving_and_killed_lose_nothing(stream: Stream) -> None:
    c = chaos.replica_experiment(
        stream.kafka,
        stream.workdir,
        stream.oracle,
        stream.source,
        stream.expected,
        actions=4,
        rng=random.Random(2),
        feed_s=12,
    )
    assert_like_oracle(c, "\n".join(c.lines()))


def test_scaling_out_and_in_without_a_shared_folder_keeps_state_equal(stream: Stream) -> None:
    c = chaos.scale_experiment(
        stream.kafka, stream.workdir, stream.oracle, stream.source, stream.expected, feed_s=15
    )
    assert_like_oracle(c, "\n".join(c.lines()))


@pytest.mark.parametrize("kind", ["sigstop", "restart"])
def test_broker_outage_degrades_then_resumes_and_loses_nothing(bench: chaos.OutageBench, kind: str) -> None:
    o = chaos.broker_experiment(bench, kind, outage_s=8)
    report = "\n".join(o.lines())
    assert o.live_throughout, f"/healthz failed or the process died during the outage\n{report}"
    assert o.degraded_after_s is not None, f"/readyz never reported degraded\n{report}"
    # Resuming within chaos.RESUME_LIMIT_S is a timing figure: scripts/chaos checks and prints it.
    assert o.exit_code == 0, f"SIGTERM after the outage did not exit 0\n{report}"
    assert_like_oracle(o.comparison, report)


def test_broker_killed_and_restarted_loses_nothing_acknowledged(bench: chaos.OutageBench) -> None:
    c = chaos.crash_experiment(bench, kills=1, down_s=3, feed_s=30, rng=random.Random(4))
    report = "\n".join(c.lines())
    assert c.kills == 1, f"the stream was in before the broker was killed\n{report}"
    assert c.lost == 0, f"acknowledged messages missing from the topic\n{report}"
    assert c.duplicates == 0, f"the idempotent producer wrote messages twice\n{report}"
    assert c.exit_code == 0, f"SIGTERM after the crash did not exit 0\n{report}"
    assert_like_oracle(c.comparison, report)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_alert_sink_down_holds_offsets_then_delivers(
    broker: ApacheKafka, tmp_path: Path, guarantee: str
) -> None:
    """Under exactly_once too: Alertmanager is outside the transaction, so the alerts must reach
    it before the batch's offsets are committed with the transaction."""
    s = chaos.under(guarantee, lambda: chaos.sink_experiment(broker.bootstrap_servers, tmp_path, down_s=3))()
    report = "\n".join(s.lines())
    assert s.degraded_after_s is not None, f"/readyz never reported degraded\n{report}"
    assert s.planted_held, f"the planted drift's alert was not the one held back\n{report}"
    past = [alert for alert, (offset, committed) in s.held.items() if committed > offset]
    assert s.held and not past, f"committed past undelivered alert records {past}\n{report}"
    assert s.in_alertmanager[0] == s.in_alertmanager[1], f"alerts missing in Alertmanager\n{report}"
    assert s.exit_code == 0, f"SIGTERM after the outage did not exit 0\n{report}"
    assert_like_oracle(s.comparison, report)
