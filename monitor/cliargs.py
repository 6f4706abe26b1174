"""Command-line pieces shared by every ``telemon`` subcommand: config options and stop signals."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from monitor.settings import Settings, load_settings

log = logging.getLogger("monitor")


def add_config_options(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--bootstrap HOST:PORT``."""
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="monitor YAML config (default: built-in defaults)"
    )
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="override kafka.bootstrap_servers")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of ``--config``, with ``--bootstrap`` on top (then the environment)."""
    bootstrap = getattr(args, "bootstrap", None)
    overrides = {"kafka": {"bootstrap_servers": bootstrap}} if bootstrap else {}
    return load_settings(getattr(args, "config", None), **overrides)


def stop_on_signals(doing: str) -> threading.Event:
    """An event set by SIGINT or SIGTERM; ``doing`` tells the log what happens next."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, doing)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
