"""``telemon demo``: embedded broker + simulated fleet + the monitor, with live progress and a summary.

The demo publishes the scenario as fast as the broker takes it (event time is simulated), runs
the monitor until it has consumed everything the simulator delivered, then checks its own result
against the scenario's ground truth: every planted drift must have produced a drift alert and a
retrain for exactly its (device, sensor), and no other pair may have a drift alert. Exit code 0
when that holds, 1 otherwise.

While it runs, one status line (:class:`monitor.cli.live.StatusLine`) shows the phase, the
readings produced and consumed, the alerts and retrains and the time elapsed; log lines print above
it. The HTML report is built and the broker stopped before the summary, so the summary, the verdict
and the report's path are the last lines, with nothing from Kafka clients after them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from monitor.cli.args import set_log_level, shift_level
from monitor.cli.broker import EmbeddedBroker, free_port
from monitor.cli.live import StatusLine
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
#: The summary's lines are wrapped to the terminal's width, this one when it is not known.
DEFAULT_WIDTH = 100


def progress_detail(produced: int, t: Totals) -> str:
    """The status line's counts: readings produced and consumed, alerts, retrains.

    >>> progress_detail(1200, Totals(messages=1000))
    'produced 1,200  consumed 1,000  alerts 0 firing (0 fired)  retrains 0'
    """
    last = {a.alert_id: a.status for a in t.alerts}
    firing = sum(status == "firing" for status in last.values())
    fired = len({a.alert_id for a in t.alerts if a.status == "firing"})
    return (
        f"produced {produced:,}  consumed {t.messages:,}  alerts {firing} firing ({fired} fired)  "
        f"retrains {len(t.decisions)}"
    )


def _caught_up(report: SimulationReport | None, t: Totals, topic: str) -> bool:
    if report is None:
        return False
    return all(t.positions.get((topic, p), 0) > off for p, off in report.last_offsets.items())


@dataclass(frozen=True)
class _Outcome:
    totals: Totals
    run_s: float  # from the monitor's start to its last batch
    produced: int  # messages the simulator delivered
    report: Path


def run_demo(
    scenario_path: Path,
    config: Path | None,
    stop: threading.Event,
    report: Path | None = None,
    log_level: str | None = None,
    verbosity: int = 0,
) -> int:
    """The demo on ``config``'s settings (``log_level``, if given, over its own, else its own moved
    ``verbosity`` levels: :func:`monitor.cli.args.shift_level`). The run shows one status line;
    the summary and the verdict come once the broker and every Kafka client are gone."""
    scenario = load_scenario(scenario_path)
    with StatusLine() as status:
        outcome = _demo(scenario_path, scenario, config, stop, report, status, log_level, verbosity)
        t = outcome.totals
        status.show("done", t.messages, t.messages, progress_detail(outcome.produced, t))
    verdict = _summary(scenario, outcome.totals, outcome.run_s)
    print(f"report: {outcome.report}", flush=True)
    return verdict


def _demo(
    scenario_path: Path,
    scenario: Scenario,
    config: Path | None,
    stop: threading.Event,
    report: Path | None,
    status: StatusLine,
    log_level: str | None,
    verbosity: int,
) -> _Outcome:
    say = status.console.print
    status.show("starting the broker")
    with tempfile.TemporaryDirectory(prefix="telemon-demo-") as tmp, EmbeddedBroker() as broker:
        settings = load_settings(
            config,
            kafka={"bootstrap_servers": broker.bootstrap_servers},
            metrics={"port": free_port()},
            state_dir=tmp,
        )
        level = log_level or shift_level(settings.log_level, verbosity)
        settings = settings.model_copy(update={"log_level": level})
        set_log_level(level)
        say(
            f"telemon demo: broker {broker.bootstrap_servers}, metrics "
            f"http://{settings.metrics.host}:{settings.metrics.port}/metrics",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        say(
            f"scenario {scenario_path}: {scenario.devices} devices x 6 sensors, "
            f"{scenario.duration_s:.0f} simulated seconds, {len(scenario.events)} planted event(s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        totals, produced = _run(settings, scenario, stop, status)
        run_s = time.monotonic() - totals.started
        status.show("building the report", detail=str(report or "in a temporary folder"))
        out = _report(settings, report)
        status.show("stopping the broker")
    return _Outcome(totals, run_s, produced, out)


def _run(
    settings: Settings, scenario: Scenario, stop: threading.Event, status: StatusLine
) -> tuple[Totals, int]:
    """The monitor until it has consumed all the simulator delivered: its totals, and how many
    messages that was."""
    status.show("starting the monitor")
    service = build_service(settings)
    reports: list[SimulationReport] = []
    errors: list[BaseException] = []
    produced = [0]

    def show(t: Totals) -> None:
        total = reports[0].readings_sent + reports[0].malformed_sent if reports else None
        status.show("streaming", t.messages, total, progress_detail(produced[0], t))

    def produce() -> None:
        def sent(n: int) -> None:
            produced[0] = n

        try:
            reports.append(simulate(settings.kafka, scenario, progress=sent))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    producer = threading.Thread(target=produce, name="simulator", daemon=True)
    producer.start()
    topic = settings.kafka.readings_topic

    def on_batch(_result: object, t: Totals) -> None:
        show(t)
        if _caught_up(reports[0] if reports else None, t, topic):
            stop.set()

    totals = service.run(stop, on_batch)
    producer.join()
    if errors:
        raise errors[0]
    show(totals)
    return totals, produced[0]


def _report(settings: Settings, out: Path | None) -> Path:
    """The run's HTML report, from the broker's topics and the registry (before both go)."""
    from monitor.govern.rules import load_rules
    from monitor.report.collect import Request, collect
    from monitor.report.render import render

    started = time.monotonic()
    catalog = settings.channels.catalog()
    rules = load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="telemon-demo-report-")) / "report.html"
    req = Request(devices=DEMO_DEVICES, idle_s=0.5, title="telemon demo report")
    data = collect(settings, rules, req, lambda: int(time.time() * 1000))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data), encoding="utf-8")
    log.info("report built in %.1fs (%d bytes)", time.monotonic() - started, out.stat().st_size)
    return out


def _width() -> int:
    """The terminal's width (``COLUMNS`` first), :data:`DEFAULT_WIDTH` when it is not a terminal."""
    return max(shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns, 40)


def _wrap(text: str, first: str, indent: int, width: int) -> str:
    return textwrap.fill(" ".join(text.split()), width, initial_indent=first, subsequent_indent=" " * indent)


def _print_alerts(alerts: list[Alert], width: int | None = None) -> None:
    """The episodes still firing at the end, then those that fired and resolved, with the why
    wrapped to ``width`` (default: the terminal's)."""
    width = width or _width()
    last = {a.alert_id: a.status for a in alerts}  # each episode's latest record
    fired = [a for a in alerts if a.status == "firing"]
    for title, status in (("alerts still firing", "firing"), ("alerts fired, since resolved", "resolved")):
        episodes = [a for a in fired if last[a.alert_id] == status]
        print(f"{title}:" if episodes else f"{title}: none")
        for a in episodes:
            _print_alert(a, width)


def _print_alert(a: Alert, width: int) -> None:
    print(f"  {a.rule:<18} {a.severity:<8} {a.device_id}/{a.sensor}")
    if a.explanation is not None:
        print(_wrap(a.explanation.text, "    why: ", 9, width))


def _summary(scenario: Scenario, t: Totals, run_s: float) -> int:
    width = _width()
    line = (
        f"summary: {t.messages:,} messages in {run_s:.1f}s ({t.messages / max(run_s, 1e-9):,.0f}/s), "
        f"{t.valid:,} valid, "
        f"{t.quarantined} quarantined, {t.anomalies} anomalous readings, "
        f"{t.drift_detections} drift detections"
    )
    print("\n" + _wrap(line, "", 2, width))
    _print_alerts(t.alerts, width)
    print("retrains (candidate versions, tested and shadowed):")
    trained = {(v.device_id, v.sensor, v.version): v.trained_on for v in t.versions}
    for e in t.decisions:
        d = trained.get((e.device_id, e.sensor, e.version))
        source = f" <- {d.topic}[{d.partition}] offsets {d.first_offset}..{d.last_offset}" if d else ""
        print(f"  {e.device_id}/{e.sensor} v{e.version} {e.kind}{source}, trigger {e.rule}")
        print(_wrap(e.reason, "    ", 4, width))
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
