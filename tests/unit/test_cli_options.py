"""The global options: ``--config``, ``--log-level`` and ``-v`` before or after any command word."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli.args import set_log_level, settings_from_args, subcommand_paths
from monitor.cli.main import build_parser

PARSER = build_parser()
COMMANDS = subcommand_paths(PARSER)


def _leaf(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = PARSER
    for word in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


def _required(path: tuple[str, ...]) -> list[str]:
    """The least a command needs to parse: a value for each required option and positional."""
    argv: list[str] = []
    for action in _leaf(path)._actions:
        value = str(next(iter(action.choices))) if action.choices else "1"
        if action.option_strings and action.required:
            argv += [action.option_strings[0], value]
        elif not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            argv += [value] if action.nargs in (None, "+", 1) else []
    return argv


def _placements(path: tuple[str, ...], option: list[str]) -> Iterator[list[str]]:
    """``option`` before each command word, and at the end."""
    for i in range(len(path) + 1):
        yield [*path[:i], *option, *path[i:], *_required(path)]
    yield [*path, *_required(path), *option]


def test_the_commands_are_found() -> None:
    assert {("run",), ("registry", "list"), ("evaluate", "nab"), ("bridge", "mqtt")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_config_before_or_after_every_command(path: tuple[str, ...]) -> None:
    assert PARSER.parse_args([*path, *_required(path)]).config is None
    for argv in _placements(path, ["--config", "x.yaml"]):
        assert PARSER.parse_args(argv).config == Path("x.yaml"), argv


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_log_level_before_or_after_every_command(path: tuple[str, ...]) -> None:
    assert PARSER.parse_args([*path, *_required(path)]).log_level is None
    for argv in _placements(path, ["--log-level", "warning"]):
        assert PARSER.parse_args(argv).log_level == "WARNING", argv
    for argv in _placements(path, ["-v"]):
        assert PARSER.parse_args(argv).log_level == "DEBUG", argv


def test_a_value_before_the_command_survives_one_after_wins() -> None:
    args = PARSER.parse_args(["--config", "a.yaml", "-v", "registry", "list", "--config", "b.yaml"])
    assert (args.config, args.log_level) == (Path("b.yaml"), "DEBUG")


def test_an_unknown_level_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        PARSER.parse_args(["run", "--log-level", "loud"])
    assert exit_.value.code == 2
    assert "argument --log-level: invalid choice: 'LOUD'" in capsys.readouterr().err


def test_the_flag_wins_over_the_setting_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text("log_level: ERROR\n", encoding="utf-8")
    settings = settings_from_args(PARSER.parse_args(["rules", "check", "r.yaml", "--config", str(config)]))
    assert settings.log_level == "ERROR"
    assert logging.getLogger("monitor").level == logging.ERROR
    monkeypatch.setenv("TELEMON_LOG_LEVEL", "WARNING")
    settings = settings_from_args(
        PARSER.parse_args(["-v", "rules", "check", "r.yaml", "--config", str(config)])
    )
    assert settings.log_level == "DEBUG"
    assert logging.getLogger().level == logging.getLogger("monitor").level == logging.DEBUG


def test_set_log_level() -> None:
    set_log_level("WARNING")
    assert logging.getLogger("monitor").getEffectiveLevel() == logging.WARNING
