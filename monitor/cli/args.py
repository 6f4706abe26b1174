"""Command-line pieces shared by every ``telemon`` subcommand: config options, stop signals, who
acts and how a result is printed."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import signal
import threading
from pathlib import Path

from monitor.settings import Settings, load_settings

log = logging.getLogger("monitor")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--bootstrap HOST:PORT``."""
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="monitor YAML config; relative paths in it are relative to its folder (default: the "
        "built-in defaults and the packaged rules)",
    )
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="override kafka.bootstrap_servers")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of ``--config``, with ``--bootstrap`` on top (then the environment)."""
    bootstrap = getattr(args, "bootstrap", None)
    overrides = {"kafka": {"bootstrap_servers": bootstrap}} if bootstrap else {}
    return load_settings(getattr(args, "config", None), **overrides)


def actor(args: argparse.Namespace) -> str:
    """Who acts, for the audit trail: ``--actor``, else ``cli:<user name>``."""
    if args.actor:
        return str(args.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:  # no user name in the environment or the password database
        return "cli"


def emit(args: argparse.Namespace, doc: object, text: str) -> None:
    """Print a result: ``doc`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(doc, indent=2) if args.json else text)


def stop_on_signals(doing: str, timeout_s: float = 60.0) -> threading.Event:
    """An event set by SIGINT or SIGTERM; ``doing`` tells the log what happens next.

    The process is gone within ``timeout_s`` of the first signal however stuck it is (a frozen
    broker, a file that blocks), and at once on a second signal: exit code 1, since what was not
    snapshotted is re-read from Kafka at the next start.
    """
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            _exit_now(f"received {name} again")
        log.info("received %s: %s (exiting within %gs)", name, doing, timeout_s)
        stop.set()
        watchdog = threading.Timer(timeout_s, _exit_now, [f"still running {timeout_s:g}s after {name}"])
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _exit_now(why: str) -> None:
    log.error("%s: exiting now, unfinished work is re-read from Kafka at the next start", why)
    logging.shutdown()
    os._exit(1)
