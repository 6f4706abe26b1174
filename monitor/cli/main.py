"""The ``telemon`` command line: one entry point, one subcommand per job.

Logging is configured here and nowhere else. SIGINT/SIGTERM ask the running job to stop cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from monitor import errors
from monitor.cli import alerts as alerts_cli
from monitor.cli import compare as compare_cli
from monitor.cli import config as config_cli
from monitor.cli import feedback as feedback_cli
from monitor.cli import registry as registry_cli
from monitor.cli import shadow as shadow_cli
from monitor.cli.args import (
    add_bootstrap_option,
    add_global_options,
    set_log_level,
    settings_from_args,
    stop_on_signals,
    verbosity,
    wanted_level,
)
from monitor.common import packaged
from monitor.evaluation import command as evaluation
from monitor.report import command as report_cli
from producers import cli as producers_cli

log = logging.getLogger("monitor")

EPILOG = """\
examples:
  telemon demo                                   embedded broker + simulated fleet + monitor
  telemon broker --port 9092                     an embedded Kafka-protocol broker (in memory)
  telemon simulate --scenario configs/scenarios/demo.yaml --config configs/monitor.yaml
  telemon run --config configs/monitor.yaml      the monitor, against kafka.bootstrap_servers
  telemon rules check configs/*rules*.yaml       validate rules files
  telemon config show --config configs/monitor.yaml   the effective settings, where each comes from
  telemon config check configs/monitor.yaml      validate a config file (and its rules, cohorts)
  telemon registry show dev-0007 temperature     why a model version serves, what it was trained on
  telemon alerts tail --from 1h                  the last hour's alerts, then new ones as they come
  telemon feedback 965f8733636e615a --verdict fp mark an alert a false positive (tp, maintenance)
  telemon run --config candidate.yaml --shadow-of telemon   a candidate beside production (shadow topics)
  telemon compare --from 2026-01-01T06:00 --to 2026-01-01T12:00   the shadow's alerts against production's
  telemon replay LOG.csv --mapping configs/replay/astropi.yaml --speed 0   publish a recorded log
  telemon iio --rate 10                          publish this machine's IIO sensors (Sense HAT, ...)
  telemon bridge mqtt --topic 'telemetry/+/+'    forward MQTT readings to Kafka (ack after delivery)
  telemon evaluate scenario configs/scenarios/library.yaml   detection quality on planted events
  telemon evaluate --config configs/nab.yaml nab             the NAB benchmark score
  telemon report --since 6h --out report.html    an offline HTML report of the last six hours

Every config key can be overridden from the environment, e.g. TELEMON_KAFKA__BOOTSTRAP_SERVERS."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telemon",
        description="Streaming telemetry monitoring for ML in production: validate, score, detect "
        "drift and govern sensor streams on Kafka.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"telemon {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on an embedded broker (< 2 min)",
        description="Start an embedded broker, publish a simulated fleet scenario, run the monitor "
        "until it has consumed everything and write the run's HTML report, then print a summary "
        "and the verdict. While it runs, one status line shows the phase, the readings produced "
        "and consumed, the alerts, the retrains and the time elapsed (when stdout is not a "
        "terminal: a plain line per phase and every 10 s). Exit 0 if every planted drift gave a "
        "drift alert and a retrain for its device/sensor, no clean pair got a drift alert, every "
        "alert carries an explanation, and every malformed message was quarantined; 1 otherwise. "
        "--config: the monitor config to start from (its broker address, metrics port and state "
        "folder are replaced); -q hides the INFO log lines.",
    )
    demo.add_argument(
        "--scenario",
        type=Path,
        default=packaged.config("scenarios/demo.yaml"),
        metavar="FILE",
        help="scenario YAML (default: the packaged configs/scenarios/demo.yaml)",
    )
    demo.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="where to write the run's HTML report (default: report.html in a new temporary folder, "
        "kept); its path is printed on the last line, 'report: PATH'",
    )

    run = sub.add_parser(
        "run",
        help="run the monitor as a consumer-group member until SIGTERM",
        description="Consume kafka.readings_topic in batches, score, detect drift, apply the rules; "
        "publish dead letters, alerts and model versions; commit offsets after delivery. "
        "SIGTERM/SIGINT finish the current batch, commit and exit 0; the process is gone within "
        "consume.shutdown_timeout_s of the signal whatever happens (exit 1 if it had to be forced), "
        "at once on a second signal. Config errors name FILE:LINE:COLUMN or the TELEMON_* variable "
        "(exit 2); an unreachable broker is reported within 5 s (exit 1).",
    )
    add_bootstrap_option(run)
    shadow_cli.add_options(run)

    sim = sub.add_parser(
        "simulate",
        help="publish a seeded simulated fleet scenario to Kafka",
        description="Publish the readings of a scenario file to kafka.readings_topic and the ground "
        "truth of its events to kafka.truth_topic. Same seed, same stream.",
    )
    sim.add_argument("--scenario", type=Path, required=True, metavar="FILE", help="scenario YAML")
    sim.add_argument(
        "--realtime",
        action="store_true",
        help="pace to wall-clock time, the stream starting now unless the scenario sets start_ts "
        "(default: as fast as the broker takes it, from the scenario's start_ts)",
    )
    add_bootstrap_option(sim)

    broker = sub.add_parser(
        "broker",
        help="run an embedded Kafka-protocol broker (in memory) until Ctrl-C",
        description="Run the embedded Kafka-protocol broker (needs the 'embedded' extra). Data is "
        "kept in memory and lost when it stops: for demos and development, not production.",
    )
    broker.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    broker.add_argument("--port", type=int, default=9092, help="listen port (default: %(default)s)")

    evaluation.add_parser(sub)
    report_cli.add_parser(sub)
    registry_cli.add_parser(sub)
    feedback_cli.add_parser(sub)
    compare_cli.add_parser(sub)
    config_cli.add_parser(sub)
    alerts_cli.add_parser(sub)
    producers_cli.add_parsers(sub)

    rules = sub.add_parser("rules", help="governance rules tools")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rules_sub.add_parser(
        "check",
        help="validate rules files; exit 1 with the errors",
        description="Validate rules files. Every problem is printed as FILE:LINE:COLUMN: key.path: "
        "message; the exit code is 1 if any file has a problem. The rules may name the channels of "
        "--config (default: the built-in kinds).",
    )
    check.add_argument("files", type=Path, nargs="+", metavar="FILE")
    add_global_options(parser)
    return parser


def _version() -> str:
    import monitor

    return monitor.__version__


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.serve.app import build_service

    settings, start = shadow_cli.prepare(args, settings_from_args(args))
    stop = stop_on_signals("finishing the current batch", settings.consume.shutdown_timeout_s)
    service = build_service(settings, start=start)
    totals = service.run(stop)
    log.info(
        "stopped after %d messages (%d quarantined, %d alerts)",
        totals.messages,
        totals.quarantined,
        len(totals.alerts),
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from producers.scenario import load_scenario
    from producers.simulate import simulate

    settings = settings_from_args(args)
    scenario = load_scenario(args.scenario)
    _stop_on_signals_raise()
    report = simulate(settings.kafka, scenario, realtime=args.realtime)
    print(
        f"sent {report.readings_sent} readings, {report.malformed_sent} malformed, "
        f"{report.truth_events} ground-truth events in {report.duration_s:.1f}s "
        f"({report.readings_per_s:,.0f} readings/s)"
    )
    return 0


def _stop_on_signals_raise() -> None:
    """SIGTERM behaves like Ctrl-C: the simulator flushes what it produced and exits."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def cmd_broker(args: argparse.Namespace) -> int:
    from monitor.cli.broker import EmbeddedBroker

    stop = stop_on_signals("finishing the current batch")
    with EmbeddedBroker(args.host, args.port) as broker:
        print(f"embedded broker on {broker.bootstrap_servers} (in memory; Ctrl-C to stop)", flush=True)
        stop.wait()
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from monitor.errors import RulesError
    from monitor.govern.rules import load_rules

    catalog = settings_from_args(args).channels.catalog()
    failed = 0
    for path in args.files:
        try:
            rules = load_rules(path, catalog.names, registrable=catalog.spare > 0)
        except RulesError as exc:
            print(exc, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: {len(rules.rules)} rules OK")
            for note in rules.unknown_sensors(catalog.names):  # names auto-registration may add
                print(f"{path}: note: {note} (it applies once a channel of that name is registered)")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.cli.demo import run_demo

    stop = stop_on_signals("finishing the current batch")
    return run_demo(args.scenario, args.config, stop, args.report, args.log_level, verbosity(args))


COMMANDS = {
    "run": cmd_run,
    "simulate": cmd_simulate,
    "broker": cmd_broker,
    "rules": cmd_rules,
    "demo": cmd_demo,
    "evaluate": evaluation.run,
    "report": report_cli.run,
    "registry": registry_cli.run,
    "feedback": feedback_cli.run,
    "compare": compare_cli.run,
    "config": config_cli.run,
    "alerts": alerts_cli.run,
    **dict.fromkeys(producers_cli.COMMANDS, producers_cli.run),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # the log_level setting (its default here) applies once settings are read
    set_log_level(wanted_level(args, "INFO") or "INFO")
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's last flush
        return code
    except (
        errors.InvalidInput,
        errors.UnsafeFileError,
        FileNotFoundError,
        ValidationError,
        ValueError,
    ) as exc:
        print(f"telemon {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # the reader went away (`telemon config show | head`): as a shell tool does, quietly;
        # stdout goes to /dev/null so that the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except errors.Unavailable as exc:
        print(f"telemon {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
