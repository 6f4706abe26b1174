"""``telemon demo``: embedded broker + simulated fleet + the monitor, with live progress and a summary.

The demo publishes the scenario as fast as the broker takes it (event time is simulated), runs
the monitor until it has consumed everything the simulator delivered, then checks its own result
against the scenario's ground truth: every planted drift must have produced a drift alert and a
retrain for exactly its (device, sensor), and no other pair may have a drift alert. Exit code 0
when that holds, 1 otherwise.
"""

from __future__ import annotations

import logging
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from monitor.cli.broker import EmbeddedBroker, free_port
from monitor.govern.alerts import Alert
from monitor.serve.app import build_service
from monitor.serve.service import Totals
from monitor.settings import Settings, load_settings
from producers.scenario import Scenario, load_scenario, truth_records
from producers.simulate import SimulationReport, simulate

log = logging.getLogger(__name__)

DRIFT_RULES = frozenset({"score_drift"})
#: Devices with timelines in the demo's report (the drifted one and three clean ones).
DEMO_DEVICES = 4
DRIFT_KINDS = frozenset({"gradual_drift", "abrupt_shift"})


class _Progress:
    """One status line per second: rate, anomalies, drift detections, alerts, retrains."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, _result: object, t: Totals) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            return
        self.last = now
        firing = sum(a.status == "firing" for a in t.alerts)
        print(
            f"  {t.messages:>9,} msgs  {t.rate:>8,.0f}/s  quarantined {t.quarantined:>3}  "
            f"anomalies {t.anomalies:>5}  drift detections {t.drift_detections:>4}  "
            f"alerts {firing:>3}  retrains {len(t.decisions):>2}",
            flush=True,
        )


def _caught_up(report: SimulationReport | None, t: Totals, topic: str) -> bool:
    if report is None:
        return False
    return all(t.positions.get((topic, p), 0) > off for p, off in report.last_offsets.items())


def run_demo(
    scenario_path: Path,
    config: Path | None,
    stop: threading.Event,
    report: Path | None = None,
    log_level: str | None = None,
) -> int:
    """The demo on ``config``'s settings (``log_level``, if given, over its own)."""
    scenario = load_scenario(scenario_path)
    level: dict[str, Any] = {"log_level": log_level} if log_level else {}
    with tempfile.TemporaryDirectory(prefix="telemon-demo-") as tmp, EmbeddedBroker() as broker:
        settings = load_settings(
            config,
            kafka={"bootstrap_servers": broker.bootstrap_servers},
            metrics={"port": free_port()},
            state_dir=tmp,
            **level,
        )
        print(
            f"telemon demo: broker {broker.bootstrap_servers}, metrics "
            f"http://{settings.metrics.host}:{settings.metrics.port}/metrics"
        )
        print(
            f"scenario {scenario_path}: {scenario.devices} devices x 6 sensors, "
            f"{scenario.duration_s:.0f} simulated seconds, {len(scenario.events)} planted event(s)"
        )
        totals = _run(settings, scenario, stop)
        verdict = _summary(scenario, totals)
        _report(settings, report)
    return verdict


def _run(settings: Settings, scenario: Scenario, stop: threading.Event) -> Totals:
    service = build_service(settings)
    reports: list[SimulationReport] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            reports.append(simulate(settings.kafka, scenario))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    producer = threading.Thread(target=produce, name="simulator", daemon=True)
    producer.start()
    progress = _Progress()
    topic = settings.kafka.readings_topic

    def on_batch(result: object, t: Totals) -> None:
        progress(result, t)
        if _caught_up(reports[0] if reports else None, t, topic):
            stop.set()

    totals = service.run(stop, on_batch)
    producer.join()
    if errors:
        raise errors[0]
    progress.last = 0.0
    progress(None, totals)
    return totals


def _report(settings: Settings, out: Path | None) -> None:
    """The run's HTML report, from the broker's topics and the registry (before both go)."""
    from monitor.govern.rules import load_rules
    from monitor.report.collect import Request
    from monitor.report.command import build

    started = time.monotonic()
    catalog = settings.channels.catalog()
    rules = load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="telemon-demo-report-")) / "report.html"
    req = Request(devices=DEMO_DEVICES, idle_s=0.5, title="telemon demo report")
    build(settings, rules, req, out)
    log.info("report built in %.1fs (%d bytes)", time.monotonic() - started, out.stat().st_size)


def _print_alerts(alerts: list[Alert]) -> None:
    """The episodes still firing at the end, then those that fired and resolved, with the why."""
    last = {a.alert_id: a.status for a in alerts}  # each episode's latest record
    fired = [a for a in alerts if a.status == "firing"]
    for title, status in (("alerts still firing", "firing"), ("alerts fired, since resolved", "resolved")):
        episodes = [a for a in fired if last[a.alert_id] == status]
        print(f"{title}:" if episodes else f"{title}: none")
        for a in episodes:
            _print_alert(a)


def _print_alert(a: Alert) -> None:
    print(f"  {a.rule:<18} {a.severity:<8} {a.device_id}/{a.sensor}")
    if a.explanation is not None:
        print(textwrap.fill(a.explanation.text, 100, initial_indent="    why: ", subsequent_indent=" " * 9))


def _summary(scenario: Scenario, t: Totals) -> int:
    elapsed = time.monotonic() - t.started
    print(
        f"\nsummary: {t.messages:,} messages in {elapsed:.1f}s ({t.rate:,.0f}/s), {t.valid:,} valid, "
        f"{t.quarantined} quarantined, {t.anomalies} anomalous readings, "
        f"{t.drift_detections} drift detections"
    )
    _print_alerts(t.alerts)
    print("retrains (candidate versions, tested and shadowed):")
    trained = {(v.device_id, v.sensor, v.version): v.trained_on for v in t.versions}
    for e in t.decisions:
        d = trained.get((e.device_id, e.sensor, e.version))
        source = f" <- {d.topic}[{d.partition}] offsets {d.first_offset}..{d.last_offset}" if d else ""
        print(f"  {e.device_id}/{e.sensor} v{e.version} {e.kind}{source}, trigger {e.rule}\n    {e.reason}")
    return _verdict(scenario, t)


def _verdict(scenario: Scenario, t: Totals) -> int:
    planted = {(r["device_id"], r["sensor"]) for r in truth_records(scenario) if r["kind"] in DRIFT_KINDS}
    alerted = {(a.device_id, a.sensor) for a in t.alerts if a.rule in DRIFT_RULES and a.status == "firing"}
    retrained = {(e.device_id, e.sensor) for e in t.decisions if e.kind == "promoted"}
    ok = True
    for pair in sorted(planted):
        hit = pair in alerted and pair in retrained
        ok &= hit
        print(f"planted drift {pair[0]}/{pair[1]}: {'detected and retrained' if hit else 'MISSED'}")
    false = sorted(alerted - planted)
    ok &= not false
    print(f"drift alerts on clean pairs: {', '.join(f'{d}/{s}' for d, s in false) or 'none'}")
    explained = sum(a.explanation is not None for a in t.alerts)
    ok &= explained == len(t.alerts)
    print(f"alerts explained: {explained} of {len(t.alerts)}")
    if scenario.malformed:
        ok &= t.quarantined == scenario.malformed
        print(f"malformed messages quarantined: {t.quarantined} of {scenario.malformed}")
    print("demo result:", "OK" if ok else "FAILED")
    return 0 if ok else 1
