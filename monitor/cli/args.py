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
from typing import Literal, overload

from monitor.settings import Origins, Settings, build_settings

log = logging.getLogger("monitor")


#: The levels ``--log-level`` accepts: those of the ``log_level`` setting.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
GLOBAL_TITLE = "global options (before or after the command)"


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, ``--env-file FILE``, ``--secrets-dir DIR``, ``--log-level LEVEL``, ``-v``
    and ``-q`` on ``parser`` and on every subcommand under it, at any depth, so that they may be
    given before or after any command word.

    Only the top level has defaults: a subcommand's options default to ``SUPPRESS``, so a value
    given before the subcommand is not overwritten by the subcommand's default. ``-v`` and ``-q``
    count into one attribute per depth (a subcommand parses into a namespace of its own, whose
    values replace the parent's): :func:`verbosity` adds them up.
    """
    _global_options(parser, None, 0)
    for sub, depth in _subcommands(parser):
        _global_options(sub, argparse.SUPPRESS, depth)


def _global_options(p: argparse.ArgumentParser, default: object, depth: int) -> None:
    group = p.add_argument_group(GLOBAL_TITLE)
    group.add_argument(
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help="monitor YAML config; relative paths in it are relative to its folder (default: the "
        "built-in defaults and the packaged rules)",
    )
    group.add_argument(
        "--env-file",
        type=Path,
        default=default,
        metavar="FILE",
        help="TELEMON_* variables in .env syntax, under those of the environment (default: none)",
    )
    group.add_argument(
        "--secrets-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help="a folder of secret files, one per value, named as its TELEMON_* variable (e.g. "
        "TELEMON_KAFKA__SASL_PASSWORD), under the environment and --env-file (default: none)",
    )
    group.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (default: the log_level setting, INFO); wins over the setting "
        "and over -v and -q",
    )
    steps = f"{_VERBOSITY}{depth}"
    group.add_argument(
        "-v",
        "--verbose",
        dest=steps,
        action="append_const",
        const=1,
        default=default,
        help="log one level more than the log_level setting (INFO -> DEBUG); repeatable",
    )
    group.add_argument(
        "-q",
        "--quiet",
        dest=steps,
        action="append_const",
        const=-1,
        default=default,
        help="log one level less than the log_level setting (INFO -> WARNING, -qq: errors only); "
        "repeatable, each -v cancels one -q",
    )


_VERBOSITY = "verbosity_"


def verbosity(args: argparse.Namespace) -> int:
    """The count of ``-v`` minus the count of ``-q``, wherever on the command line they were."""
    return sum(sum(v or ()) for k, v in vars(args).items() if k.startswith(_VERBOSITY))


def shift_level(level: str, steps: int) -> str:
    """``level`` made ``steps`` levels more verbose (fewer when negative), within :data:`LOG_LEVELS`.

    >>> shift_level("INFO", 1), shift_level("INFO", -1), shift_level("INFO", -5), shift_level("WARNING", 2)
    ('DEBUG', 'WARNING', 'ERROR', 'DEBUG')
    """
    i = LOG_LEVELS.index(level) - steps
    return LOG_LEVELS[min(max(i, 0), len(LOG_LEVELS) - 1)]


def wanted_level(args: argparse.Namespace, base: str) -> str | None:
    """The level the command line asks for: ``--log-level`` if given, else ``base`` moved by ``-v``
    and ``-q``; ``None`` when it asks for nothing (or ``-v`` and ``-q`` cancel out)."""
    explicit = getattr(args, "log_level", None)
    if explicit is not None:
        return str(explicit)
    steps = verbosity(args)
    return shift_level(base, steps) if steps else None


def _subcommands(
    parser: argparse.ArgumentParser, depth: int = 1
) -> list[tuple[argparse.ArgumentParser, int]]:
    """Every parser below ``parser`` with its depth: its subcommands (1), theirs (2), and so on
    (each once)."""
    found: list[tuple[argparse.ArgumentParser, int]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found += [(sub, depth), *_subcommands(sub, depth + 1)]
    return found


def subcommand_paths(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """The command words of every runnable command (``("registry", "list")``, ...)."""
    paths: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(name, *rest) for rest in subcommand_paths(sub)] or [(name,)]
    return paths


def add_bootstrap_option(p: argparse.ArgumentParser) -> None:
    """``--bootstrap HOST:PORT`` (``--config`` is global: :func:`add_global_options`)."""
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="override kafka.bootstrap_servers")


@overload
def settings_from_args(args: argparse.Namespace) -> Settings: ...
@overload
def settings_from_args(args: argparse.Namespace, with_origins: Literal[True]) -> tuple[Settings, Origins]: ...


def settings_from_args(
    args: argparse.Namespace, with_origins: bool = False
) -> Settings | tuple[Settings, Origins]:
    """The settings of ``--config``, ``--env-file`` and ``--secrets-dir``, with ``--bootstrap`` on
    top (then the environment), and ``--log-level`` (or ``-v``/``-q`` from the setting) over
    everything; the log level is applied to logging. ``with_origins``: with where each value comes
    from."""
    bootstrap = getattr(args, "bootstrap", None)
    overrides = {"kafka": {"bootstrap_servers": bootstrap}} if bootstrap else {}
    settings, origins = build_settings(
        getattr(args, "config", None),
        env_file=getattr(args, "env_file", None),
        secrets_dir=getattr(args, "secrets_dir", None),
        **overrides,
    )
    level = wanted_level(args, settings.log_level)
    if level is not None:  # the command line is this run's explicit wish: above the environment
        settings = settings.model_copy(update={"log_level": level})
    set_log_level(settings.log_level)
    return (settings, origins) if with_origins else settings


def set_log_level(level: str) -> None:
    """The level of every logger that does not set its own (and of telemon's)."""
    logging.getLogger().setLevel(level)
    logging.getLogger("monitor").setLevel(level)


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
