"""``telemon config show|check``: the effective settings and where each value comes from; a config
file validated as ``telemon run`` would read it.

``show`` prints every setting as YAML with its source in a comment (``FILE:LINE``, the
``TELEMON_*`` variable, ``--log-level`` or ``default``), or as JSON with ``--json``. Secrets
(:class:`~pydantic.SecretStr` values) are printed as ``**********``, never in clear. ``check``
validates config files, the rules and cohorts files they name included, and prints ``FILE: ok``
or every problem, one line each (exit 2).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from monitor import errors
from monitor.cli.args import settings_from_args, verbosity
from monitor.common import yamlfile
from monitor.detect.cohorts import CohortLabels
from monitor.govern.rules import load_rules
from monitor.settings import ENV_PREFIX, Settings, load_settings

Loc = tuple[str, ...]


class Source(NamedTuple):
    """Where a setting's value comes from: ``kind`` is file, environment, command line or default;
    ``at`` is ``FILE:LINE:COLUMN``, the variable or the option (empty for a default)."""

    kind: str
    at: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.at}" if self.at else self.kind


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``telemon config show`` and ``telemon config check``."""
    p = sub.add_parser("config", help="show the effective settings, or check config files")
    actions = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show",
        help="the effective settings and the source of each value (secrets redacted)",
        description="Print the settings of --config with the TELEMON_* environment on top, as YAML "
        "with the source of each value in a comment: FILE:LINE:COLUMN, the environment variable, "
        "--log-level or default. Secrets are printed as **********.",
    )
    show.add_argument("--json", action="store_true", help='print {"settings": ..., "sources": ...} as JSON')
    check = actions.add_parser(
        "check",
        help="validate config files; exit 2 with every problem, one line each",
        description="Validate config files as `telemon run --config FILE` reads them (the TELEMON_* "
        "environment on top), with the rules and cohorts files they name. Prints FILE: ok, or every "
        "problem on one line each and exits 2.",
    )
    check.add_argument("files", type=Path, nargs="+", metavar="FILE")


def run(args: argparse.Namespace) -> int:
    if args.config_command == "check":
        return _check(args.files)
    settings = settings_from_args(args)
    doc = yamlfile.read(args.config) if args.config is not None else None
    flag = args.log_level is not None or verbosity(args) != 0
    sources = value_sources(settings, doc, os.environ, flag)
    if args.json:
        where = {".".join(loc): src._asdict() for loc, src in sources.items()}
        print(json.dumps({"settings": settings.model_dump(mode="json"), "sources": where}, indent=2))
    else:
        print("\n".join(yaml_lines(settings.model_dump(mode="json"), sources)))
    return 0


def value_sources(
    settings: Settings, doc: yamlfile.YamlDocument | None, env: Mapping[str, str], flag: bool = False
) -> dict[Loc, Source]:
    """The source of every leaf value of ``settings`` (``flag``: ``--log-level``, ``-v`` or ``-q``
    was given)."""
    variables = {k.upper(): k for k in env if k.upper().startswith(ENV_PREFIX)}
    out: dict[Loc, Source] = {}
    for loc, _ in leaves(settings.model_dump(mode="json")):
        var = _variable(loc, variables, env)
        if flag and loc == ("log_level",):
            out[loc] = Source("command line", "--log-level")
        elif var is not None:
            out[loc] = Source("environment", var)
        elif doc is not None and doc.has(loc):
            line, column, _ = doc.position(loc, "")
            out[loc] = Source("file", f"{doc.source}:{line}:{column}")
        else:
            out[loc] = Source("default")
    return out


def _variable(loc: Loc, variables: Mapping[str, str], env: Mapping[str, str]) -> str | None:
    """The ``TELEMON_*`` variable that sets ``loc``: its own, or a section's or mapping's JSON that
    has the key (``TELEMON_KAFKA__EXTRA`` is merged with the file's ``kafka.extra``)."""
    for i in range(len(loc), 0, -1):
        var = variables.get(_env_name(loc[:i]))
        if var is not None and (i == len(loc) or _has(env[var], loc[i:])):
            return var
    return None


def _has(text: str, loc: Loc) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return True  # not JSON: the variable sets the whole value
    for key in loc:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


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


def _env_name(loc: Loc) -> str:
    return (ENV_PREFIX + "__".join(loc)).upper()


def check_file(path: Path) -> list[str]:
    """The problems of the config file at ``path`` and of the rules and cohorts files it names."""
    try:
        settings = load_settings(path)
        catalog = settings.channels.catalog()
        load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
        CohortLabels.load(settings.cohorts_file, settings.channels.labels(), catalog)
    except (errors.InvalidInput, errors.UnsafeFileError, FileNotFoundError) as exc:
        return [line if str(path) in line else f"{path}: {line}" for line in str(exc).splitlines()]
    return []


def _check(paths: list[Path]) -> int:
    failed = False
    for path in paths:
        problems = check_file(path)
        for line in problems:
            print(line, file=sys.stderr)
        if not problems:
            print(f"{path}: ok")
        failed = failed or bool(problems)
    return 2 if failed else 0
