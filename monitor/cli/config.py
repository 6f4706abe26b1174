"""``telemon config show|check``: the effective settings and where each value comes from; a config
file validated as ``telemon run`` would read it.

``show`` prints every setting as YAML with its source in a comment, as
:class:`monitor.settings.Origins` tells it from the pydantic-settings sources
(``FILE:LINE:COLUMN``, the ``TELEMON_*`` variable, the ``--env-file`` and its variable, the
secret file of ``--secrets-dir``, ``--log-level`` or ``default``), or as JSON with ``--json``. Secrets
(:class:`~pydantic.SecretStr` values) are printed as ``**********``, never in clear. ``check``
validates config files, the rules and cohorts files they name included, and prints ``FILE: ok``
or every problem, one line each (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from monitor import errors
from monitor.cli.args import settings_from_args, verbosity
from monitor.detect.cohorts import CohortLabels
from monitor.govern.rules import load_rules
from monitor.settings import Origins, Settings, Source, load_settings

Loc = tuple[str, ...]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``telemon config show`` and ``telemon config check``."""
    p = sub.add_parser("config", help="show the effective settings, or check config files")
    actions = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="the effective settings and the source of each value (secrets redacted)",
        description="Print the settings of --config with --secrets-dir, --env-file and the TELEMON_* "
        "environment on top, as YAML with the source of each value in a comment: FILE:LINE:COLUMN, "
        "the environment variable, the env file and variable, the secret file, --log-level or "
        "default. Secrets are printed as **********.",
    )
    show.add_argument("--json", action="store_true", help='print {"settings": ..., "sources": ...} as JSON')
    check = actions.add_parser(
        "check",
        help="validate config files; exit 2 with every problem, one line each",
        description="Validate config files as `telemon run --config FILE` reads them (--secrets-dir, "
        "--env-file and the TELEMON_* environment on top), with the rules and cohorts files they "
        "name. Prints FILE: ok, or every problem on one line each and exits 2.",
    )
    check.add_argument("files", type=Path, nargs="+", metavar="FILE")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "check":
        return _check(args.files, getattr(args, "env_file", None), getattr(args, "secrets_dir", None))
    settings, origins = settings_from_args(args, with_origins=True)
    sources = value_sources(settings, origins, args.log_level is not None or verbosity(args) != 0)
    if args.json:
        where = {".".join(loc): src._asdict() for loc, src in sources.items()}
        print(json.dumps({"settings": settings.model_dump(mode="json"), "sources": where}, indent=2))
    else:
        print("\n".join(yaml_lines(settings.model_dump(mode="json"), sources)))
    return 0


def value_sources(settings: Settings, origins: Origins, flag: bool = False) -> dict[Loc, Source]:
    """The source of every leaf value of ``settings`` (``flag``: ``--log-level``, ``-v`` or
    ``-q`` was given)."""
    out: dict[Loc, Source] = {}
    for loc, _ in leaves(settings.model_dump(mode="json")):
        out[loc] = (
            Source("command line", "--log-level") if flag and loc == ("log_level",) else origins.of(loc)
        )
    return out


def leaves(data: Mapping[str, Any], path: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """``(key path, value)`` of every value that is not a non-empty mapping."""
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, str(key)))
        else:
            yield (*path, str(key)), value


def yaml_lines(data: Mapping[str, Any], sources: Mapping[Loc, Source], path: Loc = ()) -> Iterator[str]:
    """``data`` as block YAML, each value on one line with ``# source``."""
    pad = "  " * len(path)
    for key, value in data.items():
        loc = (*path, str(key))
        if isinstance(value, dict) and value:
            yield f"{pad}{_flow(key)}:"
            yield from yaml_lines(value, sources, loc)
        else:
            yield f"{pad}{_flow(key)}: {_flow(value)}  # {sources.get(loc, Source('default'))}"


def _flow(value: Any) -> str:
    """``value`` as YAML on one line (a scalar, or a flow list or mapping)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=2**31, sort_keys=False).strip()
    return text[1:-1]


def check_file(path: Path, env_file: Path | None = None, secrets_dir: Path | None = None) -> list[str]:
    """The problems of the config file at ``path`` (under ``env_file``, ``secrets_dir`` and the
    environment) and of the rules and cohorts files it names."""
    try:
        settings = load_settings(path, env_file=env_file, secrets_dir=secrets_dir)
        catalog = settings.channels.catalog()
        load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
        CohortLabels.load(settings.cohorts_file, settings.channels.labels(), catalog)
    except (errors.InvalidInput, errors.UnsafeFileError, FileNotFoundError) as exc:
        return [line if str(path) in line else f"{path}: {line}" for line in str(exc).splitlines()]
    return []


def _check(paths: list[Path], env_file: Path | None, secrets_dir: Path | None) -> int:
    failed = False
    for path in paths:
        problems = check_file(path, env_file, secrets_dir)
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{path}: ok")
        failed = failed or bool(problems)
    return 2 if failed else 0
