"""A pre-production run on a live stream: production runs the shipped rules, a shadow run of it
(`telemon run --shadow-of`) a rules change that removes one known alert and adds another, both on
the same seeded stream; `telemon compare` shows the added, the removed and the common alerts, the
precision operators' verdicts give each run, and their retrain decisions. The shadow writes no
production topic, posts nothing to Alertmanager, keeps its own registry (shared through its own
topics) and, under exactly_once, never fences production's transactional producer."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient

from monitor.analyze.feedback import Verdict, encode
from monitor.cli.broker import free_port
from monitor.cli.main import main as telemon
from monitor.govern import alerts
from monitor.report import topics
from monitor.serve import shadow
from monitor.serve.shadow import ShadowRun
from monitor.settings import KafkaSettings
from producers.scenario import load_scenario
from producers.simulate import simulate
from tests.apache_kafka import ApacheKafka
from tests.chaos_harness import committed
from tests.conftest import telemon_process, unique_kafka_settings

pytestmark = pytest.mark.integration

KEY = "shadow-test-signing-key-0123456789abcdef"
SHIPPED = Path("configs/rules.yaml")
RANGE = ("2026-01-01T00:00:00", "2026-01-01T00:10:00")
STUCK = ("sensor_stuck", "dev-0001", "temperature")  # a rule the candidate removes
RAMP = ("rate_of_change", "dev-0002", "temperature")  # a threshold the candidate lowers (rate 0.76)
T0 = 1_767_225_600_000  # the scenario's start, 2026-01-01T00:00:00Z (its readings' Kafka timestamps)
SHIFT = [("anomaly_burst", "dev-0003", "humidity"), ("score_drift", "dev-0003", "humidity")]  # both


def candidate_rules(folder: Path) -> Path:
    """The shipped rules without sensor_stuck and with rate_of_change at rate > 0.5 (was 1)."""
    text = SHIPPED.read_text(encoding="utf-8")
    text = text[: text.index("  - name: sensor_stuck")] + text[text.index("  - name: data_gap") :]
    lowered = text.replace(
        'when: {signal: rate, op: ">", value: 1}', 'when: {signal: rate, op: ">", value: 0.5}'
    )
    assert lowered != text
    path = folder / "candidate-rules.yaml"
    path.write_text(lowered, encoding="utf-8")
    return path


def groups(kafka: KafkaSettings) -> set[str]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    return {g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid}


def wait_for(what: str, done: Any, procs: list[subprocess.Popen[str]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a monitor exited ({p.returncode}) before {what}:\n{p.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.3)


def ready(port: int) -> bool:
    """``/readyz`` answers 200: the service was assigned its partitions."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def stop(procs: list[subprocess.Popen[str]]) -> list[str]:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=60)[1])
        finally:
            p.kill()
        assert p.returncode == 0, logs[-1][-3000:]
    return logs


@dataclass
class Runs:
    kafka: KafkaSettings
    shadow: KafkaSettings  # the shadow group's settings (its readings topic is production's)
    state: Path
    logs: list[str]
    fired: dict[tuple[str, str, str], str]  # production's firing alerts -> alert id
    ends: dict[int, int]  # partition -> the stream's end offset


@pytest.fixture(scope="module")
def runs(broker: ApacheKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    kafka = unique_kafka_settings(broker)
    folder = tmp_path_factory.mktemp("shadow")
    state = folder / "state"
    common = {
        "TELEMON_STATE_DIR": str(state),
        "TELEMON_REGISTRY__SIGNING_KEY": KEY,
        # one configured transactional id: were the shadow to use it as it is, it would fence production
        "TELEMON_PROCESSING__GUARANTEE": "exactly_once",
        "TELEMON_PROCESSING__TRANSACTIONAL_ID": f"{kafka.group_id}-txn",
    }
    began = time.monotonic()
    prod = telemon_process(kafka, "run", TELEMON_METRICS__PORT=str(free_port()), **common)
    procs = [prod]
    try:
        wait_for("production's group", lambda: kafka.group_id in groups(kafka), procs)
        shadow = telemon_process(
            kafka,
            "run",
            "--shadow-of",
            kafka.group_id,
            TELEMON_METRICS__PORT=str(free_port()),
            TELEMON_RULES_FILE=str(candidate_rules(folder)),
            # were it posted to, every batch would wait for this dead address: nothing would commit
            TELEMON_ALERTS__ALERTMANAGER_URL="http://127.0.0.1:9",
            TELEMON_REGISTRY__SHARED="true",  # through the shadow's artifacts and audit topics
            **common,
        )
        procs.append(shadow)
        shadow_kafka = kafka.model_copy(update={"group_id": f"{kafka.group_id}.shadow"})
        wait_for("shadow group", lambda: shadow_kafka.group_id in groups(kafka), procs)
        report = simulate(kafka, scenario())
        ends = {p: o + 1 for p, o in report.last_offsets.items()}
        for k in (kafka, shadow_kafka):
            wait_for(f"commit of {ends} by {k.group_id}", lambda k=k: committed(k, list(ends)) == ends, procs)
        took = time.monotonic() - began
        print(f"\nproduction and shadow started and consumed {sum(ends.values())} messages in {took:.1f}s")
        fired = {
            (a.rule, a.device_id, a.sensor): a.alert_id
            for m in records(kafka, kafka.alerts_topic)
            if (a := alerts.decode(m.value() or b"")).status == "firing"
        }
        judge(kafka, fired)
        logs = stop(procs)
        yield Runs(kafka, shadow_kafka, state, logs, fired, ends)
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=60)


def scenario() -> Any:
    """Six devices, every sensor at 1 Hz for 10 simulated minutes (21,600 readings)."""
    return load_scenario(
        Path("configs/scenarios/demo.yaml"),
        seed=11,
        devices=6,
        duration_s=600,
        malformed=0,
        rates_hz={"accelerometer": 1, "gyroscope": 1, "magnetometer": 1},
        events=[
            {"kind": "abrupt_shift", "device": 3, "sensor": "humidity", "start_s": 300, "magnitude": 25.0},
            {"kind": "stuck_at", "device": 1, "sensor": "temperature", "start_s": 200},
            {
                "kind": "gradual_drift",
                "device": 2,
                "sensor": "temperature",
                "start_s": 240,
                "duration_s": 300,
                "magnitude": 3.0,
            },
        ],
    )


def judge(kafka: KafkaSettings, fired: dict[tuple[str, str, str], str]) -> None:
    """Operators' verdicts on production's alerts: the step and the stuck sensor are real, the
    drift alert of the step (asking for a retrain) is marked a false positive."""
    verdicts = {SHIFT[0]: "true_positive", STUCK: "true_positive", SHIFT[1]: "false_positive"}
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for key, verdict in verdicts.items():
        v = Verdict(fired[key], verdict, int(time.time() * 1000), by="test")  # type: ignore[arg-type]
        producer.produce(kafka.feedback_topic, encode(v), v.alert_id.encode())
    assert producer.flush(30) == 0


def compare(kafka: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    proc = telemon_process(kafka, "compare", *args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def records(kafka: KafkaSettings, topic: str) -> list[Message]:
    """Every record of ``topic``, read until each partition reported its end."""
    out: list[Message] = []
    found = topics.read(kafka, [topic], out.append, idle_s=1.0)
    assert found == [topic], f"{topic} does not exist"
    return out


def rules_on(kafka: KafkaSettings, topic: str) -> set[str]:
    return {json.loads(m.value() or b"{}").get("rule", "") for m in records(kafka, topic)}


def test_each_run_s_alerts_and_audit_events_stay_on_its_own_topics(runs: Runs) -> None:
    k = runs.kafka
    assert set(runs.fired) == {STUCK, *SHIFT}
    assert RAMP[0] not in rules_on(k, k.alerts_topic) | rules_on(k, k.audit_topic)
    shadowed = rules_on(k, k.alerts_topic + ".shadow")
    assert RAMP[0] in shadowed and STUCK[0] not in shadowed
    assert RAMP[0] in rules_on(k, k.audit_topic + ".shadow")
    topics = AdminClient({"bootstrap.servers": k.bootstrap_servers}).list_topics(timeout=10).topics
    assert k.artifacts_topic not in topics  # production does not share its registry, the shadow its own:
    assert records(k, k.artifacts_topic + ".shadow")


def test_the_shadow_keeps_its_registry_and_state_apart(runs: Runs) -> None:
    own = runs.state / "shadow" / runs.shadow.group_id
    assert (own / "registry" / "audit.jsonl").is_file()
    assert (own / "snapshots" / runs.shadow.group_id).is_dir()
    assert not (runs.state / "snapshots" / runs.shadow.group_id).exists()
    production_log = (runs.state / "registry" / "audit.jsonl").read_text(encoding="utf-8")
    assert '"rate_of_change"' not in production_log  # the shadow's rule events are in its own trail
    assert "shadow run of group" in runs.logs[1] and "no Alertmanager" in runs.logs[1]


def test_compare_shows_the_added_the_removed_and_the_common_alerts(runs: Runs) -> None:
    done = compare(runs.kafka, "--from", RANGE[0], "--to", RANGE[1], "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)

    def where(e: dict[str, Any]) -> tuple[str, str, str]:
        return (e["rule"], e["device_id"], e["sensor"])

    assert [where(e) for e in doc["only_production"]] == [STUCK]
    assert [where(e) for e in doc["only_shadow"]] == [RAMP]
    assert sorted(where(m["production"]) for m in doc["matched"]) == SHIFT
    assert all(
        m["latency_ms"] == 0 and m["production"]["alert_id"] == m["shadow"]["alert_id"]
        for m in doc["matched"]
    )
    p, s = doc["precision"]["production"], doc["precision"]["shadow"]
    assert (p["true_positive"], p["false_positive"], s["true_positive"], s["false_positive"]) == (2, 1, 1, 1)
    assert doc["decisions"]["production"] == doc["decisions"]["shadow"]
    assert doc["decisions"]["production"]["candidates"] >= 1
    table = compare(runs.kafka, "--from", RANGE[0], "--to", RANGE[1])
    assert table.returncode == 0, table.stderr
    print("\n" + table.stdout)
    assert "only in production (1):" in table.stdout and "only in the shadow (1):" in table.stdout


def test_bad_input_is_one_line_and_exit_2(runs: Runs, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    for key, value in runs.kafka.model_dump(exclude_none=True).items():
        if isinstance(value, str | int):
            monkeypatch.setenv(f"TELEMON_KAFKA__{key.upper()}", str(value))
    cases = [
        (["run", "--shadow-of", "no-such-group"], "no consumer group no-such-group at"),
        (["compare", "--from", RANGE[1], "--to", RANGE[0]], "the range is empty"),
        (["compare", "--from", "2030-01-01", "--to", "2030-01-02"], "no alerts and no retrain decisions"),
        (["compare", "--shadow-suffix", ".candidate-b"], ".candidate-b does not exist"),
    ]
    for argv, message in cases:
        assert telemon(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    monkeypatch.setenv("TELEMON_KAFKA__READINGS_TOPIC", "no-such-readings")
    assert telemon(["run", "--shadow-of", runs.kafka.group_id]) == 2
    assert "topic no-such-readings does not exist at" in capsys.readouterr().err
    monkeypatch.setenv("TELEMON_KAFKA__READINGS_TOPIC", runs.kafka.alerts_topic)  # not production's
    assert telemon(["run", "--shadow-of", runs.kafka.group_id]) == 2
    assert (
        f"that group reads {runs.kafka.readings_topic}, not {runs.kafka.alerts_topic}"
        in capsys.readouterr().err
    )


def test_a_shadow_starts_at_production_s_offsets_or_at_a_time(runs: Runs) -> None:
    k, ends = runs.kafka, runs.ends
    topic = k.readings_topic
    assert shadow.start_offsets(runs.shadow, ShadowRun(k.group_id, "s")) == {
        (topic, p): o for p, o in ends.items()
    }
    since = T0 + 300_000
    start = shadow.start_offsets(runs.shadow, ShadowRun(k.group_id, "s", since_ms=since))
    stamps: dict[int, list[int]] = {}
    for m in records(k, topic):
        stamps.setdefault(m.partition() or 0, []).append(m.timestamp()[1])
    for p, ts in stamps.items():
        first = next(i for i, t in enumerate(ts) if t >= since)
        assert start[(topic, p)] == first, p


def test_a_late_shadow_starts_where_production_is(runs: Runs) -> None:
    """Started after production consumed the stream, a shadow reads nothing of it: it starts at
    production's committed offsets, and says so."""
    k, port = runs.kafka, free_port()
    late = telemon_process(
        k,
        "run",
        "--shadow-of",
        k.group_id,
        "--shadow-suffix",
        ".late",
        TELEMON_METRICS__PORT=str(port),
        TELEMON_STATE_DIR=str(runs.state),
        TELEMON_REGISTRY__SIGNING_KEY=KEY,
    )
    try:
        wait_for("the late shadow's partitions", lambda: ready(port), [late])  # assigned, at their start
        time.sleep(1.0)  # a few turns of its loop
    finally:
        (log,) = stop([late])
    offsets = ", ".join(f"{p}:{o}" for p, o in sorted(runs.ends.items()))
    assert f"start at group {k.group_id}'s committed offsets (partition:offset {offsets})" in log
    assert records(k, k.alerts_topic + ".late") == [] and "stopped after 0 messages" in log
