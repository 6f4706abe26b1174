"""The global options: ``--config``, ``--log-level``, ``-v`` and ``-q`` before or after any command word."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli.args import set_log_level, settings_from_args, subcommand_paths, verbosity, wanted_level
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


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_verbose_and_quiet_before_or_after_every_command(path: tuple[str, ...]) -> None:
    assert verbosity(PARSER.parse_args([*path, *_required(path)])) == 0
    for flag, steps in (["-v"], 1), (["-vv"], 2), (["--verbose"], 1), (["-q"], -1), (["--quiet", "-q"], -2):
        for argv in _placements(path, flag):
            args = PARSER.parse_args(argv)
            assert (verbosity(args), args.log_level) == (steps, None), argv


def test_a_value_before_the_command_survives_one_after_wins() -> None:
    args = PARSER.parse_args(["--config", "a.yaml", "-v", "registry", "list", "--config", "b.yaml"])
    assert (args.config, verbosity(args)) == (Path("b.yaml"), 1)


def test_v_and_q_add_up_wherever_they_are() -> None:
    args = PARSER.parse_args(["-v", "alerts", "-v", "tail", "-v", "-q"])
    assert verbosity(args) == 2
    assert verbosity(PARSER.parse_args(["-q", "registry", "-q", "list"])) == -2


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        ([], None),
        (["-v"], "DEBUG"),
        (["-vv"], "DEBUG"),
        (["-q"], "WARNING"),
        (["-qq"], "ERROR"),
        (["-qqq"], "ERROR"),
        (["-v", "-q"], None),
        (["-q", "--log-level", "debug"], "DEBUG"),  # the explicit level wins
        (["--log-level", "error", "-vv"], "ERROR"),
    ],
)
def test_the_level_asked_for(argv: list[str], level: str | None) -> None:
    assert wanted_level(PARSER.parse_args([*argv, "run"]), "INFO") == level


def test_v_and_q_move_from_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "monitor.yaml"
    config.write_text("log_level: WARNING\n", encoding="utf-8")
    for flag, level in ("-v", "INFO"), ("-q", "ERROR"), ("-vv", "DEBUG"):
        args = PARSER.parse_args([flag, "rules", "check", "r.yaml", "--config", str(config)])
        assert settings_from_args(args).log_level == level, flag
        assert logging.getLogger("monitor").level == logging.getLevelName(level)


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
        PARSER.parse_args(["--log-level", "debug", "rules", "check", "r.yaml", "--config", str(config)])
    )
    assert settings.log_level == "DEBUG"
    assert logging.getLogger().level == logging.getLogger("monitor").level == logging.DEBUG
    args = PARSER.parse_args(["-v", "rules", "check", "r.yaml", "--config", str(config)])
    settings = settings_from_args(args)
    assert settings.log_level == "INFO"  # one step from the environment's WARNING


def test_set_log_level() -> None:
    set_log_level("WARNING")
    assert logging.getLogger("monitor").getEffectiveLevel() == logging.WARNING
